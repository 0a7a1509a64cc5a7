"""Argument normalisation: the one place where user arguments become kernel arguments.

Every public function and every layer goes through these helpers, so each rule (ints that are
not bools, floats, pairs, padding forms and modes, groups, pooling windows, divisor_override,
adaptive output sizes, dtype promotion, output size, ceil_mode, ``out=``) lives here and nowhere
else. A layer calls at construction the same helper its function calls at each call, so both
refuse a bad argument with the same exception and message. Nothing here computes on array
contents; it only checks and converts.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any, Literal, SupportsIndex, TypeGuard, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "is_int",
    "as_int",
    "as_real",
    "as_int_tuple",
    "check_groups",
    "check_output_padding",
    "CONV_PADDING_MODES",
    "ACTIVATIONS",
    "check_activation",
    "CONV_ALGORITHMS",
    "PAD_MODES",
    "conv_padding",
    "max_pool_padding",
    "pool_window",
    "symmetric_padding",
    "divisor_override",
    "adaptive_output_size",
    "as_float_array",
    "result_dtype",
    "as_batched",
    "pair",
    "padding4",
    "signed_padding4",
    "same_padding",
    "output_size",
    "check_out",
    "check_no_overlap",
    "check_mode",
    "MAX_INDEX",
]

# Every index and every GEMM dimension must fit a C int (BLAS takes int); buffers beyond this
# are refused before allocating.
MAX_INDEX = 2**31 - 1

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_Mode = TypeVar("_Mode", bound=str)
_INT64_MIN, _INT64_MAX = -2**63, 2**63 - 1

# conv2d / nn.Conv2d padding_mode: torch.nn.Conv2d's names (accepted name -> canonical name).
CONV_PADDING_MODES: dict[str, Literal["zeros", "reflect", "replicate", "circular"]] = {
    "zeros": "zeros", "reflect": "reflect", "replicate": "replicate", "circular": "circular",
}
# conv2d's fused activation (None: none); nn.Sequential fuses a Conv2d with the ReLU after it.
ACTIVATIONS: dict[str, Literal["relu"]] = {"relu": "relu"}
# conv2d / conv2d_backward / nn.Conv2d algorithm: 'auto' (the default paths, no Winograd),
# 'direct' (never Winograd), 'winograd' (Winograd F(m x m, 3 x 3) where it applies).
CONV_ALGORITHMS: dict[str, Literal["auto", "direct", "winograd"]] = {
    "auto": "auto", "direct": "direct", "winograd": "winograd",
}
# pad2d mode: torch.nn.functional.pad's names, plus NumPy's 'edge' and 'wrap'.
PAD_MODES: dict[str, Literal["constant", "reflect", "replicate", "circular"]] = {
    "constant": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "edge": "replicate",
    "circular": "circular",
    "wrap": "circular",
}


# --------------------------------------------------------------------------- scalars

def is_int(value: object) -> TypeGuard[SupportsIndex]:
    """Whether ``value`` is an integer that is not a bool (Python and NumPy integers count;
    ``True``, ``numpy.bool_``, floats and 0-d arrays do not).

    Examples
    --------
    >>> import numpy as np
    >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
    (True, True, False, False)
    """
    return type(value) is int or (
        isinstance(value, Integral) and not isinstance(value, (bool, np.bool_)))


def as_int(value: object, name: str, minimum: int | None = None) -> int:
    """``value`` as a Python int: TypeError unless :func:`is_int`, ValueError below ``minimum``.

    The messages are ``"{name} must be an int, got {value!r}"`` and
    ``"{name} must be >= {minimum}, got {value}"``.

    Examples
    --------
    >>> as_int(4, "groups", 1)
    4
    """
    if type(value) is int:
        number = value
    elif is_int(value):
        number = operator.index(value)
    else:
        raise TypeError(f"{name} must be an int, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def as_real(value: object, name: str, minimum: float | None = None) -> float:
    """``value`` (a real number, not a bool) as a float: TypeError ``"{name} must be a float"``
    otherwise, ValueError ``"{name} must be >= {minimum}"`` below ``minimum`` (NaN too).

    Examples
    --------
    >>> as_real(1e-5, "eps", 0.0)
    1e-05
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float, got {value!r}")
    number = float(value)
    if minimum is not None and not number >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def as_int_tuple(value: object, name: str) -> tuple[int, ...]:
    """A sequence of ints (a shape, an output size) as a tuple; bools refused, as by
    :func:`is_int`. TypeError ``"{name} must be a sequence of ints"`` otherwise.

    Examples
    --------
    >>> as_int_tuple([2, 3], "input_shape")
    (2, 3)
    """
    items: tuple[object, ...]
    try:
        items = tuple(value)  # type: ignore[arg-type]  # not iterable: refused below
    except TypeError:
        items = (None,)
    ints = [operator.index(item) for item in items if is_int(item)]
    if len(ints) != len(items):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    return tuple(ints)


