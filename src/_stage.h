/* The staged im2col's row copy (src/_conv.pyx, staged_row): runs of bytes copied in
 * FC_STAGE_CHUNK-byte pieces, the last piece of each run reaching past it. The caller writes
 * the runs in order, so each spill is overwritten by the next run, and gives the last one
 * FC_STAGE_CHUNK bytes of slack on both sides (what it reads and what it writes). Every
 * version copies the same bytes: only the width of the moves differs, chosen at run time
 * (fc_stage_init, once, at import).
 */
#ifndef FASTCONV_STAGE_H
#define FASTCONV_STAGE_H

#include <stddef.h>
#include <string.h>

#define FC_STAGE_CHUNK 64

typedef void (*fc_copy_runs_t)(char *, ptrdiff_t, const char *, ptrdiff_t, ptrdiff_t,
                               ptrdiff_t);

/* run r (r < runs): run_bytes from src + r*src_step to dst + r*dst_step, rounded up to whole
 * chunks */
static void fc_copy_runs_c(char *dst, ptrdiff_t dst_step, const char *src, ptrdiff_t src_step,
                           ptrdiff_t runs, ptrdiff_t run_bytes)
{
    ptrdiff_t r, j;
    for (r = 0; r < runs; r++) {
        for (j = 0; j < run_bytes; j += FC_STAGE_CHUNK)
            memcpy(dst + j, src + j, FC_STAGE_CHUNK);
        dst += dst_step;
        src += src_step;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* two 32-byte moves per chunk instead of four 16-byte ones */
__attribute__((target("avx2"))) static void
fc_copy_runs_avx2(char *dst, ptrdiff_t dst_step, const char *src, ptrdiff_t src_step,
                  ptrdiff_t runs, ptrdiff_t run_bytes)
{
    ptrdiff_t r, j;
    for (r = 0; r < runs; r++) {
        for (j = 0; j < run_bytes; j += FC_STAGE_CHUNK) {
            __m256i lo = _mm256_loadu_si256((const __m256i *)(src + j));
            __m256i hi = _mm256_loadu_si256((const __m256i *)(src + j + 32));
            _mm256_storeu_si256((__m256i *)(dst + j), lo);
            _mm256_storeu_si256((__m256i *)(dst + j + 32), hi);
        }
        dst += dst_step;
        src += src_step;
    }
}
#endif

static fc_copy_runs_t fc_copy_runs = fc_copy_runs_c;

static void fc_stage_init(void)
{
    fc_copy_runs = fc_copy_runs_c;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        fc_copy_runs = fc_copy_runs_avx2;
#endif
}

#endif
