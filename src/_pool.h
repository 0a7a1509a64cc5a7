/* The pooling kernels (src/_pool.pyx calls them): max and average pooling of one NCHW plane,
 * forward and backward, for any geometry, and the 2x2 stride-2 windows over runs of rows.
 *
 * One source, _pool_impl.h, is compiled for float and double, each twice: plain C
 * (vectorised to the compiler's baseline: SSE2 on x86-64, NEON on aarch64) and AVX2 (a GCC/Clang
 * target attribute on x86-64). fc_pool_select() picks one build per type with fc_cpu_isa()
 * (src/_cpu.h: detected once, capped by FASTCONV_ISA). Every build computes the
 * same operations in the same order; only the vector width differs, never the bits.
 * FC_P_VECTOR_BYTES is the width of the explicit vectors (GCC/Clang vector extensions) that
 * some loops keep their values in: 16 bytes, what every baseline has, or 32 in the AVX2 build;
 * FC_P_LANES is that many FC_T (a literal, for the preprocessor).
 * Nothing here allocates or fails: src/_pool.pyx and fastconv/pool.py have checked every
 * argument and sized every scratch row.
 */
#ifndef FASTCONV_POOL_H
#define FASTCONV_POOL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_cpu.h"

typedef struct {
    ptrdiff_t in_h, in_w, out_h, out_w;
    ptrdiff_t k_h, k_w, s_h, s_w, d_h, d_w;
    ptrdiff_t pad_t, pad_b, pad_l, pad_r;
    int count_include_pad;
    ptrdiff_t divisor_override; /* 0: none */
} fc_pool_geometry;

/* [*first, *stop) = the taps t in [0, kernel) with start + t*dilation inside [0, size) for
 * some window start in [lowest_start, highest_start]. Only these taps are visited: a window
 * that is mostly padding (a huge kernel over a small input) costs what its in-bounds taps
 * cost, as in PyTorch. */
static inline void fc_pool_tap_range(ptrdiff_t lowest_start, ptrdiff_t highest_start,
                                     ptrdiff_t dilation, ptrdiff_t kernel, ptrdiff_t size,
                                     ptrdiff_t* first, ptrdiff_t* stop)
{
    ptrdiff_t lo = 0, hi = kernel, last;
    if (highest_start < 0)
        lo = (-highest_start + dilation - 1) / dilation;
    last = size - 1 - lowest_start; /* the largest t*dilation that still lands inside */
    if (last < 0)
        hi = 0;
    else if (last / dilation + 1 < hi)
        hi = last / dilation + 1;
    if (lo > hi)
        lo = hi;
    *first = lo;
    *stop = hi;
}

/* [*first, *stop) = the output columns j with 0 <= j*stride + offset < in_width. Stepped in
 * from both ends rather than divided: only the few columns whose window reaches into the
 * padding are skipped. */
static inline void fc_pool_column_range(ptrdiff_t offset, ptrdiff_t stride, ptrdiff_t in_width,
                                        ptrdiff_t out_width, ptrdiff_t* first, ptrdiff_t* stop)
{
    ptrdiff_t lo = 0, hi = out_width;
    while (lo < hi && lo * stride + offset < 0)
        lo += 1;
    while (hi > lo && (hi - 1) * stride + offset >= in_width)
        hi -= 1;
    *first = lo;
    *stop = hi;
}

/* The column range of every kernel column, worked out once per plane instead of once per
 * output row and tap (which cost more than the short rows they fed). Kernels wider than
 * FC_POOL_COLUMNS work them out as they go. */
#define FC_POOL_COLUMNS 64

typedef struct {
    ptrdiff_t tap_first, tap_stop;
    ptrdiff_t in_w, out_w, s_w, pad_l, d_w;
    int stored;
    ptrdiff_t first[FC_POOL_COLUMNS], stop[FC_POOL_COLUMNS];
} fc_pool_columns;

