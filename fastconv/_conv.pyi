"""Convolution kernels (src/_conv.pyx and its families in src/conv/*.pxi). Called by
fastconv._paths only, with checked arguments; each entry point runs one path and decides
nothing.

``geometry`` is a fastconv._geometry.Geometry (any sequence of its 16 ints, in order:
in_channels_per_group, in_h, in_w, out_channels_per_group, out_h, out_w, kernel_h, kernel_w,
stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, tile, staged). Every kernel is
a fused float32/float64 function, except the float32-only direct kernels (src/_direct.h).

A fused kernel is callable as it is (Cython dispatches on the arrays' dtype) or specialised
once with ``kernel["float"]`` / ``kernel["double"]``, which fastconv._paths does at import; the
stub gives each one a Protocol with that ``__call__`` and ``__getitem__``.
tests/test_stubs.py checks every name and parameter here against the compiled module.
"""

from collections.abc import Sequence
from typing import Protocol, type_check_only

import numpy as np

_Geometry = Sequence[int]

# the instruction-set level the kernels pick their code from (src/_cpu.h, capped by
# FASTCONV_ISA): "generic", "avx2" or "avx512"
ISA: str
# (MR, NR): rows of weights and columns of pixels per panel of the packed GEMM, per dtype
PANELS: dict[str, tuple[int, int]]

# "avx512 8x16", "avx2 6x16", "generic 6x16", or None: BLAS only (a CPU without AVX2)
def packed_gemm_kernel() -> str | None: ...
# the level of the staged copies (src/_stage.h): "generic", "avx2" or "avx512"
STAGE_COPY: str
def stage_size(geometry: _Geometry) -> int: ...
# a 1x1 kernel's input values as compact (out_h, out_w) planes (PointsWeight)
def gather_points(
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C_in, H, W)
    out: np.ndarray,  # float[:, :, :, ::1]  (N, C_in, H_out, W_out), overwritten
    geometry: _Geometry,
    groups: int,
    num_threads: int,
) -> None: ...

# whether the direct kernels (src/_direct.h: AVX-512, float32) run: ISA is avx512
DIRECT: bool
# floats per thread of grad_weight_direct_chunks' ``sums`` (a run of taps by a block of channels)
SUM_CHUNKS_FLOATS: int

def direct_block(geometry: _Geometry) -> int: ...  # 32, 16, or 0: not applicable
# pixels per run of a tile for the direct kernels (sizes their workspace rows)
def direct_run_pixels(geometry: _Geometry) -> int: ...
# elements of forward_direct's ``taps``: stage offsets and each output row's tap list
def direct_taps_size(geometry: _Geometry) -> int: ...
# elements of grad_weight_direct_chunks' ``taps``: stage offsets and the blocks of taps
def direct_wgrad_taps_size(geometry: _Geometry) -> int: ...
# floats of each thread's row of grad_weight_direct_chunks' ``workspace``
def direct_wgrad_workspace_floats(geometry: _Geometry) -> int: ...
def forward_direct(
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C_in, H, W)
    weight: np.ndarray,  # const float[:, :, :, ::1]  (C_out, C_in/groups, kH, kW)
    bias: np.ndarray | None,  # const float[::1]  (C_out,)
    out: np.ndarray,  # float[:, :, :, ::1]  (N, C_out, H_out, W_out), overwritten
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, 16 + stage_size + run * C_out/groups)
    packed_weight: np.ndarray,  # float[::1]  (C_out * k + 16,), overwritten
    taps: np.ndarray,  # intp[::1]  (direct_taps_size(geometry),), overwritten
    geometry: _Geometry,
    groups: int,
    num_threads: int,
    relu: bool = ...,  # the ReLU fused into the store (src/_epilogue.h)
    transposed: bool = ...,  # weight: the convolution's whose input gradient this is
) -> None: ...
def grad_weight_direct_chunks(
    grad_output: np.ndarray,  # const float[:, :, :, ::1]  (N, C_out, H_out, W_out)
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C_in, H, W), explicitly padded if needed
    grad_weight: np.ndarray,  # float[:, :, :, ::1]  (C_out, C_in/groups, kH, kW), overwritten
    partials: np.ndarray,  # float[:, ::1]  (chunks, C_out * k) any contents; tap-major sums
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, direct_wgrad_workspace_floats)
    sums: np.ndarray,  # float[:, ::1]  (num_threads, SUM_CHUNKS_FLOATS), scratch
    taps: np.ndarray,  # intp[::1]  (direct_wgrad_taps_size(geometry),), overwritten
    geometry: _Geometry,
    groups: int,
    num_threads: int,
) -> None: ...
def grad_weight_direct(
    grad_output: np.ndarray,  # const float[:, :, :, ::1]  (N, C_out, H_out, W_out)
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C_in, H, W), explicitly padded if needed
    grad_weight: np.ndarray,  # float[:, :, :, ::1]  (C_out, C_in/groups, kH, kW), overwritten
    workspace: np.ndarray,  # float[::1]  (direct_weight_workspace_floats(...),)
    taps: np.ndarray,  # intp[::1]  (k,), overwritten
    geometry: _Geometry,
    groups: int,
    chunk_samples: int,
    num_threads: int,
) -> None: ...
def direct_weight_workspace_floats(geometry: _Geometry, groups: int,
                                   chunk_samples: int) -> int: ...
