"""Slow, obviously-correct references for the network building blocks: batch norm, transposed
convolution, adaptive pooling and max unpooling, forward and backward.

Written from the definitions with explicit loops (or plain NumPy reductions) in float64, sharing
no code with fastconv.
"""

import math

import numpy as np


def batch_norm_reference(x, mean, var, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * weight + bias, per channel (axis 1)."""
    x = np.asarray(x, dtype=np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + eps)
            * np.reshape(weight, shape) + np.reshape(bias, shape))


def batch_statistics_reference(x):
    """The batch mean and biased variance per channel."""
    x = np.asarray(x, dtype=np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))) ** 2).mean(axis=axes)
    return mean, var


def batch_norm_backward_reference(grad_output, x, weight, eps):
    """Training-mode gradients, from the chain rule written out term by term."""
    x = np.asarray(x, dtype=np.float64)
    gy = np.asarray(grad_output, dtype=np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    count = x.size // x.shape[1]
    mean, var = batch_statistics_reference(x)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    grad_xhat = gy * np.reshape(weight, shape)
    grad_var = (grad_xhat * (x - mean.reshape(shape))).sum(axis=axes) * -0.5 * invstd ** 3
    grad_mean = -(grad_xhat * invstd.reshape(shape)).sum(axis=axes)
    grad_input = (grad_xhat * invstd.reshape(shape)
                  + grad_var.reshape(shape) * 2 * (x - mean.reshape(shape)) / count
                  + grad_mean.reshape(shape) / count)
    return grad_input, (gy * xhat).sum(axis=axes), gy.sum(axis=axes)


def conv_transpose2d_reference(x, weight, bias, stride, padding, output_padding, groups,
                               dilation):
    """Scatter each input element times its kernel into the (unpadded) output."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    batch, in_channels, height, width = x.shape
    _, out_per_group, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    out_h = (height - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    in_per_group = in_channels // groups
    out = np.zeros((batch, out_per_group * groups, out_h, out_w))
    for n in range(batch):
        for c in range(in_channels):
            group = c // in_per_group
            for i in range(height):
                for j in range(width):
                    for o in range(out_per_group):
                        for p in range(kh):
                            for q in range(kw):
                                row, col = i * sh - ph + p * dh, j * sw - pw + q * dw
                                if 0 <= row < out_h and 0 <= col < out_w:
                                    out[n, group * out_per_group + o, row, col] += (
                                        x[n, c, i, j] * weight[c, o, p, q])
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1)
    return out


def _window(index, in_size, out_size):
    return (index * in_size) // out_size, math.ceil((index + 1) * in_size / out_size)


def adaptive_avg_pool2d_reference(x, output_size):
    x = np.asarray(x, dtype=np.float64)
    out_h, out_w = output_size
    out = np.empty(x.shape[:2] + (out_h, out_w))
    for i in range(out_h):
        h0, h1 = _window(i, x.shape[2], out_h)
        for j in range(out_w):
            w0, w1 = _window(j, x.shape[3], out_w)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def adaptive_avg_pool2d_backward_reference(grad_output, input_shape):
    gy = np.asarray(grad_output, dtype=np.float64)
    grad_input = np.zeros(input_shape)
    out_h, out_w = gy.shape[2:]
    for i in range(out_h):
        h0, h1 = _window(i, input_shape[2], out_h)
        for j in range(out_w):
            w0, w1 = _window(j, input_shape[3], out_w)
            grad_input[:, :, h0:h1, w0:w1] += (gy[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[
                :, :, None, None]
    return grad_input


def adaptive_max_pool2d_reference(x, output_size):
    """(out, flat indices): the first maximum of each window in row-major order."""
    x = np.asarray(x, dtype=np.float64)
    out_h, out_w = output_size
    out = np.empty(x.shape[:2] + (out_h, out_w))
    indices = np.empty(out.shape, dtype=np.int64)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(out_h):
                h0, h1 = _window(i, x.shape[2], out_h)
                for j in range(out_w):
                    w0, w1 = _window(j, x.shape[3], out_w)
                    best, where = -np.inf, None
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            if where is None or x[n, c, h, w] > best:
                                best, where = x[n, c, h, w], h * x.shape[3] + w
                    out[n, c, i, j], indices[n, c, i, j] = best, where
    return out, indices


def max_unpool2d_reference(x, indices, output_hw):
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape[:2] + tuple(output_hw))
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = out[n, c].reshape(-1)
            for value, index in zip(x[n, c].reshape(-1), np.asarray(indices)[n, c].reshape(-1)):
                plane[index] = value
    return out
