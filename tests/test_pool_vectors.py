"""The pooling kernels' vector loops (src/_pool_impl.h), at the widths where they change.

Stride-1 average pooling sums each window in vector registers (forward) and gathers each input
element's quotients (backward); 2x2 windows run in full vectors, half vectors, an overlapping
last vector or the scalar loop, by the output width. None of this may change a bit: the
forward sum is PyTorch's (from 0, taps row-major, one division) and the backward sum is the
scatter's (output rows ascending, then kernel columns ascending). Both orders are written out
here in NumPy in the input's own dtype, so the comparisons are exact without PyTorch; PyTorch,
when installed, is compared exactly too (forward) or within tolerance (backward).
"""

import numpy as np
import pytest

import fastconv
from helpers import assert_close, outputs_at_isas
from reference.pool import (avg_divisor, avg_pool2d_backward_reference, avg_pool2d_reference,
                            max_pool2d_reference, pool_output_size)

# widths around the vector lengths (4 and 8 floats, 2 and 4 doubles; blocks of 4 vectors)
WIDTHS = (1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 31, 33, 40, 67)


def _divisors(shape, kernel, stride, pads, out_size, count_include_pad, divisor_override, dtype):
    out_h, out_w = out_size
    return np.array([[avg_divisor(i, j, shape[-2:], kernel, stride, pads, count_include_pad,
                                  divisor_override) for j in range(out_w)]
                     for i in range(out_h)], dtype=dtype)


def _geometry(shape, kernel, stride, pads, ceil_mode):
    out_h = pool_output_size(shape[-2], kernel[0], stride[0], pads[0], pads[1], 1, ceil_mode)
    out_w = pool_output_size(shape[-1], kernel[1], stride[1], pads[2], pads[3], 1, ceil_mode)
    return out_h, out_w


def _avg_in_order(x, kernel, stride, pads, ceil_mode, count_include_pad, divisor_override):
    """PyTorch's average in x's dtype: from 0, taps row-major, one division. A tap outside the
    input adds +0.0, which changes no bit of a sum started from +0.0."""
    (kh, kw), (sh, sw) = kernel, stride
    out_h, out_w = _geometry(x.shape, kernel, stride, pads, ceil_mode)
    padded = np.zeros(x.shape[:-2] + (pads[0] + x.shape[-2] + kh + sh * out_h,
                                      pads[2] + x.shape[-1] + kw + sw * out_w), x.dtype)
    padded[..., pads[0]:pads[0] + x.shape[-2], pads[2]:pads[2] + x.shape[-1]] = x
    total = np.zeros(x.shape[:-2] + (out_h, out_w), x.dtype)
    for p in range(kh):
        for q in range(kw):
            total += padded[..., p:p + sh * out_h:sh, q:q + sw * out_w:sw]
    return total / _divisors(x.shape, kernel, stride, pads, (out_h, out_w), count_include_pad,
                             divisor_override, x.dtype)


def _avg_backward_in_order(grad_output, shape, kernel, stride, pads, count_include_pad,
                           divisor_override):
    """The scatter in grad_output's dtype: per output row ascending, window rows, kernel
    columns ascending, each quotient added once to its input element (stride 1: one slice)."""
    (kh, kw), (sh, sw) = kernel, stride
    out_h, out_w = grad_output.shape[-2:]
    delta = grad_output / _divisors(shape, kernel, stride, pads, (out_h, out_w),
                                    count_include_pad, divisor_override, grad_output.dtype)
    grad_input = np.zeros(shape, grad_output.dtype)
    for i in range(out_h):
        for p in range(kh):
            row = i * sh - pads[0] + p
            if not 0 <= row < shape[-2]:
                continue
            for q in range(kw):
                cols = np.arange(out_w) * sw - pads[2] + q
                inside = (cols >= 0) & (cols < shape[-1])
                grad_input[..., row, cols[inside]] += delta[..., i, inside]
    return grad_input