def depthwise_direct_sizes(geometry: _Geometry) -> tuple[int, int]: ...  # stage, tile
def depthwise_direct_forward(
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C, H, W), C a multiple of 16
    weight_t: np.ndarray,  # const float[:, :, ::1]  (C/16, kH*kW, 16)
    bias: np.ndarray | None,  # const float[::1]  (C,)
    out: np.ndarray,  # float[:, :, :, ::1]  (N, C, H_out, W_out), overwritten
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, 16 + stage + tile)
    taps: np.ndarray,  # intp[::1]  (kH*kW,), overwritten
    geometry: _Geometry,
    num_threads: int,
    relu: bool = ...,  # the ReLU fused into the store (src/_epilogue.h)
) -> None: ...
def depthwise_direct_grad_input(
    grad_output: np.ndarray,  # const float[:, :, :, ::1]  (N, C, H_out, W_out)
    weight_t: np.ndarray,  # const float[:, :, ::1]  (C/16, kH*kW, 16)
    grad_input: np.ndarray,  # float[:, :, :, ::1]  (N, C, H, W), overwritten
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, 16 + stage + tile)
    taps: np.ndarray,  # intp[::1]  (kH*kW,), overwritten
    geometry: _Geometry,
    num_threads: int,
) -> None: ...
def depthwise_direct_grad_weight(
    grad_output: np.ndarray,  # const float[:, :, :, ::1]  (N, C, H_out, W_out)
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C, H, W), explicitly padded if needed
    sums: np.ndarray,  # float[:, :, ::1]  (C/16, kH*kW, 16), zeroed
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, 16 + stage + tile)
    taps: np.ndarray,  # intp[::1]  (kH*kW,), overwritten
    geometry: _Geometry,
    num_threads: int,
) -> None: ...

@type_check_only
class _ForwardPacked(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W), explicitly padded if needed
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, C_in/groups, kH, kW)
        bias: np.ndarray | None,  # const floating[::1]  (C_out,)
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, C_out, H_out, W_out), overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, fastconv._geometry.im2col_workspace)
        packed_weight: np.ndarray,  # floating[::1]  the packed weights' buffer, overwritten
        geometry: _Geometry,
        groups: int,
        num_threads: int,
        relu: bool = ...,  # the ReLU fused into the store (src/_epilogue.h)
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _ForwardPacked: ...  # "float" or "double"

forward_packed: _ForwardPacked

