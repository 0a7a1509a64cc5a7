"""2-D padding and its gradient, as ``torch.nn.functional.pad`` on the last two axes.

``pad2d`` / ``pad2d_backward`` are the public functions: they normalise the arguments with
:mod:`fastconv._args` and call ``pad2d_impl`` / ``pad2d_backward_impl``, which the convolution
wrapper also calls directly with arguments it has already normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np

from . import _args, _pad
from ._threads import COPY_ELEMENTS_PER_THREAD, threads_for
from ._typing import ArrayLike, Padding, PadMode

__all__ = ["pad2d", "pad2d_backward"]

# Accepted mode names -> canonical ones (the rule lives in _args; kept here under its old name).
PAD_MODES = _args.PAD_MODES

_MODE_CODES = _pad.MODES

# The fused kernels specialised per dtype up front: dispatching on every call would cost about
# as much as padding a small image.
_FORWARD = {np.dtype(np.float32): _pad.pad2d_forward["float"],
            np.dtype(np.float64): _pad.pad2d_forward["double"]}
_BACKWARD = {np.dtype(np.float32): _pad.pad2d_backward["float"],
             np.dtype(np.float64): _pad.pad2d_backward["double"]}

_AXES = ("height", "width")


def _num_threads(planes: int, elements: int) -> int:
    """Threads for a kernel over ``planes`` (n, c) planes holding ``elements`` in all."""
    return threads_for(planes, elements, COPY_ELEMENTS_PER_THREAD)


def check_pad_limits(in_size: Sequence[int], pads: Sequence[int], mode: str) -> None:
    """PyTorch's limits: reflect needs pad < size, circular pad <= size, replicate size >= 1.

    ``in_size`` is the (height, width) of the unpadded input, ``pads`` (top, bottom, left,
    right).
    """
    for axis in range(2):
        size, before, after = in_size[axis], pads[2 * axis], pads[2 * axis + 1]
        name = _AXES[axis]
        if mode in ("reflect", "replicate") and size < 1:
            raise ValueError(
                f"mode {mode!r} copies the padding from the input, which needs input {name} "
                f">= 1, got {size}"
            )
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                f"padding ({before}, {after}) along {name} must be less than the input {name} "
                f"({size}) for mode 'reflect', as in PyTorch"
            )
        if mode == "circular" and max(before, after) > size:
            raise ValueError(
                f"padding ({before}, {after}) along {name} must be at most the input {name} "
                f"({size}) for mode 'circular' (it would wrap around more than once), as in "
                "PyTorch"
            )


def pad2d_impl(x4: np.ndarray, pads: Sequence[int], mode: str, value: float = 0.0
               ) -> np.ndarray:
    """Pad a checked 4-D array; the work behind :func:`pad2d`.

    ``x4`` is a C-contiguous float32/float64 (N, C, H, W) array, ``pads`` (top, bottom, left,
    right) of ints >= 0, ``mode`` a canonical name ('constant', 'reflect', 'replicate',
    'circular'), ``value`` a float (non-zero only for 'constant'). Only the limits that depend
    on the input size are checked here. Returns a new (N, C, H+top+bottom, W+left+right) array.
    """
    batch, channels, in_h, in_w = x4.shape
    top, bottom, left, right = pads
    if mode != "constant":
        check_pad_limits((in_h, in_w), pads, mode)
    shape = (batch, channels, in_h + top + bottom, in_w + left + right)
    try:
        out = np.empty(shape, dtype=x4.dtype)
    except ValueError as exc:  # beyond what NumPy can index; MemoryError passes through
        raise ValueError(
            f"padding {pads} makes the result too large, shape {shape}: {exc}"
        ) from None
    if out.size:
        _FORWARD[x4.dtype](
            x4, out, top, left, _MODE_CODES[mode], value,
            _num_threads(batch * channels, out.size),
        )
    return out


def pad2d_backward_impl(grad4: np.ndarray, pads: Sequence[int], mode: str) -> np.ndarray:
    """Gradient of :func:`pad2d_impl`; the work behind :func:`pad2d_backward`.

    ``grad4`` is a C-contiguous float32/float64 (N, C, H', W') array; the input size
    (H' - top - bottom, W' - left - right) must be >= 1 per axis and within the mode's limits
    (ValueError otherwise). Returns a new (N, C, H, W) array.
    """
    batch, channels, out_h, out_w = grad4.shape
    top, bottom, left, right = pads
    in_size = (out_h - top - bottom, out_w - left - right)
    for axis in range(2):
        if in_size[axis] < 1:
            before, after = pads[2 * axis], pads[2 * axis + 1]
            raise ValueError(
                f"grad_output {_AXES[axis]} {grad4.shape[2 + axis]} is too small for padding "
                f"({before}, {after}) along {_AXES[axis]}: the input {_AXES[axis]} would be "
                f"{in_size[axis]}, must be >= 1"
            )
    if mode != "constant":
        check_pad_limits(in_size, pads, mode)
    grad_input = np.empty((batch, channels) + in_size, dtype=grad4.dtype)
    if grad_input.size:
        _BACKWARD[grad4.dtype](
            grad4, grad_input, top, left, _MODE_CODES[mode],
            _num_threads(batch * channels, grad4.size),
        )
    return grad_input


def _check_value(value: Any, mode: str) -> float:
    """The fill value as a float; as PyTorch, only mode 'constant' takes a non-zero one."""
    if value is None:
        return 0.0
    if not isinstance(value, Real):
        raise TypeError(f"value must be a real number, got {value!r}")
    value = float(value)
    if mode != "constant" and value != 0.0:
        raise ValueError(f"value is only used by mode 'constant', got value={value!r} with "
                         f"mode {mode!r}")
    return value


def pad2d(x: ArrayLike, padding: Padding, mode: PadMode = "constant", value: float | None = 0.0
          ) -> np.ndarray:
    """Pad the last two axes (height, width) of an image batch, as ``torch.nn.functional.pad``.

    Parameters
    ----------
    x : array_like
        (N, C, H, W) batch, one (C, H, W) image or one (H, W) plane. Integers and bool convert
        to float64, float16 to float32; float32 and float64 are kept.
    padding : int, (ph, pw) or ((top, bottom), (left, right))
        Rows and columns added on each side. An int pads every side; a pair pads top and
        bottom by ``ph``, left and right by ``pw``; the nested form is ``numpy.pad``'s. A
        negative side crops that many rows or columns, as ``torch.nn.functional.pad``: the
        input is padded on the other sides first (reflect and circular read the whole input),
        then cropped.
    mode : {'constant', 'reflect', 'replicate', 'circular', 'edge', 'wrap'}, optional
        'constant' fills with ``value``; 'reflect' mirrors about the edge without repeating it
        (needs pad < size, as PyTorch); 'replicate' (alias 'edge') repeats the edge;
        'circular' (alias 'wrap') wraps around (needs pad <= size, as PyTorch).
    value : float, optional
        Fill value for 'constant' (rounded to the result dtype). Other modes accept only 0
        (or None), as PyTorch.

    Returns
    -------
    numpy.ndarray
        New C-contiguous array of shape (N, C, H + top + bottom, W + left + right)
        (3-D for a 3-D ``x``, 2-D for a 2-D one), dtype float32 or float64.

    Raises
    ------
    ValueError
        Unknown ``mode``, malformed ``padding``, a crop larger than the padded size,
        ``x`` not 2-D, 3-D or 4-D, a reflect
        pad >= the size along that axis, a circular pad > the size, an empty height or width
        with 'reflect' or 'replicate', or a non-zero ``value`` with a mode other than
        'constant'.
    TypeError
        ``x`` of complex, object or string dtype; ``padding`` or ``value`` not numbers.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import pad2d
    >>> pad2d(np.arange(3.0).reshape(1, 1, 3), ((0, 0), (2, 1)), mode="reflect")
    array([[[2., 1., 0., 1., 2., 1.]]])
    """
    mode = _args.check_mode(mode, PAD_MODES)
    signed = _args.signed_padding4(padding)
    value = _check_value(value, mode)
    array = _args.as_float_array(x, "x")
    plane = array.ndim == 2
    x4, unbatched = _args.as_batched(array[np.newaxis] if plane else array, "x")
    pads, crops = _split_padding(signed)
    if not any(crops):
        out = pad2d_impl(x4, pads, mode, value)
    elif mode == "circular":
        # PyTorch crops first and wraps around what is left
        _check_crop(x4.shape[2:], (0, 0, 0, 0), crops)
        out = pad2d_impl(np.ascontiguousarray(_crop(x4, crops)), pads, mode, value)
    else:
        # the padding (reflect and replicate read the whole input, as PyTorch's), then the
        # crop; for 'constant' the same as cropping first
        _check_crop(x4.shape[2:], pads, crops)
        out = np.ascontiguousarray(_crop(pad2d_impl(x4, pads, mode, value), crops))
    if plane:
        return out[0, 0]
    return out[0] if unbatched else out


def _split_padding(signed: tuple[int, int, int, int],
                   ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(top, bottom, left, right) with negatives -> (the padding, >= 0; the crop, >= 0)."""
    return (tuple(max(side, 0) for side in signed), tuple(max(-side, 0) for side in signed))