def _cases():
    for width in WIDTHS:
        for kernel_w, pad_w in ((1, 0), (3, 1), (3, 0), (5, 2), (2, 1)):
            if width + 2 * pad_w < kernel_w:
                continue
            yield width, kernel_w, pad_w


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("width,kernel_w,pad_w", list(_cases()))
def test_stride1_average_keeps_the_order_of_its_sums(width, kernel_w, pad_w, ceil_mode, dtype,
                                                     rng):
    shape = (2, 3, 6, width)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 1, :] = 1e8  # large and small terms: a sum in another order rounds differently
    for kernel_h, stride_h, pad_h in ((3, 1, 1), (2, 2, 0), (3, 2, 1)):
        kernel, stride = (kernel_h, kernel_w), (stride_h, 1)
        pads = (pad_h, pad_h, pad_w, pad_w)
        for count_include_pad, divisor_override in ((True, None), (False, None), (True, -3)):
            args = (kernel, stride, (pad_h, pad_w), ceil_mode, count_include_pad,
                    divisor_override)
            got = fastconv.avg_pool2d(x, *args)
            expected = _avg_in_order(x, kernel, stride, pads, ceil_mode, count_include_pad,
                                     divisor_override)
            np.testing.assert_array_equal(got, expected)
            gy = rng.standard_normal(got.shape).astype(dtype)
            grad = fastconv.avg_pool2d_backward(gy, shape, *args)
            np.testing.assert_array_equal(
                grad, _avg_backward_in_order(gy, shape, kernel, stride, pads,
                                             count_include_pad, divisor_override))
    # and the slow float64 references, for the values themselves
    args = ((3, kernel_w), (1, 1), (1, pad_w), ceil_mode, False, None)
    got = fastconv.avg_pool2d(x[:, :, 2:], *args)
    assert_close(got, avg_pool2d_reference(x[:, :, 2:], (3, kernel_w), (1, 1),
                                           (1, 1, pad_w, pad_w), ceil_mode, False, None), dtype)
    gy = rng.standard_normal(got.shape).astype(dtype)
    assert_close(fastconv.avg_pool2d_backward(gy, x[:, :, 2:].shape, *args),
                 avg_pool2d_backward_reference(gy, x[:, :, 2:].shape, (3, kernel_w), (1, 1),
                                               (1, 1, pad_w, pad_w), False, None), dtype)


def test_stride1_average_matches_torch(torch, dtype, rng):
    for width in WIDTHS:
        x = rng.standard_normal((1, 5, 7, width)).astype(dtype)
        for kernel, padding in (((3, 3), 1), ((3, 1), (1, 0)), ((1, 5), (0, 2))):
            if width + 2 * (padding if isinstance(padding, int) else padding[1]) < kernel[1]:
                continue
            for count_include_pad in (True, False):
                tx = torch.from_numpy(x).requires_grad_()
                expected = torch.nn.functional.avg_pool2d(tx, kernel, 1, padding, False,
                                                          count_include_pad)
                got = fastconv.avg_pool2d(x, kernel, 1, padding, False, count_include_pad)
                np.testing.assert_array_equal(got, expected.detach().numpy())
                gy = rng.standard_normal(got.shape).astype(dtype)
                expected.backward(torch.from_numpy(gy))
                assert_close(fastconv.avg_pool2d_backward(gy, x.shape, kernel, 1, padding,
                                                          False, count_include_pad),
                             tx.grad.numpy())


def test_rows_no_window_holds_get_zero_gradient(dtype, rng):
    # stride 3 over windows of 2 rows: rows 2, 5 and 8 are in no window, nor is the last (11)
    x_shape = (1, 2, 12, 9)
    gy = rng.standard_normal((1, 2, 4, 7)).astype(dtype)
    grad = fastconv.avg_pool2d_backward(gy, x_shape, (2, 3), (3, 1), (0, 0))
    assert (grad[:, :, 2::3] == 0).all() and not np.signbit(grad[:, :, 2::3]).any()
    np.testing.assert_array_equal(
        grad, _avg_backward_in_order(gy, x_shape, (2, 3), (3, 1), (0, 0, 0, 0), True, None))


@pytest.mark.parametrize("width", [w for w in WIDTHS if w >= 2] + [26, 34])
@pytest.mark.parametrize("batch", [1, 3])
def test_2x2_windows_at_every_width(width, batch, dtype, rng):
    """Full, half, overlapping and scalar rows of the 2x2 kernels, odd sizes (a dropped last
    row and column), many planes; against the reference and the general path, bit for bit."""
    shape = (batch, 9, 5 if width % 2 else 6, width)
    x = rng.integers(-3, 4, shape).astype(dtype)
    x.flat[::7] = np.nan
    x.flat[::5] = -0.0
    x.flat[::11] = np.inf
    expected, expected_indices = max_pool2d_reference(x, (2, 2), (2, 2), (0, 0, 0, 0))
    got = fastconv.max_pool2d(x, 2)
    np.testing.assert_array_equal(got, expected)
    for path in fastconv.pool.POOL_PATHS:
        same = fastconv.max_pool2d(x, 2, _path=path)
        assert np.array_equal(same, got, equal_nan=True)
        assert (np.signbit(same) == np.signbit(got)).all()
        y, indices = fastconv.max_pool2d(x, 2, return_indices=True, _path=path)
        np.testing.assert_array_equal(indices, expected_indices)
    finite = np.nan_to_num(x, nan=1.5, posinf=2.5)
    avg = fastconv.avg_pool2d(finite, 2)
    np.testing.assert_array_equal(avg, fastconv.avg_pool2d(finite, 2, _path="planes"))
    np.testing.assert_array_equal(avg, _avg_in_order(finite, (2, 2), (2, 2), (0, 0, 0, 0),
                                                     False, True, None))
    assert_close(avg, avg_pool2d_reference(finite, (2, 2), (2, 2), (0, 0, 0, 0)), dtype)
    # unbatched: the same rows
    np.testing.assert_array_equal(fastconv.max_pool2d(finite[0], 2), fastconv.max_pool2d(
        finite, 2)[0])


