/* fastconv.nn.Linear's forward pass, y[r][o] = sum_i x[r][i] * w[o][i] (+ b[o]), for the small
 * fully connected layers of the example networks (576 -> 20, 400 -> 120 ...), float32 and
 * float64, every FASTCONV_ISA level.
 *
 * One BLAS call per block of rows from several OpenMP threads at once ran 10-60x slower than
 * one thread here (OpenBLAS's buffers and locks), and a single-threaded BLAS call leaves the
 * second core idle; so the rows are split across fastconv's threads and each output is a dot
 * product read in place from x and w (no packing, no transposed copy of the weights): a
 * micro-kernel keeps RB rows x OB outputs of lane-wise partial sums over the features in
 * registers, L features a step (the tail zero-filled to a whole vector), and reduces each
 * sum's lanes in a fixed tree (fc_lin_sum). The bias is added after, as NumPy's
 * ``x @ w.T + b`` adds it.
 *
 * Every output is the same chain whichever kernel (RB x OB or the 1 x 1 edge one), thread or
 * block computes it: results depend on the shapes and the level's vector width only (the
 * widths may differ from each other and from BLAS in the last bits), never on the thread
 * count. Kernels never allocate and never fail.
 */
#ifndef FASTCONV_LINEAR_H
#define FASTCONV_LINEAR_H

#include <stddef.h>
#include <string.h>

#include "_cpu.h"
#include "_simd.h"

#if FC_HAVE_X86_TARGETS
#include <immintrin.h>
#endif

#define FC_LIN_ATTR_avx512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define FC_LIN_ATTR_avx2 __attribute__((target("avx2,fma")))
#define FC_LIN_ATTR_generic

/* the sums of the kernels below: acc[r][o] over the steps of L features (the loops over the
 * sums unrolled whole: otherwise GCC 12 kept a stack copy of them, and the AVX2 float kernel
 * ran 576 -> 20 at batch 1000 at 6.6 GMAC/s on one thread, against 38.7 unrolled; AVX-512
 * 49.8 -> 51.7) */
#define FC_LIN_ACCUMULATE(T, V, L, RB, OB)                                                   \
        _Pragma("GCC unroll 24") for (r = 0; r < RB; r++)                                     \
            _Pragma("GCC unroll 24") for (o = 0; o < OB; o++)                                 \
                acc[r][o] = (V){0};                                                          \
        for (i = 0; i + L <= features; i += L) {                                             \
            _Pragma("GCC unroll 24") for (r = 0; r < RB; r++)                                 \
                __builtin_memcpy(&xv[r], x + r * features + i, sizeof(V));                  \
            _Pragma("GCC unroll 24") for (o = 0; o < OB; o++)                                 \
                __builtin_memcpy(&wv[o], w + o * features + i, sizeof(V));                   \
            _Pragma("GCC unroll 24") for (r = 0; r < RB; r++)                                 \
                _Pragma("GCC unroll 24") for (o = 0; o < OB; o++)                             \
                    acc[r][o] += xv[r] * wv[o];                                              \
        }                                                                                    \
        if (i < features) {  /* the tail, zero-filled to a whole vector (element copies: */  \
            const int rest = (int)(features - i);  /* a sized memcpy is a libc call) */      \
            T part[L];                                                                       \
            _Pragma("GCC unroll 24") for (r = 0; r < RB; r++) {                               \
                for (l = 0; l < L; l++)                                                      \
                    part[l] = l < rest ? x[r * features + i + l] : (T)0;                     \
                __builtin_memcpy(&xv[r], part, sizeof(V));                                   \
            }                                                                                \
            _Pragma("GCC unroll 24") for (o = 0; o < OB; o++) {                               \
                for (l = 0; l < L; l++)                                                      \
                    part[l] = l < rest ? w[o * features + i + l] : (T)0;                     \
                __builtin_memcpy(&wv[o], part, sizeof(V));                                   \
            }                                                                                \
            _Pragma("GCC unroll 24") for (r = 0; r < RB; r++)                                 \
                _Pragma("GCC unroll 24") for (o = 0; o < OB; o++)                             \
                    acc[r][o] += xv[r] * wv[o];                                              \
        }

/* RB rows x OB outputs: out[r*ldo + o] = tree-sum of the lanes of
 *     acc[l] = sum over steps s of x[r*features + s*L + l] * w[o*features + s*L + l]
 * (the last step's missing features zero). */
#define FC_LIN_KERNEL(NAME, ATTR, T, V, L, RB, OB)                                           \
    ATTR static void NAME(const T *x, const T *w, ptrdiff_t features, T *out, ptrdiff_t ldo) \
    {                                                                                        \
        V acc[RB][OB], xv[RB], wv[OB];                                                       \
        ptrdiff_t i;                                                                         \
        int r, o, l, h;                                                                      \
        FC_LIN_ACCUMULATE(T, V, L, RB, OB)                                                   \
        for (r = 0; r < RB; r++)                                                             \
            for (o = 0; o < OB; o++) {                                                       \
                T lanes[L];                                                                  \
                __builtin_memcpy(lanes, &acc[r][o], sizeof(V));                              \
                for (h = L / 2; h >= 1; h /= 2)  /* the fixed tree: halves added */          \
                    for (l = 0; l < h; l++)                                                  \
                        lanes[l] += lanes[l + h];                                            \
                out[r * ldo + o] = lanes[0];                                                 \
            }                                                                                \
    }

