"""Slow, obviously-correct references for pad2d and pad2d_backward.

The forward is ``numpy.pad`` with NumPy's names for PyTorch's modes (NumPy's 'reflect' is
PyTorch's 'reflect', 'edge' is 'replicate', 'wrap' is 'circular'). The backward is the
transpose of the forward's dense Jacobian, which is built by padding every basis image with
``numpy.pad``: it shares no index arithmetic with the kernels.
"""

import numpy as np

NUMPY_MODE = {
    "constant": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "edge": "edge",
    "circular": "wrap",
    "wrap": "wrap",
}


def pad2d_reference(x, pads, mode, value=0.0):
    """Pad the last two axes of ``x`` by pads = (top, bottom, left, right), in float64."""
    top, bottom, left, right = pads
    widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    x = np.asarray(x, dtype=np.float64)
    if NUMPY_MODE[mode] == "constant":
        return np.pad(x, widths, mode="constant", constant_values=value)
    return np.pad(x, widths, mode=NUMPY_MODE[mode])


def pad_jacobian(in_h, in_w, pads, mode):
    """The (out_h*out_w, in_h*in_w) matrix J with pad2d(x).ravel() = J @ x.ravel() per plane."""
    basis = np.eye(in_h * in_w).reshape(in_h * in_w, 1, in_h, in_w)
    padded = pad2d_reference(basis, pads, mode, value=0.0)  # one padded image per basis vector
    return padded.reshape(in_h * in_w, -1).T


def pad2d_backward_reference(grad_output, pads, mode):
    """grad_input = J^T grad_output, plane by plane, in float64."""
    top, bottom, left, right = pads
    grad_output = np.asarray(grad_output, dtype=np.float64)
    out_h, out_w = grad_output.shape[-2:]
    in_h, in_w = out_h - top - bottom, out_w - left - right
    jacobian = pad_jacobian(in_h, in_w, pads, mode)
    planes = grad_output.reshape(-1, out_h * out_w)
    return (planes @ jacobian).reshape(grad_output.shape[:-2] + (in_h, in_w))
