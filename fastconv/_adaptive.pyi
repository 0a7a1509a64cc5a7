# Stub for the compiled kernels in src/_adaptive.pyx (called by fastconv/adaptive.py only).
# `floating` arrays are float32 or float64, all of one dtype per call; 4-D arrays are
# C-contiguous (N, C, H, W) typed memoryviews, `floating[:, :, :, ::1]` in the .pyx.
# Kernels never validate: fastconv.adaptive checks every argument first.

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

_Float: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Index: TypeAlias = npt.NDArray[np.int64]

def adaptive_avg_pool2d_forward(
    x: _Float,  # const floating[:, :, :, ::1]
    out: _Float,  # floating[:, :, :, ::1], written
    num_threads: int,
) -> None: ...
def adaptive_avg_pool2d_backward(
    grad_output: _Float,  # const floating[:, :, :, ::1]
    grad_input: _Float,  # floating[:, :, :, ::1], written
    num_threads: int,
) -> None: ...
def adaptive_max_pool2d_forward(
    x: _Float,  # const floating[:, :, :, ::1]
    out: _Float,  # floating[:, :, :, ::1], written
    indices: _Index,  # int64_t[:, :, :, ::1], written
    num_threads: int,
) -> None: ...
def max_unpool2d_forward(
    x: _Float,  # const floating[:, :, :, ::1]
    indices: _Index,  # const int64_t[:, :, :, ::1]
    out: _Float,  # floating[:, :, :, ::1], written
    num_threads: int,
) -> int: ...  # how many indices fell outside the output plane
def max_unpool2d_backward(
    grad_output: _Float,  # const floating[:, :, :, ::1]
    indices: _Index,  # const int64_t[:, :, :, ::1]
    grad_input: _Float,  # floating[:, :, :, ::1], written
    num_threads: int,
) -> int: ...  # how many indices fell outside the grad_output plane
