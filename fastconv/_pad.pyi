"""Padding kernels (src/_pad.pyx). Called by fastconv.pad only, with checked arguments."""

import numpy as np

# Canonical mode name -> the kernels' mode code.
MODES: dict[str, int]

def pad2d_forward(
    x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C, H, W), float32 or float64
    out: np.ndarray,  # floating[:, :, :, ::1]  (N, C, H+top+bottom, W+left+right)
    top: int,
    left: int,
    mode: int,  # a value of MODES
    value: float,  # fill for mode 'constant', rounded to the dtype
    num_threads: int,
) -> None: ...
def pad2d_backward(
    grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C, H+top+bottom, W+left+right)
    grad_input: np.ndarray,  # floating[:, :, :, ::1]  (N, C, H, W), overwritten
    top: int,
    left: int,
    mode: int,  # a value of MODES
    num_threads: int,
) -> None: ...
