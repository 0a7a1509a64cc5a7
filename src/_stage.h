/* The staged im2col's row copy (src/_conv.pyx, staged_runs) and the staged scatter's sums.
 *
 * The copy: runs of bytes copied in
 * FC_STAGE_CHUNK-byte pieces, the last piece of each run reaching past it. The caller writes
 * the runs in order, so each spill is overwritten by the next run, and gives the last one
 * FC_STAGE_CHUNK bytes of slack on both sides (what it reads and what it writes). Every
 * version copies the same bytes: only the width of the moves differs, chosen once, at import,
 * from the level of src/_cpu.h (fc_stage_init).
 */
#ifndef FASTCONV_STAGE_H
#define FASTCONV_STAGE_H

#include <stddef.h>
#include <string.h>

#include "_cpu.h"

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

#if FC_HAVE_X86_TARGETS
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

/* The staged scatter's sums (src/_conv.pyx, col2im_staged): run r (r < runs) of length
 * elements of src, src_step apart, added to dst, dst_step apart. Exact lengths (no spill);
 * each element gets one addition, so every version gives the same bits. */
#define FC_ADD_RUNS_C(NAME, T)                                                               \
    static void NAME(T *dst, ptrdiff_t dst_step, const T *src, ptrdiff_t src_step,          \
                     ptrdiff_t runs, ptrdiff_t length)                                       \
    {                                                                                        \
        ptrdiff_t r, j;                                                                      \
        for (r = 0; r < runs; r++) {                                                         \
            T *restrict d = dst + r * dst_step;                                              \
            const T *restrict s = src + r * src_step;                                        \
            for (j = 0; j < length; j++)                                                     \
                d[j] += s[j];                                                                \
        }                                                                                    \
    }
FC_ADD_RUNS_C(fc_sadd_runs_c, float)
FC_ADD_RUNS_C(fc_dadd_runs_c, double)

typedef void (*fc_sadd_runs_t)(float *, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t,
                               ptrdiff_t);
typedef void (*fc_dadd_runs_t)(double *, ptrdiff_t, const double *, ptrdiff_t, ptrdiff_t,
                               ptrdiff_t);

#if FC_HAVE_X86_TARGETS
/* 8 floats (4 doubles) at a time, the rest one by one */
#define FC_ADD_RUNS_AVX2(NAME, T, LANES, LOADU, STOREU, ADD)                                 \
    __attribute__((target("avx2"))) static void                                              \
    NAME(T *dst, ptrdiff_t dst_step, const T *src, ptrdiff_t src_step, ptrdiff_t runs,       \
         ptrdiff_t length)                                                                   \
    {                                                                                        \
        ptrdiff_t r, j;                                                                      \
        for (r = 0; r < runs; r++) {                                                         \
            T *d = dst + r * dst_step;                                                       \
            const T *s = src + r * src_step;                                                 \
            for (j = 0; j + LANES <= length; j += LANES)                                     \
                STOREU(d + j, ADD(LOADU(d + j), LOADU(s + j)));                              \
            for (; j < length; j++)                                                          \
                d[j] += s[j];                                                                \
        }                                                                                    \
    }
FC_ADD_RUNS_AVX2(fc_sadd_runs_avx2, float, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps)
FC_ADD_RUNS_AVX2(fc_dadd_runs_avx2, double, 4, _mm256_loadu_pd, _mm256_storeu_pd,
                 _mm256_add_pd)
#endif

/* The stage's input rows (src/_conv.pyx, stage_input): run r (r < runs) of exactly bytes
 * bytes from src + r*src_step to dst + r*dst_step, nothing written past a run (the stage's
 * zero padding around it stays). Short runs (a 14-pixel row is 56 bytes) are most of them:
 * AVX-512 copies them in one masked move, where a memcpy call costs more than the copy. */
typedef void (*fc_copy_rows_t)(char *, ptrdiff_t, const char *, ptrdiff_t, ptrdiff_t,
                               ptrdiff_t);

static void fc_copy_rows_c(char *dst, ptrdiff_t dst_step, const char *src, ptrdiff_t src_step,
                           ptrdiff_t runs, ptrdiff_t bytes)
{
    ptrdiff_t r;
    for (r = 0; r < runs; r++)
        memcpy(dst + r * dst_step, src + r * src_step, (size_t)bytes);
}

#if FC_HAVE_X86_TARGETS
__attribute__((target("avx512f,avx512bw"))) static void
fc_copy_rows_avx512(char *dst, ptrdiff_t dst_step, const char *src, ptrdiff_t src_step,
                    ptrdiff_t runs, ptrdiff_t bytes)
{
    ptrdiff_t r, j;
    __mmask64 tail = bytes % 64 ? (~(__mmask64)0) >> (64 - bytes % 64) : 0;
    ptrdiff_t whole = bytes - bytes % 64;
    for (r = 0; r < runs; r++) {
        char *d = dst + r * dst_step;
        const char *s = src + r * src_step;
        for (j = 0; j < whole; j += 64)
            _mm512_storeu_si512((void *)(d + j), _mm512_loadu_si512((const void *)(s + j)));
        if (tail)
            _mm512_mask_storeu_epi8(d + whole, tail, _mm512_maskz_loadu_epi8(tail, s + whole));
    }
}
#endif