static inline void fc_pool_columns_init(fc_pool_columns* c, ptrdiff_t in_w, ptrdiff_t out_w,
                                        ptrdiff_t k_w, ptrdiff_t s_w, ptrdiff_t pad_l,
                                        ptrdiff_t d_w)
{
    ptrdiff_t t;
    fc_pool_tap_range(-pad_l, (out_w - 1) * s_w - pad_l, d_w, k_w, in_w, &c->tap_first,
                      &c->tap_stop);
    c->in_w = in_w;
    c->out_w = out_w;
    c->s_w = s_w;
    c->pad_l = pad_l;
    c->d_w = d_w;
    c->stored = c->tap_stop - c->tap_first <= FC_POOL_COLUMNS;
    if (c->stored)
        for (t = c->tap_first; t < c->tap_stop; ++t)
            fc_pool_column_range(t * d_w - pad_l, s_w, in_w, out_w, &c->first[t - c->tap_first],
                                 &c->stop[t - c->tap_first]);
}

static inline void fc_pool_columns_get(const fc_pool_columns* c, ptrdiff_t tap,
                                       ptrdiff_t* first, ptrdiff_t* stop)
{
    if (c->stored) {
        *first = c->first[tap - c->tap_first];
        *stop = c->stop[tap - c->tap_first];
    } else {
        fc_pool_column_range(tap * c->d_w - c->pad_l, c->s_w, c->in_w, c->out_w, first, stop);
    }
}

/* the first tap start + j*dilation (j >= 0) that is >= 0 */
static inline ptrdiff_t fc_pool_first_tap(ptrdiff_t start, ptrdiff_t dilation)
{
    if (start >= 0)
        return start;
    return start + ((dilation - 1 - start) / dilation) * dilation;
}

/* output row oh of an average pool: its window rows [start, end) clipped to the padded input
 * (under ceil_mode the last window can run past it and then counts fewer rows), and the
 * in-bounds part [first, stop) */
static inline void fc_pool_avg_rows(const fc_pool_geometry* g, ptrdiff_t oh, ptrdiff_t* start,
                                    ptrdiff_t* end, ptrdiff_t* first, ptrdiff_t* stop)
{
    ptrdiff_t s = oh * g->s_h - g->pad_t;
    ptrdiff_t e = s + g->k_h < g->in_h + g->pad_b ? s + g->k_h : g->in_h + g->pad_b;
    *start = s;
    *end = e;
    *first = s > 0 ? s : 0;
    *stop = e < g->in_h ? e : g->in_h;
}

/* the height part of PyTorch's divisor for window rows [start, end) */
static inline ptrdiff_t fc_pool_avg_row_factor(const fc_pool_geometry* g, ptrdiff_t start,
                                               ptrdiff_t end, ptrdiff_t first, ptrdiff_t stop)
{
    if (g->divisor_override != 0)
        return 1; /* the whole override sits in the column factor */
    if (g->count_include_pad)
        return end - start;
    return stop - first;
}

/* column_factor[j] = the width part of PyTorch's divisor for output column j */
#define FC_POOL_COLUMN_FACTORS(NAME, T)                                                     \
    static void NAME(T* column_factor, const fc_pool_geometry* g)                           \
    {                                                                                       \
        ptrdiff_t j;                                                                        \
        for (j = 0; j < g->out_w; ++j) {                                                    \
            ptrdiff_t start = j * g->s_w - g->pad_l;                                        \
            ptrdiff_t end = start + g->k_w < g->in_w + g->pad_r ? start + g->k_w            \
                                                                : g->in_w + g->pad_r;       \
            if (g->divisor_override != 0)                                                   \
                column_factor[j] = (T)g->divisor_override;                                  \
            else if (g->count_include_pad)                                                  \
                column_factor[j] = (T)(end - start);                                        \
            else                                                                            \
                column_factor[j] = (T)((end < g->in_w ? end : g->in_w) - (start > 0 ? start : 0)); \
        }                                                                                   \
    }
FC_POOL_COLUMN_FACTORS(fc_pool_column_factors_float, float)
FC_POOL_COLUMN_FACTORS(fc_pool_column_factors_double, double)

/* the 'box' kernels (stride-1 average pooling) keep a pointer per window row on the stack:
 * fastconv/pool.py takes them for windows of at most this many rows */