def _crop(array4: np.ndarray, crops: tuple[int, ...]) -> np.ndarray:
    top, bottom, left, right = crops
    return array4[:, :, top:array4.shape[2] - bottom, left:array4.shape[3] - right]


def _check_crop(in_size: tuple[int, ...], pads: tuple[int, ...],
                crops: tuple[int, ...]) -> None:
    for axis in range(2):
        size = in_size[axis] + pads[2 * axis] + pads[2 * axis + 1]
        if crops[2 * axis] + crops[2 * axis + 1] > size:
            raise ValueError(
                f"negative padding ({-crops[2 * axis]}, {-crops[2 * axis + 1]}) along "
                f"{_AXES[axis]} crops more than the {_AXES[axis]} {size}: the result would "
                f"have {_AXES[axis]} {size - crops[2 * axis] - crops[2 * axis + 1]}"
            )


def pad2d_backward(grad_output: ArrayLike, padding: Padding, mode: PadMode = "constant"
                   ) -> np.ndarray:
    """Gradient of :func:`pad2d` with respect to its input.

    Crops ``grad_output`` to the input's area and, for 'reflect', 'replicate' and 'circular',
    adds back the gradient of every border element onto the input element it copied. Each
    sum is taken in one fixed order, so the result does not depend on the thread count.

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to ``pad2d``'s result: (N, C, H', W'), (C, H', W') or (H', W').
    padding : int, (ph, pw) or ((top, bottom), (left, right))
        The padding given to ``pad2d``. The input size ``H = H' - top - bottom``,
        ``W = W' - left - right`` follows from it.
    mode : {'constant', 'reflect', 'replicate', 'circular', 'edge', 'wrap'}, optional
        The mode given to ``pad2d``.

    Returns
    -------
    numpy.ndarray
        New C-contiguous array of shape (N, C, H, W) (3-D for a 3-D ``grad_output``), dtype
        float32 or float64.

    Raises
    ------
    ValueError
        Unknown ``mode``, negative or malformed ``padding``, ``grad_output`` not 3-D or 4-D,
        an input size ``H`` or ``W`` below 1, or padding beyond the mode's limits for that
        input size (as in :func:`pad2d`).
    TypeError
        ``grad_output`` of complex, object or string dtype; ``padding`` not ints.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import pad2d_backward
    >>> pad2d_backward(np.ones((1, 1, 6)), ((0, 0), (2, 1)), mode="reflect")
    array([[[1., 3., 2.]]])
    """
    mode = _args.check_mode(mode, PAD_MODES)
    pads, crops = _split_padding(_args.signed_padding4(padding))
    array = _args.as_float_array(grad_output, "grad_output")
    plane = array.ndim == 2
    grad4, unbatched = _args.as_batched(array[np.newaxis] if plane else array, "grad_output")
    # the crop's gradient: zeros where the rows and columns were cut off
    widths = ((0, 0), (0, 0), (crops[0], crops[1]), (crops[2], crops[3]))
    if not any(crops):
        grad_input = pad2d_backward_impl(grad4, pads, mode)
    elif mode == "circular":  # cropped first (see pad2d)
        grad_input = np.pad(pad2d_backward_impl(grad4, pads, mode), widths)
    else:
        grad_input = pad2d_backward_impl(np.pad(grad4, widths), pads, mode)
    if plane:
        return grad_input[0, 0]
    return grad_input[0] if unbatched else grad_input