def _float_dtype_for(dtype: npt.DTypeLike, name: str) -> np.dtype[Any]:
    """The dtype an array of ``dtype`` is computed in (float32 or float64), or TypeError."""
    dtype = np.dtype(dtype)
    if dtype.byteorder not in "=|":  # big-endian '>f4' is a float32 too
        dtype = dtype.newbyteorder("=")
    if dtype in _FLOAT_DTYPES:
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    if dtype.kind == "f":  # longdouble: compute in float64, as the closest native type
        return np.dtype(np.float64)
    raise TypeError(
        f"{name} has unsupported dtype {dtype}; fastconv computes in float32 or float64 "
        "(integers and bool convert to float64, float16 to float32)"
    )


def as_float_array(value: Any, name: str, dtype: npt.DTypeLike | None = None) -> np.ndarray:
    """Return ``value`` as a C-contiguous float32/float64 ndarray (copying only when needed).

    ``dtype`` forces the result dtype (used after promotion across several arguments).
    Complex, object and string inputs raise TypeError; the input is never modified.
    """
    if type(value) is np.ndarray:
        if value.dtype in _FLOAT_DTYPES and value.flags.c_contiguous and (
            dtype is None or value.dtype == dtype
        ):  # the common case, checked first: it costs nothing
            return value
        array = value
    elif isinstance(value, np.ndarray):
        array = value
    elif value is None:
        raise TypeError(f"{name} must be an array, got None")
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged lists and the like
            raise TypeError(f"{name} cannot be converted to an array: {exc}") from None
    target = _float_dtype_for(array.dtype, name)  # refuses complex, object, str
    if dtype is not None:
        target = np.dtype(dtype)
    if array.ndim >= 2:  # before copying: a broadcast view can be far larger than its memory
        check_size(array.shape[-2] * array.shape[-1], f"a plane of {name}")
    return np.ascontiguousarray(array, dtype=target)


def result_dtype(*values: tuple[str, Any]) -> np.dtype[Any]:
    """The computation dtype for several arguments: each one's float dtype, promoted by NumPy."""
    first = values[0][1]
    if type(first) is np.ndarray:
        dtype = first.dtype
        if dtype in _FLOAT_DTYPES:  # every argument already in one native float dtype?
            for _, value in values:
                if value is not None and (type(value) is not np.ndarray or value.dtype != dtype):
                    break
            else:
                return dtype
    dtypes = []
    for name, value in values:
        if value is None:
            continue
        dtype = value.dtype if isinstance(value, np.ndarray) else np.asarray(value).dtype
        dtypes.append(_float_dtype_for(dtype, name))
    return np.result_type(*dtypes)


