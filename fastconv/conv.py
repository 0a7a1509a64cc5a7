"""Convolution: corr2d, convolve2d, conv2d and conv2d_backward.

The functions check and normalise their arguments (through ``fastconv._args``) once per
shapes, get the plan those shapes lead to (``fastconv._plan``: the geometry, and the path each
op runs, chosen from ``fastconv._paths``' ordered lists), allocate the results and run the
plan's paths. Non-zero padding modes pad explicitly with ``pad2d`` and convolve unpadded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from . import _paths
from ._args import (
    _FLOAT_DTYPES,
    CONV_ALGORITHMS,
    CONV_PADDING_MODES,
    as_batched,
    as_float_array,
    check_activation,
    check_groups,
    check_mode,
    check_no_overlap,
    check_out,
    check_size,
    conv_padding,
    output_size,
    pair,
    result_dtype,
    same_padding,
)
from ._geometry import make_geometry
from ._plan import ConvPlan, cached, clear_plans, complete, current_override, remember
from ._typing import Activation, ArrayLike, ConvAlgorithm, ConvPadding, ConvPaddingMode, IntPair
from .pad import check_pad_limits, pad2d_backward_impl, pad2d_impl

__all__ = ["corr2d", "convolve2d", "conv2d", "conv2d_backward"]

_PADDING_MODES = CONV_PADDING_MODES
_NEED = ("input", "weight", "bias")
_NEED_ALL = frozenset(_NEED)


class _Conv(NamedTuple):
    """One call's arrays (converted, batched) and the plan of its shapes."""

    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    plan: ConvPlan


def _clear_plans() -> None:
    """Forget every plan (tests)."""
    clear_plans()


def _simple(value):
    kind = type(value)
    return kind is int or kind is str or (
        kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int)


_FLOAT32, _FLOAT64 = _FLOAT_DTYPES


def _plan_key(x, weight, bias, stride, padding, dilation, groups, padding_mode, extra,
              algorithm="auto"):
    """The cache key of a call whose arguments are already in their final form, else None.

    Keyed strictly: only exact ints, pairs of exact ints and strings, and arrays already
    C-contiguous in one native float dtype, so a key can only match arguments that the full
    checks accepted before (True or 1.0 never reuse the plan made for 1). The override in
    force is part of the key. Every call pays for this, so the common case (ints, no extra
    arrays) is tested first and without helper calls."""
    if type(x) is not np.ndarray or type(weight) is not np.ndarray:
        return None
    dtype = x.dtype
    if dtype is not _FLOAT32 and dtype is not _FLOAT64 and dtype not in _FLOAT_DTYPES:
        return None
    if weight.dtype is not dtype and weight.dtype != dtype:
        return None
    if not (x.flags.c_contiguous and weight.flags.c_contiguous):
        return None
    if bias is not None and (type(bias) is not np.ndarray or (
            bias.dtype is not dtype and bias.dtype != dtype) or not bias.flags.c_contiguous):
        return None
    for _, array in extra:
        if array is not None and (type(array) is not np.ndarray or array.dtype != dtype
                                  or not array.flags.c_contiguous):
            return None
    if not ((type(stride) is int or _simple(stride)) and (type(padding) is int or _simple(padding))
            and (type(dilation) is int or _simple(dilation)) and type(groups) is int
            and type(padding_mode) is str and type(algorithm) is str):
        return None
    return (x.shape, weight.shape, dtype.char, None if bias is None else bias.shape,
            stride, padding, dilation, groups, padding_mode, algorithm, current_override())


def _prepare(x, weight, bias, stride, padding, dilation, groups, padding_mode, extra=(),
             algorithm="auto") -> tuple[_Conv, list[np.ndarray]]:
    """Check and normalise every convolution argument; return a _Conv and the extra arrays.

    ``extra`` is a sequence of (name, array-like) converted to the common dtype (used for
    grad_output in the backward pass).
    """
    key = _plan_key(x, weight, bias, stride, padding, dilation, groups, padding_mode, extra,
                    algorithm)
    if key is not None:
        plan = cached(key)
        if plan is not None:
            return (_Conv(x[np.newaxis] if plan.unbatched else x, weight, bias, plan),
                    [value for _, value in extra] if extra else [])
    conv, extras = _prepare_checked(x, weight, bias, stride, padding, dilation, groups,
                                    padding_mode, extra, algorithm=algorithm)
    if key is not None:
        remember(key, conv.plan)
    return conv, extras


