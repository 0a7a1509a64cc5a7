"""Convolution kernels (src/_conv.pyx). Called by fastconv.conv only, with checked arguments.

``geometry`` is the tuple (in_channels_per_group, in_h, in_w, out_channels_per_group, out_h,
out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
tile, staged) built by fastconv.conv._prepare. Every kernel is a fused float32/float64
function, except the float32-only direct kernels (src/_direct.h, AVX-512).

A fused kernel is callable as it is (Cython dispatches on the arrays' dtype) or specialised
once with ``kernel["float"]`` / ``kernel["double"]``, which fastconv.conv does at import; the
stub gives each one a Protocol with that ``__call__`` and ``__getitem__``.
tests/test_stubs.py checks every name and parameter here against the compiled module.
"""

from typing import Protocol, type_check_only

import numpy as np

# the instruction-set level the kernels pick their code from (src/_cpu.h, capped by
# FASTCONV_ISA): "generic", "avx2" or "avx512"
ISA: str
# (MR, NR): rows of weights and columns of pixels per panel of the packed GEMM, per dtype
PANELS: dict[str, tuple[int, int]]

# "avx512 8x16", "avx2 6x16", "generic 6x16", or None: BLAS only (a CPU without AVX2)
def packed_gemm_kernel() -> str | None: ...
# the level of the staged copies (src/_stage.h): "generic", "avx2" or "avx512"
STAGE_COPY: str
def stage_size(geometry: tuple[int, ...]) -> int: ...

# whether the direct kernels (src/_direct.h: AVX-512, float32) run: ISA is avx512
DIRECT: bool

def direct_block(geometry: tuple[int, ...]) -> int: ...  # 32, 16, or 0: not applicable
# pixels per run of a tile for the direct kernels (sizes their workspace rows)
def direct_run_pixels(geometry: tuple[int, ...]) -> int: ...
def conv2d_forward_direct(
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C_in, H, W)
    weight: np.ndarray,  # const float[:, :, :, ::1]  (C_out, C_in/groups, kH, kW)
    bias: np.ndarray,  # const float[::1]  (C_out,) or (0,)
    out: np.ndarray,  # float[:, :, :, ::1]  (N, C_out, H_out, W_out), overwritten
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, 16 + stage_size + tile * C_out/groups)
    packed_weight: np.ndarray,  # float[::1]  (C_out * k + 16,), overwritten
    taps: np.ndarray,  # intp[::1]  (k,), overwritten
    geometry: tuple[int, ...],
    groups: int,
    num_threads: int,
) -> None: ...
def depthwise_direct_sizes(geometry: tuple[int, ...]) -> tuple[int, int]: ...  # stage, tile
def depthwise_direct_forward(
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C, H, W), C a multiple of 16
    weight_t: np.ndarray,  # const float[:, :, ::1]  (C/16, kH*kW, 16)
    bias: np.ndarray,  # const float[::1]  (C,) or (0,)
    out: np.ndarray,  # float[:, :, :, ::1]  (N, C, H_out, W_out), overwritten
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, 16 + stage + tile)
    taps: np.ndarray,  # intp[::1]  (kH*kW,), overwritten
    geometry: tuple[int, ...],
    num_threads: int,
) -> None: ...
def depthwise_direct_backward(
    grad_output: np.ndarray,  # const float[:, :, :, ::1]  (N, C, H_out, W_out)
    x: np.ndarray,  # const float[:, :, :, ::1]  (N, C, H, W), explicitly padded if needed
    weight_t: np.ndarray,  # const float[:, :, ::1]  (C/16, kH*kW, 16)
    grad_input: np.ndarray | None,  # float[:, :, :, ::1]  overwritten, or None
    sums: np.ndarray | None,  # float[:, :, ::1]  (C/16, kH*kW, 16) zeroed, or None
    grad_bias: np.ndarray | None,  # float[::1]  (C,), or None
    workspace: np.ndarray,  # float[:, ::1]  (num_threads, 16 + stage + tile)
    taps: np.ndarray,  # intp[::1]  (kH*kW,), overwritten
    geometry: tuple[int, ...],
    num_threads: int,
) -> None: ...

