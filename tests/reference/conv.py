"""Slow, obviously-correct NumPy references for convolution, written from the definitions.

Everything is computed in float64 with explicit loops over output positions; the only
vectorisation is the sum over one window (and over the batch), so each line can be checked
against the formula in SPEC.md by eye.
"""

import numpy as np

NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                  "circular": "wrap"}


def pad_ref(x, pads, mode="zeros"):
    """Pad the last two axes by (top, bottom, left, right) with numpy.pad."""
    top, bottom, left, right = pads
    widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, widths, mode=NUMPY_PAD_MODE[mode])


def pad_backward_ref(grad_padded, in_hw, pads, mode="zeros"):
    """Gradient of pad_ref: every padded pixel sends its gradient to the input pixel it copies."""
    height, width = in_hw
    source = pad_ref(np.arange(height * width).reshape(height, width), pads, mode)
    if mode == "zeros":  # constant padding copies nothing: mark padded cells as "no source"
        source = np.full(source.shape, -1)
        top, _, left, _ = pads
        source[top:top + height, left:left + width] = np.arange(height * width).reshape(
            height, width)
    lead = grad_padded.shape[:-2]
    flat = grad_padded.reshape(-1, source.size)
    result = np.zeros((flat.shape[0], height * width))
    keep = source.ravel() >= 0
    for row in range(flat.shape[0]):
        result[row] = np.bincount(source.ravel()[keep], weights=flat[row][keep],
                                  minlength=height * width)
    return result.reshape(lead + (height, width))


def out_size_ref(size, kernel, stride, before, after, dilation):
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def _windows(x, weight, stride, pads, dilation, mode):
    """Yield (i, j, window) with window[n, c, p, q] the input under output pixel (i, j)."""
    xp = pad_ref(np.asarray(x, dtype=np.float64), pads, mode)
    kernel_h, kernel_w = weight.shape[2:]
    out_h = out_size_ref(x.shape[2], kernel_h, stride[0], pads[0], pads[1], dilation[0])
    out_w = out_size_ref(x.shape[3], kernel_w, stride[1], pads[2], pads[3], dilation[1])
    for i in range(out_h):
        for j in range(out_w):
            rows = i * stride[0] + dilation[0] * np.arange(kernel_h)
            cols = j * stride[1] + dilation[1] * np.arange(kernel_w)
            yield i, j, xp[:, :, rows[:, None], cols[None, :]]
    return out_h, out_w


def conv2d_ref(x, weight, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
               groups=1, mode="zeros"):
    """y[n,o,i,j] = b[o] + sum_{c,p,q} xpad[n, g*Cg+c, i*s+p*d, j*s+q*d] * w[o,c,p,q]."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    batch = x.shape[0]
    out_channels, in_channels_g = weight.shape[:2]
    out_channels_g = out_channels // groups
    out_h = out_size_ref(x.shape[2], weight.shape[2], stride[0], pads[0], pads[1], dilation[0])
    out_w = out_size_ref(x.shape[3], weight.shape[3], stride[1], pads[2], pads[3], dilation[1])
    y = np.zeros((batch, out_channels, out_h, out_w))
    for i, j, window in _windows(x, weight, stride, pads, dilation, mode):
        for o in range(out_channels):
            g = o // out_channels_g
            patch = window[:, g * in_channels_g:(g + 1) * in_channels_g]
            y[:, o, i, j] = (patch * weight[o]).sum(axis=(1, 2, 3))
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return y


def conv2d_backward_ref(grad_output, x, weight, stride=(1, 1), pads=(0, 0, 0, 0),
                        dilation=(1, 1), groups=1, mode="zeros"):
    """(grad_input, grad_weight, grad_bias) by scattering each output pixel's gradient."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    grad_output = np.asarray(grad_output, dtype=np.float64)
    out_channels, in_channels_g, kernel_h, kernel_w = weight.shape
    out_channels_g = out_channels // groups
    top, bottom, left, right = pads
    padded_shape = (x.shape[0], x.shape[1], x.shape[2] + top + bottom, x.shape[3] + left + right)
    grad_padded = np.zeros(padded_shape)
    grad_weight = np.zeros(weight.shape)
    for i, j, window in _windows(x, weight, stride, pads, dilation, mode):
        rows = i * stride[0] + dilation[0] * np.arange(kernel_h)
        cols = j * stride[1] + dilation[1] * np.arange(kernel_w)
        for o in range(out_channels):
            g = o // out_channels_g
            channels = slice(g * in_channels_g, (g + 1) * in_channels_g)
            gy = grad_output[:, o, i, j]
            grad_weight[o] += np.einsum("n,ncpq->cpq", gy, window[:, channels])
            for p in range(kernel_h):
                for q in range(kernel_w):
                    grad_padded[:, channels, rows[p], cols[q]] += gy[:, None] * weight[o, :, p, q]
    grad_input = pad_backward_ref(grad_padded, x.shape[2:], pads, mode)
    grad_bias = grad_output.sum(axis=(0, 2, 3))
    return grad_input, grad_weight, grad_bias


def corr2d_ref(X, K):
    """Y[i, j] = (X[i:i+h, j:j+w] * K).sum(), the textbook definition."""
    X = np.asarray(X, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    h, w = K.shape
    Y = np.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y