def _prepare_checked(x, weight, bias, stride, padding, dilation, groups, padding_mode, extra,
                     override=None, algorithm="auto"):
    """The full checks behind _prepare, and the plan they lead to (under ``override``, by
    default the one in force: fastconv._plan.use_paths)."""
    if override is None:
        override = current_override()
    algorithm = check_mode(algorithm, CONV_ALGORITHMS, "algorithm")
    dtype = result_dtype(("x", x), ("weight", weight), ("bias", bias), *extra)
    x = as_float_array(x, "x", dtype)
    weight = as_float_array(weight, "weight", dtype)
    x4, unbatched = as_batched(x, "x")
    if weight.ndim != 4:
        raise ValueError(
            f"weight must be 4-D (C_out, C_in/groups, kH, kW), got shape {weight.shape}"
        )
    batch, in_channels, in_h, in_w = x4.shape
    out_channels, in_channels_g, kernel_h, kernel_w = weight.shape
    groups = check_groups(groups, in_channels, out_channels)
    if in_channels_g != in_channels // groups:
        raise ValueError(
            f"weight.shape[1] = {in_channels_g} must equal input channels / groups = "
            f"{in_channels} / {groups} = {in_channels // groups} (x has shape {x.shape})"
        )
    if kernel_h < 1 or kernel_w < 1:
        raise ValueError(f"weight has an empty kernel: shape {weight.shape}")
    if bias is not None:
        bias = as_float_array(bias, "bias", dtype)
        if bias.shape != (out_channels,):
            raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    mode = check_mode(padding_mode, _PADDING_MODES, "padding_mode")
    pads = conv_padding(padding)
    if pads == "valid":
        pads = (0, 0, 0, 0)
    elif pads == "same":
        pads = same_padding((in_h, in_w), (kernel_h, kernel_w), stride, dilation)
    out_h, out_w = output_size((in_h, in_w), (kernel_h, kernel_w), stride, pads, dilation)
    extras = []
    for name, value in extra:
        extras.append(as_float_array(value, name, dtype))
    if mode != "zeros" and any(pads):
        check_pad_limits((in_h, in_w), pads, mode)  # even when the batch is empty
        padded_h, padded_w = in_h + pads[0] + pads[1], in_w + pads[2] + pads[3]
        geo_pads = (0, 0)
    else:
        padded_h, padded_w = in_h, in_w
        geo_pads = (pads[0], pads[2])
    check_size(padded_h * padded_w, "an input plane")
    check_size(out_h * out_w, "an output plane")
    geometry = make_geometry(in_channels_g, padded_h, padded_w, out_channels // groups,
                             out_h, out_w, kernel_h, kernel_w, stride, geo_pads, dilation,
                             dtype, override.stage)
    plan = ConvPlan(unbatched, dtype, pads, mode, stride, dilation, groups, out_h, out_w,
                    geometry, batch, in_channels, out_channels, override, algorithm=algorithm)
    return _Conv(x4, weight, bias, complete(plan)), extras


def _padded_input(conv: _Conv) -> np.ndarray:
    """The input the kernels see: explicitly padded for the non-zero padding modes."""
    plan = conv.plan
    if plan.mode != "zeros" and any(plan.pads):
        return pad2d_impl(conv.x, plan.pads, plan.mode)
    return conv.x


# conv2d's private ``_path``: the forward path to run. The usual choice depends on the size of
# the plane (staging, multiply-adds per sample), so a piece of an image could take another
# path than the whole image, which sums in another order; fastconv.dask asks every piece of a
# cut image for the whole image's path. Naming a path only skips its size heuristics, so every
# path named stays valid; it is part of the plan's key, never a module setting.
_PATHS = _paths.names("forward")


