"""Run-time facts about the OpenMP build, and the BLAS hold (src/_openmp.pyx)."""

from types import TracebackType

from typing_extensions import disjoint_base

def openmp_enabled() -> bool: ...
def default_num_threads() -> int: ...

@disjoint_base  # a cdef class (C struct layout)
class BlasHold:
    """Context manager: BLAS held to one thread inside, the user's count restored after."""

    # [(get_address, set_address), ...]: ctypes addresses of openblas_get/set_num_threads
    def bind(self, addresses: list[tuple[int, int]]) -> None: ...
    # forget every hold and unbind (a forked child: the holding thread is gone)
    def reset(self) -> None: ...
    def __enter__(self) -> BlasHold: ...
    def __exit__(
        self,
        *exc: type[BaseException] | BaseException | TracebackType | None,
    ) -> bool: ...
