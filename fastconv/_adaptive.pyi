# Stub for the compiled kernels in src/_adaptive.pyx (called by fastconv/adaptive.py only).
# `floating` arrays are float32 or float64, all of one dtype per call; 4-D arrays are
# C-contiguous (N, C, H, W) typed memoryviews, `floating[:, :, :, ::1]` in the .pyx.
# Every kernel is a Cython fused function: callable as it is (dispatching on the dtype) or
# specialised with kernel["float"] / kernel["double"]; each has a Protocol with both.
# Kernels never validate: fastconv.adaptive checks every argument first.

from typing import Protocol, TypeAlias, type_check_only

import numpy as np
import numpy.typing as npt

_Float: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Index: TypeAlias = npt.NDArray[np.int64]

@type_check_only
class _AdaptiveAvgPool2dForward(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]
        out: _Float,  # floating[:, :, :, ::1], written
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AdaptiveAvgPool2dForward: ...  # "float" or "double"

adaptive_avg_pool2d_forward: _AdaptiveAvgPool2dForward

@type_check_only
class _AdaptiveAvgPool2dBackward(Protocol):
    def __call__(
        self,
        grad_output: _Float,  # const floating[:, :, :, ::1]
        grad_input: _Float,  # floating[:, :, :, ::1], written
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AdaptiveAvgPool2dBackward: ...  # "float" or "double"

adaptive_avg_pool2d_backward: _AdaptiveAvgPool2dBackward

@type_check_only
class _AdaptiveMaxPool2dForward(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]
        out: _Float,  # floating[:, :, :, ::1], written
        indices: _Index,  # int64_t[:, :, :, ::1], written
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AdaptiveMaxPool2dForward: ...  # "float" or "double"

adaptive_max_pool2d_forward: _AdaptiveMaxPool2dForward

@type_check_only
class _MaxUnpool2dForward(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]
        indices: _Index,  # const int64_t[:, :, :, ::1]
        out: _Float,  # floating[:, :, :, ::1], written
        num_threads: int,
    ) -> int: ...  # how many indices fell outside the output plane
    def __getitem__(self, signature: str, /) -> _MaxUnpool2dForward: ...  # "float" or "double"

max_unpool2d_forward: _MaxUnpool2dForward

@type_check_only
class _MaxUnpool2dBackward(Protocol):
    def __call__(
        self,
        grad_output: _Float,  # const floating[:, :, :, ::1]
        indices: _Index,  # const int64_t[:, :, :, ::1]
        grad_input: _Float,  # floating[:, :, :, ::1], written
        num_threads: int,
    ) -> int: ...  # how many indices fell outside the grad_output plane
    def __getitem__(self, signature: str, /) -> _MaxUnpool2dBackward: ...  # "float" or "double"

max_unpool2d_backward: _MaxUnpool2dBackward