def _kernel_path(conv: _Conv, path: str | None = None) -> str:
    """The forward path conv2d runs for ``conv`` (a _Conv) given ``_path``: one of _PATHS, or
    'empty' (no input or no output channels: no kernel)."""
    plan = conv.plan
    if plan.geometry.in_channels_g == 0 or plan.out_channels == 0:
        return "empty"
    if path is None or path in plan.override.forward[:1]:
        return str(plan.forward.name)
    return str(_paths_for(conv, path).forward.name)


def _paths_for(conv: _Conv, path: str) -> ConvPlan:
    """conv's plan with the forward pass asked to run ``path``."""
    override = conv.plan.override._replace(forward=(path,))
    return complete(conv.plan._replace(override=override))


def conv2d(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None, stride: IntPair = 1,
           padding: ConvPadding = 0, dilation: IntPair = 1, groups: int = 1,
           padding_mode: ConvPaddingMode = "zeros", *, activation: Activation | None = None,
           out: np.ndarray | None = None, algorithm: ConvAlgorithm = "auto",
           _path: str | None = None, _buffers: _Maker | None = None) -> np.ndarray:
    """2-D convolution (cross-correlation) over a batch of multi-channel images.

    ``y[n, o, i, j] = bias[o] + sum_{c, p, q} x[n, g*C_in/groups + c, i*s + p*d - pad,
    j*s + q*d - pad] * weight[o, c, p, q]`` where ``g`` is the group of output channel ``o``,
    exactly as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        Input images. A 3-D input is one unbatched image and gives a 3-D result.
    weight : array_like, shape (C_out, C_in / groups, kH, kW)
        Filters.
    bias : array_like, shape (C_out,), optional
        Added to every output pixel of each channel.
    stride, dilation : int or (int, int), default 1
        Step between windows and spacing of the kernel taps, each >= 1.
    padding : int, (int, int), ((top, bottom), (left, right)), 'valid' or 'same', default 0
        Implicit padding. ``'same'`` gives ``ceil(in / stride)`` outputs, the odd row/column
        of padding going to the bottom/right (PyTorch's 'same' for stride 1, TensorFlow's
        beyond).
    groups : int, default 1
        Split the channels into this many independent groups (``groups == C_in`` is a
        depthwise convolution).
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, default 'zeros'
        What the padding contains, as ``torch.nn.Conv2d``.
    activation : {None, 'relu'}, default None
        ``'relu'`` returns ``max(conv2d(...), 0)`` (NaN kept, as ``numpy.maximum``), applied
        where the kernels store their sums: bit-identical to ReLU after the convolution,
        without a second pass over the output.
    out : ndarray, optional
        C-contiguous array of the exact result shape and dtype to write into; it must not
        share memory with what the kernel reads (x, weight, bias, after conversion: also
        through a memoryview or a torch tensor), else ValueError.
    algorithm : {'auto', 'direct', 'winograd'}, default 'auto'
        ``'winograd'`` computes 3x3, stride-1, dilation-1, ungrouped convolutions (any
        padding) by Winograd F(m x m, 3 x 3), m = 2, 4 or 6 chosen from the shapes: fewer
        multiplications, larger rounding errors. The bound, tested: max |y - y_exact| <= 1e-4
        * max |y_exact| in float32 for data of one scale (measured, up to 256 channels: at
        most 2.4e-5; table in README), 1e-12 in float64. Elsewhere it runs the usual paths.
        ``'auto'`` (today: never Winograd) and ``'direct'`` (never Winograd) keep the usual
        accuracy.

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        In the promoted dtype of ``x``, ``weight`` and ``bias`` (float32 or float64).

    Raises
    ------
    ValueError
        Wrong shapes, channel/group mismatch, bad stride/padding/dilation values, a kernel
        larger than the padded input, an unknown padding_mode or activation, or a wrong
        ``out`` shape.
    TypeError
        Unsupported dtypes (complex, object, str) or argument types.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fastconv.conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[10., 18.],
           [42., 50.]])
    >>> fastconv.conv2d(x, -np.ones((1, 1, 2, 2)), stride=2, activation="relu")[0, 0]
    array([[0., 0.],
           [0., 0.]])
    """
    relu = activation is not None and check_activation(activation) == "relu"
    conv, _ = _prepare(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                       algorithm=algorithm)
    plan = conv.plan
    if _path is not None:
        if _path not in _PATHS or _kernel_path(conv, _path) not in (_path, "empty"):
            raise ValueError(f"_path must be one of {_PATHS} that can run this convolution, "
                             f"got {_path!r} (it runs {_kernel_path(conv, _path)!r})")
        plan = _paths_for(conv, _path)
    result_shape = _result_shape(plan)
    if out is not None:
        check_out(out, result_shape, plan.dtype)
        check_no_overlap(out, (("x", conv.x), ("weight", conv.weight), ("bias", conv.bias)))
        result = out
    elif _buffers is not None:  # a layer's recycled array (nothing else holds it)
        result = _buffers(result_shape, plan.dtype)
    else:
        result = np.empty(result_shape, dtype=plan.dtype)
    return _forward_into(conv, plan, result, relu)


