# cimport this instead of ``openmp`` so that a build without OpenMP still compiles.
cdef extern from "_openmp_helpers.h":
    int FASTCONV_OPENMP_ENABLED
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
