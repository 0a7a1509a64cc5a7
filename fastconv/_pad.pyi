"""Padding kernels (src/_pad.pyx). Called by fastconv.pad only, with checked arguments.

Both kernels are Cython fused functions over ``floating`` (float32 / float64): callable as
they are (dispatching on the arrays' dtype) or specialised once with ``kernel["float"]`` /
``kernel["double"]``, which fastconv.pad does at import.
"""

from typing import Protocol, type_check_only

import numpy as np

# Canonical mode name -> the kernels' mode code.
MODES: dict[str, int]

@type_check_only
class _Pad2dForward(Protocol):
    def __call__(
        self,
        x: np.ndarray,  # const floating[:, :, :, ::1]  (N, C, H, W), float32 or float64
        out: np.ndarray,  # floating[:, :, :, ::1]  (N, C, H+top+bottom, W+left+right)
        top: int,
        left: int,
        mode: int,  # a value of MODES
        value: float,  # fill for mode 'constant', rounded to the dtype
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _Pad2dForward: ...  # "float" or "double"

@type_check_only
class _Pad2dBackward(Protocol):
    def __call__(
        self,
        grad_output: np.ndarray,  # const floating[:, :, :, ::1]  (N, C, H+top+bottom, W+left+right)
        grad_input: np.ndarray,  # floating[:, :, :, ::1]  (N, C, H, W), overwritten
        top: int,
        left: int,
        mode: int,  # a value of MODES
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _Pad2dBackward: ...

pad2d_forward: _Pad2dForward
pad2d_backward: _Pad2dBackward
