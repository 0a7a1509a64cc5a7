"""Every way fastconv can run a convolution, in the order it prefers them: the one place where
a path is chosen.

A *path* is one kernel family for one op (the forward pass, the input gradient or the weight
gradient). Each says whether it ``applies`` to a problem (what the kernels can do on this CPU
and what workspace they may take), whether it ``pays`` there (the measured size thresholds),
and runs the op. The lists below (``FORWARD``, ``GRAD_INPUT``, ``GRAD_WEIGHT``) are ordered
like oneDNN's implementation lists: the plan (fastconv._plan) takes the first path that applies
and pays; an override (``fastconv._plan.use_paths``, or conv2d's private ``_path``) names the
path to take wherever it applies, whatever the size. Adding a path is adding one class and
one entry in a list.

The choice depends on the shapes, the dtype and the CPU (``fastconv._conv``'s kernels, capped
by ``FASTCONV_ISA``), never on the thread count, so results are bit-identical for any thread
count. One choice also depends on the data: the input gradient computed as a forward
convolution sums over grad_output's padding too, so it needs finite weights (``takes``); the
next path in the list runs otherwise.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import _conv
from ._buffers import scratch, scratch_zeros
from ._geometry import (
    ALIGN,
    Geometry,
    depthwise_direct_workspace,
    depthwise_workspaces,
    direct_workspace,
    gy_rows_workspace,
    im2col_workspace,
    make_geometry,
    packed_weight_buffer,
    packed_weight_workspace,
)
from ._threads import (
    COPY_ELEMENTS_PER_THREAD,
    blas_single_thread,
    effective_num_threads,
    threads_for,
    threads_key,
)

if TYPE_CHECKING:
    from ._plan import ConvPlan

__all__ = ["ConvPath", "FORWARD", "GRAD_INPUT", "GRAD_WEIGHT", "OPS", "names", "available",
           "run_forward", "relu_inplace", "relu_backward"]

_F32 = np.dtype(np.float32)


def _specialised(kernel: Any) -> dict[np.dtype, Any]:
    """The kernel's float32 and float64 versions, picked once: Cython's fused-type dispatch
    costs microseconds per call, as much as a whole small convolution."""
    return {np.dtype(np.float32): kernel["float"], np.dtype(np.float64): kernel["double"]}


# What this CPU's kernels can do (src/_cpu.h picks them once, capped by FASTCONV_ISA).
_PACKED_GEMM = _conv.packed_gemm_kernel() is not None
_DIRECT = bool(_conv.DIRECT)

# ---- the measured thresholds (Zen 4; bench/bench_ops.py) -----------------------------------
# The packed GEMM wins by 10-35% from a few million multiply-adds per (sample, group) up, and
# ties or loses below (LeNet-sized layers), where OpenBLAS's small-matrix kernels pack nothing.
PACKED_MIN_MACS = {np.dtype(np.float32): 2 ** 21, np.dtype(np.float64): 2 ** 23}
# The forward pass: re-measured (bench/bench_models.py's per-layer profile, 1 thread, this
# Zen 4 with the AVX-512 8x16 micro-kernel) the packed GEMM won on every small dense shape
# tried, both dtypes: LeNet's first layer (64, 1, 28, 28) -> 6 5x5 'same' 0.39 vs 0.82 ms
# float32, 0.60 vs 1.13 float64; at batch 1 0.015 vs 0.024 ms; (64, 16, 14, 14) -> 20 3x3
# 0.97 vs 2.92; (8, 3, 8, 8) -> 4 3x3 0.020 vs 0.022. So the forward pass takes it from 0.
PACKED_MIN_MACS_FORWARD = {np.dtype(np.float32): 0, np.dtype(np.float64): 0}
# The weight gradient's: from LeNet's second layer (16 x 150 x 100) up, measured the same way
# (at 16 x 25 x 144, the first layer of bench's "seed", BLAS still wins): OpenBLAS has no
# small-matrix kernel for it and packs both operands on every call.
PACKED_MIN_MACS_WEIGHT = {np.dtype(np.float32): 2 ** 17, np.dtype(np.float64): 2 ** 19}
# The portable kernel (FASTCONV_ISA=generic, or a CPU without AVX2: 16-byte vectors) ties an
# SSE-level OpenBLAS on the forward GEMMs from the same bound, but its weight gradient only
# from there too: below, OpenBLAS was 10-30% faster on bench's lenet and small layers.
# (The forward bound of 0 above was measured with the AVX-512 kernel only; the portable one
# keeps the bound it was measured with against OpenBLAS.)
if (_conv.packed_gemm_kernel() or "").startswith("generic"):
    PACKED_MIN_MACS_WEIGHT = dict(PACKED_MIN_MACS)
    PACKED_MIN_MACS_FORWARD = dict(PACKED_MIN_MACS)
# The input gradient as a forward convolution of grad_output pays when the input is at most
# this much larger than the output ('same' padding, not 'valid') ...
TRANSPOSED_MAX_GROWTH = 1.25
# ... and the whole batch takes at least this many multiply-adds (tiny convolutions keep the
# scatter: the transposed weights and a second kernel call cost as much as their backward).
TRANSPOSED_MIN_MACS = 2 ** 16
# The per-plane depthwise kernels keep, per thread, a band of the zero-padded input (or of
# grad_output) at least dilation*(k-1)+1 rows of the padded width: (dilation*(k-1))**2
# elements, 4 GiB at dilation 8192 for a 3x3 kernel on a 5x5 image. Above this the
# convolution takes im2col + GEMM by group, whose workspace is a tile.
DEPTHWISE_SCRATCH_BYTES = 8 * 1024 * 1024
# The direct depthwise kernels' stage (16 padded planes) is bounded like the im2col stage.
DEPTHWISE_STAGE_BYTES = 8 * 1024 * 1024
# The weight gradient's (sample, tile) pairs are cut into at most this many chunks, summed
# separately and added in a fixed order (so the sum never depends on the thread count) ...
MAX_WEIGHT_CHUNKS = 8
# ... whose partial sums take at most this many bytes
PARTIAL_BYTES = 32 * 1024 * 1024
# The input gradient's scatter runs one (sample, group) per thread from this many of them;
# below, one item at a time with its tiles in parallel, in bands of at most BAND_BYTES.
PER_ITEM_MIN_ITEMS = 8
BAND_BYTES = 32 * 1024 * 1024


class ConvPath:
    """One kernel family. Subclasses set ``name`` and ``ops`` and implement the ops they list;
    ``applies`` must be exact (the kernels can run it), ``pays`` is the size heuristic an
    override skips."""

    name: str = ""
    ops: frozenset[str] = frozenset()
    # whether ``forward`` takes ``relu=True`` and applies it in its kernels' store; a path
    # that does not gets the ReLU applied after its kernel (run_forward), bit for bit the same
    fuses_relu: bool = False

    def applies(self, op: str, plan: ConvPlan) -> bool:
        raise NotImplementedError

    def pays(self, op: str, plan: ConvPlan) -> bool:
        return True

    def takes(self, weight: np.ndarray) -> bool:
        """Whether the path can run with these weights (see GRAD_INPUT's data condition)."""
        return True

    def writes_all_input(self, plan: ConvPlan) -> bool:
        """Whether grad_input needs no zeroing: the path writes every element."""
        return True

    def writes_all_weight(self, plan: ConvPlan) -> bool:
        """Whether grad_weight needs no zeroing: the path writes every element (rather than
        adding into it)."""
        return False

    def forward(self, plan: ConvPlan, x: np.ndarray, weight: np.ndarray,
                bias: np.ndarray | None, out: np.ndarray, *, relu: bool = False) -> None:
        """out = conv(x) (+ bias), ReLU'd if ``relu`` (paths with ``fuses_relu``)."""
        raise NotImplementedError

    def forward_runner(self, plan: ConvPlan, relu: bool = False
                       ) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray],
                                     None]:
        """``run_forward(plan, x, weight, bias, out, relu)`` as a function of (x, weight,
        bias, out) for a prepared plan's step (fastconv._fusion), which is remade when the
        thread count changes: paths whose per-call set-up is a noticeable part of a small call
        work it out once here (the thread count in force now)."""
        def run(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                out: np.ndarray) -> None:
            run_forward(plan, x, weight, bias, out, relu)
        return run

    def grad_input(self, plan: ConvPlan, grad_output: np.ndarray, weight: np.ndarray,
                   grad_input: np.ndarray) -> None:
        raise NotImplementedError

    def grad_weight(self, plan: ConvPlan, grad_output: np.ndarray, x: np.ndarray,
                    grad_weight: np.ndarray) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<conv path {self.name!r}>"


