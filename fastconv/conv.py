"""Convolution: corr2d, convolve2d, conv2d and conv2d_backward.

The wrappers normalise arguments (through ``fastconv._args``), allocate outputs and
workspaces, and call one kernel of ``fastconv._conv`` with the GIL released and BLAS held to
one thread. Non-zero padding modes pad explicitly with ``pad2d`` and convolve unpadded.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _conv
from ._args import (
    _FLOAT_DTYPES,
    as_batched,
    as_float_array,
    check_mode,
    check_no_overlap,
    check_out,
    check_size,
    output_size,
    padding4,
    pair,
    result_dtype,
    same_padding,
)
from ._threads import blas_single_thread, effective_num_threads
from ._typing import ArrayLike, ConvPadding, ConvPaddingMode, IntPair
from .pad import check_pad_limits, pad2d_backward_impl, pad2d_impl

__all__ = ["corr2d", "convolve2d", "conv2d", "conv2d_backward"]

_PADDING_MODES = {"zeros": "zeros", "reflect": "reflect", "replicate": "replicate",
                  "circular": "circular"}
_NEED = ("input", "weight", "bias")
_NEED_ALL = frozenset(_NEED)

# An im2col tile (k rows by `tile` output pixels) is sized to stay in L2 next to the GEMM's
# packed panels; the band of column gradients that the few-items backward schedule keeps is
# bounded so the workspace never grows with the image.
_TILE_BYTES = 256 * 1024
_BAND_BYTES = 32 * 1024 * 1024
_PARTIAL_BYTES = 32 * 1024 * 1024
_POINTWISE_TILE = 4096
# Each thread copies the input of one (sample, group) into a zero-padded stage, from which
# every im2col row is a run of plain 64-byte copies (src/_conv.pyx, stage_input), when that
# copy is at most this big. A tile reads only a band of the stage's rows, so it need not fit
# in a cache: on Zen 4, staging the ResNet-sized planes (0.85 MB) made their forward 8% and
# the 7x7 stem's 17% faster. Larger planes (images of millions of pixels) keep im2col from x,
# so the workspace stays bounded.
_STAGE_BYTES = 8 * 1024 * 1024
# The input gradient of a stride-1 convolution is a forward convolution of grad_output when
# the input is at most this much larger than the output (see _transposed_geometry).
_TRANSPOSED_MAX_GROWTH = 1.25
# ... and the whole batch takes at least this many multiply-adds
_TRANSPOSED_MIN_MACS = 2 ** 16
_MAX_WEIGHT_CHUNKS = 8
_PER_ITEM_MIN_ITEMS = 8


def _specialised(kernel):
    """The kernel's float32 and float64 versions, picked once: Cython's fused-type dispatch
    costs microseconds per call, as much as a whole small convolution."""
    return {np.dtype(np.float32): kernel["float"], np.dtype(np.float64): kernel["double"]}


_FORWARD = _specialised(_conv.conv2d_forward)
_BACKWARD = _specialised(_conv.conv2d_backward)
_DEPTHWISE_FORWARD = _specialised(_conv.depthwise_forward)
_DEPTHWISE_BACKWARD = _specialised(_conv.depthwise_backward)
# (weight rows, pixel columns) per panel of the packed GEMM
_PANELS = {np.dtype(np.float32): _conv.PANELS["float"],
           np.dtype(np.float64): _conv.PANELS["double"]}
_PACKED_GEMM = _conv.packed_gemm_kernel() is not None
# the direct kernels (src/_direct.h) run on this CPU (AVX-512; see _direct_path)
_DIRECT = _conv.DIRECT
# measured on Zen 4, one thread: the packed GEMM wins by 10-35% from a few million
# multiply-adds per (sample, group) up, and ties or loses below (LeNet-sized layers)
_PACKED_MIN_MACS = {np.dtype(np.float32): 2 ** 21, np.dtype(np.float64): 2 ** 23}
# the weight gradient's: from LeNet's second layer (16 x 150 x 100) up, measured the same way
# (at 16 x 25 x 144, the first layer of bench's "seed", BLAS still wins)
_PACKED_MIN_MACS_WEIGHT = {np.dtype(np.float32): 2 ** 17, np.dtype(np.float64): 2 ** 19}
# the portable kernel (generic: no AVX2) ties BLAS on the forward GEMMs from the same bound,
# but its weight gradient (16-byte vectors, panels of 6 rows) only from there too: below, an
# SSE-level OpenBLAS was 10-30% faster on bench's lenet and small layers
if (_conv.packed_gemm_kernel() or "").startswith("generic"):
    _PACKED_MIN_MACS_WEIGHT = dict(_PACKED_MIN_MACS)
# elements in 64 bytes: the slack per workspace row that lets a kernel align the row's start
_ALIGN = {np.dtype(np.float32): 16, np.dtype(np.float64): 8}


def _is_depthwise(conv):
    """One input channel per group: direct per-plane kernels instead of GEMMs, where their
    workspace is bounded (_depthwise_fits)."""
    return conv.groups > 1 and conv.geometry[0] == 1 and _depthwise_fits(
        conv.geometry, conv.weight.shape[0] // conv.x.shape[1], conv.dtype)


# The per-plane depthwise kernels keep, per thread, a band of the zero-padded input (or of
# grad_output) at least dilation*(k-1)+1 rows of the padded width: (dilation*(k-1))**2
# elements, 4 GiB at dilation 8192 for a 3x3 kernel on a 5x5 image. Above this the
# convolution takes im2col + GEMM by group, whose workspace is a tile.
_DEPTHWISE_SCRATCH_BYTES = 8 * 1024 * 1024


@functools.lru_cache(maxsize=256)
def _depthwise_fits(geometry: tuple, multiplier: int, dtype: np.dtype) -> bool:
    """Whether the per-plane depthwise kernels' scratch stays within _DEPTHWISE_SCRATCH_BYTES
    per thread (the direct ones, _depthwise_direct, bound their stage themselves)."""
    scratch, lanes = _conv.depthwise_workspace_sizes(geometry, multiplier)
    return scratch * dtype.itemsize + lanes * 8 <= _DEPTHWISE_SCRATCH_BYTES


@functools.lru_cache(maxsize=256)
def _depthwise_direct(geometry, in_channels, out_channels, dtype, path=None):
    """Whether a depthwise convolution runs the kernels with 16 channels across the lanes
    (src/_direct.h, fc_dwd_*): float32 on an AVX-512 CPU, one output channel per input
    channel, a multiple of 16 of them, a stage (the padded input of 16 channels) of at most
    _STAGE_BYTES. Measured on Zen 4 against the per-plane kernels, at bench_ops.py's
    'depthwise' (16, 128, 28, 28, 3x3), 2 threads, best of repeated calls: forward 0.57 ->
    0.40 ms, backward 2.03 -> 0.78 ms (the weight gradient 1.20 -> 0.38). ``path``: conv2d's
    ``_path`` (see _kernel_path); 'depthwise' keeps the per-plane kernels."""
    if path == "depthwise" or not (
            _DIRECT and dtype == np.float32 and in_channels == out_channels
            and out_channels % 16 == 0 and out_channels):
        return False
    stage, tile = _conv.depthwise_direct_sizes(geometry)
    return 0 < tile and stage * 4 <= _STAGE_BYTES


@functools.lru_cache(maxsize=256)
def _depthwise_transposed(geometry, channels, dtype):
    """A stride-1 depthwise convolution's input gradient as a forward depthwise convolution of
    grad_output with the taps reversed, ``gx[i, j] = sum_{p,q} gy[i + pad - p*d, j + pad - q*d]
    * w[p, q]`` (gy 0 outside): its geometry, or None where that does not apply (strides, or
    padding beyond the kernel's reach, or no direct kernels for it). It sums over the padding
    of grad_output too, so the caller takes it only for finite weights (an inf weight times
    a padded zero would be NaN where PyTorch has no such product); the scatter
    (fc_dwd_igrad) never meets the padding."""
    (_, in_h, in_w, _, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
     dil_h, dil_w, *_) = geometry
    top, left = dil_h * (kernel_h - 1) - pad_top, dil_w * (kernel_w - 1) - pad_left
    if (stride_h, stride_w) != (1, 1) or top < 0 or left < 0:
        return None
    gather = _make_geometry(1, out_h, out_w, 1, in_h, in_w, kernel_h, kernel_w, (1, 1),
                            (top, left), (dil_h, dil_w), dtype)
    return gather if _depthwise_direct(gather, channels, channels, dtype) else None


def _depthwise_lanes(weight):
    """The depthwise weights (C, 1, kH, kW) as [block of 16 channels][tap][channel]."""
    channels = weight.shape[0]
    return np.ascontiguousarray(weight.reshape(channels // 16, 16, -1).transpose(0, 2, 1))


def _depthwise_direct_workspace(num_threads, geometry):
    """Per-thread rows for fc_dwd_*: 64 bytes of slack, a stage (the input, or the input
    gradient's sums) and a pixel-major tile of 16 planes (the output, or grad_output)."""
    stage, tile = _conv.depthwise_direct_sizes(geometry)
    return np.empty((num_threads, _ALIGN[np.dtype(np.float32)] + stage + tile),
                    dtype=np.float32)


def _depthwise_workspaces(num_threads, geometry, multiplier, dtype):
    """Per-thread scratch of the depthwise kernels (padded input bands, a padded row) and the
    float64 lanes of the weight gradient's sums, each row padded to whole cache lines."""
    scratch, lanes = _conv.depthwise_workspace_sizes(geometry, multiplier)
    scratch += -scratch % (64 // dtype.itemsize)
    lanes += -lanes % 8
    return (np.empty((num_threads, scratch), dtype=dtype),
            np.empty((num_threads, lanes), dtype=np.float64))


_Conv = namedtuple(
    "_Conv",
    "x weight bias unbatched dtype pads mode stride dilation groups out_h out_w geometry",
)


def _tile_size(k, out_plane, itemsize):
    """Output pixels per tile: depends on the shapes only, never on the thread count."""
    tile = _TILE_BYTES // max(1, k * itemsize)
    tile = max(64, tile - tile % 16)
    return max(1, min(tile, out_plane))


# Validated plans (everything _prepare derives from the shapes and arguments), so that a
# training loop calling with the same shapes pays for the checks once. Keyed strictly: only
# exact ints, pairs of exact ints and strings, and arrays already C-contiguous in one native
# float dtype, so a key can only match arguments that the full checks accepted before
# (True or 1.0 never reuse the plan made for 1).
_PLANS: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_MAX_PLANS = 256


def _clear_plans():
    """Forget every plan and cached path choice (tests that change the thresholds above)."""
    _PLANS.clear()
    _packed_path.cache_clear()
    _transposed_geometry.cache_clear()
    _direct_path.cache_clear()
    _depthwise_direct.cache_clear()
    _depthwise_transposed.cache_clear()
    _depthwise_fits.cache_clear()


def _simple(value):
    kind = type(value)
    return kind is int or kind is str or (
        kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int)


def _plan_key(x, weight, bias, stride, padding, dilation, groups, padding_mode, extra):
    if type(x) is not np.ndarray or type(weight) is not np.ndarray:
        return None
    dtype = x.dtype
    if dtype not in _FLOAT_DTYPES or weight.dtype != dtype or not (
        x.flags.c_contiguous and weight.flags.c_contiguous
    ):
        return None
    for array in (bias,) + tuple(value for _, value in extra):
        if array is not None and (type(array) is not np.ndarray or array.dtype != dtype
                                  or not array.flags.c_contiguous):
            return None
    if not (_simple(stride) and _simple(padding) and _simple(dilation)
            and type(groups) is int and type(padding_mode) is str):
        return None
    return (x.shape, weight.shape, dtype.char, None if bias is None else bias.shape,
            stride, padding, dilation, groups, padding_mode)


def _prepare(x, weight, bias, stride, padding, dilation, groups, padding_mode, extra=()
             ) -> tuple[Any, list[np.ndarray]]:
    """Check and normalise every convolution argument; return a _Conv and the extra arrays.

    ``extra`` is a sequence of (name, array-like) converted to the common dtype (used for
    grad_output in the backward pass).
    """
    key = _plan_key(x, weight, bias, stride, padding, dilation, groups, padding_mode, extra)
    if key is not None:
        plan = _PLANS.get(key)
        if plan is not None:
            return (_Conv(x[np.newaxis] if plan[0] else x, weight, bias, *plan),
                    [value for _, value in extra])
    conv, extras = _prepare_checked(x, weight, bias, stride, padding, dilation, groups,
                                    padding_mode, extra)
    if key is not None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = conv[3:]
    return conv, extras


def _prepare_checked(x, weight, bias, stride, padding, dilation, groups, padding_mode, extra):
    """The full checks behind _prepare."""
    dtype = result_dtype(("x", x), ("weight", weight), ("bias", bias), *extra)
    x = as_float_array(x, "x", dtype)
    weight = as_float_array(weight, "weight", dtype)
    x4, unbatched = as_batched(x, "x")
    if weight.ndim != 4:
        raise ValueError(
            f"weight must be 4-D (C_out, C_in/groups, kH, kW), got shape {weight.shape}"
        )
    if type(groups) is not int:
        if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)):
            raise TypeError(f"groups must be an int, got {groups!r}")
        groups = int(groups)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    batch, in_channels, in_h, in_w = x4.shape
    out_channels, in_channels_g, kernel_h, kernel_w = weight.shape
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels ({in_channels}) and the "
            f"output channels (weight.shape[0] = {out_channels})"
        )
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
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            pads = same_padding((in_h, in_w), (kernel_h, kernel_w), stride, dilation)
        else:
            raise ValueError(f"padding must be an int, a pair, a pair of pairs, 'valid' or "
                             f"'same', got {padding!r}")
    else:
        pads = padding4(padding, "padding")
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
    geometry = _make_geometry(in_channels_g, padded_h, padded_w, out_channels // groups,
                              out_h, out_w, kernel_h, kernel_w, stride, geo_pads, dilation,
                              dtype)
    conv = _Conv(x4, weight, bias, unbatched, dtype, pads, mode, stride, dilation, groups,
                 out_h, out_w, geometry)
    return conv, extras


