"""Convolution kernels (src/_conv.pyx). Called by fastconv.conv only, with checked arguments.

``geometry`` is the tuple (in_channels_per_group, in_h, in_w, out_channels_per_group, out_h,
out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
tile) built by fastconv.conv._prepare. Every kernel is a fused float32/float64 function.
"""

import numpy as np

# (MR, NR): rows of weights and columns of pixels per panel of the packed GEMM, per dtype
PANELS: dict[str, tuple[int, int]]

def packed_gemm_kernel() -> str | None: ...

def conv2d_forward(
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
def conv2d_backward(
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
    geometry: tuple[int, ...],
    groups: int,
    per_item: bool,
    input_threads: int,
    weight_threads: int,
    bias_threads: int,
) -> None: ...
def depthwise_versions() -> list[str]: ...
def depthwise_version() -> str: ...
def use_depthwise_version(name: str) -> str: ...
def depthwise_workspace_sizes(geometry: tuple[int, ...], multiplier: int) -> tuple[int, int]: ...
def depthwise_forward(
    x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C_in, H, W)
    weight: np.ndarray,  # const floating[:, :, :, ::1]  (C_out, 1, kH, kW), C_out = m * C_in
    bias: np.ndarray,  # const floating[::1]  (C_out,) or (0,)
    out: np.ndarray,  # floating[:, :, :, ::1]  (N, C_out, H_out, W_out), overwritten
    workspace: np.ndarray,  # floating[:, ::1]  (num_threads, >= depthwise_workspace_sizes[0])
    geometry: tuple[int, ...],
    num_threads: int,
) -> None: ...
def depthwise_backward(
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