def test_2x2_signed_zero_ties_keep_the_first():
    # lanes where the window's maximum is a tie of -0.0 and +0.0 in every position pair
    ties = np.array([[-0.0, 0.0], [0.0, -0.0]], np.float32)
    x = np.tile(ties, (2, 40))[np.newaxis, np.newaxis]  # 80 wide: full vectors
    for width in (80, 12, 6):
        y = fastconv.max_pool2d(np.ascontiguousarray(x[..., :width]), 2)
        assert np.signbit(y).all()  # -0.0, the first of the window in scan order


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_vector_paths_do_not_depend_on_threads(threads, rng):
    x = rng.standard_normal((3, 7, 30, 46)).astype(np.float32)
    with fastconv.threads(1):
        expected = (fastconv.avg_pool2d(x, 3, 1, 1), fastconv.avg_pool2d_backward(
            x[..., :30, :46], x.shape, 3, 1, 1), fastconv.max_pool2d(x, 2),
            fastconv.avg_pool2d(x, 2))
    with fastconv.threads(threads):
        got = (fastconv.avg_pool2d(x, 3, 1, 1), fastconv.avg_pool2d_backward(
            x[..., :30, :46], x.shape, 3, 1, 1), fastconv.max_pool2d(x, 2),
            fastconv.avg_pool2d(x, 2))
    for a, b in zip(got, expected):
        assert a.tobytes() == b.tobytes()


_SCRIPT = """
import sys, numpy as np, fastconv
from fastconv import _pool
rng = np.random.default_rng(3)
out = []
for dtype in (np.float32, np.float64):
    for width in (3, 6, 12, 13, 37, 70):
        x = rng.standard_normal((2, 3, 9, width)).astype(dtype)
        x.flat[::9] = np.nan
        x.flat[::13] = -0.0
        out.append(fastconv.max_pool2d(x, 2))
        out.append(fastconv.avg_pool2d(x, 2))
        for k, p in ((3, 1), (5, 2), (2, 0)):
            a = fastconv.avg_pool2d(x, k, 1, p, count_include_pad=False)
            out += [a, fastconv.avg_pool2d_backward(a, x.shape, k, 1, p,
                                                    count_include_pad=False)]
np.savez(sys.argv[1], *out)
print(_pool.ISA)
"""


def test_every_instruction_set_gives_the_same_bits(tmp_path):
    results = outputs_at_isas(_SCRIPT, tmp_path, ("generic", "avx2"))
    assert results["avx2"][1] == results["generic"][1]


def test_a_kept_window_is_never_reused_for_arguments_the_checks_refuse():
    x = np.ones((1, 1, 4, 4), np.float32)
    expected = fastconv.max_pool2d(x, 1)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, 1), expected)  # (now kept)
    for bad in (True, 1.0, (True, 1), np.float64(1.0)):
        with pytest.raises(TypeError):
            fastconv.max_pool2d(x, bad)
        with pytest.raises(TypeError):
            fastconv.avg_pool2d(x, 1, bad)
    fastconv.avg_pool2d(x, 2, 2, 0, True)
    fastconv.avg_pool2d(x, 2, 2, 0, True)
    with pytest.raises(ValueError):
        fastconv.avg_pool2d(x, 2, 2, 2)  # padding above kernel // 2, kept or not
    with pytest.raises(ValueError):
        fastconv.avg_pool2d(np.ones((1, 1, 1, 1), np.float32), 2, 2, 0)  # same key but size
    # the same arguments over another size: that size's window, not the kept one
    assert fastconv.avg_pool2d(np.ones((1, 1, 6, 6), np.float32), 2, 2, 0).shape == (1, 1, 3, 3)
    assert fastconv.avg_pool2d(x, 2, 2, 0, True).shape == (1, 1, 2, 2)
