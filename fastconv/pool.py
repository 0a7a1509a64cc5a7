"""Max and average pooling (forward and backward) with PyTorch's semantics.

The functions here check and normalise their arguments with :mod:`fastconv._args`, allocate
the results and call one kernel of ``fastconv._pool``; the kernels never see bad input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from . import _pool
from ._args import (
    as_batched,
    as_float_array,
    as_int_tuple,
    check_size,
    divisor_override as _divisor,
    output_size,
    pool_window,
)
from ._threads import POOL_TAPS_PER_THREAD, threads_for
from ._typing import ArrayLike, IntPair, Padding, Shape

__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]

def _num_threads(items: int, taps: int) -> int:
    """Threads for a kernel that shares out ``items`` (its (n, c) planes, or the 2x2 path's
    output rows) and visits ``taps`` taps in all."""
    return threads_for(items, taps, POOL_TAPS_PER_THREAD)


# The kernel paths, in order: the first that applies to a call runs. 'window2x2' is the
# commonest pooling (2x2 windows at stride 2, no padding or dilation, every window inside the
# input), whose rows are too short for the general kernels' per-row set-up; 'planes' takes any
# geometry. Average pooling has one more, 'box': stride 1 both ways (a ResNet's or an Inception
# block's 3x3 stride-1 average) with at most _pool.BOX_MAX_ROWS window rows, a box filter over
# zero-padded rows with no per-column edge cases (src/_pool_impl.h). Every path gives the same
# bits. The private ``_path=`` of the functions below forces one (tests, benchmarks).
POOL_PATHS = ("window2x2", "planes")
AVG_POOL_PATHS = ("window2x2", "box", "planes")


def _pool_path(kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, ...],
               dilation: tuple[int, int], in_size: tuple[int, ...],
               out_size: tuple[int, int], path: str | None, average: bool = False) -> str:
    """The path for one call: the first of POOL_PATHS (``average``: AVG_POOL_PATHS) that
    applies, or ``path`` if it does."""
    window2x2 = (tuple(kernel) == (2, 2) and tuple(stride) == (2, 2)
                 and tuple(pads) == (0, 0, 0, 0) and tuple(dilation) == (1, 1)
                 and 2 * out_size[0] <= in_size[0] and 2 * out_size[1] <= in_size[1])
    box = (average and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
           and kernel[0] <= _pool.BOX_MAX_ROWS)
    if path is None:
        return "window2x2" if window2x2 else "box" if box else "planes"
    paths = AVG_POOL_PATHS if average else POOL_PATHS
    if path not in paths:
        raise ValueError(f"_path must be one of {paths}, got {path!r}")
    if path == "window2x2" and not window2x2:
        raise ValueError("_path='window2x2' needs 2x2 windows at stride 2 with no padding, "
                         "dilation or ceil_mode overhang")
    if path == "box" and not box:
        raise ValueError(f"_path='box' needs stride 1 and windows of at most "
                         f"{_pool.BOX_MAX_ROWS} rows")
    return path


def _box_scratch(num_threads: int, kernel: tuple[int, int], pad_left: int, in_w: int,
                 out_w: int, backward: bool, dtype: npt.DTypeLike
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The 'box' kernels' column factors and per-thread rings of kernel-height + 1 rows."""
    ring_w = _pool.box_ring_width(in_w, out_w, kernel[1], pad_left, backward)
    return (np.empty(_pool.box_column_factors_size(out_w), dtype=dtype),
            _thread_rows(num_threads, (kernel[0] + 1) * ring_w, dtype))


def _thread_rows(num_threads: int, width: int, dtype: npt.DTypeLike) -> np.ndarray:
    """One scratch row per thread, each padded to whole cache lines of its own.

    Rows of a few elements would share a 64-byte line between threads, and every write by one
    thread would evict the other's copy (false sharing): two threads then ran slower than one.
    """
    itemsize = np.dtype(dtype).itemsize
    per_line = 64 // itemsize
    padded = -(-width // per_line) * per_line + per_line
    return np.empty((num_threads, padded), dtype=dtype)


_Maker = Callable[[tuple[int, ...], np.dtype[Any]], np.ndarray]
_INT64 = np.dtype(np.int64)


def _empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def _check_planes(shape: Sequence[int], name: str) -> None:
    """PyTorch refuses empty channels, height or width (only the batch may be empty)."""
    if min(shape[1:]) < 1:
        raise ValueError(
            f"{name} must have non-zero channels, height and width (only the batch may be "
            f"empty), got shape {tuple(shape)}"
        )
    check_size(shape[2] * shape[3], f"one {name} plane")


_Window = tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int], tuple[int, int],
                tuple[int, int]]
