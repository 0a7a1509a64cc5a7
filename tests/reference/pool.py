"""Slow, obviously-correct references for max and average pooling, forward and backward.

Written from the definitions with explicit loops over output positions and window taps, in
float64, sharing no code with fastconv: the output size is PyTorch's formula, the window is
clipped by plain comparisons, and the tie/NaN rule is PyTorch's ``val > max || isnan(val)``.
``pads`` is always (top, bottom, left, right).
"""

import math

import numpy as np


def pool_output_size(size, kernel, stride, pad_before, pad_after, dilation, ceil_mode):
    """One axis of PyTorch's ``pooling_output_shape``."""
    span = size + pad_before + pad_after - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = math.ceil(span / stride) + 1
        # The last window must start inside the input or its leading padding.
        if (out - 1) * stride >= size + pad_before:
            out -= 1
    else:
        out = span // stride + 1
    return out


def _batched(x):
    x = np.asarray(x, dtype=np.float64)
    return (x[None], True) if x.ndim == 3 else (x, False)


def max_pool2d_reference(x, kernel, stride, pads, dilation=(1, 1), ceil_mode=False):
    """Return (out, indices): per window, the first maximum in row-major tap order; a NaN
    always replaces the running maximum (so the last NaN wins); an all -inf window, or one
    with no tap inside the input, reports its first tap at or after the top-left corner."""
    x, unbatched = _batched(x)
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    top, bottom, left, right = pads
    out_h = pool_output_size(height, kh, sh, top, bottom, dh, ceil_mode)
    out_w = pool_output_size(width, kw, sw, left, right, dw, ceil_mode)
    out = np.empty((n_batch, channels, out_h, out_w))
    indices = np.empty((n_batch, channels, out_h, out_w), dtype=np.int64)
    for n in range(n_batch):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    row0, col0 = i * sh - top, j * sw - left
                    first_row, first_col = row0, col0
                    while first_row < 0:
                        first_row += dh
                    while first_col < 0:
                        first_col += dw
                    best, best_index = -np.inf, first_row * width + first_col
                    for p in range(kh):
                        for q in range(kw):
                            row, col = row0 + p * dh, col0 + q * dw
                            if not (0 <= row < height and 0 <= col < width):
                                continue  # padding is -inf: never selected
                            value = x[n, c, row, col]
                            if value > best or np.isnan(value):
                                best, best_index = value, row * width + col
                    out[n, c, i, j] = best
                    indices[n, c, i, j] = best_index
    if unbatched:
        return out[0], indices[0]
    return out, indices


def max_pool2d_backward_reference(grad_output, indices, input_shape):
    """grad_input[n, c].flat[indices[n, c, i, j]] += grad_output[n, c, i, j]."""
    grad_output, unbatched = _batched(grad_output)
    indices = np.asarray(indices).reshape(grad_output.shape)
    shape = tuple(input_shape) if not unbatched else (1,) + tuple(input_shape)
    grad_input = np.zeros(shape)
    for n in range(shape[0]):
        for c in range(shape[1]):
            plane = grad_input[n, c].reshape(-1)  # a view: writes land in grad_input
            for i in range(grad_output.shape[2]):
                for j in range(grad_output.shape[3]):
                    plane[indices[n, c, i, j]] += grad_output[n, c, i, j]
    return grad_input[0] if unbatched else grad_input


def avg_divisor(i, j, size, kernel, stride, pads, count_include_pad, divisor_override):
    """PyTorch's divisor for output (i, j): the window clipped to the padded input (counting
    padding) or to the input itself (not counting it), unless overridden."""
    if divisor_override is not None:
        return divisor_override
    (height, width), (kh, kw), (sh, sw) = size, kernel, stride
    top, bottom, left, right = pads
    row0, col0 = i * sh - top, j * sw - left
    row1, col1 = min(row0 + kh, height + bottom), min(col0 + kw, width + right)
    if count_include_pad:
        return (row1 - row0) * (col1 - col0)
    return (min(row1, height) - max(row0, 0)) * (min(col1, width) - max(col0, 0))


def avg_pool2d_reference(x, kernel, stride, pads, ceil_mode=False, count_include_pad=True,
                         divisor_override=None):
    """Sum of the window's taps inside the input, divided by ``avg_divisor``."""
    x, unbatched = _batched(x)
    n_batch, channels, height, width = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    top, bottom, left, right = pads
    out_h = pool_output_size(height, kh, sh, top, bottom, 1, ceil_mode)
    out_w = pool_output_size(width, kw, sw, left, right, 1, ceil_mode)
    out = np.empty((n_batch, channels, out_h, out_w))
    for n in range(n_batch):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0
                    for p in range(kh):
                        for q in range(kw):
                            row, col = i * sh - top + p, j * sw - left + q
                            if 0 <= row < height and 0 <= col < width:
                                total += x[n, c, row, col]
                    out[n, c, i, j] = total / avg_divisor(
                        i, j, (height, width), kernel, stride, pads, count_include_pad,
                        divisor_override,
                    )
    return out[0] if unbatched else out


def avg_pool2d_backward_reference(grad_output, input_shape, kernel, stride, pads,
                                  count_include_pad=True, divisor_override=None):
    """Each grad_output element, over its divisor, added to every input tap of its window."""
    grad_output, unbatched = _batched(grad_output)
    shape = tuple(input_shape) if not unbatched else (1,) + tuple(input_shape)
    height, width = shape[2:]
    (kh, kw), (sh, sw) = kernel, stride
    top, left = pads[0], pads[2]
    grad_input = np.zeros(shape)
    for n in range(shape[0]):
        for c in range(shape[1]):
            for i in range(grad_output.shape[2]):
                for j in range(grad_output.shape[3]):
                    share = grad_output[n, c, i, j] / avg_divisor(
                        i, j, (height, width), kernel, stride, pads, count_include_pad,
                        divisor_override,
                    )
                    for p in range(kh):
                        for q in range(kw):
                            row, col = i * sh - top + p, j * sw - left + q
                            if 0 <= row < height and 0 <= col < width:
                                grad_input[n, c, row, col] += share
    return grad_input[0] if unbatched else grad_input
