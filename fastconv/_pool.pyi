# Stub for the compiled kernels in src/_pool.pyx (called by fastconv/pool.py only).
# `floating` arrays are float32 or float64, all of one dtype per call; 4-D arrays are
# C-contiguous (N, C, H, W) typed memoryviews, `floating[:, :, :, ::1]` in the .pyx.
# Kernels never validate: fastconv.pool checks every argument first.

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

_Float: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def max_pool2d_forward(
    x: _Float,  # const floating[:, :, :, ::1]
    out: _Float,  # floating[:, :, :, ::1], written
    kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
    pad_top: int, pad_left: int, dilation_h: int, dilation_w: int,
    num_threads: int,
) -> None: ...
def max_pool2d_forward_indices(
    x: _Float,  # const floating[:, :, :, ::1]
    out: _Float,  # floating[:, :, :, ::1], written
    indices: npt.NDArray[np.int64],  # int64_t[:, :, :, ::1], written
    position: npt.NDArray[np.int32],  # int32_t[:, ::1] scratch, (num_threads, out_width)
    kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
    pad_top: int, pad_left: int, dilation_h: int, dilation_w: int,
    num_threads: int,
) -> None: ...
def max_pool2d_backward(
    grad_output: _Float,  # const floating[:, :, :, ::1]
    indices: npt.NDArray[np.int64],  # const int64_t[:, :, :, ::1], each in [0, H*W)
    grad_input: _Float,  # floating[:, :, :, ::1], written
    num_threads: int,
) -> int: ...  # how many indices fell outside [0, H*W) (skipped; the caller raises)
def avg_pool2d_forward(
    x: _Float,  # const floating[:, :, :, ::1]
    out: _Float,  # floating[:, :, :, ::1], written
    column_factor: _Float,  # floating[::1] scratch, (out_width,)
    kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
    pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
    count_include_pad: bool,
    divisor_override: int,  # 0 for none
    num_threads: int,
) -> None: ...
def avg_pool2d_backward(
    grad_output: _Float,  # const floating[:, :, :, ::1]
    grad_input: _Float,  # floating[:, :, :, ::1], written
    column_factor: _Float,  # floating[::1] scratch, (out_width,)
    delta: _Float,  # floating[:, ::1] scratch, (num_threads, out_width)
    kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
    pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
    count_include_pad: bool,
    divisor_override: int,  # 0 for none
    num_threads: int,
) -> None: ...
