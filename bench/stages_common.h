/* What bench/winograd_stages.c and bench/winograd_wgrad_stages.c share: the clock they time
 * stages with and the GEMM panels' leading dimension. */
#ifndef FASTCONV_BENCH_STAGES_COMMON_H
#define FASTCONV_BENCH_STAGES_COMMON_H

#include <stddef.h>
#include <time.h>

/* this thread's CPU time, seconds */
static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* src/conv/geometry.pxi: panel_ld */
static ptrdiff_t panel_ld(ptrdiff_t count, ptrdiff_t nr)
{
    ptrdiff_t padded = (count + nr - 1) / nr * nr;
    return (padded / nr) % 2 == 0 ? padded + nr : padded;
}

#endif