typedef void (*fc_lin_kernel_s)(const float *, const float *, ptrdiff_t, float *, ptrdiff_t);
typedef void (*fc_lin_kernel_d)(const double *, const double *, ptrdiff_t, double *, ptrdiff_t);

#if FC_SIMD
/* 16 registers: 2 x 4 sums, 2 rows and 4 weight vectors */
FC_LIN_KERNEL(fc_lin_generic_s, FC_LIN_ATTR_generic, float, fc_v4f, 4, 2, 4)
FC_LIN_KERNEL(fc_lin_generic_s1, FC_LIN_ATTR_generic, float, fc_v4f, 4, 1, 1)
FC_LIN_KERNEL(fc_lin_generic_d, FC_LIN_ATTR_generic, double, fc_v2d, 2, 2, 4)
FC_LIN_KERNEL(fc_lin_generic_d1, FC_LIN_ATTR_generic, double, fc_v2d, 2, 1, 1)
#define FC_LIN_GENERIC_RB 2
#define FC_LIN_GENERIC_OB 4
#else
/* no vector extensions (MSVC): one lane */
#define FC_LIN_SCALAR(NAME, T)                                                               \
    static void NAME(const T *x, const T *w, ptrdiff_t features, T *out, ptrdiff_t ldo)      \
    {                                                                                        \
        T s = 0;                                                                             \
        ptrdiff_t i;                                                                         \
        (void)ldo;                                                                           \
        for (i = 0; i < features; i++)                                                       \
            s += x[i] * w[i];                                                                \
        out[0] = s;                                                                          \
    }
FC_LIN_SCALAR(fc_lin_generic_s1, float)
FC_LIN_SCALAR(fc_lin_generic_d1, double)
#define fc_lin_generic_s fc_lin_generic_s1
#define fc_lin_generic_d fc_lin_generic_d1
#define FC_LIN_GENERIC_RB 1
#define FC_LIN_GENERIC_OB 1
#endif

#if FC_HAVE_X86_TARGETS
typedef float fc_lin_v16f __attribute__((vector_size(64)));
typedef double fc_lin_v8d __attribute__((vector_size(64)));
typedef float fc_lin_v8f __attribute__((vector_size(32)));
typedef double fc_lin_v4d __attribute__((vector_size(32)));
/* AVX-512: 4 x 4 sums, 4 rows, 4 weights: 24 of the 32 registers (float: fc_lin_avx512_s_tree
 * below); AVX2 as the generic level */
FC_LIN_KERNEL(fc_lin_avx512_s1, FC_LIN_ATTR_avx512, float, fc_lin_v16f, 16, 1, 1)
FC_LIN_KERNEL(fc_lin_avx512_d, FC_LIN_ATTR_avx512, double, fc_lin_v8d, 8, 4, 4)
FC_LIN_KERNEL(fc_lin_avx512_d1, FC_LIN_ATTR_avx512, double, fc_lin_v8d, 8, 1, 1)
FC_LIN_KERNEL(fc_lin_avx2_s, FC_LIN_ATTR_avx2, float, fc_lin_v8f, 8, 2, 4)
FC_LIN_KERNEL(fc_lin_avx2_s1, FC_LIN_ATTR_avx2, float, fc_lin_v8f, 8, 1, 1)
FC_LIN_KERNEL(fc_lin_avx2_d, FC_LIN_ATTR_avx2, double, fc_lin_v4d, 4, 2, 4)
FC_LIN_KERNEL(fc_lin_avx2_d1, FC_LIN_ATTR_avx2, double, fc_lin_v4d, 4, 1, 1)
#endif

#if FC_HAVE_X86_TARGETS
/* The AVX-512 float 4 x 4 kernel with the sixteen trees taken together: at each level of the
 * tree (lanes l and l + h added, h = 8, 4, 2, 1) two vectors of partial sums are shuffled into
 * the pairs that level adds, so each addition has the same two operands as FC_LIN_KERNEL's
 * scalar tree (the same bits as the 1 x 1 edge kernel, fc_lin_avx512_s1; 15 vector additions
 * and 30 shuffles instead of 16 x 15 scalar additions). acc[o][r]
 * is ordered so that the last level leaves row r's four outputs in the 128-bit lane r. */
