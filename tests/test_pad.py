"""pad2d and pad2d_backward: NumPy references, finite differences, PyTorch, threads, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import pad2d, pad2d_backward
from fastconv.pad import _num_threads, pad2d_backward_impl, pad2d_impl
from helpers import assert_close, non_contiguous
from reference.pad import pad2d_backward_reference, pad2d_reference

MODES = ["constant", "reflect", "replicate", "circular"]
ALIASES = {"edge": "replicate", "wrap": "circular"}
ALL_MODES = MODES + list(ALIASES)

# (padding argument, (top, bottom, left, right)); all within every mode's limits for 5 x 6.
PADDINGS = [
    (0, (0, 0, 0, 0)),
    (1, (1, 1, 1, 1)),
    ((2, 1), (2, 2, 1, 1)),
    (((0, 3), (2, 0)), (0, 3, 2, 0)),
    (((4, 1), (3, 5)), (4, 1, 3, 5)),
    ([[3, 0], [0, 4]], (3, 0, 0, 4)),
    (np.array([[1, 2], [1, 0]]), (1, 2, 1, 0)),
]
PADDING_IDS = ["zero", "int", "pair", "nested", "nested-max", "lists", "ndarray"]
SHAPE = (2, 3, 5, 6)


def _fill(mode):
    # Exactly representable in float32, so forward results can be compared exactly.
    return -1.25 if mode == "constant" else 0.0


def _torch_pads(pads):
    top, bottom, left, right = pads
    return (left, right, top, bottom)  # PyTorch lists the last axis first


# --- against the NumPy reference -------------------------------------------------------------


@pytest.mark.parametrize("padding, pads", PADDINGS, ids=PADDING_IDS)
@pytest.mark.parametrize("mode", ALL_MODES)
def test_forward_matches_reference(dtype, mode, padding, pads, rng):
    x = rng.standard_normal(SHAPE).astype(dtype)
    result = pad2d(x, padding, mode, value=_fill(mode))
    assert result.dtype == dtype
    assert result.flags.c_contiguous
    # Padding only copies values, so the result is exact in either dtype.
    np.testing.assert_array_equal(result, pad2d_reference(x, pads, mode, _fill(mode)))


@pytest.mark.parametrize("padding, pads", PADDINGS, ids=PADDING_IDS)
@pytest.mark.parametrize("mode", ALL_MODES)
def test_backward_matches_reference(dtype, mode, padding, pads, rng):
    top, bottom, left, right = pads
    grad = rng.standard_normal(SHAPE[:2] + (5 + top + bottom, 6 + left + right)).astype(dtype)
    result = pad2d_backward(grad, padding, mode)
    assert result.shape == SHAPE
    assert result.dtype == dtype
    assert result.flags.c_contiguous
    assert_close(result, pad2d_backward_reference(grad, pads, mode), dtype)


def test_edge_and_wrap_are_aliases(rng):
    x = rng.standard_normal(SHAPE)
    for alias, mode in ALIASES.items():
        np.testing.assert_array_equal(pad2d(x, 2, alias), pad2d(x, 2, mode))
        grad = rng.standard_normal(SHAPE[:2] + (9, 10))
        np.testing.assert_array_equal(pad2d_backward(grad, 2, alias),
                                      pad2d_backward(grad, 2, mode))


@pytest.mark.parametrize("mode", MODES)
def test_3d_input_gives_3d_result(dtype, mode, rng):
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    pads = (1, 2, 3, 0)
    result = pad2d(x, ((1, 2), (3, 0)), mode)
    assert result.shape == (3, 7, 8) and result.flags.c_contiguous
    np.testing.assert_array_equal(result, pad2d_reference(x, pads, mode))
    grad = rng.standard_normal((3, 7, 8)).astype(dtype)
    grad_input = pad2d_backward(grad, ((1, 2), (3, 0)), mode)
    assert grad_input.shape == (3, 4, 5) and grad_input.flags.c_contiguous
    assert_close(grad_input, pad2d_backward_reference(grad, pads, mode), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_and_fortran_inputs_are_not_modified(dtype, mode, rng):
    x = rng.standard_normal(SHAPE).astype(dtype)
    expected = pad2d_reference(x, (2, 1, 3, 2), mode)
    for view in (non_contiguous(x), np.asfortranarray(x)):
        before = view.copy()
        result = pad2d(view, ((2, 1), (3, 2)), mode)
        np.testing.assert_array_equal(view, before)
        np.testing.assert_array_equal(result, expected)
        assert result.flags.c_contiguous
    grad = rng.standard_normal((2, 3, 8, 11)).astype(dtype)
    expected = pad2d_backward_reference(grad, (2, 1, 3, 2), mode)
    view = non_contiguous(grad)
    before = view.copy()
    assert_close(pad2d_backward(view, ((2, 1), (3, 2)), mode), expected, dtype)
    np.testing.assert_array_equal(view, before)


def test_results_are_fresh_arrays(rng):
    x = rng.standard_normal(SHAPE)
    for mode in MODES:
        result = pad2d(x, 0, mode)
        assert not np.shares_memory(result, x)
        result[...] = 7.0
        assert not (x == 7.0).any()
        assert not np.shares_memory(pad2d_backward(x, 0, mode), x)


@pytest.mark.parametrize("mode", MODES)
def test_empty_batch(dtype, mode):
    x = np.zeros((0, 3, 4, 5), dtype=dtype)
    result = pad2d(x, ((1, 2), (3, 1)), mode)
    assert result.shape == (0, 3, 7, 9) and result.dtype == dtype
    grad_input = pad2d_backward(result, ((1, 2), (3, 1)), mode)
    assert grad_input.shape == (0, 3, 4, 5) and grad_input.dtype == dtype


def test_empty_height_with_constant_and_circular():
    # As PyTorch: constant pads an empty axis, circular accepts it with zero padding on it.
    x = np.zeros((1, 2, 0, 3))
    np.testing.assert_array_equal(pad2d(x, 1, value=2.0), np.full((1, 2, 2, 5), 2.0))
    assert pad2d(x, ((0, 0), (1, 1)), "circular").shape == (1, 2, 0, 5)
    assert pad2d(np.zeros((1, 2, 3, 0)), 1).shape == (1, 2, 5, 2)


def test_dtype_conversions():
    ints = np.arange(12).reshape(1, 3, 4)
    result = pad2d(ints, 1, "reflect")
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, pad2d_reference(ints, (1, 1, 1, 1), "reflect"))
    assert pad2d(ints.astype(bool), 1).dtype == np.float64
    assert pad2d(ints.astype(np.float16), 1).dtype == np.float32
    assert pad2d(ints.tolist(), 1, "edge").dtype == np.float64
    assert pad2d_backward(ints, 1).dtype == np.float64
    assert pad2d_backward(ints.astype(np.float16), 1, "wrap").dtype == np.float32


def test_fill_value_nan_and_none():
    x = np.ones((1, 1, 2, 2), dtype=np.float32)
    assert np.isnan(pad2d(x, 1, value=np.nan)[0, 0, 0]).all()
    np.testing.assert_array_equal(pad2d(x, 1, value=None), pad2d(x, 1))
    # value 0 (or None) is accepted with the other modes, as PyTorch.
    np.testing.assert_array_equal(pad2d(x, 1, "reflect", value=0), pad2d(x, 1, "reflect"))
    # NaN and inf in the input propagate through every mode and into the gradient.
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 1, 1] = np.inf
    for mode in MODES:
        result = pad2d(x, 1, mode)
        assert np.isnan(result).sum() == (np.isnan(pad2d_reference(x, (1,) * 4, mode))).sum()
        assert np.isnan(pad2d_backward(result, 1, mode)[0, 0, 0, 0])


def test_backward_keeps_negative_zero():
    # The gradient of the interior is assigned, not added to 0.0: a crop keeps -0.0.
    grad = np.full((1, 1, 4, 4), -0.0)
    for mode in MODES:
        assert np.signbit(pad2d_backward(grad, 1, mode)).all()


# --- internal entry points used by the convolution wrapper -----------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_impl_functions(dtype, mode, rng):
    x = rng.standard_normal(SHAPE).astype(dtype)
    pads = (1, 3, 2, 0)
    result = pad2d_impl(x, pads, mode, _fill(mode))
    np.testing.assert_array_equal(result, pad2d_reference(x, pads, mode, _fill(mode)))
    assert_close(pad2d_backward_impl(result, pads, mode),
                 pad2d_backward_reference(result, pads, mode), dtype)


def test_impl_functions_check_size_limits():
    x = np.zeros((1, 1, 3, 4))
    with pytest.raises(ValueError, match=r"padding \(3, 0\) along height .*\(3\).*reflect"):
        pad2d_impl(x, (3, 0, 0, 0), "reflect")
    with pytest.raises(ValueError, match=r"padding \(0, 5\) along width .*\(4\).*circular"):
        pad2d_impl(x, (0, 0, 0, 5), "circular")
    with pytest.raises(ValueError, match=r"padding \(0, 4\) along width .*\(4\).*reflect"):
        pad2d_backward_impl(np.zeros((1, 1, 3, 8)), (0, 0, 0, 4), "reflect")
    with pytest.raises(ValueError, match="input height would be 0"):
        pad2d_backward_impl(np.zeros((1, 1, 3, 8)), (2, 1, 0, 0), "constant")


# --- properties ------------------------------------------------------------------------------


@st.composite
def pad_cases(draw):
    mode = draw(st.sampled_from(ALL_MODES))
    canonical = ALIASES.get(mode, mode)
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)),
             draw(st.integers(1, 7)), draw(st.integers(1, 7)))

    def pad_for(size):
        limit = {"reflect": size - 1, "circular": size}.get(canonical, 9)
        return draw(st.integers(0, limit))

    pads = (pad_for(shape[2]), pad_for(shape[2]), pad_for(shape[3]), pad_for(shape[3]))
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    unbatched = shape[0] == 1 and draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return mode, shape[1:] if unbatched else shape, pads, dtype, seed


@given(pad_cases())
def test_random_cases_match_reference(case):
    mode, shape, pads, dtype, seed = case
    rng = np.random.default_rng(seed)
    padding = (pads[:2], pads[2:])
    x = rng.standard_normal(shape).astype(dtype)
    result = pad2d(x, padding, mode, value=_fill(mode))
    np.testing.assert_array_equal(result, pad2d_reference(x, pads, mode, _fill(mode)))
    grad = rng.standard_normal(result.shape).astype(dtype)
    grad_input = pad2d_backward(grad, padding, mode)
    assert grad_input.shape == x.shape and grad_input.dtype == dtype
    assert_close(grad_input, pad2d_backward_reference(grad, pads, mode), dtype)
    # pad2d_backward is the adjoint of pad2d: <pad(x), g> = <x, pad_backward(g)>.
    if mode != "constant":
        forward = float(np.dot(result.ravel().astype(np.float64), grad.ravel()))
        adjoint = float(np.dot(x.ravel().astype(np.float64), grad_input.ravel()))
        assert adjoint == pytest.approx(forward, rel=1e-4 if dtype == np.float32 else 1e-10,
                                        abs=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_backward_by_finite_differences(mode, rng):
    x = rng.standard_normal((1, 2, 4, 5))
    padding = ((1, 3), (4, 2))
    weights = rng.standard_normal(pad2d(x, padding, mode).shape)

    def functional(values):  # a random linear functional of the padded array
        return float(np.sum(weights * pad2d(values, padding, mode)))

    step = 1e-3
    numeric = np.empty_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (functional(plus) - functional(minus)) / (2 * step)
    np.testing.assert_allclose(pad2d_backward(weights, padding, mode), numeric,
                               rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("mode", MODES)
def test_thread_count_does_not_change_results(mode, rng):
    x = rng.standard_normal((3, 5, 40, 40))
    padding = ((3, 5), (7, 2))
    grad = rng.standard_normal((3, 5, 48, 49))
    results = []
    for count in (1, 2):
        with fastconv.threads(count):
            # The arrays are large enough that the wrapper really splits them across threads.
            assert _num_threads(15, x.size) == count
            results.append((pad2d(x, padding, mode, value=_fill(mode)).tobytes(),
                            pad2d_backward(grad, padding, mode).tobytes()))
    assert results[0] == results[1]


# --- against PyTorch -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 2, 3, 1), (2, 4, 0, 5), (4, 0, 5, 5)])
def test_matches_torch(torch, dtype, mode, pads, rng):
    import torch.nn.functional as F

    if mode == "reflect" and max(pads) >= 5:
        pads = tuple(min(pad, 3) for pad in pads)
    x = rng.standard_normal((2, 3, 5, 6)).astype(dtype)
    tensor = torch.tensor(x, requires_grad=True)
    value = 0.1 if mode == "constant" else None  # 0.1 is inexact: the rounding must match too
    expected = F.pad(tensor, _torch_pads(pads), mode=mode, value=value)
    result = pad2d(x, (pads[:2], pads[2:]), mode, value=value)
    np.testing.assert_array_equal(result, expected.detach().numpy())
    grad = rng.standard_normal(result.shape).astype(dtype)
    expected.backward(torch.tensor(grad))
    assert_close(pad2d_backward(grad, (pads[:2], pads[2:]), mode), tensor.grad.numpy(), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_unbatched_and_large_pads(torch, mode, rng):
    import torch.nn.functional as F

    # Pads at PyTorch's limits (reflect: size - 1, circular: size) and far beyond the size
    # where PyTorch allows it (constant, replicate).
    pads = {"reflect": (2, 2, 3, 3), "circular": (3, 3, 4, 4)}.get(mode, (9, 7, 11, 8))
    x = rng.standard_normal((2, 3, 4))
    tensor = torch.tensor(x, requires_grad=True)
    expected = F.pad(tensor, _torch_pads(pads), mode=mode)
    result = pad2d(x, (pads[:2], pads[2:]), mode)
    np.testing.assert_array_equal(result, expected.detach().numpy())
    grad = rng.standard_normal(result.shape)
    expected.backward(torch.tensor(grad))
    assert_close(pad2d_backward(grad, (pads[:2], pads[2:]), mode), tensor.grad.numpy())


@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (2, 1, 1, 2)])
@pytest.mark.parametrize("mode", MODES)
def test_accepts_and_refuses_the_same_pads_as_torch(torch, mode, shape):
    import torch.nn.functional as F

    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    tensor = torch.tensor(x)
    height, width = shape[2:]
    height_pads = sorted({0, height - 1, height, height + 1} - {-1})
    width_pads = sorted({0, width - 1, width, width + 1} - {-1})
    for top in height_pads:
        for bottom in height_pads:
            for left in width_pads:
                for right in width_pads:
                    pads = (top, bottom, left, right)
                    try:
                        expected = F.pad(tensor, _torch_pads(pads), mode=mode).numpy()
                    except RuntimeError:
                        with pytest.raises(ValueError, match="padding"):
                            pad2d(x, (pads[:2], pads[2:]), mode)
                        continue
                    np.testing.assert_array_equal(pad2d(x, (pads[:2], pads[2:]), mode), expected)


# --- bad input -------------------------------------------------------------------------------

BAD_PAD2D = [
    (dict(mode="zeros"), ValueError, "mode"),
    (dict(mode="Reflect"), ValueError, "mode"),
    (dict(mode=None), ValueError, "mode"),
    (dict(padding=-2), ValueError, "crops more than the height 3"),
    (dict(padding=((0, 0), (2, -7))), ValueError, "crops more than the width 6"),
    (dict(padding=(1, 2, 3)), ValueError, "padding"),
    (dict(padding=((1, 2), (3,))), ValueError, "padding"),
    (dict(padding=((1, 2), 3)), TypeError, "padding"),
    (dict(padding="same"), TypeError, "padding"),
    (dict(padding=1.5), TypeError, "padding"),
    (dict(padding=None), TypeError, "padding"),
    (dict(mode="reflect", padding=((3, 0), (0, 0))), ValueError, r"\(3, 0\).*height \(3\)"),
    (dict(mode="reflect", padding=((0, 0), (1, 4))), ValueError, r"\(1, 4\).*width \(4\)"),
    (dict(mode="circular", padding=((0, 4), (0, 0))), ValueError, r"\(0, 4\).*height \(3\)"),
    (dict(mode="wrap", padding=((0, 0), (5, 0))), ValueError, r"\(5, 0\).*width \(4\)"),
    (dict(mode="reflect", value=1.0), ValueError, "value"),
    (dict(value=1j), TypeError, "value"),
    (dict(value="0"), TypeError, "value"),
    (dict(x=np.zeros((1, 1, 1, 3, 4))), ValueError, "x must be 4-D"),
    (dict(x=np.zeros((1, 1, 3, 4), dtype=complex)), TypeError, "x"),
    (dict(x=np.zeros((1, 1, 3, 4), dtype=object)), TypeError, "x"),
    (dict(x=np.full((1, 1, 3, 4), "a")), TypeError, "x"),
    (dict(x=np.zeros((1, 1, 0, 4)), mode="replicate"), ValueError, "height >= 1, got 0"),
    (dict(x=np.zeros((1, 1, 3, 0)), mode="reflect", padding=0), ValueError, "width >= 1, got 0"),
    (dict(x=np.zeros((1, 1, 0, 4)), mode="circular"), ValueError, r"padding \(1, 1\).*height"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_PAD2D)
def test_pad2d_refuses_bad_input(kwargs, error, message):
    arguments = dict(x=np.zeros((1, 1, 3, 4)), padding=1, mode="constant")
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        pad2d(**arguments)


BAD_BACKWARD = [
    (dict(mode="zeros"), ValueError, "mode"),
    (dict(padding="valid"), TypeError, "padding"),
    (dict(padding=((2, 3), (0, 0))), ValueError, "grad_output height 5 .* would be 0"),
    (dict(padding=((0, 0), (4, 4))), ValueError, "grad_output width 6 .* would be -2"),
    (dict(padding=((2, 2), (0, 0)), mode="reflect"), ValueError, r"\(2, 2\).*height \(1\)"),
    (dict(padding=((0, 0), (4, 0)), mode="circular"), ValueError, r"\(4, 0\).*width \(2\)"),
    (dict(grad_output=np.zeros((1, 1, 1, 5, 6))), ValueError, "grad_output must be 4-D"),
    (dict(grad_output=np.zeros((1, 1, 5, 6), dtype=np.complex64)), TypeError, "grad_output"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_BACKWARD)
def test_pad2d_backward_refuses_bad_input(kwargs, error, message):
    arguments = dict(grad_output=np.zeros((1, 1, 5, 6)), padding=1, mode="constant")
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        pad2d_backward(**arguments)


def test_result_too_large_is_refused():
    with pytest.raises((ValueError, MemoryError), match="padding"):
        pad2d(np.zeros((1, 1, 2, 2)), 2**62)
