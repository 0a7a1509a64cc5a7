# Stub for the compiled kernels in src/_optim.pyx (called by fastconv/optim.py only).
# `floating` arrays are float32 or float64, all of one dtype per call, C-contiguous 1-D typed
# memoryviews (`floating[::1]` in the .pyx), all of one length. The kernel is a Cython fused
# function: callable as it is (dispatching on the dtype) or specialised with
# adam_step["float"] / adam_step["double"]. Kernels never validate: fastconv.optim checks first.

from typing import Protocol, TypeAlias, type_check_only

import numpy as np
import numpy.typing as npt

_Float: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]

@type_check_only
class _AdamStep(Protocol):
    def __call__(
        self,
        param: _Float,  # floating[::1], updated in place
        grad: _Float,  # const floating[::1]
        exp_avg: _Float,  # floating[::1], updated in place
        exp_avg_sq: _Float,  # floating[::1], updated in place
        max_exp_avg_sq: _Float,  # floating[::1], updated in place (amsgrad); empty for none
        maximize: bool,
        decoupled: bool,  # p *= decay first (AdamW)
        decay: float,
        l2: bool,  # g += weight_decay * p (Adam)
        weight_decay: float,
        lerp_low: bool,  # 1 - beta1 < 0.5: m += w * (g - m), else m = g - (g - m) * w
        weight: float,  # 1 - beta1 when lerp_low, else beta1 (computed as 1 - (1 - beta1))
        beta2: float,
        one_minus_beta2: float,
        bias_correction2_sqrt: float,
        eps: float,
        step_size: float,
        num_threads: int,
    ) -> None: ...
    def __getitem__(self, signature: str, /) -> _AdamStep: ...  # "float" or "double"

adam_step: _AdamStep
BLOCK: int  # elements a thread updates at a time