/* A 1x1 kernel's compact planes (src/conv/stage.pxi, stage_points): for r < runs and j < count,
 * dst[r*dst_step + j] = src[r*src_step + j*step] (floats). Nothing is read past the last
 * element of a run, src[(count - 1)*step], nor written past dst[count - 1]. The stride-2 rows
 * of a ResNet shortcut are most of them: AVX-512 takes 16 columns per two (masked) loads and a
 * permute, other steps by a masked gather. */
typedef void (*fc_gather_rows_t)(float *, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, ptrdiff_t);

static void fc_gather_rows_c(float *dst, ptrdiff_t dst_step, const float *src,
                             ptrdiff_t src_step, ptrdiff_t runs, ptrdiff_t count, ptrdiff_t step)
{
    ptrdiff_t r, j;
    for (r = 0; r < runs; r++) {
        float *d = dst + r * dst_step;
        const float *s = src + r * src_step;
        /* four columns a step (see stage_input) */
        for (j = 0; j + 4 <= count; j += 4) {
            d[j] = s[j * step];
            d[j + 1] = s[(j + 1) * step];
            d[j + 2] = s[(j + 2) * step];
            d[j + 3] = s[(j + 3) * step];
        }
        for (; j < count; j++)
            d[j] = s[j * step];
    }
}

#if FC_HAVE_X86_TARGETS
__attribute__((target("avx512f"))) static void
fc_gather_rows_avx512(float *dst, ptrdiff_t dst_step, const float *src, ptrdiff_t src_step,
                      ptrdiff_t runs, ptrdiff_t count, ptrdiff_t step)
{
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                            28, 30);
    const __m512i index = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                               10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32((int)step));
    ptrdiff_t r, j, left, reach;
    __mmask16 m, lo, hi;
    /* a block of 16 columns at a time down all the rows: its masks worked out once */
    for (j = 0; j < count; j += 16) {
        left = count - j < 16 ? count - j : 16;
        m = (__mmask16)((1u << left) - 1);
        if (step == 2) {
            /* the 2*left - 1 floats from s + 2j: the low vector's lanes, then the high's */
            reach = 2 * left - 1;
            lo = (__mmask16)(reach >= 16 ? 0xffff : (1u << reach) - 1);
            hi = (__mmask16)(reach > 16 ? (1u << (reach - 16)) - 1 : 0);
            for (r = 0; r < runs; r++) {
                const float *s = src + r * src_step + 2 * j;
                _mm512_mask_storeu_ps(
                    dst + r * dst_step + j, m,
                    _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo, s), evens,
                                           _mm512_maskz_loadu_ps(hi, s + 16)));
            }
        } else {
            for (r = 0; r < runs; r++)
                _mm512_mask_storeu_ps(dst + r * dst_step + j, m,
                                      _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, index,
                                                               src + r * src_step + j * step,
                                                               4));
        }
    }
}
#endif

static fc_copy_rows_t fc_copy_rows = fc_copy_rows_c;
static fc_copy_runs_t fc_copy_runs = fc_copy_runs_c;
static fc_gather_rows_t fc_gather_rows = fc_gather_rows_c;
static fc_sadd_runs_t fc_sadd_runs = fc_sadd_runs_c;
static fc_dadd_runs_t fc_dadd_runs = fc_dadd_runs_c;

/* Pick the versions for the level of src/_cpu.h (the AVX2 moves and sums from avx2, the
 * masked AVX-512 row copy and column gather at avx512); returns the name of the highest
 * level used. */
static const char *fc_stage_init(void)
{
    int level = fc_cpu_isa();
    fc_copy_rows = fc_copy_rows_c;
    fc_copy_runs = fc_copy_runs_c;
    fc_gather_rows = fc_gather_rows_c;
    fc_sadd_runs = fc_sadd_runs_c;
    fc_dadd_runs = fc_dadd_runs_c;
#if FC_HAVE_X86_TARGETS
    if (level >= FC_ISA_AVX2) {
        fc_copy_runs = fc_copy_runs_avx2;
        fc_sadd_runs = fc_sadd_runs_avx2;
        fc_dadd_runs = fc_dadd_runs_avx2;
    }
    if (level >= FC_ISA_AVX512) {
        fc_copy_rows = fc_copy_rows_avx512;
        fc_gather_rows = fc_gather_rows_avx512;
        return "avx512";
    }
#endif
    return level >= FC_ISA_AVX2 ? "avx2" : "generic";
}

#endif
