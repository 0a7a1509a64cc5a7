"""conv_transpose2d and its backward: NumPy reference, PyTorch, finite differences, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import conv_transpose2d, conv_transpose2d_backward
from helpers import assert_close, assert_grad_close
from reference.networks import conv_transpose2d_reference


@st.composite
def geometries(draw):
    groups = draw(st.integers(1, 3))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    padding = []
    for axis in range(2):
        full = (size[axis] - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1 \
            + output_padding[axis]
        padding.append(draw(st.integers(0, max(0, (full - 1) // 2))))
    batch = draw(st.integers(1, 3))
    return (batch, in_channels, size, out_channels, kernel, stride, tuple(padding),
            output_padding, groups, dilation)


def _arrays(geometry, rng, dtype):
    batch, in_channels, size, out_channels, kernel, *_ , groups, _ = geometry
    x = rng.standard_normal((batch, in_channels) + size).astype(dtype)
    weight = rng.standard_normal((in_channels, out_channels // groups) + kernel).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    return x, weight, bias


@settings(max_examples=20)
@given(geometry=geometries(), seed=st.integers(0, 2**32 - 1))
def test_forward_and_backward_match_reference(geometry, seed):
    _, _, _, _, _, stride, padding, output_padding, groups, dilation = geometry
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x, weight, bias = _arrays(geometry, rng, dtype)
        args = (stride, padding, output_padding, groups, dilation)
        expected = conv_transpose2d_reference(x, weight, bias, *args)
        out = conv_transpose2d(x, weight, bias, *args)
        assert out.dtype == dtype and out.shape == expected.shape
        assert_close(out, expected, dtype)
        # gradients: the reference is linear, so its adjoint is checked through the
        # inner-product identity <gy, T(x)> = <T*(gy), x> and by the weight's linearity
        grad_output = rng.standard_normal(out.shape).astype(dtype)
        grad_input, grad_weight, grad_bias = conv_transpose2d_backward(
            grad_output, x, weight, *args)
        no_bias = conv_transpose2d_reference(x, weight, None, *args)
        scale = max(1.0, float(np.abs(grad_output).sum() * np.abs(no_bias).max()))
        tol = 1e-4 if dtype == np.float32 else 1e-11
        assert abs(np.vdot(grad_output, no_bias) - np.vdot(grad_input, x)) <= tol * scale
        assert abs(np.vdot(grad_output, no_bias) - np.vdot(grad_weight, weight)) <= tol * scale
        assert_grad_close(grad_bias, grad_output.astype(np.float64).sum(axis=(0, 2, 3)), dtype)


@settings(max_examples=20)
@given(geometry=geometries(), seed=st.integers(0, 2**32 - 1))
def test_matches_torch(geometry, seed):
    torch = pytest.importorskip("torch")
    _, _, _, _, _, stride, padding, output_padding, groups, dilation = geometry
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x, weight, bias = _arrays(geometry, rng, dtype)
        args = (stride, padding, output_padding, groups, dilation)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
        t_out = torch.nn.functional.conv_transpose2d(tx, tw, tb, *args)
        out = conv_transpose2d(x, weight, bias, *args)
        assert_close(out, t_out.detach().numpy(), dtype)
        grad_output = rng.standard_normal(out.shape).astype(dtype)
        t_out.backward(torch.from_numpy(grad_output))
        for ours, theirs in zip(conv_transpose2d_backward(grad_output, x, weight, *args),
                                (tx.grad, tw.grad, tb.grad)):
            assert_grad_close(ours, theirs.numpy(), dtype)


def test_gradients_by_finite_differences(rng):
    x = rng.standard_normal((2, 2, 3, 3))
    weight = rng.standard_normal((2, 3, 3, 2))
    args = ((2, 1), (1, 0), (1, 0), 1, (1, 2))
    coefficients = rng.standard_normal(conv_transpose2d(x, weight, None, *args).shape)
    grad_input, grad_weight, _ = conv_transpose2d_backward(coefficients, x, weight, *args)
    for array, grad, loss in (
            (x, grad_input, lambda z: np.sum(conv_transpose2d(z, weight, None, *args)
                                             * coefficients)),
            (weight, grad_weight, lambda z: np.sum(conv_transpose2d(x, z, None, *args)
                                                   * coefficients))):
        numerical = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + 1e-6
            upper = loss(array)
            array[index] = saved - 1e-6
            lower = loss(array)
            array[index] = saved
            numerical[index] = (upper - lower) / 2e-6
        np.testing.assert_allclose(grad, numerical, rtol=1e-6, atol=1e-7)


def test_unbatched_and_need(rng):
    x, weight = rng.standard_normal((2, 4, 4)), rng.standard_normal((2, 3, 3, 3))
    out = conv_transpose2d(x, weight, stride=2)
    np.testing.assert_allclose(out, conv_transpose2d(x[None], weight, stride=2)[0])
    grad_input, grad_weight, grad_bias = conv_transpose2d_backward(
        np.ones_like(out), x, weight, stride=2, need=("input",))
    assert grad_input.shape == x.shape and grad_weight is None and grad_bias is None


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((8, 16, 14, 14)).astype(np.float32)
    weight = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    results = []
    for count in (1, 2, 3):
        with fastconv.threads(count):
            out = conv_transpose2d(x, weight, None, 2, 1, 1)
            results.append((out,) + conv_transpose2d_backward(out, x, weight, 2, 1, 1))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_errors(rng):
    x, weight = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 1, 3, 3))
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        conv_transpose2d(x, weight, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="weight.shape\\[0\\]"):
        conv_transpose2d(x, rng.standard_normal((3, 1, 3, 3)))
    with pytest.raises(ValueError, match="must be >= 1"):
        conv_transpose2d(x, weight, padding=5)
    with pytest.raises(ValueError, match="groups=2 must divide"):
        conv_transpose2d(rng.standard_normal((1, 3, 3, 3)), rng.standard_normal((3, 1, 3, 3)),
                         groups=2)
    with pytest.raises(ValueError, match="grad_output has shape"):
        conv_transpose2d_backward(np.ones((1, 1, 4, 4)), x, weight)