#define FC_POOL_BOX_MAX_ROWS 16

/* Even and odd lanes of the concatenation of two vectors of n lanes (a stride-2 row
 * de-interleaved), and the lanes of two vectors interleaved (ZIP: a0 b0 a1 b1 ..., the low
 * and the high half of the lanes): clang and GCC >= 12 spell it __builtin_shufflevector, older GCC
 * __builtin_shuffle with a mask vector of the lanes' integer type. */
#if defined(__clang__) || __GNUC__ >= 12
#define FC_POOL_EVENS_2(a, b) __builtin_shufflevector(a, b, 0, 2)
#define FC_POOL_ODDS_2(a, b) __builtin_shufflevector(a, b, 1, 3)
#define FC_POOL_EVENS_4(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6)
#define FC_POOL_ODDS_4(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7)
#define FC_POOL_EVENS_8(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#define FC_POOL_ODDS_8(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
#define FC_POOL_ZIP_LOW_2(a, b) __builtin_shufflevector(a, b, 0, 2)
#define FC_POOL_ZIP_HIGH_2(a, b) __builtin_shufflevector(a, b, 1, 3)
#define FC_POOL_ZIP_LOW_4(a, b) __builtin_shufflevector(a, b, 0, 4, 1, 5)
#define FC_POOL_ZIP_HIGH_4(a, b) __builtin_shufflevector(a, b, 2, 6, 3, 7)
#define FC_POOL_ZIP_LOW_8(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define FC_POOL_ZIP_HIGH_8(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)
#else
#define FC_POOL_MASK_(a, ...) ((__typeof__((a) > (a))){__VA_ARGS__})
#define FC_POOL_EVENS_2(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 0, 2))
#define FC_POOL_ODDS_2(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 1, 3))
#define FC_POOL_EVENS_4(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 0, 2, 4, 6))
#define FC_POOL_ODDS_4(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 1, 3, 5, 7))
#define FC_POOL_EVENS_8(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 0, 2, 4, 6, 8, 10, 12, 14))
#define FC_POOL_ODDS_8(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 1, 3, 5, 7, 9, 11, 13, 15))
#define FC_POOL_ZIP_LOW_2(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 0, 2))
#define FC_POOL_ZIP_HIGH_2(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 1, 3))
#define FC_POOL_ZIP_LOW_4(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 0, 4, 1, 5))
#define FC_POOL_ZIP_HIGH_4(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 2, 6, 3, 7))
#define FC_POOL_ZIP_LOW_8(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 0, 8, 1, 9, 2, 10, 3, 11))
#define FC_POOL_ZIP_HIGH_8(a, b) __builtin_shuffle(a, b, FC_POOL_MASK_(a, 4, 12, 5, 13, 6, 14, 7, 15))
#endif
#define FC_POOL_CAT_(a, b) a##b
#define FC_POOL_CAT(a, b) FC_POOL_CAT_(a, b)

/* ---- the builds ------------------------------------------------------------------------ */

#define FC_P_TARGET
#define FC_P_MAX_STRIDE2 0
#define FC_P_VECTOR_BYTES 16
#define FC_P_LANES 4
#define FC_T float
#define FC_PN(name) fc_pool_##name##_float_generic
#include "_pool_impl.h"
#define FC_P_TARGET
#define FC_P_MAX_STRIDE2 0
#define FC_P_VECTOR_BYTES 16
#define FC_P_LANES 2
#define FC_T double
#define FC_PN(name) fc_pool_##name##_double_generic
#include "_pool_impl.h"

#if FC_HAVE_X86_TARGETS
#define FC_P_TARGET __attribute__((target("avx2,fma")))
#define FC_P_MAX_STRIDE2 1
#define FC_P_VECTOR_BYTES 32
#define FC_P_LANES 8
#define FC_T float
#define FC_PN(name) fc_pool_##name##_float_avx2
#include "_pool_impl.h"
#define FC_P_TARGET __attribute__((target("avx2,fma")))
#define FC_P_MAX_STRIDE2 1
#define FC_P_VECTOR_BYTES 32
#define FC_P_LANES 4
#define FC_T double
#define FC_PN(name) fc_pool_##name##_double_avx2
#include "_pool_impl.h"
#endif