@type_check_only
class _ForwardBlas(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W), explicitly padded if needed
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, C_in/groups, kH, kW)
        bias: np.ndarray | None,  # const floating[::1]  (C_out,)
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, C_out, H_out, W_out), overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, fastconv._geometry.im2col_workspace)
        geometry: _Geometry,
        groups: int,
        num_threads: int,
        relu: bool = ...,  # the ReLU fused into the store (src/_epilogue.h)
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _ForwardBlas: ...  # "float" or "double"

forward_blas: _ForwardBlas

@type_check_only
class _GradBias(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_out, H_out, W_out)
        grad_bias: np.ndarray,  # floating[::1]  (C_out,), overwritten
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _GradBias: ...  # "float" or "double"

grad_bias: _GradBias

@type_check_only
class _ReluInplace(Protocol):
    def __call__(
        self,
        values: np.ndarray,  # floating[::1]  an output viewed flat, overwritten by max(v, 0)
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _ReluInplace: ...  # "float" or "double"

relu_inplace: _ReluInplace

@type_check_only
class _ReluBackward(Protocol):
    def __call__(
        self,
        output: np.ndarray,  # const floating[::1]  the ReLU's output viewed flat
        grad: np.ndarray,  # const floating[::1]  the gradient of that output, flat
        out: np.ndarray,  # floating[::1]  the input gradient, flat: grad where output > 0 or NaN, else +0
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _ReluBackward: ...  # "float" or "double"

relu_backward: _ReluBackward

@type_check_only
class _AddInplace(Protocol):
    def __call__(
        self,
        out: np.ndarray,  # floating[::1]  an array viewed flat, overwritten by out + other
        other: np.ndarray,  # const floating[::1]  of out's length, not overlapping it
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AddInplace: ...  # "float" or "double"

add_inplace: _AddInplace

@type_check_only
class _GradWeightPacked(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_out, H_out, W_out)
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W), explicitly padded if needed
        partials: np.ndarray,  # floating[:, ::1]  (chunks, C_out * k), zeroed
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, fastconv._geometry.packed_weight_workspace)
        geometry: _Geometry,
        groups: int,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _GradWeightPacked: ...  # "float" or "double"

grad_weight_packed: _GradWeightPacked

@type_check_only
class _GradWeightBlas(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_out, H_out, W_out)
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W), explicitly padded if needed
        partials: np.ndarray,  # floating[:, ::1]  (chunks, C_out * k), zeroed
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, fastconv._geometry.im2col_workspace)
        geometry: _Geometry,
        groups: int,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _GradWeightBlas: ...  # "float" or "double"

grad_weight_blas: _GradWeightBlas

@type_check_only
class _GradInputPacked(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_out, H_out, W_out)
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, C_in/groups, kH, kW)
        grad_input: np.ndarray,  # floating[:, :, :, ::1]  (N, C_in, H, W), zeroed unless staged per item
        workspace: np.ndarray,  # floating[:, ::1]  per item: im2col rows per thread; else (1, band * k * tile)
        packed_weight: np.ndarray,  # floating[::1]  the transposed weights' buffer, overwritten
        gy_workspace: np.ndarray,  # floating[:, ::1]  (num_threads, fastconv._geometry.gy_rows_workspace)
        geometry: _Geometry,
        groups: int,
        per_item: bool,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _GradInputPacked: ...  # "float" or "double"

grad_input_packed: _GradInputPacked

@type_check_only
class _GradInputBlas(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_out, H_out, W_out)
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, C_in/groups, kH, kW)
        grad_input: np.ndarray,  # floating[:, :, :, ::1]  (N, C_in, H, W), zeroed unless staged per item
        workspace: np.ndarray,  # floating[:, ::1]  per item: im2col rows per thread; else (1, band * k * tile)
        geometry: _Geometry,
        groups: int,
        per_item: bool,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _GradInputBlas: ...  # "float" or "double"

