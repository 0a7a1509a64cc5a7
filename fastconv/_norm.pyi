# Stub for the compiled kernels in src/_norm.pyx (called by fastconv/norm.py only).
# `floating` arrays are float32 or float64, all of one dtype per call; 3-D arrays are
# C-contiguous (N, C, L) typed memoryviews, `floating[:, :, ::1]` in the .pyx; statistics
# are float64 vectors of length C, parameter gradients and running estimates `floating` ones.
# Every kernel is a Cython fused function: callable as it is (dispatching on the dtype) or
# specialised with kernel["float"] / kernel["double"]; each has a Protocol with both.
# Kernels never validate: fastconv.norm checks every argument first.

from typing import Protocol, TypeAlias, type_check_only

import numpy as np
import numpy.typing as npt

_Float: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Double: TypeAlias = npt.NDArray[np.float64]

@type_check_only
class _BatchNormForward(Protocol):
    def __call__(
        self,
        x: _Float,  # const floating[:, :, ::1]
        out: _Float,  # floating[:, :, ::1], written
        weight: _Float,  # const floating[::1]
        bias: _Float,  # const floating[::1]
        mean: _Double,  # double[::1], written in training, read otherwise
        var: _Double,  # double[::1], biased; written in training, read otherwise
        eps: float, training: bool,
        relu: bool,  # max(y, 0) after the residual
        residual: _Float,  # const floating[:, :, ::1]: added before the ReLU; empty (0, 0, 0) for none
        running_mean: _Float,  # floating[::1]: updated in training; empty (0,) for none
        running_var: _Float,  # floating[::1]: updated in training; empty (0,) for none
        factor: float,  # the momentum of the running estimates' update
        ratio: float,  # M / (M - 1): the unbiased variance's factor
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _BatchNormForward: ...  # "float" or "double"

batch_norm_forward: _BatchNormForward

@type_check_only
class _BatchNormBackward(Protocol):
    def __call__(
        self,
        grad_output: _Float,  # const floating[:, :, ::1]
        x: _Float,  # const floating[:, :, ::1]
        weight: _Float,  # const floating[::1]
        mean: _Double,  # const double[::1]
        var: _Double,  # const double[::1]
        eps: float, training: bool,
        output: _Float,  # const floating[:, :, ::1]: the forward's output (its ReLU mask) when relu
        relu: bool,
        grad_residual: _Float,  # floating[:, :, ::1]: the masked grad_output written; empty for none
        grad_input: _Float,  # floating[:, :, ::1], written when need_input
        need_input: bool,
        grad_weight: _Float,  # floating[::1]: written (added to with accumulate); empty (0,) for none
        grad_bias: _Float,  # floating[::1]: written (added to with accumulate); empty (0,) for none
        accumulate: bool,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _BatchNormBackward: ...  # "float" or "double"

batch_norm_backward: _BatchNormBackward

ISA: str  # the build the kernels run: "generic", "avx2" or "avx512" (src/_norm.h; same bits)