def _make_geometry(in_channels_g, in_h, in_w, out_channels_g, out_h, out_w, kernel_h,
                   kernel_w, stride, pads, dilation, dtype):
    """The kernels' geometry tuple (src/_conv.pyx, make_geometry): the shapes, then the tile
    and whether to stage, which it chooses from them."""
    k = in_channels_g * kernel_h * kernel_w
    shapes = (in_channels_g, in_h, in_w, out_channels_g, out_h, out_w, kernel_h, kernel_w,
              stride[0], stride[1], pads[0], pads[1], dilation[0], dilation[1])
    if _is_pointwise(shapes):
        # pointwise: the input plane is the GEMM operand itself, no im2col block to keep in
        # L2, so longer tiles only save OpenBLAS re-packing the weights
        tile = min(out_h * out_w, _POINTWISE_TILE)
    else:
        tile = _tile_size(k, out_h * out_w, dtype.itemsize)
    check_size(k * tile, "an im2col tile")
    geometry = shapes + (tile, False)
    if 0 < _conv.stage_size(geometry) * dtype.itemsize <= _STAGE_BYTES:
        geometry = shapes + (tile, True)
    return geometry


@functools.lru_cache(maxsize=256)
def _transposed_geometry(geometry, dtype):
    """The input gradient of a stride-1 convolution as a forward convolution of grad_output
    (with the weights transposed and flipped, see _transposed_weight), or None where that does
    not apply: other strides, pointwise convolutions that the direct kernels cannot take
    (their column gradient is the input gradient already), or padding beyond the kernel's
    reach. It is
    ``gx[c, i, j] = sum_{o,p,q} gy[o, i + pad - p*d, j + pad - q*d] * w[o, c, p, q]``, a
    convolution with padding d*(k-1) - pad: no col2im scatter. It sums over every tap of
    every input pixel, padding included, so it pays only where the input is about as large as
    the output ('same' padding), not for 'valid' convolutions."""
    (in_channels_g, in_h, in_w, out_channels_g, out_h, out_w, kernel_h, kernel_w, stride_h,
     stride_w, pad_top, pad_left, dil_h, dil_w, *_) = geometry
    reach_h, reach_w = dil_h * (kernel_h - 1), dil_w * (kernel_w - 1)
    # the padding on the far sides, from the output size
    pad_bottom = out_h - in_h - pad_top + reach_h
    pad_right = out_w - in_w - pad_left + reach_w
    if (stride_h, stride_w) != (1, 1) or not (
            0 <= reach_h - pad_top and 0 <= reach_h - pad_bottom
            and 0 <= reach_w - pad_left and 0 <= reach_w - pad_right) or (
            in_h * in_w > _TRANSPOSED_MAX_GROWTH * out_h * out_w):
        return None
    transposed = _make_geometry(out_channels_g, out_h, out_w, in_channels_g, in_h, in_w,
                                kernel_h, kernel_w, (1, 1), (reach_h - pad_top, reach_w - pad_left),
                                (dil_h, dil_w), dtype)
    if _is_pointwise(geometry) and not _direct_path(transposed, dtype):
        # a pointwise convolution's column gradient is its input gradient already: one GEMM
        # per tile, no scatter; only the direct kernels do better (at 16, 32 ... channels)
        return None
    return transposed


