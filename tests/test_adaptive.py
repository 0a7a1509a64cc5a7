"""adaptive_avg_pool2d, adaptive_max_pool2d, max_unpool2d and their backwards: NumPy
references, PyTorch, finite differences, threads, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    max_pool2d,
    max_unpool2d,
    max_unpool2d_backward,
)
from helpers import assert_close, assert_grad_close
from reference.networks import (
    adaptive_avg_pool2d_backward_reference,
    adaptive_avg_pool2d_reference,
    adaptive_max_pool2d_reference,
    max_unpool2d_reference,
)

shapes = st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))
sizes = st.tuples(st.integers(1, 10), st.integers(1, 10))


@settings(max_examples=30)
@given(shape=shapes, output_size=sizes, seed=st.integers(0, 2**32 - 1))
def test_adaptive_pools_match_reference(shape, output_size, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        # small integers: many ties, exact in float32
        x = rng.integers(-3, 4, size=shape).astype(dtype)
        out = adaptive_avg_pool2d(x, output_size)
        assert out.dtype == dtype and out.shape == shape[:2] + output_size
        assert_close(out, adaptive_avg_pool2d_reference(x, output_size), dtype)
        grad_output = rng.standard_normal(out.shape).astype(dtype)
        assert_grad_close(adaptive_avg_pool2d_backward(grad_output, shape),
                          adaptive_avg_pool2d_backward_reference(grad_output, shape), dtype)
        out, indices = adaptive_max_pool2d(x, output_size, return_indices=True)
        expected, expected_indices = adaptive_max_pool2d_reference(x, output_size)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(indices, expected_indices)
        grad_input = adaptive_max_pool2d_backward(grad_output, indices, shape)
        expected_grad = np.zeros(shape)
        for index in np.ndindex(indices.shape):
            plane = expected_grad[index[:2]].reshape(-1)
            plane[indices[index]] += grad_output[index]
        assert_grad_close(grad_input, expected_grad, dtype)


@settings(max_examples=20)
@given(shape=shapes, output_size=sizes, seed=st.integers(0, 2**32 - 1))
def test_adaptive_pools_match_torch(shape, output_size, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    shape = (max(shape[0], 1),) + shape[1:]
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        for ours, theirs in ((adaptive_avg_pool2d, torch.nn.functional.adaptive_avg_pool2d),):
            tx = torch.tensor(x, requires_grad=True)
            t_out = theirs(tx, output_size)
            assert_close(ours(x, output_size), t_out.detach().numpy(), dtype)
            grad_output = rng.standard_normal(t_out.shape).astype(dtype)
            t_out.backward(torch.from_numpy(grad_output))
            assert_grad_close(adaptive_avg_pool2d_backward(grad_output, shape),
                              tx.grad.numpy(), dtype)
        tx = torch.tensor(x, requires_grad=True)
        t_out, t_indices = torch.nn.functional.adaptive_max_pool2d(tx, output_size, True)
        out, indices = adaptive_max_pool2d(x, output_size, return_indices=True)
        np.testing.assert_array_equal(out, t_out.detach().numpy())
        np.testing.assert_array_equal(indices, t_indices.numpy())
        grad_output = rng.standard_normal(out.shape).astype(dtype)
        t_out.backward(torch.from_numpy(grad_output))
        assert_grad_close(adaptive_max_pool2d_backward(grad_output, indices, shape),
                          tx.grad.numpy(), dtype)


def test_none_keeps_size_and_unbatched(rng):
    x = rng.standard_normal((2, 5, 7))
    out = adaptive_avg_pool2d(x, (None, 3))
    assert out.shape == (2, 5, 3)
    np.testing.assert_allclose(out, adaptive_avg_pool2d(x[None], (5, 3))[0])
    out, indices = adaptive_max_pool2d(x, 2, return_indices=True)
    assert out.shape == indices.shape == (2, 2, 2)


@pytest.mark.parametrize("kernel, stride, padding, size", [
    (2, None, 0, (6, 8)), (3, 2, 1, (7, 9)), (3, 1, 1, (5, 6)), ((2, 3), (2, 2), 0, (6, 7))])
def test_max_unpool2d_inverts_max_pool2d(kernel, stride, padding, size, rng, dtype):
    x = rng.standard_normal((2, 3) + size).astype(dtype)
    pooled, indices = max_pool2d(x, kernel, stride, padding, return_indices=True)
    out = max_unpool2d(pooled, indices, kernel, stride, padding, output_size=size)
    np.testing.assert_array_equal(out, max_unpool2d_reference(pooled, indices, size))
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    grad_input = max_unpool2d_backward(grad_output, indices)
    expected = np.take_along_axis(grad_output.reshape(2, 3, -1),
                                  indices.reshape(2, 3, -1), axis=2).reshape(pooled.shape)
    np.testing.assert_array_equal(grad_input, expected)
    torch = pytest.importorskip("torch")
    tx = torch.tensor(pooled, requires_grad=True)
    t_out = torch.nn.functional.max_unpool2d(tx, torch.from_numpy(indices), kernel, stride,
                                             padding, output_size=size)
    np.testing.assert_array_equal(out, t_out.detach().numpy())
    t_out.backward(torch.from_numpy(grad_output))
    np.testing.assert_array_equal(grad_input, tx.grad.numpy())


def test_gradients_by_finite_differences(rng):
    x = rng.standard_normal((2, 2, 5, 7))
    coefficients = rng.standard_normal((2, 2, 3, 4))
    numerical = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + 1e-6
        upper = np.sum(adaptive_avg_pool2d(x, (3, 4)) * coefficients)
        x[index] = saved - 1e-6
        lower = np.sum(adaptive_avg_pool2d(x, (3, 4)) * coefficients)
        x[index] = saved
        numerical[index] = (upper - lower) / 2e-6
    np.testing.assert_allclose(adaptive_avg_pool2d_backward(coefficients, x.shape), numerical,
                               rtol=1e-6, atol=1e-8)
    # the max is piecewise linear: away from ties, its gradient is exact too
    _, indices = adaptive_max_pool2d(x, (3, 4), return_indices=True)
    numerical = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + 1e-6
        upper = np.sum(adaptive_max_pool2d(x, (3, 4)) * coefficients)
        x[index] = saved - 1e-6
        lower = np.sum(adaptive_max_pool2d(x, (3, 4)) * coefficients)
        x[index] = saved
        numerical[index] = (upper - lower) / 2e-6
    np.testing.assert_allclose(adaptive_max_pool2d_backward(coefficients, indices, x.shape),
                               numerical, rtol=1e-6, atol=1e-8)


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((8, 16, 20, 20)).astype(np.float32)
    results = []
    for count in (1, 2, 3):
        with fastconv.threads(count):
            avg = adaptive_avg_pool2d(x, (6, 7))
            out, indices = adaptive_max_pool2d(x, (6, 7), return_indices=True)
            results.append((avg, adaptive_avg_pool2d_backward(avg, x.shape), out, indices,
                            max_unpool2d_backward(x, indices)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_errors(rng):
    x = rng.standard_normal((1, 2, 4, 4))
    with pytest.raises(ValueError, match="output_size must be >= 1"):
        adaptive_avg_pool2d(x, 0)
    with pytest.raises(ValueError, match="non-zero channels"):
        adaptive_max_pool2d(np.ones((1, 0, 4, 4)), 2)
    pooled, indices = max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match="outside the output plane"):
        max_unpool2d(pooled, indices + 100, 2)
    with pytest.raises(ValueError, match="within a stride"):
        max_unpool2d(pooled, indices, 2, output_size=(9, 4))
    with pytest.raises(ValueError, match="indices have shape"):
        max_unpool2d(pooled, indices[:, :1], 2)
    with pytest.raises(TypeError, match="integers"):
        max_unpool2d(pooled, indices.astype(float), 2)
    with pytest.raises(ValueError, match="does not fit"):
        adaptive_avg_pool2d_backward(np.ones((1, 2, 2, 2)), (1, 3, 4, 4))