FC_LIN_ATTR_avx512 static void fc_lin_avx512_s_tree(const float *x, const float *w,
                                                    ptrdiff_t features, float *out,
                                                    ptrdiff_t ldo)
{
    fc_lin_v16f acc[4][4], xv[4], wv[4];
    __m512 a[16], b[8], c[4], d[2], e;
    ptrdiff_t i;
    int r, o, l, h;
    (void)h;
    FC_LIN_ACCUMULATE(float, fc_lin_v16f, 16, 4, 4)
    for (r = 0; r < 4; r++)
        for (o = 0; o < 4; o++)
            a[o * 4 + r] = (__m512)acc[r][o];
    /* h = 8: b[k] lanes 0-7 a[2k]'s, lanes 8-15 a[2k + 1]'s */
    for (l = 0; l < 8; l++)
        b[l] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * l], a[2 * l + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * l], a[2 * l + 1], 0xEE));
    /* h = 4: c[k]'s 128-bit lane j: a[4k + j]'s */
    for (l = 0; l < 4; l++)
        c[l] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * l], b[2 * l + 1], 0x88),
                             _mm512_shuffle_f32x4(b[2 * l], b[2 * l + 1], 0xDD));
    /* h = 2: d[k]'s lane j: a[8k + j]'s two, then a[8k + 4 + j]'s two */
    for (l = 0; l < 2; l++)
        d[l] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * l], c[2 * l + 1], 0x44),
                             _mm512_shuffle_ps(c[2 * l], c[2 * l + 1], 0xEE));
    /* h = 1: e's element 4j + m is a[4m + j]'s sum, that is acc[j][m]: row j's outputs */
    e = _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
    _mm_storeu_ps(out, _mm512_extractf32x4_ps(e, 0));
    _mm_storeu_ps(out + ldo, _mm512_extractf32x4_ps(e, 1));
    _mm_storeu_ps(out + 2 * ldo, _mm512_extractf32x4_ps(e, 2));
    _mm_storeu_ps(out + 3 * ldo, _mm512_extractf32x4_ps(e, 3));
}
#endif

/* the level's kernels and block, picked once (fc_lin_init, at import) */
static fc_lin_kernel_s fc_lin_block_s = NULL, fc_lin_edge_s = NULL;
static fc_lin_kernel_d fc_lin_block_d = NULL, fc_lin_edge_d = NULL;
static ptrdiff_t fc_lin_rb = 1, fc_lin_ob = 1;

static int fc_lin_init(void)
{
    int level = fc_cpu_isa();
    fc_lin_block_s = fc_lin_generic_s;
    fc_lin_edge_s = fc_lin_generic_s1;
    fc_lin_block_d = fc_lin_generic_d;
    fc_lin_edge_d = fc_lin_generic_d1;
    fc_lin_rb = FC_LIN_GENERIC_RB;
    fc_lin_ob = FC_LIN_GENERIC_OB;
#if FC_HAVE_X86_TARGETS
    if (level >= FC_ISA_AVX512) {
        fc_lin_block_s = fc_lin_avx512_s_tree;
        fc_lin_edge_s = fc_lin_avx512_s1;
        fc_lin_block_d = fc_lin_avx512_d;
        fc_lin_edge_d = fc_lin_avx512_d1;
        fc_lin_rb = 4;
        fc_lin_ob = 4;
    } else if (level >= FC_ISA_AVX2) {
        fc_lin_block_s = fc_lin_avx2_s;
        fc_lin_edge_s = fc_lin_avx2_s1;
        fc_lin_block_d = fc_lin_avx2_d;
        fc_lin_edge_d = fc_lin_avx2_d1;
        fc_lin_rb = 2;
        fc_lin_ob = 4;
    }
#endif
    return level;
}

/* rows [r0, r1) of out (ldo = outs): the RB x OB kernel where a whole block fits, the 1 x 1
 * one at the edges (the same chain per output), then the bias */
#define FC_LIN_DEFINE(SFX, T)                                                                 \
    static inline void fc_lin_rows_##SFX(const T *x, const T *w, const T *bias,               \
                                         ptrdiff_t features, ptrdiff_t outs, ptrdiff_t r0,    \
                                         ptrdiff_t r1, T *out)                                \
    {                                                                                         \
        ptrdiff_t rb = fc_lin_rb, ob = fc_lin_ob, r, o, rr;                                   \
        for (r = r0; r < r1; r += rb) {                                                       \
            if (r + rb <= r1) {                                                               \
                for (o = 0; o + ob <= outs; o += ob)                                          \
                    fc_lin_block_##SFX(x + r * features, w + o * features, features,          \
                                       out + r * outs + o, outs);                             \
                for (; o < outs; o++)                                                         \
                    for (rr = r; rr < r + rb; rr++)                                           \
                        fc_lin_edge_##SFX(x + rr * features, w + o * features, features,      \
                                          out + rr * outs + o, outs);                         \
            } else {                                                                          \
                for (rr = r; rr < r1; rr++)                                                   \
                    for (o = 0; o < outs; o++)                                                \
                        fc_lin_edge_##SFX(x + rr * features, w + o * features, features,      \
                                          out + rr * outs + o, outs);                         \
            }                                                                                 \
        }                                                                                     \
        if (bias)                                                                             \
            for (r = r0; r < r1; r++)                                                         \
                for (o = 0; o < outs; o++)                                                    \
                    out[r * outs + o] += bias[o];                                             \
    }

FC_LIN_DEFINE(s, float)
FC_LIN_DEFINE(d, double)

#endif