grad_input_blas: _GradInputBlas
def depthwise_versions() -> list[str]: ...
def depthwise_version() -> str: ...
def use_depthwise_version(name: str) -> str: ...
def depthwise_workspace_sizes(geometry: _Geometry, multiplier: int) -> tuple[int, int]: ...

@type_check_only
class _DepthwiseForward(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W)
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, 1, kH, kW), C_out = m * C_in
        bias: np.ndarray | None,  # const floating[::1]  (C_out,)
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, C_out, H_out, W_out), overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, >= depthwise_workspace_sizes[0])
        geometry: _Geometry,
        num_threads: int,
        relu: bool = ...,  # the ReLU fused into the store (src/_epilogue.h)
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _DepthwiseForward: ...  # "float" or "double"

depthwise_forward: _DepthwiseForward

@type_check_only
class _DepthwiseGradInput(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_out, H_out, W_out)
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, 1, kH, kW)
        grad_input: np.ndarray,  # floating[:, :, :, ::1]  (N, C_in, H, W), overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, >= depthwise_workspace_sizes[0])
        geometry: _Geometry,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _DepthwiseGradInput: ...  # "float" or "double"

depthwise_grad_input: _DepthwiseGradInput

@type_check_only
class _DepthwiseGradWeight(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_out, H_out, W_out)
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N >= 1, C_in, H, W)
        grad_weight: np.ndarray,  # floating[:, :, :, ::1]  (C_out, 1, kH, kW), overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, >= depthwise_workspace_sizes[0])
        lane_workspace: np.ndarray,  # double[:, ::1]  (num_threads, >= depthwise_workspace_sizes[1])
        geometry: _Geometry,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _DepthwiseGradWeight: ...  # "float" or "double"

depthwise_grad_weight: _DepthwiseGradWeight

# Winograd F(m x m, 3 x 3) (src/conv/winograd.pxi over src/_winograd.h)
def winograd_isa() -> str: ...  # the transforms' build: 'avx512', 'avx2' or 'generic'
def winograd_sizes(
    m: int, in_channels: int, out_channels: int, block: int, dtype: str
) -> tuple[int, int]: ...  # (packed weights, one thread's workspace row), in elements

@type_check_only
class _WinogradForward(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C, H, W)
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (K, C, 3, 3); (C, K, 3, 3) if transposed
        bias: np.ndarray | None,  # const floating[::1]  (K,)
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, K, H_out, W_out), overwritten
        packed_weight: np.ndarray,  # floating[::1]  winograd_sizes()[0], overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, winograd_sizes()[1])
        m: int,  # 2, 4, 5 or 6
        pad_top: int,
        pad_left: int,
        block: int,  # tiles per block, a multiple of 16
        num_threads: int,
        transposed: bool = ...,  # kernel (k, c) = weight[c, k] flipped: an input gradient
        weights_ready: bool = ...,  # packed_weight holds weight's transform already: read only
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _WinogradForward: ...  # "float" or "double"

winograd_forward: _WinogradForward
def same_bytes(a: np.ndarray, b: np.ndarray) -> bool: ...  # const unsigned char[::1] each

# Winograd weight gradient (src/conv/winograd_wgrad.pxi over src/_winograd_wgrad.h)
def winograd_wgrad_sizes(
    m: int, in_channels: int, out_channels: int, block: int, dtype: str
) -> tuple[int, int, int]: ...  # (block's transforms, accumulators, one thread's packing row)

@type_check_only
class _WinogradGradWeight(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C, H, W)
        gy: np.ndarray,  # const floating[:, :, :, ::1]  (N, K, H_out, W_out)
        grad_weight: np.ndarray,  # floating[:, :, :, ::1]  (K, C, 3, 3), overwritten
        transformed: np.ndarray,  # floating[::1]  winograd_wgrad_sizes()[0]
        accumulators: np.ndarray,  # floating[::1]  winograd_wgrad_sizes()[1]
        packs: np.ndarray,  # floating[:, ::1]  (num_threads, winograd_wgrad_sizes()[2])
        m: int,  # 2, 4, 5 or 6
        pad_top: int,
        pad_left: int,
        block: int,  # tiles per block, a multiple of 16 (it orders the sums)
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _WinogradGradWeight: ...  # "float" or "double"

