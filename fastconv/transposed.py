"""Transposed convolution (``torch.nn.functional.conv_transpose2d``) and its backward.

A transposed convolution is the input gradient of a convolution: with ``conv`` the
convolution of an input shaped like the result by ``weight`` (C_in, C_out/groups, kH, kW),
``conv_transpose2d(x, weight) == conv2d_backward(grad_output=x, ...)[0]``, so it runs the
input-gradient kernels of :mod:`fastconv.conv` (and their paths: the transposed forward
convolution at stride 1, the staged scatter otherwise). Its gradients are a convolution
(the input's) and the convolution's weight gradient with the roles of input and
grad_output swapped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ._args import (
    as_batched,
    as_float_array,
    check_groups,
    check_output_padding,
    pair,
    result_dtype,
)
from .conv import conv2d, conv2d_backward

__all__ = ["conv_transpose2d", "conv_transpose2d_backward", "conv_transpose2d_output_size"]

_NEED = ("input", "weight", "bias")


def _int_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    return pair(value, name, minimum)


def conv_transpose2d_output_size(in_size: tuple[int, int], kernel_size: tuple[int, int],
                                 stride: object = 1, padding: object = 0,
                                 output_padding: object = 0,
                                 dilation: object = 1) -> tuple[int, int]:
    """``(in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1`` per axis,
    after PyTorch's checks (``output_padding`` smaller than the stride or the dilation, a
    positive result).

    Examples
    --------
    >>> from fastconv.transposed import conv_transpose2d_output_size
    >>> conv_transpose2d_output_size((4, 4), (3, 3), stride=2, padding=1, output_padding=1)
    (8, 8)
    """
    stride_hw = _int_pair(stride, "stride", 1)
    padding_hw = _int_pair(padding, "padding", 0)
    output_padding_hw = _int_pair(output_padding, "output_padding", 0)
    dilation_hw = _int_pair(dilation, "dilation", 1)
    check_output_padding(output_padding_hw, stride_hw, dilation_hw)
    sizes = []
    for axis, name in enumerate(("height", "width")):
        size = ((in_size[axis] - 1) * stride_hw[axis] - 2 * padding_hw[axis]
                + dilation_hw[axis] * (kernel_size[axis] - 1) + output_padding_hw[axis] + 1)
        if size < 1:
            raise ValueError(f"conv_transpose2d output {name} would be {size} (input "
                             f"{in_size[axis]}, kernel {kernel_size[axis]}, stride "
                             f"{stride_hw[axis]}, padding {padding_hw[axis]}): must be >= 1")
        sizes.append(size)
    return sizes[0], sizes[1]


def _prepare(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None, groups: object,
             extra: tuple[tuple[str, ArrayLike], ...] = ()
             ) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray | None, int, list[np.ndarray]]:
    dtype = result_dtype(("x", x), ("weight", weight), ("bias", bias), *extra)
    x = as_float_array(x, "x", dtype)
    weight = as_float_array(weight, "weight", dtype)
    x4, unbatched = as_batched(x, "x")
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D (C_in, C_out/groups, kH, kW), got shape "
                         f"{weight.shape}")
    groups = check_groups(groups)
    if weight.shape[0] != x4.shape[1]:
        raise ValueError(f"weight.shape[0] = {weight.shape[0]} must equal the input channels "
                         f"{x4.shape[1]} (weight is (C_in, C_out/groups, kH, kW))")
    check_groups(groups, in_channels=x4.shape[1])
    out_channels = weight.shape[1] * groups
    if bias is not None:
        bias = as_float_array(bias, "bias", dtype)
        if bias.shape != (out_channels,):
            raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
    extras = [as_float_array(value, name, dtype) for name, value in extra]
    return x4, unbatched, weight, bias, groups, extras


def _conv_rows(x4: np.ndarray, out_size: tuple[int, int], kernel: tuple[int, int],
               stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int]) -> np.ndarray:
    """``x`` as the grad_output of the convolution of an ``out_size`` input: its own size,
    unless output_padding >= stride (allowed when the dilation is larger), where that
    convolution has more output rows than ``x``; those get zeros (no input reaches them)."""
    rows = []
    for axis in range(2):
        span = out_size[axis] + 2 * padding[axis] - dilation[axis] * (kernel[axis] - 1) - 1
        rows.append(span // stride[axis] + 1)
    extra_h, extra_w = rows[0] - x4.shape[2], rows[1] - x4.shape[3]
    if extra_h or extra_w:
        return np.pad(x4, ((0, 0), (0, 0), (0, extra_h), (0, extra_w)))
    return x4


def conv_transpose2d(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
                     stride: object = 1, padding: object = 0, output_padding: object = 0,
                     groups: int = 1, dilation: object = 1) -> np.ndarray:
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
    weight : array_like, shape (C_in, C_out/groups, kH, kW)
    bias : array_like of shape (C_out,), optional
    stride, padding, dilation : int or (int, int)
        As the convolution this transposes (padding is symmetric, >= 0).
    output_padding : int or (int, int), default 0
        Rows/columns added at the bottom/right of the result; smaller than the stride or the
        dilation.
    groups : int, default 1

    Returns
    -------
    numpy.ndarray
        (N, C_out, H_out, W_out) with ``H_out = (H - 1)*stride - 2*padding +
        dilation*(kH - 1) + output_padding + 1``.

    Raises
    ------
    ValueError
        Mismatched channels or groups, bad sizes, an empty result.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    x4, unbatched, weight, bias, groups, _ = _prepare(x, weight, bias, groups)
    stride_hw = _int_pair(stride, "stride", 1)
    padding_hw = _int_pair(padding, "padding", 0)
    dilation_hw = _int_pair(dilation, "dilation", 1)
    kernel = (weight.shape[2], weight.shape[3])
    out_size = conv_transpose2d_output_size(x4.shape[2:], kernel, stride_hw, padding_hw,
                                            output_padding, dilation_hw)
    out_channels = weight.shape[1] * groups
    # the convolution's input: only its shape is read when only the input gradient is asked
    shape_only = np.empty((x4.shape[0], out_channels) + out_size, dtype=x4.dtype)
    grad_output = _conv_rows(x4, out_size, kernel, stride_hw, padding_hw, dilation_hw)
    out, _, _ = conv2d_backward(grad_output, shape_only, weight, stride_hw, padding_hw,
                                dilation_hw, groups, need=("input",))
    assert out is not None  # asked for with need=("input",)
    if bias is not None:
        out += bias.reshape(-1, 1, 1)
    return out[0] if unbatched else out


def conv_transpose2d_backward(grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike,
                              stride: object = 1, padding: object = 0,
                              output_padding: object = 0, groups: int = 1,
                              dilation: object = 1, *, need: Sequence[str] = _NEED,
                              ) -> tuple[np.ndarray | None, np.ndarray | None,
                                         np.ndarray | None]:
    """Gradients of :func:`conv_transpose2d` with respect to its input, weight and bias.

    The input gradient is ``conv2d(grad_output, weight)`` (the convolution this transposes);
    the weight gradient is that convolution's weight gradient with ``grad_output`` as its
    input and ``x`` as its grad_output; the bias gradient sums ``grad_output``.

    Parameters
    ----------
    grad_output : array_like, shape of the forward result
    x, weight, stride, padding, output_padding, groups, dilation
        The forward pass's arguments.
    need : sequence of {'input', 'weight', 'bias'}, default all three

    Returns
    -------
    grad_input, grad_weight, grad_bias : numpy.ndarray or None

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x, w = np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = fastconv.conv_transpose2d_backward(np.ones((1, 1, 4, 4)), x, w, stride=2)
    >>> gx[0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([16.]))
    """
    if isinstance(need, str):
        need = (need,)
    need_set = set(need)
    if need_set - set(_NEED):
        raise ValueError(f"need may only name {_NEED}, got {sorted(need_set - set(_NEED))!r}")
    x4, unbatched, weight, _, groups, (gy,) = _prepare(
        x, weight, None, groups, (("grad_output", grad_output),))
    stride_hw = _int_pair(stride, "stride", 1)
    padding_hw = _int_pair(padding, "padding", 0)
    dilation_hw = _int_pair(dilation, "dilation", 1)
    kernel = (weight.shape[2], weight.shape[3])
    out_size = conv_transpose2d_output_size(x4.shape[2:], kernel, stride_hw, padding_hw,
                                            output_padding, dilation_hw)
    gy4 = gy[np.newaxis] if unbatched and gy.ndim == 3 else gy
    expected = (x4.shape[0], weight.shape[1] * groups) + out_size
    if gy4.shape != expected:
        shown = expected[1:] if unbatched else expected
        raise ValueError(f"grad_output has shape {gy.shape}, expected {shown} (the shape "
                         "conv_transpose2d returns for these arguments)")
    grad_input = grad_weight = grad_bias = None
    if "input" in need_set:
        grad_input = conv2d(gy4, weight, None, stride_hw, padding_hw, dilation_hw, groups)
        grad_input = grad_input[:, :, :x4.shape[2], :x4.shape[3]]
        grad_input = np.ascontiguousarray(grad_input[0] if unbatched else grad_input)
    if "weight" in need_set:
        rows = _conv_rows(x4, out_size, kernel, stride_hw, padding_hw, dilation_hw)
        _, grad_weight, _ = conv2d_backward(rows, gy4, weight, stride_hw, padding_hw,
                                            dilation_hw, groups, need=("weight",))
    if "bias" in need_set:
        grad_bias = gy4.sum(axis=(0, 2, 3))
    return grad_input, grad_weight, grad_bias
