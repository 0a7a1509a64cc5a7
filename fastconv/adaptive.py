"""Adaptive average and max pooling and max unpooling, with PyTorch's semantics.

Adaptive pooling fixes the output size: output cell ``i`` of ``out`` along an axis of
``size`` pools ``floor(i*size/out) .. ceil((i+1)*size/out)`` (exclusive end). Max unpooling
puts each value back at the position its max-pooling index names, zeros elsewhere. The
functions check and normalise their arguments, allocate the results and call one kernel of
``fastconv._adaptive`` (or, for the max backward, ``fastconv.pool.max_pool2d_backward``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _adaptive
from ._args import (
    adaptive_output_size,
    as_batched,
    as_float_array,
    as_int_tuple,
    check_size,
    pair,
    symmetric_padding,
)
from ._threads import COPY_ELEMENTS_PER_THREAD, threads_for
from .pool import max_pool2d_backward

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
]

_Maker = Callable[[tuple[int, ...], np.dtype[Any]], np.ndarray]


def _num_threads(planes: int, elements: int) -> int:
    return threads_for(planes, elements, COPY_ELEMENTS_PER_THREAD)


def _output_size(output_size: object, in_size: tuple[int, int]) -> tuple[int, int]:
    """An int, or an (h, w) pair whose entries may be None (keep the input's size)."""
    height, width = adaptive_output_size(output_size)
    return (in_size[0] if height is None else height, in_size[1] if width is None else width)


def _planes(x: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    array = as_float_array(x, name)
    x4, unbatched = as_batched(array, name)
    if min(x4.shape[1:]) < 1:
        raise ValueError(f"{name} must have non-zero channels, height and width (only the "
                         f"batch may be empty), got shape {array.shape}")
    return array, x4, unbatched


def adaptive_avg_pool2d(x: ArrayLike, output_size: int | Sequence[int | None], *,
                        _buffers: _Maker | None = None) -> np.ndarray:
    """Adaptive 2-D average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
        The output (height, width); None keeps the input's.

    Returns
    -------
    numpy.ndarray
        (N, C, out_h, out_w), each cell the mean of its window.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.adaptive_avg_pool2d(np.arange(6.0).reshape(1, 1, 2, 3), 1)
    array([[[[2.5]]]])
    """
    array, x4, unbatched = _planes(x, "x")
    out_size = _output_size(output_size, x4.shape[2:])
    check_size(out_size[0] * out_size[1], "an output plane")
    # (``_buffers(shape, dtype)``: the layer's recycled arrays, fastconv._buffers)
    out = (np.empty(x4.shape[:2] + out_size, dtype=x4.dtype) if _buffers is None
           else _buffers(x4.shape[:2] + out_size, x4.dtype))
    if out.size:
        _adaptive.adaptive_avg_pool2d_forward(
            x4, out, _num_threads(x4.shape[0] * x4.shape[1], x4.size))
    return out[0] if unbatched else out


def _input_shape(input_shape: Sequence[int], grad4: np.ndarray,
                 unbatched: bool) -> tuple[int, int, int, int]:
    shape = as_int_tuple(input_shape, "input_shape")
    batched = (1,) + shape if unbatched else shape
    if len(batched) != 4 or batched[:2] != grad4.shape[:2] or min(batched[1:]) < 1:
        raise ValueError(f"input_shape {shape} does not fit grad_output of shape "
                         f"{grad4.shape[1:] if unbatched else grad4.shape}")
    return batched[0], batched[1], batched[2], batched[3]


def adaptive_avg_pool2d_backward(grad_output: ArrayLike, input_shape: Sequence[int], *,
                                 _buffers: _Maker | None = None) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool2d`: each cell's gradient spread evenly over its
    window (windows may overlap; the shares add).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.adaptive_avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2, 2))[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    grad = as_float_array(grad_output, "grad_output")
    grad4, unbatched = as_batched(grad, "grad_output")
    shape = _input_shape(input_shape, grad4, unbatched)
    # (``_buffers(shape, dtype)``: the layer's recycled arrays, fastconv._buffers)
    grad_input = (np.empty(shape, dtype=grad4.dtype) if _buffers is None
                  else _buffers(shape, grad4.dtype))
    if grad_input.size:
        _adaptive.adaptive_avg_pool2d_backward(
            grad4, grad_input, _num_threads(shape[0] * shape[1], grad_input.size))
    return grad_input[0] if unbatched else grad_input


def adaptive_max_pool2d(x: ArrayLike, output_size: int | Sequence[int | None],
                        return_indices: bool = False,
                        ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Adaptive 2-D max pooling, as ``torch.nn.functional.adaptive_max_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
    return_indices : bool, default False
        Also return the int64 flat index (in the H*W plane) of each maximum: the first in
        row-major order; a NaN replaces the maximum (as PyTorch).

    Returns
    -------
    out : numpy.ndarray
    indices : numpy.ndarray of int64
        Only with ``return_indices``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> out, idx = fastconv.adaptive_max_pool2d(np.arange(6.0).reshape(1, 1, 2, 3), (1, 2),
    ...                                         return_indices=True)
    >>> out, idx
    (array([[[[4., 5.]]]]), array([[[[4, 5]]]]))
    """
    array, x4, unbatched = _planes(x, "x")
    out_size = _output_size(output_size, x4.shape[2:])
    check_size(out_size[0] * out_size[1], "an output plane")
    out = np.empty(x4.shape[:2] + out_size, dtype=x4.dtype)
    indices = np.empty(out.shape, dtype=np.int64)
    if out.size:
        _adaptive.adaptive_max_pool2d_forward(
            x4, out, indices, _num_threads(x4.shape[0] * x4.shape[1], x4.size))
    if unbatched:
        out, indices = out[0], indices[0]
    return (out, indices) if return_indices else out


def adaptive_max_pool2d_backward(grad_output: ArrayLike, indices: ArrayLike,
                                 input_shape: Sequence[int]) -> np.ndarray:
    """Gradient of :func:`adaptive_max_pool2d`: each cell's gradient added at its maximum.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.adaptive_max_pool2d_backward(np.ones((1, 1, 1, 1)), np.array([[[[3]]]]),
    ...                                       (1, 1, 2, 2))[0, 0]
    array([[0., 0.],
           [0., 1.]])
    """
    return max_pool2d_backward(grad_output, indices, input_shape)


def max_unpool2d_output_size(in_size: tuple[int, int], kernel_size: object, stride: object,
                             padding: object, output_size: Sequence[int] | None,
                             ) -> tuple[int, int]:
    """The unpooled (height, width): ``(in - 1)*stride - 2*padding + kernel``, or
    ``output_size``'s last two entries, which must lie within a stride of it (PyTorch)."""
    kernel = pair(kernel_size, "kernel_size")
    step = kernel if stride is None else pair(stride, "stride")
    pads = symmetric_padding(padding, "max_unpool2d")
    default = tuple((in_size[axis] - 1) * step[axis] - 2 * pads[axis] + kernel[axis]
                    for axis in range(2))
    if output_size is None:
        sizes = default
    else:
        given = as_int_tuple(output_size, "output_size")
        if len(given) not in (2, 3, 4):
            raise ValueError(f"output_size must have 2 (or 3, 4) entries, got {output_size!r}")
        sizes = given[-2:]
        for axis in range(2):
            if not default[axis] - step[axis] < sizes[axis] < default[axis] + step[axis]:
                raise ValueError(
                    f"output_size {sizes} must be within a stride of the default {default} "
                    f"(strictly between {default[axis] - step[axis]} and "
                    f"{default[axis] + step[axis]} along axis {axis}), as PyTorch"
                )
    if min(sizes) < 1:
        raise ValueError(f"max_unpool2d output size {sizes} must be positive")
    return sizes[0], sizes[1]


def _indices(indices: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    index_array = np.asarray(indices)
    if index_array.dtype.kind not in "iu":
        raise TypeError(f"indices must hold integers, got dtype {index_array.dtype}")
    index_array = np.ascontiguousarray(index_array, dtype=np.int64)
    if index_array.shape != shape:
        raise ValueError(f"indices have shape {index_array.shape}, expected {shape}")
    return index_array


def max_unpool2d(x: ArrayLike, indices: ArrayLike, kernel_size: object,
                 stride: object = None, padding: object = 0,
                 output_size: Sequence[int] | None = None) -> np.ndarray:
    """Partial inverse of :func:`fastconv.max_pool2d`, as ``torch.nn.functional.max_unpool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    indices : array_like of ints, shape of ``x``
        Flat positions in the output plane (``max_pool2d(..., return_indices=True)``'s).
    kernel_size, stride, padding
        The pooling's (``stride`` defaults to ``kernel_size``).
    output_size : sequence of ints, optional
        The output's (H, W) (or (N, C, H, W)); defaults to ``(H - 1)*stride - 2*padding +
        kernel``.

    Returns
    -------
    numpy.ndarray
        Zeros, with ``x[n, c, i, j]`` at ``indices[n, c, i, j]`` of plane (n, c) (a repeated
        index keeps the last value in row-major order).

    Raises
    ------
    ValueError
        An index outside the output plane, mismatched shapes, a bad ``output_size``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.max_unpool2d(np.array([[[[5.0]]]]), np.array([[[[2]]]]), 2)[0, 0]
    array([[0., 0.],
           [5., 0.]])
    """
    array, x4, unbatched = _planes(x, "x")
    index4 = _indices(indices, array.shape).reshape(x4.shape)
    out_size = max_unpool2d_output_size(x4.shape[2:], kernel_size, stride, padding, output_size)
    check_size(out_size[0] * out_size[1], "an output plane")
    out = np.empty(x4.shape[:2] + out_size, dtype=x4.dtype)
    if out.size:
        bad = _adaptive.max_unpool2d_forward(
            x4, index4, out, _num_threads(x4.shape[0] * x4.shape[1], out.size))
        if bad:
            raise ValueError(f"{bad} indices fall outside the output plane of "
                             f"{out_size[0]}x{out_size[1]} = {out_size[0] * out_size[1]} "
                             "elements")
    return out[0] if unbatched else out


def max_unpool2d_backward(grad_output: ArrayLike, indices: ArrayLike) -> np.ndarray:
    """Gradient of :func:`max_unpool2d`: ``grad_input[n, c, i, j] =
    grad_output[n, c].flat[indices[n, c, i, j]]``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.max_unpool2d_backward(np.arange(4.0).reshape(1, 1, 2, 2), np.array([[[[2]]]]))
    array([[[[2.]]]])
    """
    grad = as_float_array(grad_output, "grad_output")
    grad4, unbatched = as_batched(grad, "grad_output")
    index_array = np.asarray(indices)
    if index_array.ndim != grad.ndim or index_array.shape[:-2] != grad.shape[:-2]:
        raise ValueError(f"indices of shape {index_array.shape} do not fit grad_output of "
                         f"shape {grad.shape}")
    index4 = _indices(index_array, index_array.shape)
    index4 = index4[np.newaxis] if unbatched else index4
    grad_input = np.empty(index4.shape, dtype=grad4.dtype)
    if grad_input.size:
        bad = _adaptive.max_unpool2d_backward(
            grad4, index4, grad_input, _num_threads(index4.shape[0] * index4.shape[1],
                                                    grad_input.size))
        if bad:
            raise ValueError(f"{bad} indices fall outside the grad_output plane")
    return grad_input[0] if unbatched else grad_input
