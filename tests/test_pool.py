"""max_pool2d / avg_pool2d and their backward: references, finite differences, PyTorch, threads,
errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from fastconv.pool import _num_threads
from helpers import assert_close, non_contiguous
from reference.pool import (
    avg_pool2d_backward_reference,
    avg_pool2d_reference,
    max_pool2d_backward_reference,
    max_pool2d_reference,
)

# (shape, kernel_size, stride, padding, dilation, (top, bottom, left, right)); every padding
# within PyTorch's limit (at most kernel // 2).
MAX_CASES = [
    ((2, 3, 7, 8), 3, None, 0, 1, (0, 0, 0, 0)),
    ((2, 3, 7, 8), 3, 2, 1, 1, (1, 1, 1, 1)),
    ((1, 2, 9, 7), (3, 2), (2, 1), (1, 0), 1, (1, 1, 0, 0)),
    ((1, 2, 9, 9), 3, 1, 1, 2, (1, 1, 1, 1)),
    ((2, 2, 9, 8), (3, 2), (1, 2), 1, (2, 3), (1, 1, 1, 1)),
    ((1, 2, 8, 9), (2, 3), (3, 2), ((1, 0), (0, 1)), (2, 1), (1, 0, 0, 1)),
    ((2, 1, 5, 5), 5, 1, 2, 1, (2, 2, 2, 2)),
    ((1, 1, 1, 1), 1, 1, 0, 1, (0, 0, 0, 0)),
    ((1, 2, 6, 11), (1, 4), (1, 3), ((0, 0), (2, 1)), (1, 2), (0, 0, 2, 1)),
]
MAX_IDS = ["default-stride", "k3s2p1", "rect", "dilated", "dilated-p1", "asym", "whole", "1x1",
           "row-dilated"]

# (shape, kernel_size, stride, padding, (top, bottom, left, right))
AVG_CASES = [
    ((2, 3, 7, 8), 3, None, 0, (0, 0, 0, 0)),
    ((2, 3, 7, 8), 3, 2, 1, (1, 1, 1, 1)),
    ((1, 2, 9, 7), (3, 2), (2, 1), (1, 0), (1, 1, 0, 0)),
    ((1, 2, 8, 9), (2, 4), (3, 2), ((1, 0), (0, 2)), (1, 0, 0, 2)),
    ((2, 1, 5, 5), 5, 1, 2, (2, 2, 2, 2)),
    ((1, 2, 5, 5), 3, 3, 1, (1, 1, 1, 1)),  # ceil_mode: a window starting in the padding
    ((1, 1, 6, 6), 3, 2, 1, (1, 1, 1, 1)),  # ceil_mode: a window past the padded edge
]
AVG_IDS = ["default-stride", "k3s2p1", "rect", "asym", "whole", "ceil-dropped", "ceil-past-edge"]
# (count_include_pad, divisor_override)
DIVISORS = [(True, None), (False, None), (True, 3), (False, -2)]


def _ties(shape, rng):
    """Small integers: many ties, exact in float32."""
    return rng.integers(-4, 5, size=shape).astype(np.float64)


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


# --------------------------------------------------------------------------------------------
# values


def test_seed_value():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x = np.concatenate([x, x + 1], axis=1)
    out = max_pool2d(x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(out, [[[[5, 7], [13, 15]], [[6, 8], [14, 16]]]])


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("case", MAX_CASES, ids=MAX_IDS)
def test_max_pool2d_matches_reference(case, ceil_mode, dtype, rng):
    shape, kernel, stride, padding, dilation, pads = case
    x = _ties(shape, rng).astype(dtype)
    expected, expected_indices = max_pool2d_reference(
        x, _pair(kernel), _pair(kernel if stride is None else stride), pads, _pair(dilation),
        ceil_mode,
    )
    out, indices = max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, True)
    assert out.dtype == dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(max_pool2d(x, kernel, stride, padding, dilation, ceil_mode), out)

    grad_output = rng.standard_normal(out.shape).astype(dtype)
    grad_input = max_pool2d_backward(grad_output, indices, x.shape)
    assert grad_input.dtype == dtype and grad_input.shape == x.shape
    assert_close(grad_input, max_pool2d_backward_reference(grad_output, indices, x.shape))


@pytest.mark.parametrize("divisor", DIVISORS, ids=["include", "exclude", "override", "negative"])
@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("case", AVG_CASES, ids=AVG_IDS)
def test_avg_pool2d_matches_reference(case, ceil_mode, divisor, dtype, rng):
    shape, kernel, stride, padding, pads = case
    count_include_pad, divisor_override = divisor
    x = rng.standard_normal(shape).astype(dtype)
    kernel2, stride2 = _pair(kernel), _pair(kernel if stride is None else stride)
    out = avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    assert out.dtype == dtype
    assert_close(out, avg_pool2d_reference(x, kernel2, stride2, pads, ceil_mode,
                                           count_include_pad, divisor_override))

    grad_output = rng.standard_normal(out.shape).astype(dtype)
    grad_input = avg_pool2d_backward(grad_output, x.shape, kernel, stride, padding, ceil_mode,
                                     count_include_pad, divisor_override)
    assert grad_input.dtype == dtype and grad_input.shape == x.shape
    assert_close(grad_input, avg_pool2d_backward_reference(
        grad_output, x.shape, kernel2, stride2, pads, count_include_pad, divisor_override))


def test_ceil_mode_window_rules():
    # in 5, k 3, s 3, pad 1: ceil would add a window starting in the bottom padding alone.
    assert max_pool2d(np.zeros((1, 1, 5, 5)), 3, 3, 1, ceil_mode=True).shape == (1, 1, 2, 2)
    # in 6, k 3, s 2, pad 1: the last window [5, 8) runs past the padded edge at 7, so its
    # divisor counts 2 of its 3 rows/columns (PyTorch's 0.3333 and 0.25 at the edge).
    ones = np.ones((1, 6, 6))
    out = avg_pool2d(ones, 3, 2, 1, ceil_mode=True)
    assert out.shape == (1, 4, 4)
    np.testing.assert_allclose(out[0, 3], [2 / 6, 3 / 6, 3 / 6, 1 / 4])
    np.testing.assert_array_equal(avg_pool2d(ones, 3, 2, 1, True, count_include_pad=False), 1.0)


def test_max_pool2d_ties_nan_and_inf():
    row = np.array([[[[2.0, 2.0, 1.0, 2.0]]]])
    assert max_pool2d(row, (1, 4), return_indices=True)[1].item() == 0  # first of the ties
    nan = np.array([[[[1.0, np.nan, 3.0, np.nan]]]])
    out, indices = max_pool2d(nan, (1, 4), return_indices=True)
    assert np.isnan(out.item()) and indices.item() == 3  # a NaN wins, the last one reported
    # An all -inf window reports its first tap inside the input.
    infs = np.full((1, 1, 2, 2), -np.inf)
    out, indices = max_pool2d(infs, 2, 1, 1, return_indices=True)
    np.testing.assert_array_equal(out, -np.inf)
    np.testing.assert_array_equal(indices[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


def test_avg_pool2d_propagates_nan_and_inf():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0], x[0, 0, 3, 3] = np.nan, np.inf
    out = avg_pool2d(x, 2)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 1, 1] == np.inf
    assert out[0, 0, 0, 1] == 0 and out[0, 0, 1, 0] == 0


def test_dilation_past_the_input_reports_pytorchs_index():
    # taps at -1 and 2 of a 2-wide axis: no tap inside the input. PyTorch reports -inf and the
    # first tap at or after the corner, (2, 2) -> 6, which lies outside the plane.
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    out, indices = max_pool2d(x, 2, 1, 1, 3, return_indices=True)
    assert out.item() == -np.inf and indices.item() == 6
    with pytest.raises(ValueError, match="indices"):
        max_pool2d_backward(np.ones((1, 1, 1, 1)), indices, x.shape)


# --------------------------------------------------------------------------------------------
# array handling


def test_unbatched_input(dtype, rng):
    x = rng.standard_normal((3, 7, 6)).astype(dtype)
    out, indices = max_pool2d(x, 3, 2, 1, return_indices=True)
    batched, batched_indices = max_pool2d(x[None], 3, 2, 1, return_indices=True)
    assert out.shape == (3, 4, 3) and out.flags.owndata and indices.flags.owndata
    np.testing.assert_array_equal(out, batched[0])
    np.testing.assert_array_equal(indices, batched_indices[0])
    grad = max_pool2d_backward(np.ones_like(out), indices, x.shape)
    assert grad.shape == x.shape and grad.flags.owndata
    np.testing.assert_array_equal(grad, max_pool2d_backward(np.ones_like(batched),
                                                            batched_indices, x[None].shape)[0])
    avg = avg_pool2d(x, 2, 1, 1)
    assert avg.shape == (3, 8, 7) and avg.flags.owndata
    np.testing.assert_array_equal(avg, avg_pool2d(x[None], 2, 1, 1)[0])
    grad = avg_pool2d_backward(np.ones_like(avg), x.shape, 2, 1, 1)
    assert grad.shape == x.shape and grad.flags.owndata
    np.testing.assert_array_equal(grad, avg_pool2d_backward(np.ones_like(avg)[None],
                                                            x[None].shape, 2, 1, 1)[0])


def test_non_contiguous_input_is_not_modified(dtype, rng):
    x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    view = non_contiguous(x)
    before = view.copy()
    out, indices = max_pool2d(view, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(out, max_pool2d(x, 3, 2, 1))
    np.testing.assert_array_equal(avg_pool2d(view, 3, 2, 1), avg_pool2d(x, 3, 2, 1))
    grad_view = non_contiguous(np.ones_like(out))
    np.testing.assert_array_equal(max_pool2d_backward(grad_view, non_contiguous(indices), x.shape),
                                  max_pool2d_backward(np.ones_like(out), indices, x.shape))
    np.testing.assert_array_equal(avg_pool2d_backward(grad_view, x.shape, 3, 2, 1),
                                  avg_pool2d_backward(np.ones_like(out), x.shape, 3, 2, 1))
    np.testing.assert_array_equal(view, before)
    for result in (out, indices, avg_pool2d(view, 1)):
        assert result.flags.c_contiguous and not np.shares_memory(result, x)


def test_empty_batch():
    x = np.zeros((0, 3, 5, 5), dtype=np.float32)
    out, indices = max_pool2d(x, 2, return_indices=True)
    assert out.shape == indices.shape == (0, 3, 2, 2) and out.dtype == np.float32
    assert max_pool2d_backward(out, indices, x.shape).shape == x.shape
    assert avg_pool2d(x, 3, 1, 1).shape == (0, 3, 5, 5)
    assert avg_pool2d_backward(np.zeros((0, 3, 5, 5)), x.shape, 3, 1, 1).shape == x.shape


def test_dtype_conversion():
    ints = np.arange(16).reshape(1, 1, 4, 4)
    assert max_pool2d(ints, 2).dtype == np.float64
    np.testing.assert_array_equal(max_pool2d(ints, 2)[0, 0], [[5, 7], [13, 15]])
    assert avg_pool2d(ints.tolist(), 2).dtype == np.float64
    assert avg_pool2d(ints.astype(np.float16), 2).dtype == np.float32
    assert max_pool2d(ints.astype(bool), 2).dtype == np.float64
    assert max_pool2d_backward(np.ones((1, 1, 2, 2), np.float16), [[[[0, 1], [2, 3]]]],
                               (1, 1, 4, 4)).dtype == np.float32


# --------------------------------------------------------------------------------------------
# properties


@st.composite
def _geometries(draw, dilated):
    """A random pooling problem; padding within PyTorch's limit (at most kernel // 2)."""
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)),
             draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilated else (1, 1)
    limits = [k // 2 for k in kernel]
    pads = tuple(draw(st.integers(0, limits[axis // 2])) for axis in range(4))
    ceil_mode = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, kernel, stride, dilation, pads, ceil_mode, seed


def _fits(shape, kernel, stride, dilation, pads):
    """Whether the effective kernel fits the padded input along both axes."""
    return all(shape[2 + axis] + pads[2 * axis] + pads[2 * axis + 1]
               - dilation[axis] * (kernel[axis] - 1) - 1 >= 0 for axis in range(2))


@given(_geometries(dilated=True))
def test_max_pool2d_property(problem):
    shape, kernel, stride, dilation, pads, ceil_mode, seed = problem
    rng = np.random.default_rng(seed)
    x = _ties(shape, rng)
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    if not _fits(shape, kernel, stride, dilation, pads):
        with pytest.raises(ValueError, match="kernel is larger than the padded input"):
            max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
        return
    out, indices = max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, True)
    expected, expected_indices = max_pool2d_reference(x, kernel, stride, pads, dilation,
                                                      ceil_mode)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(indices, expected_indices)
    plane = shape[2] * shape[3]
    if indices.size and indices.max() < plane:  # see test_dilation_past_the_input...
        grad_output = rng.standard_normal(out.shape)
        assert_close(max_pool2d_backward(grad_output, indices, shape),
                     max_pool2d_backward_reference(grad_output, indices, shape))


@given(_geometries(dilated=False), st.sampled_from(DIVISORS))
def test_avg_pool2d_property(problem, divisor):
    shape, kernel, stride, _, pads, ceil_mode, seed = problem
    count_include_pad, divisor_override = divisor
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if not _fits(shape, kernel, stride, (1, 1), pads):
        with pytest.raises(ValueError, match="kernel is larger than the padded input"):
            avg_pool2d(x, *args)
        return
    out = avg_pool2d(x, *args)
    assert_close(out, avg_pool2d_reference(x, kernel, stride, pads, ceil_mode,
                                           count_include_pad, divisor_override))
    grad_output = rng.standard_normal(out.shape)
    assert_close(avg_pool2d_backward(grad_output, shape, *args),
                 avg_pool2d_backward_reference(grad_output, shape, kernel, stride, pads,
                                               count_include_pad, divisor_override))


# --------------------------------------------------------------------------------------------
# gradients by finite differences (float64)


def _numerical_gradient(loss, x, step=1e-6):
    grad = np.zeros_like(x)
    for position in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[position] += step
        minus[position] -= step
        grad[position] = (loss(plus) - loss(minus)) / (2 * step)
    return grad


@pytest.mark.parametrize("divisor", DIVISORS[:3], ids=["include", "exclude", "override"])
def test_avg_pool2d_gradient_by_finite_differences(divisor, rng):
    count_include_pad, divisor_override = divisor
    x = rng.standard_normal((1, 2, 6, 7))
    args = ((3, 2), (2, 2), ((1, 0), (1, 1)), True, count_include_pad, divisor_override)
    weights = rng.standard_normal(avg_pool2d(x, *args).shape)
    numerical = _numerical_gradient(lambda z: np.sum(avg_pool2d(z, *args) * weights), x)
    np.testing.assert_allclose(avg_pool2d_backward(weights, x.shape, *args), numerical,
                               rtol=1e-6, atol=1e-8)


def test_max_pool2d_gradient_by_finite_differences(rng):
    # Distinct values 0.01 apart: a 1e-6 step never changes which element wins a window.
    x = rng.permutation(2 * 6 * 7).reshape(1, 2, 6, 7) * 0.01
    args = (3, 2, 1, (1, 2), True)
    weights = rng.standard_normal(max_pool2d(x, *args).shape)
    numerical = _numerical_gradient(lambda z: np.sum(max_pool2d(z, *args) * weights), x)
    _, indices = max_pool2d(x, *args, return_indices=True)
    np.testing.assert_allclose(max_pool2d_backward(weights, indices, x.shape), numerical,
                               rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------------------------
# PyTorch


def _torch_padding(pads):
    top, bottom, left, right = pads
    assert top == bottom and left == right, "PyTorch pads symmetrically"
    return (top, left)


def _torch_accepts(kernel, pads):
    """PyTorch takes symmetric padding only, and for max pooling at most kernel // 2 (even
    where dilation makes half the effective kernel larger)."""
    top, bottom, left, right = pads
    kh, kw = _pair(kernel)
    return top == bottom and left == right and top <= kh // 2 and left <= kw // 2


TORCH_MAX = [(case, name) for case, name in zip(MAX_CASES, MAX_IDS)
             if _torch_accepts(case[1], case[5])]
TORCH_AVG = [(case, name) for case, name in zip(AVG_CASES, AVG_IDS)
             if _torch_accepts(case[1], case[4])]


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("case", [case for case, _ in TORCH_MAX],
                         ids=[name for _, name in TORCH_MAX])
def test_max_pool2d_matches_torch(torch, case, ceil_mode, dtype, rng):
    shape, kernel, stride, padding, dilation, pads = case
    x = _ties(shape, rng).astype(dtype)
    x[rng.random(shape) < 0.05] = np.nan
    x[rng.random(shape) < 0.05] = -np.inf
    tx = torch.from_numpy(x).requires_grad_()
    expected, expected_indices = torch.nn.functional.max_pool2d(
        tx, kernel, stride, _torch_padding(pads), dilation, ceil_mode, True)
    out, indices = max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, True)
    np.testing.assert_array_equal(out, expected.detach().numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    expected.backward(torch.from_numpy(grad_output))
    assert_close(max_pool2d_backward(grad_output, indices, x.shape), tx.grad.numpy())


@pytest.mark.parametrize("divisor", DIVISORS, ids=["include", "exclude", "override", "negative"])
@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("case", [case for case, _ in TORCH_AVG],
                         ids=[name for _, name in TORCH_AVG])
def test_avg_pool2d_matches_torch(torch, case, ceil_mode, divisor, dtype, rng):
    shape, kernel, stride, padding, pads = case
    count_include_pad, divisor_override = divisor
    x = rng.standard_normal(shape).astype(dtype)
    tx = torch.from_numpy(x).requires_grad_()
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    expected = torch.nn.functional.avg_pool2d(tx, kernel, stride, _torch_padding(pads),
                                              ceil_mode, count_include_pad, divisor_override)
    out = avg_pool2d(x, *args)
    # Same taps summed in the same order in the same type, then one division: bit for bit.
    np.testing.assert_array_equal(out, expected.detach().numpy())
    grad_output = rng.standard_normal(out.shape).astype(dtype)
    expected.backward(torch.from_numpy(grad_output))
    assert_close(avg_pool2d_backward(grad_output, x.shape, *args), tx.grad.numpy())


@given(_geometries(dilated=True), st.sampled_from(DIVISORS))
def test_matches_torch_property(problem, divisor):
    torch = pytest.importorskip("torch")
    shape, kernel, stride, dilation, pads, ceil_mode, seed = problem
    pads = (pads[0], pads[0], pads[2], pads[2])
    if not (_torch_accepts(kernel, pads) and _fits(shape, kernel, stride, dilation, pads)):
        return
    rng = np.random.default_rng(seed)
    x = _ties(shape, rng)
    x[rng.random(shape) < 0.05] = np.nan
    padding = _torch_padding(pads)
    expected, expected_indices = torch.nn.functional.max_pool2d(
        torch.from_numpy(x), kernel, stride, padding, dilation, ceil_mode, True)
    out, indices = max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, True)
    np.testing.assert_array_equal(out, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    x = rng.standard_normal(shape)
    expected = torch.nn.functional.avg_pool2d(torch.from_numpy(x), kernel, stride, padding,
                                              ceil_mode, *divisor)
    np.testing.assert_array_equal(avg_pool2d(x, kernel, stride, padding, ceil_mode, *divisor),
                                  expected.numpy())


def test_dilation_past_the_input_matches_torch(torch):
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    expected, expected_indices = torch.nn.functional.max_pool2d(
        torch.from_numpy(x), 2, 1, 1, 3, return_indices=True)
    out, indices = max_pool2d(x, 2, 1, 1, 3, return_indices=True)
    np.testing.assert_array_equal(out, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())


# --------------------------------------------------------------------------------------------
# threads


def test_results_do_not_depend_on_thread_count(dtype, rng):
    x = rng.standard_normal((2, 6, 64, 64)).astype(dtype)
    results = []
    for count in (1, 2):
        with fastconv.threads(count):
            # Large enough that every call below really splits its planes across the threads.
            assert _num_threads(12, x.size // 4 * 9) == count
            out, indices = max_pool2d(x, 3, 1, 1, return_indices=True)
            avg = avg_pool2d(x, 3, 2, 1, ceil_mode=True)
            results.append([
                out, indices, max_pool2d(x, 3, 2, 1, 2),
                max_pool2d_backward(out, indices, x.shape),  # overlapping windows accumulate
                avg, avg_pool2d_backward(avg, x.shape, 3, 2, 1, ceil_mode=True),
                avg_pool2d(x, 3, 1, 1), avg_pool2d_backward(x, x.shape, 3, 1, 1),
            ])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two, strict=True)


# --------------------------------------------------------------------------------------------
# errors

X = np.zeros((1, 2, 5, 5))


@pytest.mark.parametrize("call, error, match", [
    (lambda: max_pool2d(X, 6), ValueError, "kernel is larger than the padded input along height"),
    (lambda: avg_pool2d(X, (2, 8), padding=1), ValueError,
     "kernel is larger than the padded input along width"),
    (lambda: max_pool2d(X, 3, padding=2), ValueError, "padding along height must be at most"),
    (lambda: max_pool2d(X, 3, padding=((0, 0), (0, 2))), ValueError, "padding along width"),
    (lambda: max_pool2d(X, 3, dilation=2, padding=2), ValueError, r"at most half .*\(1\)"),
    (lambda: avg_pool2d(X, 2, padding=2), ValueError, "padding along height"),
    (lambda: max_pool2d(X, 2, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: max_pool2d(X, 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: avg_pool2d(X, 2, stride=(1, -1)), ValueError, "stride must be >= 1"),
    (lambda: max_pool2d(X, 0), ValueError, "kernel_size must be >= 1"),
    (lambda: max_pool2d(X, 2, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: max_pool2d(X, 1, stride=2**63), ValueError, "stride must be at most"),
    (lambda: max_pool2d(X, 1, dilation=2**31), ValueError, "dilation must be at most"),
    (lambda: avg_pool2d_backward(X, X.shape, 1, stride=(1, 2**64)), ValueError, "stride must"),
    (lambda: max_pool2d(X, 2.0), TypeError, "kernel_size"),
    (lambda: max_pool2d(X, True), TypeError, "kernel_size"),
    (lambda: max_pool2d(np.zeros((5, 5)), 2), ValueError, "x must be 4-D"),
    (lambda: avg_pool2d(np.zeros((1, 1, 1, 5, 5)), 2), ValueError, "x must be 4-D"),
    (lambda: max_pool2d(np.zeros((1, 0, 5, 5)), 2), ValueError, "x must have non-zero"),
    (lambda: avg_pool2d(np.zeros((1, 5, 0)), 1), ValueError, "x must have non-zero"),
    (lambda: max_pool2d(X.astype(complex), 2), TypeError, "x has unsupported dtype complex128"),
    (lambda: avg_pool2d(X.astype(object), 2), TypeError, "x has unsupported dtype object"),
    (lambda: avg_pool2d(X, 2, divisor_override=0), ValueError, "divisor_override must be nonzero"),
    (lambda: avg_pool2d(X, 2, divisor_override=2.0), TypeError, "divisor_override"),
    (lambda: avg_pool2d_backward(np.ones((1, 2, 2, 2)), X.shape, 2, divisor_override=0),
     ValueError, "divisor_override"),
    (lambda: avg_pool2d_backward(np.ones((1, 2, 3, 2)), X.shape, 2), ValueError,
     r"grad_output has spatial shape \(3, 2\).*gives \(2, 2\)"),
    (lambda: avg_pool2d_backward(np.ones((1, 3, 2, 2)), X.shape, 2), ValueError,
     "batch and channel"),
    (lambda: avg_pool2d_backward(np.ones((1, 2, 2, 2)), (2, 5, 5), 2), ValueError,
     "input_shape .* as many dimensions"),
    (lambda: avg_pool2d_backward(np.ones((1, 2, 2, 2)), "shape", 2), TypeError, "input_shape"),
    (lambda: avg_pool2d_backward(np.ones((1, 2, 2, 2), complex), X.shape, 2), TypeError,
     "grad_output has unsupported dtype"),
    (lambda: avg_pool2d_backward(np.ones((2, 2)), (2, 2), 2), ValueError, "grad_output must be"),
    (lambda: max_pool2d_backward(np.ones((1, 2, 2, 2)), np.full((1, 2, 2, 2), 25), X.shape),
     ValueError, r"indices must lie in \[0, 25\)"),
    (lambda: max_pool2d_backward(np.ones((1, 2, 2, 2)), np.full((1, 2, 2, 2), -1), X.shape),
     ValueError, "indices must lie in"),
    (lambda: max_pool2d_backward(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)), X.shape),
     TypeError, "indices must be an integer array"),
    (lambda: max_pool2d_backward(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2, 3), int), X.shape),
     ValueError, "indices has shape"),
    (lambda: max_pool2d_backward(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), int),
                                 (1, 2, 0, 5)), ValueError, "input_shape must have non-zero"),
    (lambda: max_pool2d_backward(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), int),
                                 (2, 2, 5, 5)), ValueError, "batch and channel"),
    (lambda: max_pool2d_backward(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), int),
                                 (1, 2, -5, 5)), ValueError, "must not be negative"),
])
def test_bad_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()