def _transposed_weight(weight, groups):
    """wt[g*C_in/groups + c, o, p, q] = w[g*C_out/groups + o, c, kH-1-p, kW-1-q]."""
    out_channels, in_channels_g, kernel_h, kernel_w = weight.shape
    w5 = weight.reshape(groups, out_channels // groups, in_channels_g, kernel_h, kernel_w)
    return np.ascontiguousarray(w5[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)).reshape(
        groups * in_channels_g, out_channels // groups, kernel_h, kernel_w)


def _padded_input(conv):
    """The input the kernels see: explicitly padded for the non-zero padding modes."""
    if conv.mode != "zeros" and any(conv.pads):
        return pad2d_impl(conv.x, conv.pads, conv.mode)
    return conv.x


def _n_tiles(geometry):
    return -(-(geometry[4] * geometry[5]) // geometry[14])


def _stage(geometry, dtype):
    """Elements a thread's workspace row needs after its im2col block: the 64 bytes the staged
    copy may spill past it, then the stage (src/_conv.pyx, stage_of), if staged."""
    return _ALIGN[dtype] + (_conv.stage_size(geometry) if geometry[15] else 0)


def _workspace(rows, geometry, dtype):
    """Per-thread im2col blocks: k by tile; for the packed GEMM, rows of tile rounded up to
    whole panels, plus one panel (src/_conv.pyx, im2col_rows); 64 bytes of slack to align
    each row's start; then the stage."""
    k = geometry[0] * geometry[6] * geometry[7]
    nr = _PANELS[dtype][1]
    return np.empty((rows, k * (-(-geometry[14] // nr) + 1) * nr + _ALIGN[dtype]
                     + _stage(geometry, dtype)), dtype=dtype)


def _direct_workspace(rows, geometry, dtype):
    """Per-thread rows for the direct kernels: 64 bytes of slack to align the start, the stage,
    then a run of a tile's pixels (at most 256 KiB of them, _conv.direct_run_pixels) of
    pixel-major sums (the forward pass) or of grad_output (the weight gradient)."""
    return np.empty((rows, _ALIGN[dtype] + _conv.stage_size(geometry)
                     + _conv.direct_run_pixels(geometry) * geometry[3]), dtype=dtype)


_NO_TAPS = np.empty(0, dtype=np.intp)


def _is_pointwise(geometry):
    """1x1, stride 1, unpadded, output = input: the input plane is the GEMM operand itself.
    (The shapes are the geometry's first 14 entries; the tile and staging are not read.)"""
    (_, in_h, in_w, _, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
     *_) = geometry
    return (kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left) == (1, 1, 1, 1, 0, 0) \
        and (out_h, out_w) == (in_h, in_w)


@functools.lru_cache(maxsize=1024)  # per call it cost ~1 us of a tiny convolution's ~8
def _packed_path(geometry, dtype, weight_gradient=False, path=None):
    """Whether the convolution's GEMMs (or, with ``weight_gradient``, the weight gradient's)
    use the packed GEMM (src/_gemm.h) instead of BLAS.

    It needs its SIMD micro-kernels; pointwise convolutions keep BLAS, which reads the input
    planes in place where the packed path would copy them, and so do small ones (below
    _PACKED_MIN_MACS multiply-adds per sample and group), where OpenBLAS's small-matrix
    kernels, which pack nothing, are as fast or faster. The weight gradient has no such
    kernel in OpenBLAS (it packs both operands on every call), so its bound is lower.
    Chosen from the shapes (and the CPU) only, never from the thread count, unless conv2d's
    ``_path`` asks for 'packed' (any size) or 'blas' (see _kernel_path).
    """
    minimum = (_PACKED_MIN_MACS_WEIGHT if weight_gradient else _PACKED_MIN_MACS)[dtype]
    return (_PACKED_GEMM and not _is_pointwise(geometry) and path != "blas"
            and (path == "packed" or _macs_per_item(geometry) >= minimum))


@functools.lru_cache(maxsize=1024)
def _direct_path(geometry, dtype, path=None):
    """Whether the forward pass (and the input gradients computed as one) runs the direct
    kernels of src/_direct.h: float32 on an AVX-512 CPU, a staged geometry with a multiple of
    16 output channels per group (_conv.direct_block). They read the stage in place, with the
    output channels across the vector lanes, so there is no im2col block and no lane is lost
    on narrow output rows. Measured on Zen 4 against im2col + GEMM (the best of either GEMM),
    1 and 2 threads, they won on every such shape of bench_ops.py: LeNet's second layer 0.46
    -> 0.31 ms at 1 thread, the 'small' layer 1.34 -> 1.16 ms, ResNet's 3x3 36.0 -> 34.2 ms;
    the stem tied at 2 threads (9.7 vs 9.3 ms, within the noise) and won at 1 (19.7 vs 21.3).
    conv2d's ``_path`` naming another kernel turns them off (see _kernel_path).
    """
    return (path in (None, "direct") and _DIRECT and dtype == np.float32
            and _conv.direct_block(geometry) > 0)


def _macs_per_item(geometry):
    """Multiply-adds of one (sample, group): C_out/groups * k * output pixels."""
    return geometry[3] * geometry[0] * geometry[6] * geometry[7] * geometry[4] * geometry[5]


def _packed_weight(geometry, groups, dtype, transposed=False, path=None):
    """The buffer the packed GEMM packs the weights into (C_out/groups by k per group, or k
    by C_out/groups for the input gradient, and 64 bytes of slack to align its start), or an
    empty array for the BLAS path."""
    if not _packed_path(geometry, dtype, path=path):
        return np.empty(0, dtype=dtype)
    mr = _PANELS[dtype][0]
    k = geometry[0] * geometry[6] * geometry[7]
    rows, columns = (k, geometry[3]) if transposed else (geometry[3], k)
    return np.empty(groups * -(-rows // mr) * mr * columns + _ALIGN[dtype], dtype=dtype)


def _weight_workspace(threads, geometry, dtype, packed):
    """Per-thread rows for the weight gradient: an im2col block (BLAS), or (packed GEMM) the
    tile of grad_output in panels, the transposed im2col block in panels and nr rows of
    scratch (src/_conv.pyx, grad_weight_impl)."""
    if not packed:
        return _workspace(threads, geometry, dtype)
    mr, nr = _PANELS[dtype]
    k = geometry[0] * geometry[6] * geometry[7]
    tile = geometry[14]
    size = (-(-geometry[3] // mr) * mr + -(-k // nr) * nr + nr) * tile
    return np.empty((threads, size + 2 * _ALIGN[dtype] + _stage(geometry, dtype)), dtype=dtype)


def _rows_workspace(threads, rows, geometry, dtype, packed):
    """Per-thread copies of ``rows`` rows of a tile for the packed GEMM (panel_ld(tile) each:
    whole panels plus one, and 64 bytes of slack), or a placeholder for the BLAS path."""
    if not packed.size:
        return np.empty((1, 1), dtype=dtype)
    nr = _PANELS[dtype][1]
    return np.empty((threads, rows * (-(-geometry[14] // nr) + 1) * nr + _ALIGN[dtype]),
                    dtype=dtype)


# conv2d's private ``_path``: the forward kernel to run. The usual choice depends on the size
# of the plane (staging, multiply-adds per sample), so a piece of an image could take another
# kernel than the whole image, which sums in another order; fastconv.dask asks every piece of
# a cut image for the whole image's kernel. It only takes choices made from the size away
# (the direct kernels, the packed GEMM's lower bound), so every kernel named stays valid, and
# it is an argument of the cached predicates, never a module setting: other calls see nothing.
_PATHS = ("direct", "packed", "blas", "depthwise-direct", "depthwise")


def _kernel_path(conv: Any, path: str | None = None) -> str:
    """The forward kernel conv2d runs for ``conv`` (a _Conv) given ``_path``: one of _PATHS, or
    'empty' (no input or no output channels: no kernel)."""
    out_channels = conv.weight.shape[0]
    if conv.geometry[0] == 0 or out_channels == 0:
        return "empty"
    if _is_depthwise(conv):
        return ("depthwise-direct" if _depthwise_direct(
            conv.geometry, conv.x.shape[1], out_channels, conv.dtype, path) else "depthwise")
    if _direct_path(conv.geometry, conv.dtype, path):
        return "direct"
    return "packed" if _packed_path(conv.geometry, conv.dtype, path=path) else "blas"


def conv2d(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None, stride: IntPair = 1,
           padding: ConvPadding = 0, dilation: IntPair = 1, groups: int = 1,
           padding_mode: ConvPaddingMode = "zeros", *, out: np.ndarray | None = None,
           _path: str | None = None) -> np.ndarray:
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
    out : ndarray, optional
        C-contiguous array of the exact result shape and dtype to write into; it must not
        share memory with what the kernel reads (x, weight, bias, after conversion: also
        through a memoryview or a torch tensor), else ValueError.

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        In the promoted dtype of ``x``, ``weight`` and ``bias`` (float32 or float64).

    Raises
    ------
    ValueError
        Wrong shapes, channel/group mismatch, bad stride/padding/dilation values, a kernel
        larger than the padded input, an unknown padding_mode, or a wrong ``out`` shape.
    TypeError
        Unsupported dtypes (complex, object, str) or argument types.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fastconv.conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[10., 18.],
           [42., 50.]])
    """
    conv, _ = _prepare(x, weight, bias, stride, padding, dilation, groups, padding_mode)
    if _path is not None and (_path not in _PATHS
                              or _kernel_path(conv, _path) not in (_path, "empty")):
        raise ValueError(f"_path must be one of {_PATHS} that can run this convolution, got "
                         f"{_path!r} (it runs {_kernel_path(conv, _path)!r})")
    batch = conv.x.shape[0]
    out_channels = conv.weight.shape[0]
    shape4 = (batch, out_channels, conv.out_h, conv.out_w)
    result_shape = shape4[1:] if conv.unbatched else shape4
    if out is not None:
        check_out(out, result_shape, conv.dtype)
        check_no_overlap(out, (("x", conv.x), ("weight", conv.weight), ("bias", conv.bias)))
        result = out
    else:
        result = np.empty(result_shape, dtype=conv.dtype)
    result4 = result[np.newaxis] if conv.unbatched else result
    if result4.size == 0:
        return result
    x_in = _padded_input(conv)
    bias_in = conv.bias if conv.bias is not None else np.empty(0, dtype=conv.dtype)
    if _is_depthwise(conv):
        if _depthwise_direct(conv.geometry, x_in.shape[1], out_channels, conv.dtype, _path):
            num_threads = effective_num_threads(batch * out_channels // 16)
            _conv.depthwise_direct_forward(
                x_in, _depthwise_lanes(conv.weight), bias_in, result4,
                _depthwise_direct_workspace(num_threads, conv.geometry),
                np.empty(conv.weight.shape[2] * conv.weight.shape[3], dtype=np.intp),
                conv.geometry, num_threads)
            return result
        num_threads = effective_num_threads(batch * out_channels)
        workspace, _ = _depthwise_workspaces(num_threads, conv.geometry,
                                             out_channels // x_in.shape[1], conv.dtype)
        _DEPTHWISE_FORWARD[conv.dtype](x_in, conv.weight, bias_in, result4, workspace,
                                       conv.geometry, num_threads)
        return result
    _forward(x_in, conv.weight, conv.bias, result4, conv.geometry, conv.groups, _path)
    return result


def _forward(x, weight, bias, out, geometry, groups, path=None):
    """Every forward pass but the depthwise one, into ``out``: the direct kernels where they
    apply (_direct_path), else im2col + GEMM; workspaces, threads and the kernel. ``path``:
    conv2d's ``_path``."""
    dtype = x.dtype
    if geometry[0] == 0:
        # no input channels: an empty sum, the bias alone (and no element of x or of the
        # weights for the kernel to point at)
        out[...] = 0 if bias is None else bias.reshape(1, -1, 1, 1)
        return
    n_items = x.shape[0] * groups * _n_tiles(geometry)
    num_threads = effective_num_threads(n_items)
    bias = bias if bias is not None else np.empty(0, dtype=dtype)
    if _direct_path(geometry, dtype, path):
        k = geometry[0] * geometry[6] * geometry[7]
        packed_weight = np.empty(groups * geometry[3] * k + _ALIGN[dtype], dtype=dtype)
        _conv.conv2d_forward_direct(
            x, weight, bias, out, _direct_workspace(num_threads, geometry, dtype),
            packed_weight, np.empty(k, dtype=np.intp), geometry, groups, num_threads)
        return
    workspace = _workspace(num_threads, geometry, dtype)
    packed_weight = _packed_weight(geometry, groups, dtype, path=path)
    with blas_single_thread():
        _FORWARD[dtype](x, weight, bias, out, workspace, packed_weight, geometry, groups,
                        num_threads)


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
                    padding_mode: ConvPaddingMode = "zeros", *, need: Iterable[str] = _NEED
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
                                    padding_mode, extra=(("grad_output", grad_output),))
    batch = conv.x.shape[0]
    out_channels = conv.weight.shape[0]
    expected = (batch, out_channels, conv.out_h, conv.out_w)
    gy4 = grad_output[np.newaxis] if conv.unbatched and grad_output.ndim == 3 else grad_output
    if gy4.shape != expected:
        shown = expected[1:] if conv.unbatched else expected
        raise ValueError(f"grad_output has shape {grad_output.shape}, expected {shown} "
                         f"(the shape conv2d returns for these arguments)")
    geometry = conv.geometry
    dtype = conv.dtype
    n_tiles = _n_tiles(geometry)
    grad_bias = np.zeros(out_channels, dtype=dtype) if "bias" in need else None
    grad_weight = np.zeros(conv.weight.shape, dtype=dtype) if "weight" in need else None
    # only the weight gradient reads x: pad it (non-zero padding modes) only then
    padded_input = _padded_input(conv) if grad_weight is not None else conv.x
    depthwise = _is_depthwise(conv)
    # (tiny convolutions keep the scatter: the transposed weights and a second kernel call
    # cost microseconds, as much as their whole backward pass)
    transposed = (None if depthwise
                  or batch * conv.groups * _macs_per_item(geometry) < _TRANSPOSED_MIN_MACS
                  else _transposed_geometry(geometry, dtype))
    if transposed is not None and "input" in need and not np.isfinite(conv.weight).all():
        # the transposed convolution sums over grad_output's padding too: an inf or NaN
        # weight times a padded zero would be NaN where no such product exists (PyTorch and
        # the scatter have none); the scatter skips the padding
        transposed = None
    per_item = batch * conv.groups >= _PER_ITEM_MIN_ITEMS
    # the depthwise kernel, the transposed convolution and the per-item scatter into the
    # stage (unstage) write every element of grad_input; the other col2im scatters accumulate
    writes_all = depthwise or transposed is not None or (
        per_item and geometry[15] and out_channels)
    grad_input = ((np.empty if writes_all else np.zeros)(
        (batch, conv.x.shape[1], geometry[1], geometry[2]), dtype=dtype)
        if "input" in need else None)
    if depthwise and _depthwise_direct(geometry, conv.x.shape[1], out_channels, dtype):
        if batch:
            _depthwise_direct_backward(conv, gy4, padded_input, grad_input, grad_weight,
                                       grad_bias)
        return _finish_grad_input(conv, grad_input), grad_weight, grad_bias
    if depthwise:
        if batch:
            num_threads = effective_num_threads(batch * conv.x.shape[1])
            workspace, lane_workspace = _depthwise_workspaces(
                num_threads, geometry, out_channels // conv.x.shape[1], dtype)
            _DEPTHWISE_BACKWARD[dtype](
                gy4, padded_input, conv.weight, grad_input, grad_weight, grad_bias,
                workspace, lane_workspace, geometry, num_threads)
        return _finish_grad_input(conv, grad_input), grad_weight, grad_bias
    partials = weight_workspace = input_workspace = None
    taps = _NO_TAPS
    packed_grad_weight = False
    weight_threads = input_threads = 1
    if grad_weight is not None and batch and grad_weight.size:
        # the (sample, tile) pairs are cut into chunks by the shapes alone; one chunk sums
        # straight into the result, several are added afterwards in a fixed order, so the sum
        # never depends on the thread count
        row = grad_weight.size
        n_chunks = max(1, min(batch * n_tiles, _MAX_WEIGHT_CHUNKS,
                              _PARTIAL_BYTES // max(1, row * dtype.itemsize)))
        weight_threads = effective_num_threads(n_chunks)
        if _direct_path(geometry, dtype):
            # the direct kernels sum tap-major, [group][tap][channel]: transposed below
            partials = np.zeros((n_chunks, row), dtype=dtype)
            taps = np.empty(geometry[0] * geometry[6] * geometry[7], dtype=np.intp)
            weight_workspace = _direct_workspace(weight_threads, geometry, dtype)
        else:
            partials = (grad_weight.reshape(1, row) if n_chunks == 1
                        else np.zeros((n_chunks, row), dtype=dtype))
            packed_grad_weight = _packed_path(geometry, dtype, weight_gradient=True)
            weight_workspace = _weight_workspace(weight_threads, geometry, dtype,
                                                 packed_grad_weight)
    packed_weight = gy_workspace = None
    if transposed is not None and grad_input is not None and grad_input.size:
        # stride 1: a forward convolution of grad_output, written straight into grad_input
        _forward(gy4, _transposed_weight(conv.weight, conv.groups), None, grad_input,
                 transposed, conv.groups)
    elif grad_input is not None and grad_input.size and out_channels:
        # (no output channels: the zeros it was allocated with)
        if per_item:
            input_threads = effective_num_threads(batch * conv.groups)
            input_workspace = _workspace(input_threads, geometry, dtype)
        else:
            input_threads = effective_num_threads(max(n_tiles, geometry[0]))
            block = geometry[0] * geometry[6] * geometry[7] * geometry[14]
            band = max(1, min(n_tiles, _BAND_BYTES // max(1, block * dtype.itemsize)))
            input_workspace = np.empty((1, max(1, band * block)), dtype=dtype)
        packed_weight = _packed_weight(geometry, conv.groups, dtype, transposed=True)
        gy_workspace = _rows_workspace(input_threads, geometry[3], geometry, dtype,
                                       packed_weight)
    if batch:
        with blas_single_thread():
            _BACKWARD[dtype](
                gy4, padded_input, conv.weight,
                grad_input if input_workspace is not None else None,
                partials, grad_bias, weight_workspace, input_workspace, packed_weight,
                gy_workspace, packed_grad_weight, taps, geometry, conv.groups, per_item,
                input_threads, weight_threads, effective_num_threads(out_channels),
            )
    if taps.size and batch:
        with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN propagate, as PyTorch
            summed = np.add.reduce(partials, axis=0)  # type: ignore[arg-type]  # made with taps
        channels = geometry[3]
        # (taps and partials are made only when grad_weight is wanted)
        grad_weight[...] = summed.reshape(conv.groups, -1, channels).transpose(0, 2, 1).reshape(  # type: ignore[index]
            grad_weight.shape)  # type: ignore[union-attr]
    elif partials is not None and partials.shape[0] > 1:
        with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN propagate, as PyTorch
            np.add.reduce(partials, axis=0, out=grad_weight.reshape(grad_weight.size))  # type: ignore[union-attr]
    return _finish_grad_input(conv, grad_input), grad_weight, grad_bias


def _depthwise_direct_backward(conv, gy4, x, grad_input, grad_weight, grad_bias):
    """The gradients that are not None, of a depthwise convolution that _depthwise_direct
    takes, by the kernels with 16 channels across the lanes (a non-empty batch)."""
    geometry, dtype = conv.geometry, conv.dtype
    channels = conv.weight.shape[0]
    blocks = channels // 16
    taps = conv.weight.shape[2] * conv.weight.shape[3]
    scatter_input = grad_input
    if grad_input is not None:
        gather = _depthwise_transposed(geometry, channels, dtype)
        if gather is not None and np.isfinite(conv.weight).all():
            # a forward pass over grad_output, the taps reversed (see _depthwise_transposed);
            # then the kernel below skips the input gradient
            threads = effective_num_threads(gy4.shape[0] * blocks)
            _conv.depthwise_direct_forward(
                gy4, _depthwise_lanes(conv.weight[:, :, ::-1, ::-1]), np.empty(0, dtype=dtype),
                grad_input, _depthwise_direct_workspace(threads, gather),
                np.empty(taps, dtype=np.intp), gather, threads)
            scatter_input = None
    sums = np.zeros((blocks, taps, 16), dtype=dtype) if grad_weight is not None else None
    if scatter_input is None and sums is None and grad_bias is None:
        return
    # items: (sample, block) for the scatter; blocks for the weight gradient, channels for
    # the bias
    num_threads = effective_num_threads(gy4.shape[0] * blocks if scatter_input is not None
                                        else channels)
    _conv.depthwise_direct_backward(
        gy4, x, _depthwise_lanes(conv.weight), scatter_input, sums, grad_bias,
        _depthwise_direct_workspace(num_threads, geometry), np.empty(taps, dtype=np.intp),
        geometry, num_threads)
    if sums is not None:
        grad_weight[...] = sums.transpose(0, 2, 1).reshape(grad_weight.shape)


def _finish_grad_input(conv, grad_input):
    """Fold the explicit padding back (non-zero padding modes) and drop the batch axis."""
    if grad_input is None:
        return None
    if conv.mode != "zeros" and any(conv.pads):
        grad_input = pad2d_backward_impl(grad_input, conv.pads, conv.mode)
    return grad_input[0] if conv.unbatched else grad_input


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