def _result_shape(plan: ConvPlan) -> tuple[int, ...]:
    """conv2d's result shape: (N, C_out, H_out, W_out), without N for an unbatched x."""
    shape4 = (plan.batch, plan.out_channels, plan.out_h, plan.out_w)
    return shape4[1:] if plan.unbatched else shape4


def _forward_into(conv: _Conv, plan: ConvPlan, result: np.ndarray, relu: bool) -> np.ndarray:
    """conv2d's work once its arguments are checked: ``plan``'s convolution of ``conv``'s
    arrays into ``result`` (of the result's shape and dtype); returns ``result``."""
    result4 = result[np.newaxis] if plan.unbatched else result
    if result4.size == 0:
        return result
    if plan.geometry.in_channels_g == 0:
        # no input channels: an empty sum, the bias alone (and no element of x or of the
        # weights for a kernel to point at)
        result4[...] = 0 if conv.bias is None else conv.bias.reshape(1, -1, 1, 1)
        if relu:
            _paths.relu_inplace(result4)
        return result
    _paths.run_forward(plan, _padded_input(conv), conv.weight, conv.bias, result4, relu)
    return result


_Maker = Callable[[tuple[int, ...], np.dtype[Any]], np.ndarray]


def _new(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


def _zeros(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def _filled(make: _Maker, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    array = make(shape, dtype)
    array.fill(0)
    return array


def _check_need(need):
    if need is _NEED:  # the default
        return _NEED_ALL
    if isinstance(need, str):
        need = (need,)
    try:
        need = tuple(need)
    except TypeError:
        raise TypeError(f"need must be a sequence of names from {_NEED}, got {need!r}") from None
    unknown = [name for name in need if name not in _NEED]
    if unknown:
        raise ValueError(f"need may only name {_NEED}, got {unknown!r}")
    return set(need)


def conv2d_backward(grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike, stride: IntPair = 1,
                    padding: ConvPadding = 0, dilation: IntPair = 1, groups: int = 1,
                    padding_mode: ConvPaddingMode = "zeros", *, need: Iterable[str] = _NEED,
                    algorithm: ConvAlgorithm = "auto", _buffers: _Maker | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Gradient of the loss with respect to conv2d's result.
    x, weight, stride, padding, dilation, groups, padding_mode
        The arguments the forward pass was called with.
    need : sequence of {'input', 'weight', 'bias'}, default all three
        Which gradients to compute; the others are returned as ``None`` and cost nothing.
    algorithm : {'auto', 'direct', 'winograd'}, default 'auto'
        As :func:`conv2d`: ``'winograd'`` computes the input gradient of a 3x3, stride-1,
        dilation-1, ungrouped convolution with padding at most 2 (the input gradient is then
        a 3x3 stride-1 convolution of grad_output) by Winograd, with the same error bound,
        and the weight gradient of such a convolution (any padding) by Winograd F(4x4, 3x3)
        where it pays (many channels: 64 -> 64 at 56x56, say; not 16 -> 32): float32 within
        1e-4 * max|grad_weight| on data of one scale (measured at most 1e-5; README), 1e-12
        in float64. The bias gradient takes the usual path.

    Returns
    -------
    grad_input : ndarray or None
        Same shape as ``x``.
    grad_weight : ndarray or None
        Same shape as ``weight``.
    grad_bias : ndarray or None
        Shape (C_out,).
        Gradients are plain sums over the batch (no averaging), as in PyTorch.

    Raises
    ------
    ValueError
        As :func:`conv2d`, or if ``grad_output``'s shape is not the forward result's, or
        ``need`` names something else.
    TypeError
        Unsupported dtypes or argument types.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = fastconv.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gb
    array([4.])
    """
    need = _check_need(need)
    conv, (grad_output,) = _prepare(x, weight, None, stride, padding, dilation, groups,
                                    padding_mode, extra=(("grad_output", grad_output),),
                                    algorithm=algorithm)
    plan = conv.plan
    expected = (plan.batch, plan.out_channels, plan.out_h, plan.out_w)
    gy4 = grad_output[np.newaxis] if plan.unbatched and grad_output.ndim == 3 else grad_output
    if gy4.shape != expected:
        shown = expected[1:] if plan.unbatched else expected
        raise ValueError(f"grad_output has shape {grad_output.shape}, expected {shown} "
                         f"(the shape conv2d returns for these arguments)")
    return _backward_planned(conv, gy4, need, _buffers)


def _backward_planned(conv: _Conv, gy4: np.ndarray, need: frozenset[str] | set[str],
                      _buffers: _Maker | None
                      ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """conv2d_backward's work once its arguments are checked: ``gy4`` the 4-D grad_output of
    conv's plan, in its dtype, C-contiguous; ``need`` a set of _NEED's names."""
    plan = conv.plan
    batch, out_channels, dtype = plan.batch, plan.out_channels, plan.dtype
    geometry = plan.geometry
    # a path runs only where there is something to sum: a sample, and an input and an output
    # channel; the other gradients are the zeros they are allocated with
    # ``_buffers(shape, dtype)`` (the layers' recycled arrays, fastconv._buffers) makes the
    # results in place of np.empty; zeroed where the paths add into them
    empty = _buffers if _buffers is not None else _new
    zeros = _zeros if _buffers is None else (lambda shape, dtype: _filled(_buffers, shape, dtype))
    runs = batch > 0 and out_channels > 0 and geometry.in_channels_g > 0
    grad_bias = grad_weight = grad_input = None
    if "bias" in need:
        grad_bias = zeros((out_channels,), dtype)
        if batch:
            _paths.grad_bias(gy4, grad_bias, out_channels)
    if "weight" in need:
        if runs and plan.grad_weight.writes_all_weight(plan):
            grad_weight = empty(conv.weight.shape, dtype)
        else:
            grad_weight = zeros(conv.weight.shape, dtype)
        if runs:
            # only the weight gradient reads x: pad it (non-zero padding modes) only then
            plan.grad_weight.grad_weight(plan, gy4, _padded_input(conv), grad_weight)
    if "input" in need:
        shape = (batch, plan.in_channels, geometry.in_h, geometry.in_w)
        path = None
        if runs:
            path = next(path for path in plan.grad_input if path.takes(conv.weight))
        if path is not None and path.writes_all_input(plan):
            grad_input = empty(shape, dtype)
        else:
            grad_input = zeros(shape, dtype)
        if path is not None:
            path.grad_input(plan, gy4, conv.weight, grad_input)
        grad_input = _finish_grad_input(plan, grad_input)
    return grad_input, grad_weight, grad_bias


# ---- the layers' entries (nn.Conv2d): conv2d's checks once per layer and input shape

def layer_plan(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: IntPair,
               padding: ConvPadding, dilation: IntPair, groups: int,
               padding_mode: ConvPaddingMode, algorithm: ConvAlgorithm) -> _Conv:
    """conv2d's checks of a layer's arguments (and the plan they lead to) as a _Conv, which
    the layer may pass to :func:`layer_forward` and :func:`layer_backward` for as long as the
    arrays are the same objects (x: of the same shape and dtype), its settings unchanged and
    the same use_paths override in force."""
    conv, _ = _prepare(x, weight, bias, stride, padding, dilation, groups, padding_mode,
                       algorithm=algorithm)
    return conv


def layer_forward(conv: _Conv, relu: bool, buffers: _Maker) -> np.ndarray:
    """conv2d (``activation='relu'`` with ``relu``, ``_buffers=buffers``) of a checked
    _Conv (:func:`layer_plan`)."""
    plan = conv.plan
    return _forward_into(conv, plan, buffers(_result_shape(plan), plan.dtype), relu)


def layer_backward(conv: _Conv, grad_output: Any, need: frozenset[str], buffers: _Maker
                   ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None] | None:
    """conv2d_backward of a checked batched _Conv (:func:`layer_plan`), or None (nothing
    run) where ``grad_output`` is not already what conv2d_backward would make of it (a
    C-contiguous array of the plan's dtype and output shape): the caller then calls
    conv2d_backward, which converts or refuses it."""
    plan = conv.plan
    if (type(grad_output) is not np.ndarray or grad_output.dtype != plan.dtype
            or not grad_output.flags.c_contiguous
            or grad_output.shape != (plan.batch, plan.out_channels, plan.out_h, plan.out_w)):
        return None
    return _backward_planned(conv, grad_output, need, buffers)


def _finish_grad_input(plan: ConvPlan, grad_input: np.ndarray) -> np.ndarray:
    """Fold the explicit padding back (non-zero padding modes) and drop the batch axis."""
    if plan.mode != "zeros" and any(plan.pads):
        grad_input = pad2d_backward_impl(grad_input, plan.pads, plan.mode)
    return grad_input[0] if plan.unbatched else grad_input


def _as_plane(array, name, dtype):
    plane = as_float_array(array, name, dtype)
    if plane.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got {plane.ndim}-D with shape {plane.shape}")
    return plane


def corr2d(X: ArrayLike, K: ArrayLike) -> np.ndarray:
    """Textbook 2-D cross-correlation, 'valid': ``Y[i, j] = (X[i:i+h, j:j+w] * K).sum()``.

    Parameters
    ----------
    X : array_like, 2-D
        Input plane.
    K : array_like, 2-D, shape (h, w)
        Kernel, at most as large as ``X`` along each axis.

    Returns
    -------
    ndarray, shape (X.shape[0] - h + 1, X.shape[1] - w + 1)
        In the promoted float dtype (integer inputs give float64).

    Raises
    ------
    ValueError
        If an argument is not 2-D or the kernel is larger than the input.
    TypeError
        For unsupported dtypes.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.corr2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]])
    array([[19., 25.],
           [37., 43.]])
    """
    dtype = result_dtype(("X", X), ("K", K))
    plane = _as_plane(X, "X", dtype)
    kernel = _as_plane(K, "K", dtype)
    return conv2d(plane[np.newaxis, np.newaxis], kernel[np.newaxis, np.newaxis])[0, 0]


def convolve2d(X: ArrayLike, K: ArrayLike) -> np.ndarray:
    """Textbook 2-D convolution, 'valid': ``corr2d(X, K[::-1, ::-1])``.

    Parameters
    ----------
    X : array_like, 2-D
        Input plane.
    K : array_like, 2-D
        Kernel; flipped along both axes before correlating.

    Returns
    -------
    ndarray
        Shape ``(X.shape[0] - K.shape[0] + 1, X.shape[1] - K.shape[1] + 1)``.

    Raises
    ------
    ValueError, TypeError
        As :func:`corr2d`.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.convolve2d([[1, 2, 3]], [[1, 0, -1]])
    array([[2.]])
    """
    dtype = result_dtype(("X", X), ("K", K))
    kernel = _as_plane(K, "K", dtype)
    return corr2d(X, kernel[::-1, ::-1])
