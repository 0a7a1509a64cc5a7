# Stub for the compiled kernels in src/_norm.pyx (called by fastconv/norm.py only).
# `floating` arrays are float32 or float64, all of one dtype per call; 3-D arrays are
# C-contiguous (N, C, L) typed memoryviews, `floating[:, :, ::1]` in the .pyx; statistics and
# parameter-gradient sums are float64 vectors of length C.
# Kernels never validate: fastconv.norm checks every argument first.

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

_Float: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Double: TypeAlias = npt.NDArray[np.float64]

def batch_norm_forward(
    x: _Float,  # const floating[:, :, ::1]
    out: _Float,  # floating[:, :, ::1], written
    weight: _Float,  # const floating[::1]
    bias: _Float,  # const floating[::1]
    mean: _Double,  # double[::1], written in training, read otherwise
    var: _Double,  # double[::1], biased; written in training, read otherwise
    eps: float, training: bool, relu: bool, num_threads: int,
) -> None: ...
def batch_norm_backward(
    grad_output: _Float,  # const floating[:, :, ::1]
    x: _Float,  # const floating[:, :, ::1]
    weight: _Float,  # const floating[::1]
    mean: _Double,  # const double[::1]
    var: _Double,  # const double[::1]
    eps: float, training: bool,
    grad_input: _Float,  # floating[:, :, ::1], written when need_input
    need_input: bool,
    grad_weight: _Double,  # double[::1], written
    grad_bias: _Double,  # double[::1], written
    num_threads: int,
) -> None: ...
