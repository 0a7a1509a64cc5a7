"""Run-time facts about the OpenMP build (used by fastconv._threads and show_config)."""

from _openmp_helpers cimport FASTCONV_OPENMP_ENABLED, omp_get_max_threads


def openmp_enabled():
    """Return True when the extensions were compiled with OpenMP."""
    return bool(FASTCONV_OPENMP_ENABLED)


def default_num_threads():
    """OpenMP's default thread count (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return max(1, omp_get_max_threads())


# ---- holding the BLAS that the kernels call to one thread ------------------------------------
# fastconv._threads finds OpenBLAS's openblas_get/set_num_threads once (through threadpoolctl)
# and binds their addresses here, so that holding and releasing costs two C calls instead of
# several ctypes round trips. Every method runs with the GIL held and never releases it, which
# makes the reference count atomic with respect to other Python threads without a lock.

ctypedef int (*blas_get_fn)() noexcept nogil
ctypedef void (*blas_set_fn)(int) noexcept nogil

DEF MAX_BLAS = 4


cdef class BlasHold:
    """Context manager: BLAS held to one thread inside, the user's count restored after."""

    cdef blas_get_fn getters[MAX_BLAS]
    cdef blas_set_fn setters[MAX_BLAS]
    cdef int saved[MAX_BLAS]
    cdef int n_libraries
    cdef int depth

    def bind(self, list addresses):
        """Bind [(get_address, set_address), ...] (ctypes function addresses)."""
        cdef Py_ssize_t i
        if self.depth:
            raise RuntimeError("cannot rebind the BLAS while it is held")
        if len(addresses) > MAX_BLAS:
            addresses = addresses[:MAX_BLAS]
        for i, (get_address, set_address) in enumerate(addresses):
            self.getters[i] = <blas_get_fn><size_t>get_address
            self.setters[i] = <blas_set_fn><size_t>set_address
        self.n_libraries = len(addresses)

    def reset(self):
        """Forget every hold (in a forked child, whose parent thread that held is gone):
        restore the saved counts and unbind."""
        cdef int i
        if self.depth:
            for i in range(self.n_libraries):
                if self.saved[i] != 1:
                    self.setters[i](self.saved[i])
        self.depth = 0
        self.n_libraries = 0

    def __enter__(self):
        cdef int i
        if self.depth == 0:
            for i in range(self.n_libraries):
                self.saved[i] = self.getters[i]()
                if self.saved[i] != 1:
                    self.setters[i](1)
        self.depth += 1
        return self

    def __exit__(self, *exc):
        cdef int i
        self.depth -= 1
        if self.depth == 0:
            for i in range(self.n_libraries):
                if self.saved[i] != 1:
                    self.setters[i](self.saved[i])
        return False
