"""Run-time facts about the OpenMP build (used by fastconv._threads and show_config)."""

from _openmp_helpers cimport FASTCONV_OPENMP_ENABLED, omp_get_max_threads


def openmp_enabled():
    """Return True when the extensions were compiled with OpenMP."""
    return bool(FASTCONV_OPENMP_ENABLED)


def default_num_threads():
    """OpenMP's default thread count (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return max(1, omp_get_max_threads())
