# Stub for the compiled kernels in src/_pool.pyx (called by fastconv/pool.py only).
# `floating` arrays are float32 or float64, all of one dtype per call; 4-D arrays are
# C-contiguous (N, C, H, W) typed memoryviews, `floating[:, :, :, ::1]` in the .pyx.
# Kernels never validate: fastconv.pool checks every argument first.
# Every kernel is a Cython fused function: callable as it is (dispatching on the dtype) or
# specialised with kernel["float"] / kernel["double"]; each has a Protocol with both.
# tests/test_stubs.py checks the names and parameters against the compiled module.

from typing import Protocol, TypeAlias, type_check_only

import numpy as np
import numpy.typing as npt

_Float: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]

@type_check_only
class _MaxPool2dForward(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]
        out: _Float,  # floating[:, :, :, ::1], written
        kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
        pad_top: int, pad_left: int, dilation_h: int, dilation_w: int,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _MaxPool2dForward: ...  # "float" or "double"

max_pool2d_forward: _MaxPool2dForward

@type_check_only
class _MaxPool2dForwardIndices(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]
        out: _Float,  # floating[:, :, :, ::1], written
        indices: npt.NDArray[np.int64],  # int64_t[:, :, :, ::1], written
        position: npt.NDArray[np.int32],  # int32_t[:, ::1] scratch, (num_threads, out_width)
        kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
        pad_top: int, pad_left: int, dilation_h: int, dilation_w: int,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _MaxPool2dForwardIndices: ...  # "float" or "double"

max_pool2d_forward_indices: _MaxPool2dForwardIndices

@type_check_only
class _MaxPool2dForward2x2(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]; 2x2 windows, stride 2, all inside x
        out: _Float,  # floating[:, :, :, ::1], written
        indices: npt.NDArray[np.int64],  # int64_t[:, :, :, ::1], written if with_indices
        with_indices: bool,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _MaxPool2dForward2x2: ...  # "float" or "double"

max_pool2d_forward_2x2: _MaxPool2dForward2x2

@type_check_only
class _MaxPool2dBackward(Protocol):
    def __call__(
        self,
        grad_output: _Float,  # const floating[:, :, :, ::1]
        indices: npt.NDArray[np.int64],  # const int64_t[:, :, :, ::1], each in [0, H*W)
        grad_input: _Float,  # floating[:, :, :, ::1], written
        num_threads: int,
    ) -> int: ...  # how many indices fell outside [0, H*W) (skipped; the caller raises)
    def __getitem__(self, signature: str, /) -> _MaxPool2dBackward: ...  # "float" or "double"

max_pool2d_backward: _MaxPool2dBackward

@type_check_only
class _AvgPool2dForward(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]
        out: _Float,  # floating[:, :, :, ::1], written
        column_factor: _Float,  # floating[::1] scratch, (out_width,)
        kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
        pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
        count_include_pad: bool,
        divisor_override: int,  # 0 for none
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AvgPool2dForward: ...  # "float" or "double"

avg_pool2d_forward: _AvgPool2dForward

@type_check_only
class _AvgPool2dForward2x2(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]; 2x2 windows, stride 2, all inside x
        out: _Float,  # floating[:, :, :, ::1], written
        divisor_override: int,  # 0 for none (then 4)
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AvgPool2dForward2x2: ...  # "float" or "double"

avg_pool2d_forward_2x2: _AvgPool2dForward2x2

@type_check_only
class _AvgPool2dBackward(Protocol):
    def __call__(
        self,
        grad_output: _Float,  # const floating[:, :, :, ::1]
        grad_input: _Float,  # floating[:, :, :, ::1], written
        column_factor: _Float,  # floating[::1] scratch, (out_width,)
        delta: _Float,  # floating[:, ::1] scratch, (num_threads, >= kernel_h * out_width)
        kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
        pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
        count_include_pad: bool,
        divisor_override: int,  # 0 for none
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AvgPool2dBackward: ...  # "float" or "double"

avg_pool2d_backward: _AvgPool2dBackward

@type_check_only
class _AvgPool2dBackward2x2(Protocol):
    def __call__(
        self,
        grad_output: _Float,  # const floating[:, :, :, ::1]
        grad_input: _Float,  # floating[:, :, :, ::1], written (uncovered rows/columns: 0)
        divisor_override: int,  # 0 for none (then 4)
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AvgPool2dBackward2x2: ...  # "float" or "double"

avg_pool2d_backward_2x2: _AvgPool2dBackward2x2

@type_check_only
class _AvgPool2dForwardBox(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, :, ::1]
        out: _Float,  # floating[:, :, :, ::1], written
        column_factor: _Float,  # floating[::1] scratch, (box_column_factors_size(out_width),)
        ring: _Float,  # floating[:, ::1] scratch, (num_threads, >= (kernel_h + 1) * ring_w)
        kernel_h: int, kernel_w: int,
        pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
        count_include_pad: bool,
        divisor_override: int,  # 0 for none
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AvgPool2dForwardBox: ...  # "float" or "double"

avg_pool2d_forward_box: _AvgPool2dForwardBox

@type_check_only
class _AvgPool2dBackwardBox(Protocol):
    def __call__(
        self,
        grad_output: _Float,  # const floating[:, :, :, ::1]
        grad_input: _Float,  # floating[:, :, :, ::1], written
        column_factor: _Float,  # floating[::1] scratch, (box_column_factors_size(out_width),)
        ring: _Float,  # floating[:, ::1] scratch, (num_threads, >= (kernel_h + 1) * ring_w)
        kernel_h: int, kernel_w: int,
        pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
        count_include_pad: bool,
        divisor_override: int,  # 0 for none
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AvgPool2dBackwardBox: ...  # "float" or "double"

avg_pool2d_backward_box: _AvgPool2dBackwardBox

# elements per row of a box kernel's ring (kernel_h + 1 rows per thread)
def box_ring_width(in_w: int, out_w: int, kernel_w: int, pad_left: int, backward: bool) -> int: ...

# elements of a box kernel's column_factor scratch
def box_column_factors_size(out_w: int) -> int: ...

ISA: str  # the build the kernels run: "generic" or "avx2" (src/_pool.h)
BOX_MAX_ROWS: int  # the tallest window the 'box' kernels take