# The windows already worked out, by their arguments as given (see _window_key): a layer or a
# training loop pools the same sizes every call, and working them out again was a third of a
# small pooling call.
_WINDOWS: dict[tuple[Any, ...], _Window] = {}
_MAX_WINDOWS = 256


def _exact(value: Any) -> bool:
    """An int (not a bool), a pair of them, or None: the arguments a key may hold, since
    True == 1 and 1.0 == 1 would otherwise reuse a window the checks would refuse for them."""
    kind = type(value)
    return value is None or kind is int or (
        kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int)


def _geometry(in_size: Sequence[int], kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool) -> _Window:
    """Normalised (kernel, stride, padding4, dilation, output size) of a pooling window."""
    key = None
    if _exact(kernel_size) and _exact(stride) and _exact(padding) and _exact(dilation):
        key = (tuple(in_size), kernel_size, stride, padding, dilation, bool(ceil_mode))
        window = _WINDOWS.get(key)
        if window is not None:
            return window
    kernel, stride, pads, dilation = pool_window(kernel_size, stride, padding, dilation)
    out_size = output_size(in_size, kernel, stride, pads, dilation, "input", bool(ceil_mode))
    window = (kernel, stride, pads, dilation, out_size)
    if key is not None:
        if len(_WINDOWS) >= _MAX_WINDOWS:
            _WINDOWS.clear()
        _WINDOWS[key] = window
    return window


def _batched_view(array: np.ndarray, unbatched: bool) -> np.ndarray:
    """The 4-D view the kernels take of a result allocated 3-D for an unbatched input."""
    return array[np.newaxis] if unbatched else array


def _input_shape(input_shape: Any, grad_output_shape: Sequence[int]) -> tuple[int, ...]:
    """Check ``input_shape`` against ``grad_output``'s (N, C); return it as a 4-D tuple."""
    shape = as_int_tuple(input_shape, "input_shape")
    if len(shape) != len(grad_output_shape):
        raise ValueError(
            f"input_shape {shape} must have as many dimensions as grad_output "
            f"{tuple(grad_output_shape)}"
        )
    if min(shape) < 0:
        raise ValueError(f"input_shape must not be negative, got {shape}")
    batched = shape if len(shape) == 4 else (1,) + shape
    _check_planes(batched, "input_shape")
    if shape[:-2] != tuple(grad_output_shape[:-2]):
        raise ValueError(
            f"grad_output {tuple(grad_output_shape)} and input_shape {shape} must agree in the "
            "batch and channel dimensions"
        )
    return batched


@overload
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = None,
               padding: Padding = 0, dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: Literal[False] = False, *, _path: str | None = None, _buffers: _Maker | None = None
               ) -> np.ndarray: ...
@overload
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = None,
               padding: Padding = 0, dilation: IntPair = 1, ceil_mode: bool = False, *,
               return_indices: Literal[True], _path: str | None = None, _buffers: _Maker | None = None
               ) -> tuple[np.ndarray, npt.NDArray[np.int64]]: ...
@overload
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None, padding: Padding,
               dilation: IntPair, ceil_mode: bool, return_indices: Literal[True], *,
               _path: str | None = None, _buffers: _Maker | None = None) -> tuple[np.ndarray, npt.NDArray[np.int64]]: ...