/* one table of kernels per element type */
#define FC_POOL_TABLE(T)                                                                     \
    typedef struct {                                                                         \
        void (*max_plane)(const T*, T*, const fc_pool_geometry*);                            \
        void (*max_indices_plane)(const T*, T*, int64_t*, int32_t*, const fc_pool_geometry*); \
        void (*avg_plane)(const T*, T*, const T*, const fc_pool_geometry*);                  \
        void (*avg_backward_plane)(const T*, T*, const T*, T*, const fc_pool_geometry*);     \
        void (*max2x2_rows)(const T*, T*, int64_t*, ptrdiff_t, ptrdiff_t,                    \
                            const fc_pool_geometry*);                                        \
        void (*avg2x2_rows)(const T*, T*, T, ptrdiff_t, ptrdiff_t, const fc_pool_geometry*); \
        void (*avg2x2_backward_rows)(const T*, T*, T, ptrdiff_t, ptrdiff_t,                  \
                                     const fc_pool_geometry*);                               \
        void (*avg_box_plane)(const T*, T*, const T*, T*, ptrdiff_t, const fc_pool_geometry*); \
        void (*avg_box_backward_plane)(const T*, T*, const T*, T*, ptrdiff_t,                 \
                                       const fc_pool_geometry*);                             \
        int (*max2x2_backward_plane)(const T*, const int64_t*, T*, ptrdiff_t, ptrdiff_t);      \
    } fc_pool_kernels_##T;
FC_POOL_TABLE(float)
FC_POOL_TABLE(double)

#define FC_POOL_FILL(table, T, ISA)                                         \
    do {                                                                    \
        (table).max_plane = fc_pool_max_plane_##T##_##ISA;                  \
        (table).max_indices_plane = fc_pool_max_indices_plane_##T##_##ISA;  \
        (table).avg_plane = fc_pool_avg_plane_##T##_##ISA;                  \
        (table).avg_backward_plane = fc_pool_avg_backward_plane_##T##_##ISA; \
        (table).max2x2_rows = fc_pool_max2x2_rows_##T##_##ISA;              \
        (table).avg2x2_rows = fc_pool_avg2x2_rows_##T##_##ISA;              \
        (table).avg2x2_backward_rows = fc_pool_avg2x2_backward_rows_##T##_##ISA; \
        (table).avg_box_plane = fc_pool_avg_box_plane_##T##_##ISA;          \
        (table).avg_box_backward_plane = fc_pool_avg_box_backward_plane_##T##_##ISA; \
        (table).max2x2_backward_plane = fc_pool_max2x2_backward_plane_##T##_##ISA; \
    } while (0)

static fc_pool_kernels_float fc_pool_float;
static fc_pool_kernels_double fc_pool_double;

/* fill both tables for the level in force; returns the build chosen. AVX-512 CPUs run the
 * AVX2 build: an AVX-512 build of this source (512-bit, or 256-bit with mask registers) was
 * 1.2-2x slower on the max-pooling cases measured (2x2 rows of a 24x24 plane; k3 s2 p1 planes
 * of 112x112), its de-interleaving permutes and masked blends costing more than the wider
 * vectors save on these short, memory-bound rows. The stride-1 box kernels too: their AVX-512
 * build (16 floats a vector) took 1.66 ms against AVX2's 1.45 on one thread for the 3x3 average
 * of 16x64x56x56 (Zen 5), each unaligned 64-byte load of a shifted tap crossing a cache line. */
static int fc_pool_select(void)
{
    int level = fc_cpu_isa();
    FC_POOL_FILL(fc_pool_float, float, generic);
    FC_POOL_FILL(fc_pool_double, double, generic);
#if FC_HAVE_X86_TARGETS
    if (level >= FC_ISA_AVX2) {
        FC_POOL_FILL(fc_pool_float, float, avx2);
        FC_POOL_FILL(fc_pool_double, double, avx2);
        level = FC_ISA_AVX2;
    }
#endif
    return level;
}

#endif