winograd_grad_weight: _WinogradGradWeight

# few input channels: output pixels across the lanes, or with ``across`` the output channels
# (src/conv/fewchan.pxi over src/_fewchan.h)
def few_sizes(
    geometry: _Geometry, pool_h: int, pool_w: int, band: int, itemsize: int,
    across: bool = ...,
) -> tuple[int, int, int, int, int, int, int]: ...
# grid_h, grid_w, wp, staging (phase planes, unpooled a band's column planes, or 0 in place),
# block, cpad, one sample's phase planes

@type_check_only
class _FewForward(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C, H, W)
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (K, C, kH, kW)
        bias: np.ndarray | None,  # const floating[::1]  (K,)
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, K, grid_h, grid_w), overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, 64 B + staging + block)
        packed: np.ndarray,  # floating[::1]  k * cpad + cpad, overwritten
        offsets: np.ndarray,  # intp[::1]  pool_h * pool_w * k, overwritten
        geometry: _Geometry,
        pool_h: int,
        pool_w: int,
        band: int,  # grid rows per item
        num_threads: int,
        relu: bool = ...,
        across: bool = ...,  # channels across the lanes (packed, block sized for it)
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _FewForward: ...  # "float" or "double"

few_forward: _FewForward

# fastconv.nn.Linear's forward pass, rows across the threads (src/conv/linear.pxi, src/_linear.h)
@type_check_only
class _LinearForward(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, ::1]  (rows, in_features)
        weight: np.ndarray,  # const floating[:, ::1]  (out_features, in_features)
        bias: np.ndarray | None,  # const floating[::1]  (out_features,)
        out: np.ndarray,  # floating[:, ::1]  (rows, out_features), overwritten
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _LinearForward: ...  # "float" or "double"

linear_forward: _LinearForward

# The strided input gradients' phase planes into grad_input (src/conv/interleave.pxi)
@type_check_only
class _InterleavePhases(Protocol):
    def __call__(
        self,
        phases: np.ndarray,  # const floating[::1]  the phase arrays, one after another
        offsets: np.ndarray,  # const Py_ssize_t[::1]  (stride_h * stride_w,), < 0: zeros
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, C, H, W), every element written
        stride_h: int,
        stride_w: int,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _InterleavePhases: ...  # "float" or "double"

interleave_phases: _InterleavePhases

# StridedPhases' phases in one call: at most this many (stride_h * stride_w)
STRIDED_PHASES_MAX: int

def strided_phases_direct(
    grad_output: np.ndarray,  # const float[:, :, :, ::1]  (N, C_out, H_out, W_out)
    weight: np.ndarray,  # const float[:, :, :, ::1]  (C_out, C_in/groups, kH, kW)
    grad_input: np.ndarray,  # float[:, :, :, ::1]  (N, C_in, H, W), every element written
    phases: np.ndarray,  # float[::1]  the phase planes, one phase after another (scratch)
    offsets: np.ndarray,  # const Py_ssize_t[::1]  (stride_h * stride_w,) into phases, < 0: zeros
    geometries: tuple[_Geometry | None, ...],  # each phase's forward geometry, None: zeros
    slices: np.ndarray,  # const Py_ssize_t[:, ::1]  (phases, 4): tap start and step, h then w
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, the largest direct_workspace row)
    packed_weight: np.ndarray,  # float[::1]  the phases' sub-kernels, packed here, + 16
    taps: np.ndarray,  # Py_ssize_t[::1]  (sum of direct_taps_size,), overwritten
    groups: int,
    stride_h: int,
    stride_w: int,
    num_threads: int,
) -> None: ...
