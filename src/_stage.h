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

/* The stage's input rows at stride_w 2, float32 (stage_input): row r (r < rows) of src
 * (src_step apart) split by column phase into the stage row dst + r*dst_step, whose phases
 * are st_w floats each: dst[ph*st_w + j] = src[2j + ph - pad_left] for j < st_w where that
 * column is inside [0, in_w); nothing else is written (the padding stays). stage_input's
 * column-by-column copy took a fifth as long as the sums in the direct forward pass of the
 * small ResNet's 32 -> 64 stride-2 layer (bench/direct_stages.c: 0.25 against 0.95 ms for
 * 16 samples; this, 0.044): AVX-512 splits 32 columns into 16 of each phase by two permutes.
 * NULL below the avx512 level (stage_input then copies column by column). */
typedef void (*fc_stage_rows_s2_t)(float *, ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t,
                                   ptrdiff_t, ptrdiff_t, ptrdiff_t);

#if FC_HAVE_X86_TARGETS
/* lanes [lo, hi) of 16, clamped */
static inline __mmask16 fc_lanes16(ptrdiff_t lo, ptrdiff_t hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > 16 ? 16 : hi;
    return hi <= lo ? 0 : (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

__attribute__((target("avx512f"))) static void
fc_stage_rows_s2_avx512(float *dst, ptrdiff_t dst_step, ptrdiff_t st_w, const float *src,
                        ptrdiff_t src_step, ptrdiff_t in_w, ptrdiff_t rows, ptrdiff_t pad_left)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    ptrdiff_t x0, r, base, l;
    for (x0 = 0; x0 < st_w; x0 += 16) {
        /* lane m < 32 of the pair of loads is input column base + m: staged column 2*x0 + m,
         * phase m % 2, j = x0 + m / 2 */
        __mmask16 lo_mask, hi_mask, ph0 = 0, ph1 = 0;
        unsigned loaded;
        base = 2 * x0 - pad_left;
        lo_mask = fc_lanes16(-base, in_w - base);
        hi_mask = fc_lanes16(-base - 16, in_w - base - 16);
        /* the stores: the lanes of each phase whose column was loaded, j < st_w */
        loaded = (unsigned)lo_mask | (unsigned)hi_mask << 16;
        for (l = 0; l < 16 && x0 + l < st_w; l++) {
            ph0 |= (__mmask16)(((loaded >> (2 * l)) & 1u) << l);
            ph1 |= (__mmask16)(((loaded >> (2 * l + 1)) & 1u) << l);
        }
        if (!(ph0 | ph1))
            continue;
        for (r = 0; r < rows; r++) {
            const float *s = src + r * src_step + base;
            float *d = dst + r * dst_step + x0;
            __m512 a = _mm512_maskz_loadu_ps(lo_mask, s);
            __m512 b = _mm512_maskz_loadu_ps(hi_mask, s + 16);
            _mm512_mask_storeu_ps(d, ph0, _mm512_permutex2var_ps(a, even, b));
            _mm512_mask_storeu_ps(d + st_w, ph1, _mm512_permutex2var_ps(a, odd, b));
        }
    }
}
#endif

static fc_stage_rows_s2_t fc_stage_rows_s2 = NULL;

static fc_copy_rows_t fc_copy_rows = fc_copy_rows_c;
static fc_copy_runs_t fc_copy_runs = fc_copy_runs_c;
static fc_sadd_runs_t fc_sadd_runs = fc_sadd_runs_c;
static fc_dadd_runs_t fc_dadd_runs = fc_dadd_runs_c;

/* Pick the versions for the level of src/_cpu.h (the AVX2 moves and sums from avx2, the
 * masked AVX-512 row copy and stride-2 split at avx512); returns the name of the highest
 * level used. */
static const char *fc_stage_init(void)
{
    int level = fc_cpu_isa();
    fc_copy_rows = fc_copy_rows_c;
    fc_copy_runs = fc_copy_runs_c;
    fc_sadd_runs = fc_sadd_runs_c;
    fc_dadd_runs = fc_dadd_runs_c;
    fc_stage_rows_s2 = NULL;
#if FC_HAVE_X86_TARGETS
    if (level >= FC_ISA_AVX2) {
        fc_copy_runs = fc_copy_runs_avx2;
        fc_sadd_runs = fc_sadd_runs_avx2;
        fc_dadd_runs = fc_dadd_runs_avx2;
    }
    if (level >= FC_ISA_AVX512) {
        fc_copy_rows = fc_copy_rows_avx512;
        fc_stage_rows_s2 = fc_stage_rows_s2_avx512;
        return "avx512";
    }
#endif
    return level >= FC_ISA_AVX2 ? "avx2" : "generic";
}

#endif
