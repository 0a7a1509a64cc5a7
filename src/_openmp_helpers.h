/* Run-time view of whether the extensions were compiled with OpenMP (scikit-learn's
 * utils/_openmp_helpers.pxd does the same): without it the kernels run serially and the
 * omp_* calls below become harmless stand-ins. */
#ifndef FASTCONV_OPENMP_HELPERS_H
#define FASTCONV_OPENMP_HELPERS_H

#ifdef _OPENMP
#include <omp.h>
#define FASTCONV_OPENMP_ENABLED 1
#else
#define FASTCONV_OPENMP_ENABLED 0
static int omp_get_max_threads(void) { return 1; }
static int omp_get_thread_num(void) { return 0; }
#endif

#endif