def _is_depthwise(plan: ConvPlan) -> bool:
    """One input channel per group, and the per-plane kernels' scratch bounded."""
    geometry = plan.geometry
    if not (plan.groups > 1 and geometry.in_channels_g == 1):
        return False
    scratch, lanes = _conv.depthwise_workspace_sizes(geometry,
                                                     plan.out_channels // plan.in_channels)
    return scratch * plan.dtype.itemsize + lanes * 8 <= DEPTHWISE_SCRATCH_BYTES


def _depthwise_direct_fits(geometry: Geometry) -> bool:
    stage, tile = _conv.depthwise_direct_sizes(geometry)
    return 0 < tile and stage * 4 <= DEPTHWISE_STAGE_BYTES


def _depthwise_lanes(weight: np.ndarray) -> np.ndarray:
    """The depthwise weights (C, 1, kH, kW) as [block of 16 channels][tap][channel]."""
    channels = weight.shape[0]
    return np.ascontiguousarray(weight.reshape(channels // 16, 16, -1).transpose(0, 2, 1))


def _taps(weight: np.ndarray) -> np.ndarray:
    return np.empty(weight.shape[1] * weight.shape[2] * weight.shape[3], dtype=np.intp)


def _weight_chunks(plan: ConvPlan, row: int) -> int:
    """How many chunks the weight gradient's (sample, tile) pairs are cut into: from the
    shapes alone (see MAX_WEIGHT_CHUNKS)."""
    return max(1, min(plan.batch * plan.geometry.n_tiles, MAX_WEIGHT_CHUNKS,
                      PARTIAL_BYTES // max(1, row * plan.dtype.itemsize)))


# ---- depthwise, 16 channels across the vector lanes (src/conv/depthwise_direct.pxi) ----------

class DepthwiseDirect(ConvPath):
    """float32 on an AVX-512 CPU, one output channel per input channel, a multiple of 16 of
    them: a thread stages 16 planes pixel-major, each tap of 16 outputs one vector load.
    Measured on Zen 4 against the per-plane kernels, at bench_ops.py's 'depthwise' (16, 128,
    28, 28, 3x3), 2 threads: forward 0.57 -> 0.40 ms, backward 2.03 -> 0.78 ms."""

    name = "depthwise-direct"
    ops = frozenset({"forward", "grad_input", "grad_weight"})

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return (_DIRECT and plan.dtype == _F32 and plan.in_channels == plan.out_channels
                and plan.out_channels % 16 == 0 and _is_depthwise(plan)
                and _depthwise_direct_fits(plan.geometry))

    fuses_relu = True

    def forward(self, plan, x, weight, bias, out, *, relu=False):
        threads = effective_num_threads(plan.batch * plan.out_channels // 16)
        _conv.depthwise_direct_forward(
            x, _depthwise_lanes(weight), bias, out,
            depthwise_direct_workspace(threads, plan.geometry), _taps(weight), plan.geometry,
            threads, relu)

    def grad_input(self, plan, grad_output, weight, grad_input):
        threads = effective_num_threads(plan.batch * plan.in_channels // 16)
        _conv.depthwise_direct_grad_input(
            grad_output, _depthwise_lanes(weight), grad_input,
            depthwise_direct_workspace(threads, plan.geometry), _taps(weight), plan.geometry,
            threads)

    def writes_all_weight(self, plan: ConvPlan) -> bool:
        return True  # the transposed sums assigned

    def grad_weight(self, plan, grad_output, x, grad_weight):
        channels = plan.out_channels
        taps = grad_weight.shape[2] * grad_weight.shape[3]
        sums = np.zeros((channels // 16, taps, 16), dtype=np.float32)
        threads = effective_num_threads(channels)
        _conv.depthwise_direct_grad_weight(
            grad_output, x, sums, depthwise_direct_workspace(threads, plan.geometry),
            np.empty(taps, dtype=np.intp), plan.geometry, threads)
        grad_weight[...] = sums.transpose(0, 2, 1).reshape(grad_weight.shape)


class DepthwiseGather(DepthwiseDirect):
    """The input gradient of a stride-1 DepthwiseDirect convolution as a forward one of
    grad_output with the taps reversed, ``gx[i, j] = sum_{p,q} gy[i + pad - p*d, j + pad -
    q*d] * w[p, q]`` (gy 0 outside): no scatter. It sums over the padding of grad_output too,
    so it takes only finite weights (an inf weight times a padded zero would be NaN where
    PyTorch has no such product); the scatter (DepthwiseDirect) never meets the padding."""

    name = "depthwise-direct-gather"
    ops = frozenset({"grad_input"})

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return plan.gather is not None and super().applies(op, plan)

    def takes(self, weight: np.ndarray) -> bool:
        return bool(np.isfinite(weight).all())

    def grad_input(self, plan, grad_output, weight, grad_input):
        DepthwiseDirect.forward(self, plan.gather, grad_output, weight[:, :, ::-1, ::-1],
                                None, grad_input)


def depthwise_gather_geometry(plan: ConvPlan) -> Geometry | None:
    """DepthwiseGather's geometry (a forward pass over grad_output), or None where it does not
    apply: strides, padding beyond the kernel's reach, or no direct kernels for it."""
    g = plan.geometry
    top, left = g.dil_h * (g.kernel_h - 1) - g.pad_top, g.dil_w * (g.kernel_w - 1) - g.pad_left
    if (g.stride_h, g.stride_w) != (1, 1) or top < 0 or left < 0:
        return None
    gather = make_geometry(1, g.out_h, g.out_w, 1, g.in_h, g.in_w, g.kernel_h, g.kernel_w,
                           (1, 1), (top, left), (g.dil_h, g.dil_w), plan.dtype,
                           plan.override.stage)
    return gather if _depthwise_direct_fits(gather) else None


# ---- depthwise, one plane at a time (src/conv/depthwise.pxi) ---------------------------------

class Depthwise(ConvPath):
    """One input channel per group: a GEMM per group would be a matrix-vector product with k =
    kH*kW, all overhead; these C kernels build each output row one kernel row at a time."""

    name = "depthwise"
    ops = frozenset({"forward", "grad_input", "grad_weight"})
    _FORWARD = _specialised(_conv.depthwise_forward)
    _GRAD_INPUT = _specialised(_conv.depthwise_grad_input)
    _GRAD_WEIGHT = _specialised(_conv.depthwise_grad_weight)

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return _is_depthwise(plan)

    def _workspaces(self, plan: ConvPlan, threads: int) -> tuple[np.ndarray, np.ndarray]:
        return depthwise_workspaces(threads, plan.geometry,
                                    plan.out_channels // plan.in_channels, plan.dtype)

    fuses_relu = True

    def forward(self, plan, x, weight, bias, out, *, relu=False):
        threads = effective_num_threads(plan.batch * plan.out_channels)
        self._FORWARD[plan.dtype](x, weight, bias, out, self._workspaces(plan, threads)[0],
                                  plan.geometry, threads, relu)

    def grad_input(self, plan, grad_output, weight, grad_input):
        threads = effective_num_threads(plan.batch * plan.in_channels)
        self._GRAD_INPUT[plan.dtype](grad_output, weight, grad_input,
                                     self._workspaces(plan, threads)[0], plan.geometry, threads)

    def grad_weight(self, plan, grad_output, x, grad_weight):
        threads = effective_num_threads(plan.out_channels)
        workspace, lanes = self._workspaces(plan, threads)
        self._GRAD_WEIGHT[plan.dtype](grad_output, x, grad_weight, workspace, lanes,
                                      plan.geometry, threads)


# ---- direct: the output channels across the lanes (src/conv/direct.pxi) ---------------------

class Direct(ConvPath):
    """float32 on an AVX-512 CPU, a staged (or pointwise) geometry with a multiple of 16
    output channels per group: no im2col block, each input value broadcast from the stage in
    place. Measured on Zen 4 against im2col + GEMM (the best of either GEMM), 1 and 2
    threads, they won on every such shape of bench_ops.py: LeNet's second layer 0.46 -> 0.31
    ms at 1 thread, the 'small' layer 1.34 -> 1.16 ms, ResNet's 3x3 36.0 -> 34.2 ms; the stem
    tied at 2 threads (9.7 vs 9.3 ms, within the noise) and won at 1 (19.7 vs 21.3).
    A 1x1 kernel reads compact planes as one row of pixels (src/conv/direct.pxi,
    pointwise_rows): the small ResNet's shortcuts (batch 32, load ~4, two runs each, ms,
    direct / few-channels-lanes / packed / BLAS / torch), 32 -> 64 at 28x28 stride 2, 1 thread
    0.35 / 0.47 / 0.53 / 0.51 / 0.64-0.70, 2 threads 0.31 and 0.21 / 0.28 and 0.24 / 0.33 and
    0.28 / 0.28 and 0.27 / 0.68 and 0.37; 64 -> 128 at 14x14, 1 thread 0.32 / 0.35 / 0.47 /
    0.41 / 0.42-0.48, 2 threads 0.20 / 0.23 / 0.29 / 0.24 / 0.36-0.37 (the lanes' edge on
    the first at 2 threads is within the noise of that load; at 1 thread it loses by 25%)."""

    name = "direct"
    ops = frozenset({"forward", "grad_weight"})

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return _DIRECT and plan.dtype == _F32 and _conv.direct_block(plan.geometry) > 0

    fuses_relu = True

    # The threads and workspace shapes follow from the plan and the thread count: worked out
    # by the first call at each count and kept in the plan (sizes_for), as Gemm's.

    def _forward_sizes(self, plan, key):
        geometry = plan.geometry
        threads = effective_num_threads(plan.batch * plan.groups * geometry.n_tiles, key)
        return (threads, plan.groups * geometry.out_channels_g * geometry.k + ALIGN[_F32],
                direct_workspace(threads, geometry, _F32).shape)

    def forward(self, plan, x, weight, bias, out, *, relu=False, transposed=False):
        """``transposed``: ``weight`` is that of the convolution whose input gradient this
        is (the Transposed path), packed transposed and flipped by the kernel."""
        self.forward_runner(plan, relu, transposed)(x, weight, bias, out)

    def forward_runner(self, plan, relu=False, transposed=False):
        # the sizes once; the scratch (workspace, packed weights, tap offsets: all written
        # before they are read) kept per Python thread where small (thread_scratch): at
        # batch 1 this set-up was 1-2 of LeNet-5's second layer's 11 us
        key = threads_key()
        threads, packed, workspace = sizes_for(plan, ("forward", self.name, key),
                                               lambda: self._forward_sizes(plan, key))
        geometry, groups, kernel = plan.geometry, plan.groups, _conv.forward_direct
        memo_key = ("scratch", self.name, key)

        def make() -> tuple[Any, ...]:
            return (scratch(workspace, _F32), scratch(packed, _F32),
                    np.empty(_conv.direct_taps_size(geometry), dtype=np.intp))

        def run(x, weight, bias, out):
            work, pack, taps = thread_scratch(plan, memo_key, make)
            kernel(x, weight, bias, out, work, pack, taps, geometry, groups, threads, relu,
                   transposed)
        return run

    def writes_all_weight(self, plan: ConvPlan) -> bool:
        return True  # both kernels store the transposed sums

    def grad_weight(self, plan, grad_output, x, grad_weight):
        geometry, groups = plan.geometry, plan.groups
        channels, k = geometry.out_channels_g, geometry.k
        if grad_weight.size * 4 <= DIRECT_WEIGHT_PARTIAL_MAX_BYTES:
            self._grad_weight_chunks(plan, grad_output, x, grad_weight)
            return
        chunk = direct_weight_chunk(plan)
        # units of work: a block of 16 or 32 channels by a run of at most 12 or 24 taps
        threads = effective_num_threads(groups * channels // 16 * -(-k // 24))
        # the sums, tap-major, are transposed into grad_weight by the kernel
        _conv.grad_weight_direct(
            grad_output, x, grad_weight,
            scratch(_conv.direct_weight_workspace_floats(geometry, groups, chunk), _F32),
            np.empty(k, dtype=np.intp), geometry, groups, chunk, threads)


    def _grad_weight_chunks_sizes(self, plan, row, key):
        chunks = _weight_chunks(plan, row)
        threads = effective_num_threads(chunks, key)
        return chunks, threads, (threads, _conv.direct_wgrad_workspace_floats(plan.geometry))

    def _grad_weight_chunks(self, plan, grad_output, x, grad_weight):
        """Small results: the (sample, tile) pairs in chunks, each thread summing its chunks'
        pairs into partial sums of the whole result, added afterwards in order."""
        geometry = plan.geometry
        row = grad_weight.size
        key = threads_key()
        chunks, threads, workspace = sizes_for(
            plan, ("grad_weight", self.name, key),
            lambda: self._grad_weight_chunks_sizes(plan, row, key))
        # the kernel zeroes and sums the chunks' rows tap-major, [group][tap][channel], then
        # adds them in chunk order into grad_weight's layout, in parallel: the zero fill,
        # np.add.reduce and the transposing copy it replaces took 611 us in NumPy at the
        # ResNet's 8 conv shapes (batch 32), the sums 249 us at 2 threads
        _conv.grad_weight_direct_chunks(grad_output, x, grad_weight,
                                        scratch((chunks, row), _F32), scratch(workspace, _F32),
                                        scratch((threads, _conv.SUM_CHUNKS_FLOATS), _F32),
                                        np.empty(_conv.direct_wgrad_taps_size(geometry),
                                                 dtype=np.intp), geometry,
                                        plan.groups, threads)


# The direct weight gradient of a result (C_out * k floats) up to this size keeps the chunks
# of (sample, tile) pairs and their partial sums of the whole result (_grad_weight_chunks),
# which stay in L2 beside a tile; above, each tile re-read and re-wrote partials past L2
# (vgg14's 256 x 2304: 2.4 MB, the weight gradient 1.6x PyTorch's), and the units of
# grad_weight_direct sum over all the samples with their block of the result in registers.
DIRECT_WEIGHT_PARTIAL_MAX_BYTES = 1024 * 1024
# The direct weight gradient stages the input and transposes grad_output of a chunk of samples
# at a time: at most this many bytes of them (at least one sample). The chunk follows from the
# shapes alone; a sum's order never depends on it (grad_weight_direct_impl).
DIRECT_WEIGHT_CHUNK_BYTES = 16 * 1024 * 1024


def direct_weight_chunk(plan: ConvPlan) -> int:
    """Samples per chunk of the direct weight gradient (DIRECT_WEIGHT_CHUNK_BYTES)."""
    per_sample = 4 * (_conv.direct_weight_workspace_floats(plan.geometry, plan.groups, 1)
                      - _conv.direct_weight_workspace_floats(plan.geometry, plan.groups, 0))
    return max(1, min(plan.batch, DIRECT_WEIGHT_CHUNK_BYTES // max(1, per_sample)))


# ---- few input channels: output pixels across the lanes (src/conv/fewchan.pxi) -------------

# Input channels up to which it pays. Measured on this Zen 4 (1 thread, float32, ReLU fused,
# best of 7; the machine shared, so +-10%), ms, few-channels / direct / packed GEMM:
#   (1000, 1, 28, 28) -> 16 5x5 stride 2 (the tutorial net)  1.34 / 1.43 / 1.38
#   (1000, 1, 28, 28) -> 6 5x5 'same' (LeNet's first)        3.50 / 3.62 / 5.06
#   (125, 3, 32, 32) -> 16 3x3 'same'                        1.11 / 1.56 / 1.06
#   (125, 3, 32, 32) -> 32 5x5 'same'                        4.80 / 9.21 / 4.79
#   (125, 4, 32, 32) -> 16 3x3 'same'                        1.24 / 2.02 / 1.37
#   (125, 6, 14, 14) -> 16 5x5 (LeNet's second)              0.48 / 0.38 / 0.61
# and the whole tutorial net's eval forward (the pooling fused too, 1 thread) at batch 1, 64,
# 1000: 0.031 / 0.262 / 2.51 ms against 0.035 / 0.316 / 3.72 on the direct path. Four
# channels won at the one shape measured, but float64 and larger kernels were not measured
# there (bench's Dask case (4, 4, 90, 80) -> 16 5x5 float64 keeps the packed GEMM): 3.
FEW_MAX_CHANNELS = 3
# Output channels (per group) up to which it pays: with more, the direct or packed kernels
# (output channels across the lanes) win. Measured by the lead (2 threads, float32, median of
# 7 rounds of best-of-2, bias, no ReLU), ms, few-channels / direct / packed:
#   (8, 3, 224, 224) -> 16 7x7 stride 2 pad 3      1.76 / 2.15 / 2.40
#   (8, 3, 224, 224) -> 32 7x7 stride 2 pad 3      4.26 / 3.61 / 4.29
#   (8, 3, 224, 224) -> 64 7x7 stride 2 pad 3      7.95 / 6.74 / 7.23  (bench's stem; again
#                                                  7.95 / 7.14 / 7.35)
#   (8, 3, 224, 224) -> 32 3x3 stride 2 pad 1      1.80 / 1.64 / 1.64
#   (8, 1, 224, 224) -> 32 7x7 stride 2 pad 3      1.81 / 1.68 / 1.63
#   (1000, 1, 28, 28) -> 16 5x5 stride 2           1.06 / 1.27 / 1.42
#   (1000, 1, 28, 28) -> 64 5x5 stride 2           5.58 / 4.25 / 4.61
FEW_MAX_OUT_CHANNELS = 16
# A thread's phase planes (about the zero-padded input of one sample) at most this big; larger
# images take the other paths, whose workspaces are tiles.
FEW_PHASE_BYTES = 1024 * 1024
# A band's block of sums (window positions x channels x grid rows) kept about this big: in L1
# beside the phase planes.
FEW_BLOCK_BYTES = 24 * 1024


# Unpooled, a band's column planes (the input rows it reads, once per kernel column) kept
# about this big: in L2 (1 MB a core on Zen 4). Past the seed's whole grid (6.7 KB): 3 x 224 x
# 224 -> 16 7x7 stride 2 pad 3 takes 18.8 KB a grid row, 13-row bands (whose 3 rows of reach
# are filled twice); at 24 KB (L1) it took 1-row bands, 4 times the column planes' work, and
# 6.9 ms at 1 thread against 6.3 with the phase planes.
FEW_COLS_BYTES = 256 * 1024


# Below this many multiply-adds per thread a second thread costs more than it saves (waking
# it is microseconds; the tutorial net's first layer at batch 1 is 58K multiply-adds, about
# 2 us of one core).
FEW_MACS_PER_THREAD = 1 << 18


def _few_layout(geometry: Geometry, batch: int, itemsize: int, pool: tuple[int, int],
                num_threads: int, across: bool = False
                ) -> tuple[int, int, int, int, int, int, int, int]:
    """(threads, band, grid_h, grid_w, wp, phase, block, cpad) of FewChannels under
    ``num_threads``: bands of grid rows whose block is about FEW_BLOCK_BYTES, cut further
    where the batch has fewer samples than threads, and threads for at least
    FEW_MACS_PER_THREAD each (neither changes a result: every output is computed alone)."""
    grid_h, grid_w, wp, staging, block, cpad, _ = _conv.few_sizes(geometry, pool[0], pool[1], 1,
                                                                  itemsize, across)
    threads = max(1, min(num_threads, batch * geometry.macs_per_item // FEW_MACS_PER_THREAD,
                         batch * grid_h))
    if block:
        band = max(1, min(grid_h, FEW_BLOCK_BYTES // (block * itemsize)))
    else:  # unpooled: no block; the band's column planes, a grid row's worth each
        row = _conv.few_sizes(geometry, pool[0], pool[1], 2, itemsize, across)[3] - staging
        band = max(1, min(grid_h, FEW_COLS_BYTES // max(1, row * itemsize)))
    if batch * -(-grid_h // band) < threads:
        band = max(1, -(-grid_h // -(-threads // batch)))
    threads = min(threads, batch * -(-grid_h // band))
    sizes = _conv.few_sizes(geometry, pool[0], pool[1], band, itemsize, across)[:6]
    return (threads, band) + tuple(sizes)  # type: ignore[return-value]


class FewChannels(ConvPath):
    """One group of at most FEW_MAX_CHANNELS input channels (a network's first layer; taken
    for at most FEW_MAX_OUT_CHANNELS output channels, where it pays), any
    kernel, stride, padding and dilation, float32 and float64, at every FASTCONV_ISA level:
    the output pixels across the vector lanes, 4 output channels x up to 6 vectors of sums in
    registers over the k taps, the input read in place from a per-band copy with one plane
    per kernel column (src/_fewchan.h, fc_few_cols), the sums stored channel-major with the
    bias and the ReLU straight into the output. It can also max-pool by non-overlapping
    windows in the store (``forward_pooled``, the eval plan's Conv2d -> ReLU -> MaxPool2d;
    then from a per-sample split into stride phases and a block of sums).

    Measured against the direct and packed paths: see FEW_MAX_CHANNELS. The weight and input
    gradients keep the other paths (not measured with these kernels)."""

    name = "few-channels"
    ops = frozenset({"forward"})
    fuses_relu = True
    across = False  # FewChannelsLanes: the output channels across the lanes
    _FORWARD = _specialised(_conv.few_forward)

    def applies(self, op: str, plan: ConvPlan) -> bool:
        g = plan.geometry
        if plan.groups != 1 or g.out_h == 0 or g.out_w == 0:
            return False
        phase = _conv.few_sizes(g, 1, 1, 1, plan.dtype.itemsize)[6]
        return phase * plan.dtype.itemsize <= FEW_PHASE_BYTES

    def pays(self, op: str, plan: ConvPlan) -> bool:
        g = plan.geometry
        return g.in_channels_g <= FEW_MAX_CHANNELS and g.out_channels_g <= FEW_MAX_OUT_CHANNELS

    def pools(self, plan: ConvPlan, pool: tuple[int, int]) -> bool:
        """Whether forward_pooled can pool this plan's output by ``pool`` windows."""
        g = plan.geometry
        if not (self.applies("forward", plan) and g.out_h >= pool[0] and g.out_w >= pool[1]):
            return False
        phase = _conv.few_sizes(g, pool[0], pool[1], 1, plan.dtype.itemsize)[6]
        return phase * plan.dtype.itemsize <= FEW_PHASE_BYTES

    def forward(self, plan, x, weight, bias, out, *, relu=False):
        self.forward_pooled(plan, x, weight, bias, out, (1, 1), relu=relu)

    def forward_pooled(self, plan: ConvPlan, x: np.ndarray, weight: np.ndarray,
                       bias: np.ndarray | None, out: np.ndarray, pool: tuple[int, int], *,
                       relu: bool = False) -> None:
        """out = max_pool2d(relu?(conv(x) + bias), pool) (kernel = stride = pool, floor mode);
        ``pool`` (1, 1): the convolution itself. ``out`` is (N, C_out, out_h // pool_h,
        out_w // pool_w), C-contiguous."""
        key = threads_key()
        threads, band, workspace, packed, offsets = thread_scratch(
            plan, ("scratch", self.name, pool, key), lambda: self._scratch(plan, pool, key))
        self._FORWARD[plan.dtype](x, weight, bias, out, workspace, packed, offsets,
                                  plan.geometry, pool[0], pool[1], band, threads, relu,
                                  self.across)

    def _scratch(self, plan: ConvPlan, pool: tuple[int, int], key: int
                 ) -> tuple[Any, ...]:
        """(threads, band, workspace, packed, offsets) of forward_pooled under threads_key()
        ``key``: the layout (kept in the plan's memo) and new scratch arrays for it."""
        dtype = plan.dtype
        threads, band, _, _, _, phase, block, cpad = sizes_for(
            plan, ("forward", self.name, pool, key), lambda: _few_layout(
                plan.geometry, plan.batch, dtype.itemsize, pool,
                effective_num_threads(plan.batch * plan.geometry.out_h, key), self.across))
        k = plan.geometry.k
        return (threads, band, np.empty((threads, ALIGN[dtype] + phase + block), dtype=dtype),
                np.empty(k * cpad + cpad, dtype=dtype),
                np.empty(pool[0] * pool[1] * k, dtype=np.intp))

    def forward_runner(self, plan, relu=False):
        return self.pooled_runner(plan, (1, 1), relu=relu)

    def pooled_runner(self, plan: ConvPlan, pool: tuple[int, int], *, relu: bool = False
                      ) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray],
                                    None]:
        """``forward_pooled(plan, x, weight, bias, out, pool, relu=relu)`` as a function of
        (x, weight, bias, out), with the thread count in force now and the kernel looked up
        once: for a prepared plan's step, which is remade when the count changes. Its scratch
        is thread_scratch's, as forward_pooled's (calls from several Python threads at once
        are safe)."""
        key = threads_key()
        kernel, geometry, across = self._FORWARD[plan.dtype], plan.geometry, self.across
        memo_key = ("scratch", self.name, pool, key)

        def make() -> tuple[Any, ...]:
            return self._scratch(plan, pool, key)

        def run(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                out: np.ndarray) -> None:
            threads, band, workspace, packed, offsets = thread_scratch(plan, memo_key, make)
            kernel(x, weight, bias, out, workspace, packed, offsets, geometry, pool[0], pool[1],
                   band, threads, relu, across)
        return run


# Output channels (per group, a multiple of 16) up to which FewChannelsLanes pays, for the
# convolution alone ('forward') and max-pooled in its store ('pooled', the eval plan's Conv2d
# -> ReLU -> MaxPool2d step). Measured (float32, 2 threads, ReLU fused, medians of 7
# interleaved rounds, ms, few-channels / lanes, two runs on a quiet machine): the tutorial
# net's 1 -> 16 5x5 stride 2, pooled 2x2: whole net at batch 64 0.131 / 0.112 and 0.107 /
# 0.087, at batch 1000 1.48 / 1.23 and 1.42 / 1.13; alone, unpooled: batch 64 0.067 / 0.071,
# batch 1000 1.07 / 1.47, 1 -> 32 0.098 / 0.114, 3 -> 16 3x3 stride 1 on 32x32 0.314 / 0.356
# (the channel-major block is transposed into the output planes, 4x4 per store, where the
# pooled store writes a quarter of it). So the lanes pay pooled only. Since (AVX-512: the 2x2
# pooled kernels with the four window positions' sums at once, and x read in place without
# padding) the pooled step at batch 1000 is 0.44 ms on 2 threads (hot loop, quiet machine;
# bench/profile_models.py); the unpooled lanes were not re-measured against few-channels.
FEW_LANES_MAX_OUT_CHANNELS = 0
FEW_LANES_POOLED_MAX_OUT_CHANNELS = 16


class FewChannelsLanes(FewChannels):
    """FewChannels with the output channels across the vector lanes (src/_fewchan.h,
    fc_cl_block): 16 of them per micro-kernel call (one AVX-512 float vector, two AVX2 ones,
    four portable ones), each input value broadcast, J grid positions of one grid row per
    call (no lanes spent on columns past the grid, as the pixels-across-lanes kernels spend),
    the max over pool windows kept in registers. For a multiple of 16 output channels, at every
    FASTCONV_ISA level; the same phase planes, tap offsets, sums and bits as FewChannels.
    It pays where the convolution is max-pooled in the store (FEW_LANES_MAX_OUT_CHANNELS,
    FEW_LANES_POOLED_MAX_OUT_CHANNELS; fastconv._plan.pooling_path)."""

    name = "few-channels-lanes"
    across = True

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return plan.geometry.out_channels_g % 16 == 0 and super().applies(op, plan)

    def pays(self, op: str, plan: ConvPlan) -> bool:
        g = plan.geometry
        bound = FEW_LANES_POOLED_MAX_OUT_CHANNELS if op == "pooled" else FEW_LANES_MAX_OUT_CHANNELS
        return g.in_channels_g <= FEW_MAX_CHANNELS and g.out_channels_g <= bound


# ---- the input gradient as a forward convolution of grad_output -----------------------------

class Transposed(ConvPath):
    """Stride 1: ``gx[c, i, j] = sum_{o,p,q} gy[o, i + pad - p*d, j + pad - q*d] * w[o, c, p,
    q]``, a forward convolution (with the plan's ``transposed`` sub-plan and its own forward
    path) with padding d*(k-1) - pad: no col2im scatter. It sums over every tap of every input
    pixel, padding included, so it pays only where the input is about as large as the output
    ('same' padding), and takes only finite weights (an inf or NaN weight times a padded zero
    would be NaN where PyTorch has no such product)."""

    name = "transposed"
    ops = frozenset({"grad_input"})

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return plan.transposed is not None

    def pays(self, op: str, plan: ConvPlan) -> bool:
        g = plan.geometry
        return (plan.batch * plan.groups * g.macs_per_item >= TRANSPOSED_MIN_MACS
                and g.in_h * g.in_w <= TRANSPOSED_MAX_GROWTH * g.out_h * g.out_w)

    def takes(self, weight: np.ndarray) -> bool:
        return bool(np.isfinite(weight).all())

    def grad_input(self, plan, grad_output, weight, grad_input):
        sub = plan.transposed
        if isinstance(sub.forward, Direct):  # packs ``weight`` transposed and flipped itself
            # (the copy by _transposed_weight took 0.085 of the small ResNet's 7x7 layer's
            # 2.0 ms)
            sub.forward.forward(sub, grad_output, weight, None, grad_input, transposed=True)
            return
        sub.forward.forward(sub, grad_output, _transposed_weight(weight, plan.groups), None,
                            grad_input)


def _transposed_weight(weight: np.ndarray, groups: int, taps_h: slice = slice(None),
                       taps_w: slice = slice(None)) -> np.ndarray:
    """wt[g*C_in/groups + c, o, p, q] = w[g*C_out/groups + o, c, kH-1-p, kW-1-q], or its taps
    ``wt[:, :, taps_h, taps_w]`` only (StridedPhases' sub-kernels), in one copy."""
    out_channels, in_channels_g, kernel_h, kernel_w = weight.shape
    w5 = weight.reshape(groups, out_channels // groups, in_channels_g, kernel_h,
                        kernel_w)[:, :, :, ::-1, ::-1][:, :, :, taps_h, taps_w]
    kernel_h, kernel_w = w5.shape[3:]
    transposed = scratch((groups, in_channels_g, out_channels // groups, kernel_h, kernel_w),
                         weight.dtype)
    np.copyto(transposed, w5.transpose(0, 2, 1, 3, 4))
    return transposed.reshape(groups * in_channels_g, out_channels // groups, kernel_h,
                              kernel_w)


def transposed_geometry(plan: ConvPlan) -> Geometry | None:
    """Transposed's geometry, or None where it cannot apply: other strides, padding beyond the
    kernel's reach, or a pointwise convolution that the direct kernels cannot take (its column
    gradient is the input gradient already: one GEMM per tile, no scatter)."""
    g = plan.geometry
    reach_h, reach_w = g.dil_h * (g.kernel_h - 1), g.dil_w * (g.kernel_w - 1)
    # the padding on the far sides, from the output size
    pad_bottom = g.out_h - g.in_h - g.pad_top + reach_h
    pad_right = g.out_w - g.in_w - g.pad_left + reach_w
    if (g.stride_h, g.stride_w) != (1, 1) or not (
            0 <= reach_h - g.pad_top and 0 <= reach_h - pad_bottom
            and 0 <= reach_w - g.pad_left and 0 <= reach_w - pad_right):
        return None
    transposed = make_geometry(g.out_channels_g, g.out_h, g.out_w, g.in_channels_g, g.in_h,
                               g.in_w, g.kernel_h, g.kernel_w, (1, 1),
                               (reach_h - g.pad_top, reach_w - g.pad_left), (g.dil_h, g.dil_w),
                               plan.dtype, plan.override.stage)
    if g.pointwise and not (_DIRECT and plan.dtype == _F32
                            and _conv.direct_block(transposed) > 0):
        return None
    return transposed


# ---- the strided input gradients: phase planes interleaved (src/conv/interleave.pxi) ---------

class Phase(NamedTuple):
    """One phase (a, b) of a strided input gradient: the input pixels (a + stride_h*t, b +
    stride_w*u), ``rows`` by ``cols`` of them. Where ``geometry`` is None no tap reaches them
    (they are zeros); else they are a stride-1 forward convolution of grad_output with
    ``geometry`` and the sub-kernel ``wt[:, :, taps_h, taps_w]`` of the transposed, flipped
    weights (_transposed_weight)."""

    rows: int
    cols: int
    taps_h: slice
    taps_w: slice
    geometry: Geometry | None


def _phase_taps(a: int, stride: int, pad: int, dil: int, kernel: int, size: int
                ) -> tuple[int, slice, int, int, int] | None:
    """Along one axis, phase ``a``'s (input index a mod stride): its pixel count, the taps
    of the flipped kernel it meets (a slice; empty: none), their dilation and the padding of
    its forward pass over grad_output; None where that padding would be negative (padding
    beyond the kernel's reach). Tap p meets input pixel a + stride*t through output pixel t
    + (a + pad - p*dil) / stride where stride divides a + pad - p*dil: the taps p0, p0 + m,
    ... (m = stride / gcd(stride, dil)), whose output rows step by m*dil/stride."""
    count = -(-(size - a) // stride)
    taps = [p for p in range(kernel) if (a + pad - p * dil) % stride == 0]
    if not taps:
        return count, slice(0, 0), 0, 1, 0
    m = taps[1] - taps[0] if len(taps) > 1 else 1
    top = -((a + pad - taps[-1] * dil) // stride)  # the output row before t's first tap
    if top < 0:
        return None
    first = kernel - 1 - taps[-1]
    return count, slice(first, first + (len(taps) - 1) * m + 1, m), len(taps), \
        max(1, m * dil // stride), top


def strided_phases(plan: ConvPlan) -> tuple[Phase, ...] | None:
    """StridedPhases' phases (a, b) in the order a * stride_w + b, or None where it does not
    apply: stride 1, padding beyond the kernel's reach."""
    g = plan.geometry
    sh, sw = g.stride_h, g.stride_w
    if (sh, sw) == (1, 1):
        return None
    phases = []
    for a in range(sh):
        along_h = _phase_taps(a, sh, g.pad_top, g.dil_h, g.kernel_h, g.in_h)
        for b in range(sw):
            along_w = _phase_taps(b, sw, g.pad_left, g.dil_w, g.kernel_w, g.in_w)
            if along_h is None or along_w is None:
                return None
            rows, taps_h, kernel_h, dil_h, top = along_h
            cols, taps_w, kernel_w, dil_w, left = along_w
            geometry = None
            if rows > 0 and cols > 0 and kernel_h > 0 and kernel_w > 0:
                geometry = make_geometry(g.out_channels_g, g.out_h, g.out_w, g.in_channels_g,
                                         rows, cols, kernel_h, kernel_w, (1, 1), (top, left),
                                         (dil_h, dil_w), plan.dtype, plan.override.stage)
            phases.append(Phase(max(0, rows), max(0, cols), taps_h, taps_w, geometry))
    return tuple(phases)


def _interleave(plan: ConvPlan, phases: np.ndarray, offsets: np.ndarray,
                grad_input: np.ndarray) -> None:
    g = plan.geometry
    _INTERLEAVE[plan.dtype](phases, offsets, grad_input, g.stride_h, g.stride_w,
                            threads_for(plan.batch * plan.in_channels, grad_input.size,
                                        COPY_ELEMENTS_PER_THREAD))


# StridedPhases pays where its phases run on the direct kernels (float32 on AVX-512, a
# multiple of 16 input channels per group), with at least this many (sample, group) items
# (the direct kernels' units of work) ...
PHASES_MIN_ITEMS = 16
# ... and every phase at least this many pixels. Measured on this Zen 4, 2 threads, float32,
# min of 15 interleaved calls (load ~2.8), ms, phases / packed / BLAS:
#   (32, 32, 28, 28) -> 64 3x3 s2 p1 (ResNet's l2.c1)    1.43 / 1.69 / 1.85
#   (32, 64, 14, 14) -> 128 3x3 s2 p1 (l3.c1)            1.49 / 1.82 / 2.00
#   (64, 16, 28, 28) -> 32 5x5 s2 p2                     1.91 / 2.76 / 3.01
#   (16, 32, 30, 30) -> 32 3x3 s3                        0.36 / 0.41 / 0.38
#   (16, 64, 56, 56) -> 64 3x3 s2 p1                     6.09 / 6.03 / 7.15
#   (16, 64, 32, 32) -> 128 4x4 s2 p1                    5.68 / 5.70 / 7.46
#   (32, 32, 28, 28) -> 64 3x3 s2 p0                     1.48 / 1.45 / 1.64
# and below the bounds (the direct kernels' few items, or tiny planes, are slower than the
# GEMMs' tiles):
#   (32, 128, 7, 7) -> 256 3x3 s2 p1 (4x4 phases)        2.17 / 1.86 / 3.22
#   (4, 32, 14, 14) -> 32 3x3 s2 p1                      0.092 / 0.087 / 0.074
#   (8, 16, 16, 16) -> 32 3x3 s2 p1                      0.090 / 0.062 / 0.057
#   (1, 64, 28, 28) -> 64 3x3 s2 p1                      0.31 / 0.14 / 0.15
# Phases on the GEMM paths (float64, or too few channels for the direct kernels) lost
# everywhere measured: the ResNet's two layers in float64 3.10 / 2.87 / 3.22 and 3.07 /
# 2.86 / 3.30; (32, 3, 32, 32) -> 16 3x3 s2 p1 float32 0.23 / 0.12 / 0.10.
PHASES_MIN_PIXELS = 49


class StridedPhases(ConvPath):
    """Stride s > 1: the input pixels (i, j) with i = a, j = b (mod s) meet only the taps p, q
    with s dividing a + pad - p*d (likewise q), so each phase (a, b) of grad_input is a
    stride-1 forward convolution of grad_output with a sub-kernel of the transposed, flipped
    weights (3x3 stride 2: 2x2, 2x1, 1x2 and 1x1) and its own padding (the plan's
    ``phases``: (Phase, sub-plan) pairs, each sub-plan with its own forward path), into
    scratch; src/conv/interleave.pxi then writes grad_input whole from the phase planes
    (zeros where no tap reaches). The multiply-adds are the forward pass's, with no column
    block or col2im scatter. The sub-convolutions sum over grad_output's padding, so it takes
    only finite weights (as Transposed). Where every phase runs on the direct kernels, all of
    it is one call (_conv.strided_phases_direct: one parallel region, the sub-kernels packed
    from the weights, no transposed copies); in the small ResNet's training step (2 threads)
    that took its l2.c1 and l3.c1 input gradients from 1.59 / 1.47 to 1.44 / 1.31 ms, or
    2.16 / 2.08 to 2.0 / 1.59 ms in the slower runs (bench/profile_resnet_step.py)."""

    name = "strided-phases"
    ops = frozenset({"grad_input"})

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return plan.phases is not None

    def pays(self, op: str, plan: ConvPlan) -> bool:
        return plan.batch * plan.groups >= PHASES_MIN_ITEMS and all(
            isinstance(sub.forward, Direct) and phase.rows * phase.cols >= PHASES_MIN_PIXELS
            for phase, sub in plan.phases or () if sub is not None)

    def takes(self, weight: np.ndarray) -> bool:
        return bool(np.isfinite(weight).all())

    @staticmethod
    def _layout(plan: ConvPlan) -> tuple[int, np.ndarray, tuple[tuple[Any, ...], ...]]:
        """The phases' arrays one after another in one scratch buffer: its size, each phase's
        offset (-1: zeros) and the (phase, sub-plan, slice of the buffer, shape) of those
        computed."""
        phases = plan.phases or ()
        offsets = np.full(len(phases), -1, dtype=np.intp)
        runs, offset = [], 0
        for index, (phase, sub) in enumerate(phases):
            if sub is not None:
                shape = (plan.batch, plan.in_channels, phase.rows, phase.cols)
                end = offset + plan.batch * plan.in_channels * phase.rows * phase.cols
                runs.append((phase, sub, slice(offset, end), shape))
                offsets[index], offset = offset, end
        return offset, offsets, tuple(runs)

    @staticmethod
    def _one_call_sizes(plan: ConvPlan, key: int) -> tuple[Any, ...]:
        """_conv.strided_phases_direct's arguments that follow from the plan (empty where a
        phase does not run on the direct kernels): the geometries, the tap slices, the
        threads and the packed weights', taps' and workspace rows' sizes."""
        phases = plan.phases or ()
        subs = [sub for _, sub in phases if sub is not None]
        if (not subs or len(phases) > _conv.STRIDED_PHASES_MAX
                or not all(isinstance(sub.forward, Direct) for sub in subs)):
            return ()
        geometries = tuple(None if sub is None else phase.geometry for phase, sub in phases)
        slices = np.array([(p.taps_h.start or 0, p.taps_h.step or 1, p.taps_w.start or 0,
                            p.taps_w.step or 1) for p, _ in phases], dtype=np.intp)
        computed = [sub.geometry for sub in subs]
        threads = effective_num_threads(plan.batch * plan.groups * len(computed), key)
        packed = sum(plan.groups * g.out_channels_g * g.k for g in computed) + ALIGN[_F32]
        taps = sum(_conv.direct_taps_size(g) for g in computed)
        row = max(direct_workspace(1, g, _F32).shape[1] for g in computed)
        return geometries, slices, threads, packed, taps, row

    def grad_input(self, plan, grad_output, weight, grad_input):
        size, offsets, runs = sizes_for(plan, ("grad_input", self.name),
                                        lambda: self._layout(plan))
        buffer = scratch(size, plan.dtype)
        key = threads_key()
        one = sizes_for(plan, ("grad_input", self.name, "one", key),
                        lambda: self._one_call_sizes(plan, key))
        if one:
            # every phase on the direct kernels: one call, one parallel region, the
            # sub-kernels packed from the weights (no transposed copies)
            geometries, slices, threads, packed, taps, row = one
            g = plan.geometry
            _conv.strided_phases_direct(
                grad_output, weight, grad_input, buffer, offsets, geometries, slices,
                scratch((threads, row), _F32), scratch(packed, _F32),
                np.empty(taps, dtype=np.intp), plan.groups, g.stride_h, g.stride_w, threads)
            return
        for phase, sub, part, shape in runs:
            sub.forward.forward(
                sub, grad_output,
                _transposed_weight(weight, plan.groups, phase.taps_h, phase.taps_w), None,
                buffer[part].reshape(shape))
        _interleave(plan, buffer, offsets, grad_input)


class StridedPointwise(ConvPath):
    """1x1 kernel, stride s > 1, no padding (a ResNet's downsampling shortcut): input pixel
    (i, j) meets the weights only where s divides i and j, through output pixel (i/s, j/s);
    so ``gx[:, :, ::s, ::s] = sum_o gy[o] * w[o, c]``, a pointwise forward convolution of
    grad_output with the transposed weights (the plan's ``strided`` sub-plan and its own
    forward path), interleaved with zeros into grad_input (src/conv/interleave.pxi, every
    element written). The scatter paths (im2col + col2im) would build and scatter a column
    block of the same size. Measured on bench/profile_resnet_ops.py's two shortcuts (32 -> 64
    at 28x28 and 64 -> 128 at 14x14, batch 64, 2 threads): 0.93 -> 0.73 and 0.92 -> 0.57 ms
    against the BLAS path the thresholds chose (with a NumPy zero fill and strided copy in
    place of the interleave)."""

    name = "strided-pointwise"
    ops = frozenset({"grad_input"})

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return plan.strided is not None

    def grad_input(self, plan, grad_output, weight, grad_input):
        sub, g = plan.strided, plan.geometry
        rows = scratch(plan.batch * plan.in_channels * g.out_h * g.out_w, plan.dtype)
        sub.forward.forward(sub, grad_output, _transposed_weight(weight, plan.groups), None,
                            rows.reshape(plan.batch, plan.in_channels, g.out_h, g.out_w))
        offsets = np.full(g.stride_h * g.stride_w, -1, dtype=np.intp)
        offsets[0] = 0
        _interleave(plan, rows, offsets, grad_input)


def strided_pointwise_geometry(plan: ConvPlan) -> Geometry | None:
    """StridedPointwise's geometry (a pointwise forward pass over grad_output), or None where
    it does not apply: other kernels, stride 1 (pointwise already), padding."""
    g = plan.geometry
    if ((g.kernel_h, g.kernel_w) != (1, 1) or (g.stride_h, g.stride_w) == (1, 1)
            or (g.pad_top, g.pad_left) != (0, 0)
            or -(-g.in_h // g.stride_h) != g.out_h or -(-g.in_w // g.stride_w) != g.out_w):
        return None
    return _pointwise_geometry(plan, g.out_channels_g, g.in_channels_g)


def _pointwise_geometry(plan: ConvPlan, in_channels_g: int, out_channels_g: int) -> Geometry:
    """A pointwise convolution over planes of ``plan``'s output size (StridedPointwise's over
    grad_output, PointsWeight's over the compact input), ``plan``'s dtype and staging."""
    g = plan.geometry
    return make_geometry(in_channels_g, g.out_h, g.out_w, out_channels_g, g.out_h, g.out_w,
                         1, 1, (1, 1), (0, 0), (1, 1), plan.dtype, plan.override.stage)


# ---- a 1x1 kernel's weight gradient over its compact input ----------------------------------

class PointsWeight(ConvPath):
    """A 1x1 kernel that is not pointwise (a strided shortcut, or padding), float32: its input
    values gathered into compact planes of (out_h, out_w) (src/conv/stage.pxi, gather_points:
    a quarter of the input at stride 2, the columns by AVX-512 permutes), whose weight
    gradient is the pointwise one (the plan's ``points`` sub-plan and its own weight-gradient
    path), every sum over the same pixels in the same order (the same bits as the direct path
    on the ResNet shortcuts), where the direct path stages the whole input, phase-split, per
    (sample, tile). Measured (Zen 4, float32, 1 thread, min of 11 calls interleaved with
    torch, load ~4: rough), ms, the direct path before / this / torch: the small ResNet's
    shortcuts at batch 32, (32, 32, 28, 28) -> 64 0.606 / 0.437 / 0.505 and (32, 64, 14, 14)
    -> 128 0.491 / 0.409 / 0.399; ResNet-18's at batch 16, (16, 64, 56, 56) -> 128 4.32 /
    3.45 / 5.18, (16, 128, 28, 28) -> 256 3.37 / 3.15 / 3.50, (16, 256, 14, 14) -> 512 3.82
    / 3.80 / 3.21. At 2 threads (min of 200, load 4-5, two runs), the shortcuts: 0.345 and
    0.339 / 0.271 and 0.222 / 0.42-0.52; 0.383 and 0.378 / 0.330 and 0.324 / 0.31-0.37
    (there BLAS on the whole input, 0.31-0.32, ties it). A padded stride-1 1x1 (a bigger
    input than its own) is left to the other paths (not measured; ``pays``)."""

    name = "points"
    ops = frozenset({"grad_weight"})

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return plan.points is not None

    def pays(self, op: str, plan: ConvPlan) -> bool:
        g = plan.geometry
        return (g.stride_h, g.stride_w) != (1, 1)

    def writes_all_weight(self, plan: ConvPlan) -> bool:
        sub = plan.points
        return sub is not None and sub.grad_weight.writes_all_weight(sub)

    def grad_weight(self, plan, grad_output, x, grad_weight):
        sub, g = plan.points, plan.geometry
        points = scratch(plan.batch * plan.in_channels * g.out_h * g.out_w, _F32).reshape(
            plan.batch, plan.in_channels, g.out_h, g.out_w)
        _conv.gather_points(x, points, g, plan.groups,
                            threads_for(plan.batch * plan.groups, points.size,
                                        COPY_ELEMENTS_PER_THREAD))
        sub.grad_weight.grad_weight(sub, grad_output, points, grad_weight)


def points_geometry(plan: ConvPlan) -> Geometry | None:
    """PointsWeight's sub-plan geometry (the pointwise convolution of the compact planes), or
    None where it does not apply: other kernels, pointwise already, not float32."""
    g = plan.geometry
    if (plan.dtype != _F32 or (g.kernel_h, g.kernel_w) != (1, 1) or g.pointwise
            or g.out_h == 0 or g.out_w == 0):
        return None
    return _pointwise_geometry(plan, g.in_channels_g, g.out_channels_g)


# ---- Winograd F(m x m, 3 x 3) (src/conv/winograd.pxi) ----------------------------------------

# The tile sizes m (outputs per tile side); alpha = m + 2. Measured float32 error on N(0,1)
# data, max |y - y_float64| / max |y_float64| (bench/bench_winograd.py): see README. m = 5
# is for planes such as 14x14 (3 tiles of 5, 15 covered, against 4 of 4, 16 covered: 441
# multiplies per plane and channel pair against 576; vgg14's GEMMs 2.95 -> 2.50 ms on one
# thread, bench/winograd_stages.c).
WINOGRAD_TILES = (2, 4, 5, 6)
# Transform cost per tile and channel in multiply-adds of the GEMM (at its speed): fitted to
# single-thread stage timings of the forward pass (vectorised transforms, src/_winograd_impl.h)
# on bench_ops.py's resnet, small, vgg28 and vgg14 and on 3x3 layers of 32-128 channels at
# 28x28, 14x14 and 7x7 (batch 64), each for m = 2, 4, 6. They pick m = 4 everywhere there, and
# m = 6 measured within 5% of it where the old constants chose it.
# m = 5's scaled from m = 4's by their measured ratio per tile and channel on bench_ops.py's
# small case (input 18.4 / 12.2 ns, output 12.5 / 7.3 ns; winograd_stages.c, one thread).
_WINOGRAD_INPUT_COST = {2: 1500, 4: 3100, 5: 4700, 6: 6500}
_WINOGRAD_OUTPUT_COST = {2: 700, 4: 2100, 5: 3600, 6: 5000}
# A thread's block of tiles: its transformed input and products, alpha^2 * (C + K) values per
# tile, kept about this big (at least 16 tiles). Measured on bench_ops.py's resnet, vgg28,
# vgg14 and small cases at 2 threads, 256 KiB was the fastest of 0.25, 1, 4 and 16 MiB
# (resnet 7.8, 8.4, 10.5, 17.4 ms) ...
WINOGRAD_BLOCK_BYTES = 256 * 1024
# The GEMMs slow down when a block's transformed input and products (alpha^2 (C + K) values
# for each of its 16 tiles at the least: more than WINOGRAD_BLOCK_BYTES with many channels)
# no longer fit in a core's L2 beside the transformed weights streamed through it. On
# bench_ops.py's vgg14 (256 -> 256 channels at 14x14, 1 MiB of L2 a core) they ran at 141
# GFLOP/s at m = 5 (1.53 MiB a block) and 180 at m = 4 (1.13 MiB), against 200 for 128 -> 128
# channels at either m (0.77 / 0.56 MiB; winograd_stages.c, one thread, two runs each): their
# multiply-adds count 1 + 0.75 x (block / L2 - 1) times past it (1.40 and 1.09, fitted), so
# vgg14 takes m = 4, 15-25% faster than m = 5 on one thread (whole forward calls).
WINOGRAD_L2_BYTES = 1 << 20
_WINOGRAD_L2_PENALTY = 0.75
# ... and the whole workspace (the transformed weights and every thread's block) at most this
WINOGRAD_WORKSPACE_BYTES = 64 * 1024 * 1024


def winograd_tile(plan: ConvPlan) -> int:
    """The tile size m for this plan's shapes: the least modelled cost (the GEMMs' multiply-
    adds over the padded tiles, in whole groups of 16, dearer where a block outgrows L2, plus
    the transforms')."""
    g = plan.geometry
    c, k = g.in_channels_g, g.out_channels_g

    def cost(m: int) -> float:
        # the batch's tiles, in whole groups of FC_WINO_LANES (a partial one costs as much)
        tiles = -(-plan.batch * -(-g.out_h // m) * -(-g.out_w // m) // 16) * 16
        alpha2 = (m + 2) ** 2
        block = 16 * alpha2 * (c + k) * plan.dtype.itemsize  # the least block's bytes
        gemm = 1 + _WINOGRAD_L2_PENALTY * max(0.0, block / WINOGRAD_L2_BYTES - 1)
        return tiles * (alpha2 * c * k * gemm + c * _WINOGRAD_INPUT_COST[m]
                        + k * _WINOGRAD_OUTPUT_COST[m])

    return min(WINOGRAD_TILES, key=cost)


def _winograd_sizes(plan: ConvPlan, m: int, block: int) -> tuple[int, int]:
    g = plan.geometry
    name = "float" if plan.dtype == _F32 else "double"
    return _conv.winograd_sizes(m, g.in_channels_g, g.out_channels_g, block, name)


def _winograd_fits(plan: ConvPlan) -> bool:
    """The transformed weights and one thread's smallest block within the workspace bound."""
    packed, row = _winograd_sizes(plan, winograd_tile(plan), 16)
    return (packed + row) * plan.dtype.itemsize <= WINOGRAD_WORKSPACE_BYTES


# ---- Winograd's transformed weights, kept between calls --------------------------------------
#
# Transforming the weights is K*C*alpha^2 work per call whatever the batch: on vgg14 (256 -> 256
# channels at 14x14, batch 8) 0.43 ms of 3.98 on one thread (winograd_stages.c), where ONNX
# Runtime transforms its constant weights once per session. A call that passes the same
# weights again reuses their transform, and "the same" is decided by the bytes alone, never
# by the array's identity: the key below only finds the candidate, which is taken only if its
# private copy of the weights equals the given weights byte for byte (memcmp: -0.0 is not 0.0,
# and any element changed in place, by an optimiser step or by hand, is a miss). On a miss the
# weights are copied first and the copy is what the kernel transforms, so an entry's
# transform is always the transform of its copy's bits (a thread changing the array during
# the call cannot leave a mismatched pair behind). A call takes its entry out of the table
# while it uses it and puts it back after, so no two calls ever share one, and a miss under
# the same key (the same array with new values: training) refills the entry's arrays in
# place instead of allocating them again. The transform depends on nothing else than those
# bits, m, the transposed flag and the element type (all in the key; the ISA is fixed per
# process and each panel is computed alone, so neither the thread count nor the block
# changes it).
# The price of a miss (training: the weights change every step) is the copy into the entry
# and one memcmp that stops at the first changed byte.
WINOGRAD_WEIGHTS_BYTES = 64 * 1024 * 1024  # held at most, weights' copies and transforms
WINOGRAD_WEIGHTS_KEEP_BYTES = WINOGRAD_WEIGHTS_BYTES // 4  # one layer's, kept only up to this
_WINOGRAD_WEIGHTS: OrderedDict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = OrderedDict()
_WINOGRAD_WEIGHTS_LOCK = threading.Lock()


def _winograd_weights_key(weight: np.ndarray, m: int, transposed: bool) -> tuple[Any, ...]:
    return (id(weight), weight.shape, weight.dtype.str, m, transposed)


def _take_winograd_weights(key: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """The entry kept under ``key``, taken out: the caller owns its arrays until it puts an
    entry back (a concurrent call with the same key finds none and makes its own), so a miss
    can refill them in place (training: the same array, new values, every step) without
    another call reading them."""
    with _WINOGRAD_WEIGHTS_LOCK:
        return _WINOGRAD_WEIGHTS.pop(key, None)


def _keep_winograd_weights(key: tuple[Any, ...], copy: np.ndarray, packed: np.ndarray) -> None:
    size = copy.nbytes + packed.nbytes
    with _WINOGRAD_WEIGHTS_LOCK:
        _WINOGRAD_WEIGHTS.pop(key, None)
        held = sum(a.nbytes + b.nbytes for a, b in _WINOGRAD_WEIGHTS.values())
        while _WINOGRAD_WEIGHTS and held + size > WINOGRAD_WEIGHTS_BYTES:
            _, (old_copy, old_packed) = _WINOGRAD_WEIGHTS.popitem(last=False)
            held -= old_copy.nbytes + old_packed.nbytes
        _WINOGRAD_WEIGHTS[key] = (copy, packed)


def clear_winograd_weights() -> None:
    """Forget every kept Winograd weight transform (they are made again on the next call)."""
    with _WINOGRAD_WEIGHTS_LOCK:
        _WINOGRAD_WEIGHTS.clear()


class Winograd(ConvPath):
    """3x3, stride 1, dilation 1, one group, any padding, with ``algorithm='winograd'``:
    Winograd F(m x m, 3 x 3) (Lavin & Gray 2016), m = 2, 4, 5 or 6 from the shapes
    (winograd_tile). The weights are transformed into the packed GEMM's panels, once per
    call or, for weights byte-identical to a recent call's, not again (kept, see above);
    the tiles of the batch are cut into blocks, and per block each thread transforms the input
    patches (vectorised across 16 tiles, src/_winograd.h), runs alpha^2 GEMMs of K x block x C
    on them and transforms the products back. The input gradient of a convolution with padding
    at most 2 is the forward pass of Transposed's sub-plan (a 3x3 stride-1 convolution of
    grad_output with the flipped, transposed weights, which the weight transform reads from
    the forward weight in place), so it takes only finite weights, as Transposed. The weight
    gradient is WinogradWeight's.

    Fewer multiplications, larger rounding errors: float32 results are within 1e-4 * max|y|
    of the exact ones on data of one scale (tests/test_winograd.py; measured figures in
    README), which is why only ``algorithm='winograd'`` (or an override) takes it."""

    name = "winograd"
    ops = frozenset({"forward", "grad_input"})
    _FORWARD = _specialised(_conv.winograd_forward)

    def applies(self, op: str, plan: ConvPlan) -> bool:
        if plan.algorithm == "direct":
            return False
        if op == "grad_input":
            sub = plan.transposed
            return sub is not None and self.applies("forward", sub)
        g = plan.geometry
        return (plan.groups == 1 and (g.kernel_h, g.kernel_w) == (3, 3)
                and (g.stride_h, g.stride_w) == (1, 1) and (g.dil_h, g.dil_w) == (1, 1)
                and _winograd_fits(plan))

    def pays(self, op: str, plan: ConvPlan) -> bool:
        return plan.algorithm == "winograd"

    def takes(self, weight: np.ndarray) -> bool:
        return bool(np.isfinite(weight).all())

    # The tile, block, threads and workspace sizes follow from the plan and the thread count:
    # worked out by the first call at each count and kept in the plan (sizes_for)

    def _forward_sizes(self, plan, key):
        g, dtype = plan.geometry, plan.dtype
        m = winograd_tile(plan)
        tiles = plan.batch * -(-g.out_h // m) * -(-g.out_w // m)
        per_tile = (m + 2) ** 2 * (g.in_channels_g + g.out_channels_g) * dtype.itemsize
        block = max(16, min(WINOGRAD_BLOCK_BYTES // per_tile // 16 * 16, -(-tiles // 16) * 16))
        # blocks, or parts of blocks' output channels where too few (winograd.pxi)
        threads = effective_num_threads(-(-tiles // block) * max(1, g.out_channels_g // 16),
                                        key)
        packed, row = _winograd_sizes(plan, m, block)
        # the block never changes a result (each tile is computed alone), the thread count
        # never does: fewer threads where their blocks would pass the workspace bound
        room = WINOGRAD_WORKSPACE_BYTES // dtype.itemsize - packed
        threads = max(1, min(threads, room // row))
        return m, block, threads, packed, row

    def forward(self, plan, x, weight, bias, out, transposed=False):
        g, dtype = plan.geometry, plan.dtype
        count = threads_key()
        m, block, threads, packed, row = sizes_for(plan, ("forward", self.name, count),
                                                   lambda: self._forward_sizes(plan, count))
        keeps = (packed * dtype.itemsize + weight.nbytes) <= WINOGRAD_WEIGHTS_KEEP_BYTES
        key = _winograd_weights_key(weight, m, transposed)
        entry = _take_winograd_weights(key) if keeps else None
        ready = False
        if entry is not None:
            copy, kept = entry
            ready = _conv.same_bytes(copy.reshape(-1).view(np.uint8),
                                     weight.reshape(-1).view(np.uint8))
            if not ready:
                np.copyto(copy, weight)  # ours until put back: refilled in place
        elif keeps:
            copy, kept = weight.copy(), np.empty(packed, dtype=dtype)
        else:
            copy, kept = weight, np.empty(packed, dtype=dtype)
        # the kernel transforms ``copy`` (the bits kept), never the caller's array
        self._FORWARD[dtype](x, copy, bias, out, kept, scratch((threads, row), dtype),
                             m, g.pad_top, g.pad_left, block, threads, transposed, ready)
        if keeps:
            _keep_winograd_weights(key, copy, kept)

    def grad_input(self, plan, grad_output, weight, grad_input):
        # the sub-plan's kernels are ``weight``'s, transposed and flipped: the weight
        # transform reads them so (_transposed_weight's copy, in place)
        self.forward(plan.transposed, grad_output, weight, None, grad_input, transposed=True)


# ---- Winograd's weight gradient (src/conv/winograd_wgrad.pxi) -------------------------------

# The tile sizes the weight gradient chooses from: m = 4 alone. Measured on one thread (CPU
# time, best of 5, Zen 4, block 256), ms, direct / F(2,3) / F(4,3) / F(5,3) / F(6,3):
#   resnet (16,64,56,56->64)    19.4 / 21.5 / 13.3 / 18.0 / 15.0
#   vgg28 (8,128,28,28->128)    11.1 /  8.1 /  5.3 /  6.1 /  5.4
#   vgg14 (8,256,14,14->256)    10.7 /  7.3 /  6.7 /  9.4 / 10.9
#   small (64,16,14,14->32)      0.81 / 1.40 / 0.79 / 0.84 / 1.40
# m = 4 the fastest or within the noise of it on each (m = 5, which the forward pass takes for
# 14x14 planes, lost here); its float32 error at most 1e-5 * max|dW| (README).
WINOGRAD_WEIGHT_TILES: tuple[int, ...] = (4,)
# Tiles per block: the inner dimension of the alpha^2 GEMMs between two passes over their
# K x C accumulators (the GEMM's K-block is 256). One thread, m = 4, ms at 64 / 128 / 256 /
# 512 / 1024 tiles: resnet 11.3 / 11.0 / 11.2 / 14.0 / 19.4 (the block's transforms, 36 x
# 128 x 4 bytes per tile, past L2), vgg28 6.7 / 7.5 / 6.8 / 5.4 / 6.5 (noise: the machine
# shared) ...
WINOGRAD_WEIGHT_BLOCK = 256
# ... and the block's transforms at most this many bytes (shapes with more channels)
WINOGRAD_WEIGHT_BLOCK_BYTES = 16 * 1024 * 1024
# grad_output's transform per tile and channel, in multiply-adds of the GEMM: the output
# transform's arithmetic run backwards (as _WINOGRAD_OUTPUT_COST)
_WINOGRAD_GY_COST = _WINOGRAD_OUTPUT_COST
# Where it pays: the modelled Winograd cost (the GEMMs' multiply-adds and the transforms' at
# the forward pass's fitted costs) below this fraction of the direct weight gradient's
# multiply-adds. The model says 0.81, 0.53, 0.39 for resnet, vgg28, vgg14 (measured on one
# thread: about 0.6, 0.5, 0.6) and 1.83 for small (measured 0.8-1.0 on one thread and 1.7x
# slower than the direct path on two, where its 16 x 32 GEMMs are too small to share out).
WINOGRAD_WEIGHT_MAX_RATIO = 1.0


def _winograd_weight_cost(plan: ConvPlan, m: int) -> float:
    g = plan.geometry
    c, k = g.in_channels_g, g.out_channels_g
    tiles = -(-plan.batch * -(-g.out_h // m) * -(-g.out_w // m) // 16) * 16
    return (tiles * ((m + 2) ** 2 * c * k + c * _WINOGRAD_INPUT_COST[m]
                     + k * _WINOGRAD_GY_COST[m]))


def winograd_weight_tile(plan: ConvPlan) -> int:
    """The weight gradient's tile size m: the least modelled cost (_winograd_weight_cost)."""
    return min(WINOGRAD_WEIGHT_TILES, key=lambda m: _winograd_weight_cost(plan, m))


def _winograd_weight_layout(plan: ConvPlan, m: int) -> tuple[int, int, int, int]:
    """(block, elements of the transforms, of the accumulators, of a thread's packing row):
    the largest block up to WINOGRAD_WEIGHT_BLOCK tiles (a multiple of 16) whose workspace
    with one thread's row fits WINOGRAD_WORKSPACE_BYTES, from the shapes alone; block 0 where
    none does."""
    g = plan.geometry
    name = "float" if plan.dtype == _F32 else "double"
    tiles = plan.batch * -(-g.out_h // m) * -(-g.out_w // m)
    per_tile = (m + 2) ** 2 * (g.in_channels_g + g.out_channels_g) * plan.dtype.itemsize
    block = max(16, min(WINOGRAD_WEIGHT_BLOCK, -(-tiles // 16) * 16,
                        WINOGRAD_WEIGHT_BLOCK_BYTES // per_tile // 16 * 16))
    while True:
        sizes = _conv.winograd_wgrad_sizes(m, g.in_channels_g, g.out_channels_g, block, name)
        if sum(sizes) * plan.dtype.itemsize <= WINOGRAD_WORKSPACE_BYTES or block <= 16:
            break
        block = max(16, block // 2 // 16 * 16)
    if sum(sizes) * plan.dtype.itemsize > WINOGRAD_WORKSPACE_BYTES:
        block = 0
    return (block, *sizes)


class WinogradWeight(ConvPath):
    """The weight gradient by Winograd F(m x m, 3 x 3), with ``algorithm='winograd'``, where
    the forward pass's conditions hold (3x3, stride 1, dilation 1, one group, any padding) and
    the model says it pays (below). Per tile, dW = G^T [(A gy A^T) . (B^T d B)] G: the tiles of
    the batch in blocks of WINOGRAD_WEIGHT_BLOCK, per block the input patches and grad_output
    tiles transformed (src/_winograd_wgrad.h; the input transform is the forward pass's), then
    one GEMM per alpha^2 position xi adding Gy[xi] (K x tiles) V[xi]^T (tiles x C) to its
    accumulator, the tiles the inner dimension, and G^T . G of the sums at the end. The sums
    over the tiles run block after block whatever the threads (they split the positions xi),
    so the bits never depend on the thread count. The workspace (the accumulators, alpha^2 K C
    values, one block's transforms and each thread's packing row) is at most
    WINOGRAD_WORKSPACE_BYTES; where even a block of 16 tiles does not fit, the usual paths
    run.

    It pays where the modelled cost (the GEMMs' multiply-adds plus the transforms', as the
    forward pass's tile choice) is below WINOGRAD_WEIGHT_MAX_RATIO of the direct weight
    gradient's multiply-adds: few channels (bench_ops.py's small, 16 -> 32 channels) keep the
    direct paths, whose work the transforms there would exceed. Rounding: float32 results
    within 1e-4 * max|dW| of the exact ones on N(0,1) data (tests/test_winograd_wgrad.py;
    measured figures in README). A non-finite input or grad_output value spreads NaN over
    the whole result (each transformed tile mixes all its values), where a direct kernel
    would confine it."""

    name = "winograd"
    ops = frozenset({"grad_weight"})
    _GRAD_WEIGHT = _specialised(_conv.winograd_grad_weight)

    def applies(self, op: str, plan: ConvPlan) -> bool:
        if plan.algorithm == "direct":
            return False
        g = plan.geometry
        return (plan.groups == 1 and (g.kernel_h, g.kernel_w) == (3, 3)
                and (g.stride_h, g.stride_w) == (1, 1) and (g.dil_h, g.dil_w) == (1, 1)
                and _winograd_weight_layout(plan, winograd_weight_tile(plan))[0] > 0)

    def pays(self, op: str, plan: ConvPlan) -> bool:
        if plan.algorithm != "winograd":
            return False
        g = plan.geometry
        direct = plan.batch * g.out_h * g.out_w * 9 * g.in_channels_g * g.out_channels_g
        cost = _winograd_weight_cost(plan, winograd_weight_tile(plan))
        return cost < WINOGRAD_WEIGHT_MAX_RATIO * direct

    def grad_weight(self, plan, grad_output, x, grad_weight):
        g, dtype = plan.geometry, plan.dtype
        m = winograd_weight_tile(plan)
        block, transformed, accumulators, row = _winograd_weight_layout(plan, m)
        # the threads split the alpha^2 positions; fewer where their rows would pass the bound
        room = (WINOGRAD_WORKSPACE_BYTES // dtype.itemsize - transformed - accumulators)
        threads = max(1, min(effective_num_threads((m + 2) ** 2), room // row))
        self._GRAD_WEIGHT[dtype](x, grad_output, grad_weight,
                                 scratch(transformed, dtype), scratch(accumulators, dtype),
                                 scratch((threads, row), dtype), m, g.pad_top,
                                 g.pad_left, block, threads)


def sizes_for(plan: ConvPlan, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``make()``, kept in the plan's memo under ``key``: what a path computes per call from
    the plan alone and the thread count (which must be part of ``key``), so that a repeated
    call with the same shapes and threads does not compute it again. Plans made without a memo
    compute it every time."""
    memo = plan.memo
    if memo is None:
        return make()
    value = memo.get(key)
    if value is None:
        value = memo[key] = make()
    return value


# Scratch arrays up to this many bytes in all are kept by thread_scratch for the next call:
# a tiny convolution (1x1x6x8, k 1x2) spent a tenth of its call making its three (0.55 of
# 5.5 us, measured)
SCRATCH_KEEP_BYTES = 1 << 16


def thread_scratch(plan: ConvPlan, key: tuple[Any, ...],
                   make: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
    """``make()``: sizes and the scratch arrays (that a kernel writes before it reads them)
    of one call, kept in the plan's memo under ``key`` (which holds the thread count, as
    sizes_for's) and the calling Python thread when the arrays are small
    (SCRATCH_KEEP_BYTES), so that the next call of that thread reuses them. Per Python
    thread, since two threads may run the same plan at once (their kernels release the GIL);
    a kernel never calls back into Python, so one thread's calls never overlap."""
    memo = plan.memo
    if memo is None:
        return make()
    key = key + (threading.get_ident(),)
    scratch = memo.get(key)
    if scratch is None:
        scratch = make()
        # (a bound on the entries, should many short-lived threads run one plan)
        if len(memo) < 64 and sum(item.nbytes for item in scratch
                                  if isinstance(item, np.ndarray)) <= SCRATCH_KEEP_BYTES:
            memo[key] = scratch
    return scratch


# ---- im2col + GEMM (src/conv/gemm.pxi) -------------------------------------------------------

class Gemm(ConvPath):
    """Tiled im2col (from the stage where staged) and one GEMM per tile; the input gradient is
    a GEMM per tile scattered back by col2im. ``Blas`` calls SciPy's OpenBLAS (held to one
    thread: our threads run the tiles), ``Packed`` the packed GEMM of src/_gemm.h, which packs
    the weights once per call and reads the im2col block in place."""

    ops = frozenset({"forward", "grad_input", "grad_weight"})
    packed = False
    _FORWARD: dict[np.dtype, Any]
    _GRAD_WEIGHT: dict[np.dtype, Any]
    _GRAD_INPUT: dict[np.dtype, Any]

    def _per_item(self, plan: ConvPlan) -> bool:
        if plan.override.per_item is not None:
            return plan.override.per_item
        return plan.batch * plan.groups >= PER_ITEM_MIN_ITEMS

    def writes_all_input(self, plan: ConvPlan) -> bool:
        # the per-item scatter into the stage (unstage) writes every element; the others
        # accumulate into zeros
        return self._per_item(plan) and plan.geometry.staged

    fuses_relu = True

    # The threads and workspace shapes of each op follow from the plan and the thread count:
    # worked out by the first call at each count and kept in the plan (sizes_for), so that a
    # repeated call only allocates.

    def _forward_sizes(self, plan, key):
        geometry, dtype = plan.geometry, plan.dtype
        threads = effective_num_threads(plan.batch * plan.groups * geometry.n_tiles, key)
        packed = (packed_weight_buffer(geometry, plan.groups, dtype).shape,) if self.packed \
            else ()
        return threads, im2col_workspace(threads, geometry, dtype).shape, packed

    def forward(self, plan, x, weight, bias, out, *, relu=False):
        key = threads_key()
        threads, workspace, packed = sizes_for(plan, ("forward", self.name, key),
                                               lambda: self._forward_sizes(plan, key))
        dtype = plan.dtype
        extra = tuple(scratch(shape, dtype) for shape in packed)
        with blas_single_thread():
            self._FORWARD[dtype](x, weight, bias, out, scratch(workspace, dtype), *extra,
                                 plan.geometry, plan.groups, threads, relu)

    def _grad_weight_sizes(self, plan, key):
        geometry, dtype = plan.geometry, plan.dtype
        chunks = _weight_chunks(plan, plan.out_channels * geometry.k)
        threads = effective_num_threads(chunks, key)
        workspace = (packed_weight_workspace(threads, geometry, dtype) if self.packed
                     else im2col_workspace(threads, geometry, dtype))
        return chunks, threads, workspace.shape

    def grad_weight(self, plan, grad_output, x, grad_weight):
        key = threads_key()
        chunks, threads, workspace = sizes_for(plan, ("grad_weight", self.name, key),
                                               lambda: self._grad_weight_sizes(plan, key))
        dtype = plan.dtype
        row = grad_weight.size
        # one chunk sums straight into the result, several are added afterwards in order
        partials = (grad_weight.reshape(1, row) if chunks == 1
                    else scratch_zeros((chunks, row), dtype))
        with blas_single_thread():
            self._GRAD_WEIGHT[dtype](grad_output, x, partials, scratch(workspace, dtype),
                                     plan.geometry, plan.groups, threads)
        if chunks > 1:
            with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN propagate, as PyTorch
                np.add.reduce(partials, axis=0, out=grad_weight.reshape(row))

    def _grad_input_sizes(self, plan, key):
        geometry, dtype = plan.geometry, plan.dtype
        per_item = self._per_item(plan)
        if per_item:
            threads = effective_num_threads(plan.batch * plan.groups, key)
            workspace = im2col_workspace(threads, geometry, dtype).shape
        else:
            n_tiles = geometry.n_tiles
            threads = effective_num_threads(max(n_tiles, geometry.in_channels_g), key)
            block = geometry.k * geometry.tile
            band = max(1, min(n_tiles, BAND_BYTES // max(1, block * dtype.itemsize)))
            workspace = (1, max(1, band * block))
        extra: tuple[tuple[int, ...], ...] = ()
        if self.packed:
            extra = (packed_weight_buffer(geometry, plan.groups, dtype, transposed=True).shape,
                     gy_rows_workspace(threads, geometry, dtype).shape)
        return per_item, threads, workspace, extra

    def grad_input(self, plan, grad_output, weight, grad_input):
        key = threads_key()
        per_item, threads, workspace, shapes = sizes_for(
            plan, ("grad_input", self.name, key), lambda: self._grad_input_sizes(plan, key))
        dtype = plan.dtype
        extra = tuple(scratch(shape, dtype) for shape in shapes)
        with blas_single_thread():
            self._GRAD_INPUT[dtype](grad_output, weight, grad_input,
                                    scratch(workspace, dtype), *extra, plan.geometry,
                                    plan.groups, per_item, threads)


class Packed(Gemm):
    name = "packed"
    packed = True
    _FORWARD = _specialised(_conv.forward_packed)
    _GRAD_WEIGHT = _specialised(_conv.grad_weight_packed)
    _GRAD_INPUT = _specialised(_conv.grad_input_packed)

    def applies(self, op: str, plan: ConvPlan) -> bool:
        # pointwise convolutions keep BLAS, which reads the input planes in place where the
        # packed path would copy them
        return _PACKED_GEMM and not plan.geometry.pointwise

    def pays(self, op: str, plan: ConvPlan) -> bool:
        minimum = {"grad_weight": PACKED_MIN_MACS_WEIGHT,
                   "forward": PACKED_MIN_MACS_FORWARD}.get(op, PACKED_MIN_MACS)
        return plan.geometry.macs_per_item >= minimum[plan.dtype]


class Blas(Gemm):
    name = "blas"
    _FORWARD = _specialised(_conv.forward_blas)
    _GRAD_WEIGHT = _specialised(_conv.grad_weight_blas)
    _GRAD_INPUT = _specialised(_conv.grad_input_blas)

    def applies(self, op: str, plan: ConvPlan) -> bool:
        return True


# ---- the lists -------------------------------------------------------------------------------

# the paths that can max-pool a convolution in their store (FewChannels.forward_pooled), best
# first; a plan's convolution is pooled so only where its forward path is one of them (the
# same sums, the same bits): fastconv._plan.pooling_path
POOLED: tuple[FewChannels, ...] = (FewChannelsLanes(), FewChannels())
FORWARD: tuple[ConvPath, ...] = (DepthwiseDirect(), Depthwise(), Winograd(), *POOLED, Direct(),
                                 Packed(), Blas())
# the forward paths of Transposed's sub-plan: the dense ones (a grouped convolution with one
# output channel per group would otherwise take the depthwise kernels for its transposed
# pass, a combination nothing has measured)
TRANSPOSED_FORWARD: tuple[ConvPath, ...] = FORWARD[2:]
GRAD_INPUT: tuple[ConvPath, ...] = (DepthwiseGather(), DepthwiseDirect(), Depthwise(),
                                    Winograd(), Transposed(), StridedPointwise(),
                                    StridedPhases(), Packed(), Blas())
GRAD_WEIGHT: tuple[ConvPath, ...] = (DepthwiseDirect(), Depthwise(), WinogradWeight(),
                                     PointsWeight(), Direct(), Packed(), Blas())
# the weight-gradient paths of PointsWeight's sub-plan (pointwise: not itself)
POINTS_WEIGHT: tuple[ConvPath, ...] = tuple(path for path in GRAD_WEIGHT
                                            if not isinstance(path, PointsWeight))
OPS: dict[str, tuple[ConvPath, ...]] = {"forward": FORWARD, "grad_input": GRAD_INPUT,
                                        "grad_weight": GRAD_WEIGHT}


def run_forward(plan: ConvPlan, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                out: np.ndarray, relu: bool = False) -> None:
    """The plan's forward path into ``out``, with the ReLU fused into its store where the path
    fuses it, else applied right after its kernel (the same bits either way)."""
    path = plan.forward
    if relu and path.fuses_relu:
        path.forward(plan, x, weight, bias, out, relu=True)
        return
    path.forward(plan, x, weight, bias, out)
    if relu:
        relu_inplace(out)


def relu_inplace(out: np.ndarray) -> None:
    """``out = max(out, 0)`` in place, exactly as the fused epilogue (src/_epilogue.h) and
    numpy.maximum: NaN kept, -0 made +0. ``out`` is C-contiguous float32 or float64."""
    flat = out.reshape(-1)
    _RELU[out.dtype](flat, _elementwise_threads(flat.size))


def relu_backward(output: np.ndarray, grad_output: np.ndarray, out: np.ndarray) -> None:
    """ReLU's backward into ``out``: ``grad_output`` where the ReLU's ``output`` is > 0 or NaN
    (the units relu_inplace's rule keeps), +0 elsewhere, an inf or NaN gradient included, the
    gradient's bits unchanged where it passes (nn.ReLU.backward, PyTorch's
    threshold_backward). The three are C-contiguous, of one shape and float dtype; one pass,
    on the threads where the size pays (as relu_inplace)."""
    flat = out.reshape(-1)
    _RELU_BACKWARD[out.dtype](output.reshape(-1), grad_output.reshape(-1), flat,
                              _elementwise_threads(flat.size))


def add_inplace(out: np.ndarray, other: np.ndarray) -> None:
    """``out += other`` (a residual block's two input gradients), with NumPy's bits: one
    pass on the threads where the size pays (as relu_inplace) where both are C-contiguous
    float32 or float64 arrays of one shape and dtype that do not overlap, else NumPy's
    ``+=``."""
    if (out.dtype in _ADD and other.dtype == out.dtype and other.shape == out.shape
            and out.flags.c_contiguous and other.flags.c_contiguous
            and out.flags.writeable and not np.may_share_memory(out, other)):
        flat = out.reshape(-1)
        _ADD[out.dtype](flat, other.reshape(-1), _elementwise_threads(flat.size))
    else:
        out += other


# Below this many elements per thread, waking a second thread for the ReLU (or the add)
# costs more than it saves (a copy-like pass: COPY_ELEMENTS_PER_THREAD's order)
RELU_ELEMENTS_PER_THREAD = 1 << 14


def _elementwise_threads(size: int) -> int:
    """The threads of relu_inplace's, relu_backward's and add_inplace's one pass over
    ``size`` elements."""
    return effective_num_threads(max(1, size // RELU_ELEMENTS_PER_THREAD))


def names(op: str) -> tuple[str, ...]:
    """The paths of ``op`` ('forward', 'grad_input' or 'grad_weight'), in preference order."""
    return tuple(path.name for path in OPS[op])


def available(op: str) -> tuple[str, ...]:
    """The paths of ``op`` whose kernels this CPU runs at the instruction set in force, in
    preference order (show_config prints them)."""
    missing = set()
    if not _DIRECT:
        missing |= {"direct", "depthwise-direct", "depthwise-direct-gather"}
    if not _PACKED_GEMM:
        missing.add("packed")
    return tuple(name for name in names(op) if name not in missing)


def grad_bias(grad_output: np.ndarray, grad_bias: np.ndarray, out_channels: int) -> None:
    """Every path's bias gradient: one channel per thread, float64 sums in a fixed order."""
    _GRAD_BIAS[grad_output.dtype](grad_output, grad_bias, effective_num_threads(out_channels))


_GRAD_BIAS = _specialised(_conv.grad_bias)
_RELU = _specialised(_conv.relu_inplace)
_RELU_BACKWARD = _specialised(_conv.relu_backward)
_ADD = _specialised(_conv.add_inplace)
_INTERLEAVE = _specialised(_conv.interleave_phases)