@overload
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = None,
               padding: Padding = 0, dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, _path: str | None = None, _buffers: _Maker | None = None
               ) -> np.ndarray | tuple[np.ndarray, npt.NDArray[np.int64]]: ...
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = None,
               padding: Padding = 0, dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, _path: str | None = None, _buffers: _Maker | None = None
               ) -> np.ndarray | tuple[np.ndarray, npt.NDArray[np.int64]]:
    """2-D max pooling over an (N, C, H, W) or (C, H, W) array, as ``torch.nn.functional``.

    Parameters
    ----------
    x : array_like
        Input, 4-D (N, C, H, W) or 3-D (C, H, W). Integers and bool are pooled as float64,
        float16 as float32.
    kernel_size : int or (int, int)
        Window size (kH, kW), each >= 1.
    stride : int or (int, int), optional
        Step between windows, each >= 1; defaults to ``kernel_size``.
    padding : int, (int, int) or ((int, int), (int, int)), optional
        Implicit -inf padding: symmetric (ph, pw) or ((top, bottom), (left, right)). Each side
        at most half the kernel size ``k // 2``, as PyTorch.
    dilation : int or (int, int), optional
        Spacing between the taps of a window, each >= 1.
    ceil_mode : bool, optional
        Round the output size up; a window is added only if it starts inside the input or
        its top/left padding (PyTorch's rule).
    return_indices : bool, optional
        Also return, for each output, the int64 index of the chosen element in the flattened
        H*W plane of its input channel (the first maximum in row-major order; a NaN wins).

    Returns
    -------
    out : numpy.ndarray
        (N, C, H_out, W_out) (or (C, H_out, W_out)), in the computation dtype.
    indices : numpy.ndarray of int64
        Same shape as ``out``; only when ``return_indices`` is true.

    Raises
    ------
    TypeError
        For complex, object or string input, or non-int sizes.
    ValueError
        For a wrong number of dimensions, empty channels/height/width, sizes < 1, negative
        or too large padding, or a kernel larger than the padded input.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fastconv.max_pool2d(x, 3, stride=2, padding=1)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    x = as_float_array(x, "x")
    x4, unbatched = as_batched(x, "x")
    _check_planes(x4.shape, "x")
    kernel, stride, pads, dilation, out_size = _geometry(
        x4.shape[2:], kernel_size, stride, padding, dilation, ceil_mode
    )
    path = _pool_path(kernel, stride, pads, dilation, x4.shape[2:], out_size, _path)
    # Results are allocated in their final (3-D or 4-D) shape, so that they own their data.
    # (``_buffers(shape, dtype)``: the layers' recycled arrays, fastconv._buffers)
    empty = _empty if _buffers is None else _buffers
    out = empty(x.shape[:-2] + out_size, x.dtype)
    if path == "window2x2":
        num_threads = _num_threads(x4.shape[0] * x4.shape[1] * out_size[0], out.size * 4)
        indices = empty(out.shape if return_indices else (1, 1, 1, 1), _INT64)
        _pool.max_pool2d_forward_2x2(
            x4, _batched_view(out, unbatched),
            _batched_view(indices, unbatched and return_indices), bool(return_indices),
            num_threads)
        return (out, indices) if return_indices else out
    num_threads = _num_threads(x4.shape[0] * x4.shape[1], out.size * kernel[0] * kernel[1])
    params = (*kernel, *stride, pads[0], pads[2], *dilation, num_threads)
    if return_indices:
        indices = empty(out.shape, _INT64)
        position = _thread_rows(num_threads, out_size[1], np.int32)
        _pool.max_pool2d_forward_indices(
            x4, _batched_view(out, unbatched), _batched_view(indices, unbatched), position,
            *params,
        )
        return out, indices
    _pool.max_pool2d_forward(x4, _batched_view(out, unbatched), *params)
    return out


def max_pool2d_backward(grad_output: ArrayLike, indices: ArrayLike, input_shape: Shape, *,
                        _buffers: _Maker | None = None) -> np.ndarray:
    """Gradient of :func:`max_pool2d` with respect to its input.

    Each ``grad_output`` element is added to the input position its index names; where
    windows overlap, the contributions accumulate (in output row-major order).

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to the pooled output, (N, C, H_out, W_out) or (C, H_out, W_out).
    indices : array_like of int
        The ``indices`` returned by ``max_pool2d(..., return_indices=True)``, same shape.
    input_shape : tuple of int
        Shape of the pooled input, (N, C, H, W) or (C, H, W).

    Returns
    -------
    numpy.ndarray
        The gradient with respect to the input, of shape ``input_shape``.

    Raises
    ------
    TypeError
        For a non-integer ``indices`` or an unsupported ``grad_output`` dtype.
    ValueError
        For mismatched shapes, or an index outside [0, H*W).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[1.0, 3.0], [2.0, 0.0]]]])
    >>> y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> fastconv.max_pool2d_backward(np.ones_like(y), idx, x.shape)[0, 0]
    array([[0., 1.],
           [0., 0.]])
    """
    grad_output = as_float_array(grad_output, "grad_output")
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array, got dtype {indices.dtype}")
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    grad4, unbatched = as_batched(grad_output, "grad_output")
    if indices.shape != grad_output.shape:
        raise ValueError(
            f"indices has shape {indices.shape}, expected grad_output's {grad_output.shape}"
        )
    shape = _input_shape(input_shape, grad_output.shape)
    plane_size = shape[2] * shape[3]
    empty = _empty if _buffers is None else _buffers
    grad_input = empty(shape[1:] if unbatched else shape, grad4.dtype)
    # the kernel counts (and skips) the indices outside the plane as it reads them
    outside = _pool.max_pool2d_backward(
        grad4, indices.reshape(grad4.shape), _batched_view(grad_input, unbatched),
        _num_threads(shape[0] * shape[1], grad_input.size + grad4.size),
    )
    if outside:
        raise ValueError(
            f"indices must lie in [0, {plane_size}) for input planes of {shape[2]}x{shape[3]}, "
            f"got values in [{indices.min()}, {indices.max()}]"
        )
    return grad_input


def avg_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = None,
               padding: Padding = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None, *,
               _path: str | None = None, _buffers: _Maker | None = None) -> np.ndarray:
    """2-D average pooling over an (N, C, H, W) or (C, H, W) array, as ``torch.nn.functional``.

    Parameters
    ----------
    x : array_like
        Input, 4-D (N, C, H, W) or 3-D (C, H, W). Integers and bool are pooled as float64,
        float16 as float32.
    kernel_size : int or (int, int)
        Window size (kH, kW), each >= 1.
    stride : int or (int, int), optional
        Step between windows, each >= 1; defaults to ``kernel_size``.
    padding : int, (int, int) or ((int, int), (int, int)), optional
        Implicit zero padding, symmetric (ph, pw) or ((top, bottom), (left, right)); each
        side at most ``kernel // 2``.
    ceil_mode : bool, optional
        Round the output size up (PyTorch's rule); a window that then runs past the padded
        edge divides by the part of it inside the padded input.
    count_include_pad : bool, optional
        Divide by the window clipped to the padded input (True) or to the input (False).
    divisor_override : int, optional
        A nonzero divisor used for every window instead.

    Returns
    -------
    numpy.ndarray
        (N, C, H_out, W_out) (or (C, H_out, W_out)), in the computation dtype.

    Raises
    ------
    TypeError
        For complex, object or string input, or non-int sizes or divisor.
    ValueError
        For a wrong number of dimensions, empty channels/height/width, sizes < 1, negative
        or too large padding, a kernel larger than the padded input, or divisor_override=0.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool2d(np.ones((1, 3, 3)), 2, stride=1, padding=1)[0]
    array([[0.25, 0.5 , 0.5 , 0.25],
           [0.5 , 1.  , 1.  , 0.5 ],
           [0.5 , 1.  , 1.  , 0.5 ],
           [0.25, 0.5 , 0.5 , 0.25]])
    """
    x = as_float_array(x, "x")
    x4, unbatched = as_batched(x, "x")
    _check_planes(x4.shape, "x")
    kernel, stride, pads, _, out_size = _geometry(
        x4.shape[2:], kernel_size, stride, padding, 1, ceil_mode
    )
    divisor = _divisor(divisor_override)
    path = _pool_path(kernel, stride, pads, (1, 1), x4.shape[2:], out_size, _path, True)
    out = (_empty if _buffers is None else _buffers)(x.shape[:-2] + out_size, x.dtype)
    if path == "window2x2":
        _pool.avg_pool2d_forward_2x2(
            x4, _batched_view(out, unbatched), divisor,
            _num_threads(x4.shape[0] * x4.shape[1] * out_size[0], out.size * 4))
        return out
    num_threads = _num_threads(x4.shape[0] * x4.shape[1], out.size * kernel[0] * kernel[1])
    if path == "box":
        column_factor, ring = _box_scratch(num_threads, kernel, pads[2], x4.shape[3],
                                           out_size[1], False, x.dtype)
        _pool.avg_pool2d_forward_box(
            x4, _batched_view(out, unbatched), column_factor, ring, *kernel, *pads,
            bool(count_include_pad), divisor, num_threads)
        return out
    column_factor = np.empty(out_size[1], dtype=x.dtype)
    _pool.avg_pool2d_forward(
        x4, _batched_view(out, unbatched), column_factor, *kernel, *stride, *pads,
        bool(count_include_pad), divisor, num_threads,
    )
    return out


def avg_pool2d_backward(grad_output: ArrayLike, input_shape: Shape, kernel_size: IntPair,
                        stride: IntPair | None = None, padding: Padding = 0,
                        ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: int | None = None, *,
                        _path: str | None = None, _buffers: _Maker | None = None
                        ) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Each ``grad_output`` element, divided by its window's divisor, is added to every input
    element of its window (overlapping windows accumulate).

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to the pooled output, (N, C, H_out, W_out) or (C, H_out, W_out).
    input_shape : tuple of int
        Shape of the pooled input, (N, C, H, W) or (C, H, W).
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to :func:`avg_pool2d`.

    Returns
    -------
    numpy.ndarray
        The gradient with respect to the input, of shape ``input_shape``.

    Raises
    ------
    TypeError
        For an unsupported dtype or non-int sizes or divisor.
    ValueError
        For bad pooling arguments (as :func:`avg_pool2d`) or a ``grad_output`` whose shape is
        not the pooled shape of ``input_shape``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool2d_backward(np.ones((1, 1, 1, 1)), (1, 1, 2, 2), 2)[0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    grad_output = as_float_array(grad_output, "grad_output")
    grad4, unbatched = as_batched(grad_output, "grad_output")
    shape = _input_shape(input_shape, grad_output.shape)
    kernel, stride, pads, _, out_size = _geometry(
        shape[2:], kernel_size, stride, padding, 1, ceil_mode
    )
    if grad4.shape[2:] != out_size:
        raise ValueError(
            f"grad_output has spatial shape {grad4.shape[2:]}, but pooling input_shape "
            f"{tuple(input_shape)} gives {out_size}"
        )
    divisor = _divisor(divisor_override)
    path = _pool_path(kernel, stride, pads, (1, 1), shape[2:], out_size, _path, True)
    grad_input = (_empty if _buffers is None else _buffers)(shape[1:] if unbatched else shape,
                                                           grad4.dtype)
    if path == "window2x2":
        _pool.avg_pool2d_backward_2x2(
            grad4, _batched_view(grad_input, unbatched), divisor,
            _num_threads(shape[0] * shape[1] * out_size[0], math.prod(shape) + grad4.size * 4))
        return grad_input
    num_threads = _num_threads(
        shape[0] * shape[1], math.prod(shape) + grad4.size * kernel[0] * kernel[1]
    )
    if path == "box":
        column_factor, ring = _box_scratch(num_threads, kernel, pads[2], shape[3], out_size[1],
                                           True, grad4.dtype)
        _pool.avg_pool2d_backward_box(
            grad4, _batched_view(grad_input, unbatched), column_factor, ring, *kernel, *pads,
            bool(count_include_pad), divisor, num_threads)
        return grad_input
    column_factor = np.empty(out_size[1], dtype=grad4.dtype)
    # a ring of kernel-height rows of quotients per thread (the stride-1 kernel gathers from
    # every output row whose window holds an input row; the others use the first row only)
    delta = _thread_rows(num_threads, kernel[0] * out_size[1], grad4.dtype)
    _pool.avg_pool2d_backward(
        grad4, _batched_view(grad_input, unbatched), column_factor, delta, *kernel, *stride,
        *pads, bool(count_include_pad), divisor, num_threads,
    )
    return grad_input