def as_batched(array: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """Accept (C, H, W) or (N, C, H, W); return the 4-D view and whether it was unbatched."""
    if array.ndim == 4:
        return array, False
    if array.ndim == 3:
        return array[np.newaxis], True
    raise ValueError(
        f"{name} must be 4-D (N, C, H, W) or 3-D (C, H, W), got {array.ndim}-D with shape "
        f"{array.shape}"
    )


def _as_int(value: Any, name: str) -> int:
    if type(value) is int:
        return value
    if not is_int(value):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return operator.index(value)


def pair(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, each in [minimum, MAX_INDEX], as a tuple (h, w).

    The upper bound keeps every product the kernels form from these sizes inside Py_ssize_t.
    """
    if type(value) is int and minimum <= value <= MAX_INDEX:
        return (value, value)
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        result = (_as_int(value[0], name), _as_int(value[1], name))
    else:
        number = _as_int(value, name)
        result = (number, number)
    if min(result) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if max(result) > MAX_INDEX:
        raise ValueError(f"{name} must be at most {MAX_INDEX}, got {value!r}")
    return result


def padding4(value: Any, name: str = "padding") -> tuple[int, int, int, int]:
    """Normalise a padding to (top, bottom, left, right), each >= 0.

    Accepts an int, an (ph, pw) pair (symmetric) or ((top, bottom), (left, right)) as in
    ``numpy.pad``. String forms ('same', 'valid') are handled by the caller.
    """
    if type(value) is int and value >= 0:
        return value, value, value, value
    if isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2 and all(
        isinstance(part, (tuple, list, np.ndarray)) for part in value
    ):
        (top, bottom), (left, right) = pair(value[0], name, 0), pair(value[1], name, 0)
        if len(value[0]) != 2 or len(value[1]) != 2:
            raise ValueError(f"{name} must be ((top, bottom), (left, right)), got {value!r}")
        return top, bottom, left, right
    height, width = pair(value, name, 0)
    return height, height, width, width


def signed_padding4(value: object, name: str = "padding") -> tuple[int, int, int, int]:
    """As :func:`padding4`, but each side may be negative (a crop of that many rows or
    columns, as ``torch.nn.functional.pad``)."""
    def side(number: object) -> int:
        if not is_int(number):
            raise TypeError(f"{name} must hold ints, got {value!r}")
        number = operator.index(number)
        if abs(number) > MAX_INDEX:
            raise ValueError(f"{name} must be at most {MAX_INDEX} in size, got {value!r}")
        return number

    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int, (ph, pw) or ((top, bottom), (left, "
                             f"right)), got {value!r}")
        if all(isinstance(part, (tuple, list, np.ndarray)) for part in value):
            if len(value[0]) != 2 or len(value[1]) != 2:
                raise ValueError(f"{name} must be ((top, bottom), (left, right)), got {value!r}")
            return (side(value[0][0]), side(value[0][1]), side(value[1][0]), side(value[1][1]))
        height, width = side(value[0]), side(value[1])
        return height, height, width, width
    number = side(value)
    return number, number, number, number


def same_padding(in_size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                 dilation: Sequence[int]) -> tuple[int, ...]:
    """(top, bottom, left, right) for padding='same': out = ceil(in / stride) per axis.

    Total padding max((out-1)*stride + dilation*(k-1) + 1 - in, 0), the odd row/column going
    to the bottom/right: PyTorch's 'same' for stride 1, TensorFlow's for stride > 1.
    """
    pads = []
    for size, kernel, step, dil in zip(in_size, kernel_size, stride, dilation):
        out = -(-size // step)
        total = max((out - 1) * step + dil * (kernel - 1) + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


# --------------------------------------------------------------------------- layer/function rules
# Each rule below is called by the function (at call) and by its nn layer (at construction,
# where the layer has the arguments), so both refuse the same values with the same message.

def check_groups(groups: object, in_channels: int | None = None,
                 out_channels: int | None = None) -> int:
    """``groups`` as an int >= 1 that divides ``in_channels`` and ``out_channels`` (each
    checked when given, the input side first, as ``torch.nn.Conv2d``).

    Used by conv2d, conv_transpose2d, nn.Conv2d and nn.ConvTranspose2d.

    Examples
    --------
    >>> check_groups(2, in_channels=4, out_channels=6)
    2
    """
    groups = as_int(groups, "groups", 1)
    for label, what, channels in (("in_channels", "input", in_channels),
                                  ("out_channels", "output", out_channels)):
        if channels is not None and channels % groups:
            raise ValueError(f"{label} must be divisible by groups (groups={groups} must divide "
                             f"the {channels} {what} channels)")
    return groups


def check_output_padding(output_padding: Sequence[int], stride: Sequence[int],
                         dilation: Sequence[int]) -> None:
    """A transposed convolution's ``output_padding`` (normalised pairs) must be smaller than
    the stride or the dilation along each axis, as in PyTorch.

    Used by conv_transpose2d (and its backward) and nn.ConvTranspose2d.
    """
    for axis in range(2):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"output_padding must be smaller than either stride or dilation (as PyTorch), "
                f"got output_padding {output_padding[axis]}, stride {stride[axis]}, "
                f"dilation {dilation[axis]} along {_AXES[axis]}"
            )


def conv_padding(padding: object) -> Literal["valid", "same"] | tuple[int, int, int, int]:
    """A convolution's padding: 'valid' or 'same' as given, else (top, bottom, left, right)
    as :func:`padding4`. 'same' is resolved by :func:`same_padding` once sizes are known.

    Examples
    --------
    >>> conv_padding("same"), conv_padding((1, 2))
    ('same', (1, 1, 2, 2))
    """
    if isinstance(padding, str):
        if padding == "valid":
            return "valid"
        if padding == "same":
            return "same"
        raise ValueError(f"padding must be an int, a pair, a pair of pairs, 'valid' or "
                         f"'same', got {padding!r}")
    return padding4(padding, "padding")


def max_pool_padding(kernel: int, dilation: int) -> int:
    """PyTorch's limit on pooling padding along one axis: at most half the kernel size.

    PyTorch checks ``pad <= ((k - 1) * dilation + 1) // 2`` (half the effective kernel) and,
    for max pooling, also ``pad <= k // 2``; the second is the stricter one whenever
    dilation > 1 (kernel 3, dilation 2, padding 2 is refused), so together they are k // 2.
    """
    return min(kernel // 2, ((kernel - 1) * dilation + 1) // 2)


def _check_pool_padding(kernel_size: Sequence[int], padding: Sequence[int],
                        dilation: Sequence[int]) -> None:
    for axis in range(2):
        limit = max_pool_padding(kernel_size[axis], dilation[axis])
        if max(padding[2 * axis], padding[2 * axis + 1]) > limit:
            raise ValueError(
                f"padding along {_AXES[axis]} must be at most half the kernel size "
                f"({limit}), as in PyTorch, got {padding[2 * axis]}/{padding[2 * axis + 1]} "
                f"(kernel {kernel_size[axis]}, dilation {dilation[axis]})"
            )


def pool_window(kernel_size: object, stride: object = None, padding: object = 0,
                dilation: object = 1) -> tuple[tuple[int, int], tuple[int, int],
                                               tuple[int, int, int, int], tuple[int, int]]:
    """A pooling window: (kernel, stride, (top, bottom, left, right), dilation).

    ``stride`` None means ``kernel_size``; the padding is at most half the kernel
    (:func:`max_pool_padding`). Used by max_pool2d, avg_pool2d (and their backwards) and by
    nn.MaxPool2d, nn.AvgPool2d.

    Examples
    --------
    >>> pool_window(3, 2, 1)
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    """
    kernel = pair(kernel_size, "kernel_size")
    step = kernel if stride is None else pair(stride, "stride")
    pads = padding4(padding, "padding")
    dilation_hw = pair(dilation, "dilation")
    _check_pool_padding(kernel, pads, dilation_hw)
    return kernel, step, pads, dilation_hw


def symmetric_padding(padding: object, what: str) -> tuple[int, int]:
    """A padding that must be the same on both sides of each axis (any :func:`padding4`
    form), as (ph, pw); ``what`` names the operation in the message.

    Examples
    --------
    >>> symmetric_padding(((1, 1), (0, 0)), "max_unpool2d")
    (1, 0)
    """
    top, bottom, left, right = padding4(padding)
    if top != bottom or left != right:
        raise ValueError(f"{what} takes symmetric padding, got {padding!r}")
    return top, left


def divisor_override(value: object) -> int:
    """avg_pool2d's ``divisor_override``: 0 for None (the kernels' "no override"), else a
    nonzero int64 (negative divisors are allowed, as in PyTorch).

    Examples
    --------
    >>> divisor_override(None), divisor_override(-2)
    (0, -2)
    """
    if value is None:
        return 0
    if not is_int(value):
        raise TypeError(f"divisor_override must be None or an int, got {value!r}")
    number = operator.index(value)
    if number == 0:
        raise ValueError("divisor_override must be nonzero, got 0")
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueError(f"divisor_override must fit in int64, got {number}")
    return number


def adaptive_output_size(output_size: object) -> tuple[int | None, int | None]:
    """An adaptive pooling's ``output_size``: an int or an (h, w) pair whose entries may be
    None (keep the input's size there); each int in [1, MAX_INDEX].

    Examples
    --------
    >>> adaptive_output_size(3), adaptive_output_size((None, 2))
    ((3, 3), (None, 2))
    """
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair (h, w), got {output_size!r}")
        sizes = [None if value is None else pair(_as_int(value, "output_size"), "output_size")[0]
                 for value in output_size]
        return sizes[0], sizes[1]
    return pair(output_size, "output_size")


_AXES = ("height", "width")


def _axis_output(size: int, kernel: int, step: int, dil: int, before: int, after: int, axis: int,
                 what: str, ceil_mode: bool) -> int:
    span = size + before + after - dil * (kernel - 1) - 1
    if span < 0:
        raise ValueError(
            f"kernel is larger than the padded {what} along {_AXES[axis]}: {what} size "
            f"{size} + padding {before}+{after} = {size + before + after}, effective kernel "
            f"size {dil * (kernel - 1) + 1} (kernel {kernel}, dilation {dil})"
        )
    if not ceil_mode:
        return span // step + 1
    out = -(-span // step) + 1
    if (out - 1) * step >= size + before:
        out -= 1
    return out


def output_size(in_size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], what: str = "input",
                ceil_mode: bool = False) -> tuple[int, int]:
    """Output (height, width) of a sliding window, or ValueError naming the axis and numbers.

    ``padding`` is (top, bottom, left, right). Per axis
    ``out = floor((in + before + after - dilation*(k-1) - 1) / stride) + 1`` (>= 1 whenever
    the padded input holds one window); with ``ceil_mode`` the division rounds up, but the
    last window must start inside the input or its top/left padding, never in the
    bottom/right padding alone (PyTorch's rule).
    """
    return (
        _axis_output(in_size[0], kernel_size[0], stride[0], dilation[0], padding[0],
                     padding[1], 0, what, ceil_mode),
        _axis_output(in_size[1], kernel_size[1], stride[1], dilation[1], padding[2],
                     padding[3], 1, what, ceil_mode),
    )


def check_mode(mode: object, allowed: Mapping[str, _Mode], name: str = "mode") -> _Mode:
    """Return the canonical mode name; ``allowed`` maps accepted names to canonical ones."""
    if not isinstance(mode, str) or mode not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {mode!r}")
    return allowed[mode]


def check_activation(activation: object) -> Literal["relu"]:
    """conv2d's ``activation`` (not None): its canonical name."""
    return check_mode(activation, ACTIVATIONS, "activation")


def check_out(out: object, shape: Sequence[int], dtype: npt.DTypeLike, name: str = "out"
              ) -> np.ndarray:
    """Check a caller-supplied output: ndarray, exact shape and dtype, C-contiguous, writeable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def check_no_overlap(out: np.ndarray, inputs: "Iterable[tuple[str, np.ndarray | None]]",
                     name: str = "out") -> None:
    """Refuse an ``out`` that shares memory with any of ``inputs`` ((name, array) pairs).

    ``inputs`` are the arrays the kernel reads, after conversion, so an argument given as a
    memoryview or another buffer object (a torch tensor) that views ``out``'s memory is caught
    too, and one that conversion copied is not refused. Bounds overlap first (cheap), then
    NumPy's exact test with bounded work (a problem too hard to decide counts as an overlap).
    """
    for input_name, array in inputs:
        if array is None or not np.may_share_memory(out, array):
            continue
        try:
            overlap = np.shares_memory(out, array, max_work=1 << 20)  # type: ignore[arg-type]
        except np.exceptions.TooHardError:
            overlap = True
        if overlap:
            raise ValueError(f"{name} shares memory with {input_name}; the kernels read their "
                             f"inputs while writing {name}, so give {name} its own array")


def check_size(count: int, what: str) -> None:
    """Refuse element counts whose index arithmetic would not fit a C int."""
    if count > MAX_INDEX:
        raise ValueError(
            f"{what} has {count} elements; fastconv indexes planes and GEMM operands with 32-bit "
            f"ints, so at most {MAX_INDEX} are supported"
        )