@type_check_only
class _Conv2dForward(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W)
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, C_in/groups, kH, kW)
        bias: np.ndarray,  # const floating[::1]  (C_out,) or (0,) for no bias
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, C_out, H_out, W_out), overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, >= k * tile; packed path:
        #                         >= k * (tile rounded up to whole panels + one panel))
        packed_weight: np.ndarray,  # floating[::1]  (0,) for the BLAS path, else
        #                             (groups * (C_out/groups rounded up to MR) * k,), overwritten
        geometry: tuple[int, ...],
        groups: int,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _Conv2dForward: ...  # "float" or "double"

conv2d_forward: _Conv2dForward

@type_check_only
class _Conv2dBackward(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_out, H_out, W_out)
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W), explicitly padded if needed
        weight: np.ndarray,  # const floating[:, :, :, ::1]
        grad_input: np.ndarray | None,  # floating[:, :, :, ::1]  zeroed, or None to skip
        partials: np.ndarray | None,  # floating[:, ::1]  (chunks, C_out * k) zeroed, or None
        grad_bias: np.ndarray | None,  # floating[::1]  (C_out,), or None
        weight_workspace: np.ndarray | None,  # floating[:, ::1]  (num_threads, >= k * tile)
        input_workspace: np.ndarray | None,  # floating[:, ::1]  per_item: (num_threads, >= k * tile);
        #                                      otherwise (1, band * k * tile)
        packed_weight: np.ndarray | None,  # floating[::1]  input gradient's transposed weights for
        #                                    the packed GEMM, or (0,) for BLAS
        gy_workspace: np.ndarray | None,  # floating[:, ::1]  packed GEMM: per thread, tiles of
        #                                   grad_output in panel-aligned rows
        packed_grad_weight: bool,  # the weight gradient on the packed GEMM (weight_workspace
        #                            then holds its panels: see fastconv.conv._weight_workspace)
        taps: np.ndarray,  # intp[::1]  (k,): the weight gradient by the direct kernels (float32;
        #                    partials then tap-major, weight_workspace fastconv.conv.
        #                    _direct_workspace's), overwritten; or (0,)
        geometry: tuple[int, ...],
        groups: int,
        per_item: bool,
        input_threads: int,
        weight_threads: int,
        bias_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _Conv2dBackward: ...  # "float" or "double"

conv2d_backward: _Conv2dBackward
def depthwise_versions() -> list[str]: ...
def depthwise_version() -> str: ...
def use_depthwise_version(name: str) -> str: ...
def depthwise_workspace_sizes(geometry: tuple[int, ...], multiplier: int) -> tuple[int, int]: ...

@type_check_only
class _DepthwiseForward(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W)
        weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, 1, kH, kW), C_out = m * C_in
        bias: np.ndarray,  # const floating[::1]  (C_out,) or (0,)
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, C_out, H_out, W_out), overwritten
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, >= depthwise_workspace_sizes[0])
        geometry: tuple[int, ...],
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _DepthwiseForward: ...  # "float" or "double"

depthwise_forward: _DepthwiseForward

@type_check_only
class _DepthwiseBackward(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  N >= 1
        x: np.ndarray,  # const floating[:, :, :, ::1]
        weight: np.ndarray,  # const floating[:, :, :, ::1]
        grad_input: np.ndarray | None,  # floating[:, :, :, ::1]  overwritten, or None
        grad_weight: np.ndarray | None,  # floating[:, :, :, ::1]  overwritten, or None
        grad_bias: np.ndarray | None,  # floating[::1], or None
        workspace: np.ndarray,  # floating[:, ::1]  (num_threads, >= depthwise_workspace_sizes[0])
        lane_workspace: np.ndarray,  # double[:, ::1]  (num_threads, >= depthwise_workspace_sizes[1])
        geometry: tuple[int, ...],
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _DepthwiseBackward: ...  # "float" or "double"

depthwise_backward: _DepthwiseBackward
