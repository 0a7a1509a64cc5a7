/* Convolutions with few input channels (a network's first layer: 1 to 3 channels, k = C_in *
 * kH * kW taps of a few dozen), float32 and float64, every FASTCONV_ISA level.
 *
 * With one input channel and 25 taps an output has too little work per load for the direct
 * kernels (src/_direct.h, output channels across the lanes): they ran the tutorial net's 1 ->
 * 16 5x5 stride-2 layer at half the FMA peak. Here the lanes run across output *pixels*, as
 * MLAS's first-layer kernels read an NCHW input: a thread splits one sample's input into
 * phase planes (fc_few_phase),
 *
 *     phase[c][a][b][i][j] = xpad[c][S_h*i + a][S_w*j + b]      (0 outside x)
 *
 * with S = stride * pool (pool = 1 for a plain convolution). An output pixel of the grid
 * (y, x) -- a convolution output, or with pool > 1 one window position (dy, dx) of the
 * pooled output (y, x) -- reads tap (c, p, q) at phase[c][ry % S_h][rx % S_w][y + ry / S_h]
 * [x + rx / S_w] with ry = stride_h*dy + p*dil_h, rx = stride_w*dx + q*dil_w: at one offset
 * off[kk] from the pixel's flat position y*Wp + x for every pixel of the grid. So a vector of
 * L consecutive flat positions is one unaligned load per tap, and the micro-kernel keeps 4
 * output channels x NR such vectors of sums in registers over the k taps, the weights
 * broadcast (fc_few_block). The grid is computed Wp wide (Wp >= its width: the columns past
 * it are computed and never stored), which is the price of reading the phase planes in place.
 *
 * Unpooled, the grid is instead computed at its own width from per-band column planes (one
 * per kernel column, fc_few_cols) and stored straight into the output (fc_few_dense; the
 * section "unpooled" below): the same chains.
 *
 * The sums come out channel-major (the layout of the output planes): no transpose. The bias is
 * added after the chain of products, and the ReLU (src/_epilogue.h's rule) applied, in the
 * micro-kernel's store. With pool > 1 the micro-kernel computes the pool windows' (dy, dx)
 * grids one after the other into one block, each store taking the max with what is there
 * (in registers, in cache): no convolution output in memory.
 *
 * Every output element is the same chain sum_kk w[o][kk] * x[..] from 0 (then + bias), in the
 * same order, whichever thread, band or lane computes it, pooled or not: results depend on
 * the shapes only, and a pooled result is bit for bit the max (src/_pool_impl.h's rule, scan
 * order row-major) of the unpooled one. Which vector width runs depends on fc_cpu_isa(); the
 * widths may differ in the last bit from each other (FMA contraction), never run to run.
 *
 * Kernels never allocate and never fail.
 */
#ifndef FASTCONV_FEWCHAN_H
#define FASTCONV_FEWCHAN_H

#include <stddef.h>
#include <string.h>

#include "_cpu.h"
#include "_epilogue.h"
#include "_simd.h"

/* output channels per micro-kernel call: the packed weights and bias are padded to a multiple */
#define FC_FEW_MR 4
/* the most elements of a vector at any level (AVX-512 floats) */
#define FC_FEW_LANES_MAX 16
/* the most vectors of pixels per micro-kernel call at any level */
#define FC_FEW_NR_MAX 6
/* elements of slack past the phase planes, besides one grid row: a vector of pixels may read
 * up to a row and a vector (of any level) past the last plane */
#define FC_FEW_SLACK 64

typedef struct {
    ptrdiff_t k;          /* taps: C_in * kH * kW */
    ptrdiff_t cpad;       /* output channels rounded up to FC_FEW_MR */
    ptrdiff_t quads;      /* pool windows' positions (pool_h * pool_w), 1 unpooled */
    ptrdiff_t wp;         /* the grid's row pitch (>= its width) */
    ptrdiff_t step;       /* the channels-across-lanes kernels' column step: 1 in the phase
                           * planes, stride_w * pool_w reading the input in place */
    ptrdiff_t bp;         /* the block's row pitch: one channel of one window position */
} fc_few_shape;

#define FC_FEW_ATTR_avx512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define FC_FEW_ATTR_avx2 __attribute__((target("avx2,fma")))
#define FC_FEW_ATTR_generic

/* One micro-kernel: 4 channels x NR vectors of L pixels,
 *     buf[m*bp + v*L + l] = relu?(sum_kk w[kk*cpad + m] * in[off[kk] + v*L + l] (+ bias[m]))
 * for m < mc and, in the call's last vector (v = NR - 1), l < last only (the rest of the
 * vector is computed, not stored): the block's full vectors (mc = FC_FEW_MR, last = L), or
 * the output planes' channels and their grid's last vector (fc_few_dense). V is a vector
 * type of L elements of T, I its integer twin (for the ReLU's mask); PART(p, n, r) stores
 * the first n lanes of r at p. The loops over the sums are unrolled whole (the store's
 * m < mc a test inside): otherwise GCC 12 kept a stack copy of the sums, and the seed's
 * dense step (bench/fewchan_stages.c, one thread) ran at 16.7 GFLOP/s with AVX2 and 92
 * with AVX-512, against 92 and 109 unrolled. */
#define FC_FEW_KERNEL(NAME, ATTR, T, V, I, L, NR, PART)                                      \
    ATTR static void NAME(ptrdiff_t k, const T *in, const ptrdiff_t *off, const T *w,        \
                          ptrdiff_t cpad, T *buf, ptrdiff_t bp, const T *bias, int relu,     \
                          int pool, int mc, int last)                                        \
    {                                                                                        \
        V acc[FC_FEW_MR][NR], x[NR];                                                         \
        ptrdiff_t kk;                                                                        \
        int m, v;                                                                            \
        _Pragma("GCC unroll 24") for (m = 0; m < FC_FEW_MR; m++)                              \
            _Pragma("GCC unroll 24") for (v = 0; v < NR; v++)                                 \
                acc[m][v] = (V){0};                                                          \
        for (kk = 0; kk < k; kk++) {                                                         \
            const T *s = in + off[kk];                                                       \
            const T *wk = w + kk * cpad;                                                     \
            _Pragma("GCC unroll 24") for (v = 0; v < NR; v++)                                 \
                __builtin_memcpy(&x[v], s + v * L, sizeof(V));                               \
            _Pragma("GCC unroll 24") for (m = 0; m < FC_FEW_MR; m++) {                        \
                const T wm = wk[m];                                                          \
                _Pragma("GCC unroll 24") for (v = 0; v < NR; v++)                             \
                    acc[m][v] += x[v] * wm;                                                  \
            }                                                                                \
        }                                                                                    \
        _Pragma("GCC unroll 24") for (m = 0; m < FC_FEW_MR; m++)                              \
            _Pragma("GCC unroll 24") for (v = 0; v < NR; v++) if (m < mc) {                   \
                V r = acc[m][v];                                                             \
                if (bias)                                                                    \
                    r += bias[m];                                                            \
                if (relu) {  /* src/_epilogue.h's FC_RELU: keep v > 0 and NaN, else +0 */    \
                    I keep = (r > (T)0) | (r != r);                                          \
                    r = (V)((I)r & keep);                                                    \
                }                                                                            \
                if (pool) {  /* src/_pool_impl.h's FC_SEL(r, m): the NaN or the greater */   \
                    V mx;                                                                    \
                    I take;                                                                  \
                    __builtin_memcpy(&mx, buf + m * bp + v * L, sizeof(V));                  \
                    take = (r != r) | (r > mx);                                              \
                    r = (V)(((I)r & take) | ((I)mx & ~take));                                \
                }                                                                            \
                if (v == NR - 1 && last < L)                                                 \
                    PART(buf + m * bp + v * L, last, r);                                     \
                else                                                                         \
                    __builtin_memcpy(buf + m * bp + v * L, &r, sizeof(V));                   \
            }                                                                                \
    }

/* the first n lanes of a vector stored: portable, and AVX-512's masked stores */
#define FC_FEW_PART(p, n, r) __builtin_memcpy((p), &(r), (size_t)(n) * sizeof(*(p)))
#define FC_FEW_PART_512S(p, n, r)                                                            \
    _mm512_mask_storeu_ps((p), (__mmask16)((1u << (n)) - 1u), (__m512)(r))
#define FC_FEW_PART_512D(p, n, r)                                                            \
    _mm512_mask_storeu_pd((p), (__mmask8)((1u << (n)) - 1u), (__m512d)(r))

typedef void (*fc_few_kernel_s)(ptrdiff_t, const float *, const ptrdiff_t *, const float *,
                                ptrdiff_t, float *, ptrdiff_t, const float *, int, int, int,
                                int);
typedef void (*fc_few_kernel_d)(ptrdiff_t, const double *, const ptrdiff_t *, const double *,
                                ptrdiff_t, double *, ptrdiff_t, const double *, int, int, int,
                                int);

/* a level's family: kernels for NR = 1 .. 6 (a level uses up to its own NR) and the table */
#define FC_FEW_FAMILY(P, ATTR, T, V, I, L, PART, TYPE)                                       \
    FC_FEW_KERNEL(P##1, ATTR, T, V, I, L, 1, PART)                                           \
    FC_FEW_KERNEL(P##2, ATTR, T, V, I, L, 2, PART)                                           \
    FC_FEW_KERNEL(P##3, ATTR, T, V, I, L, 3, PART)                                           \
    FC_FEW_KERNEL(P##4, ATTR, T, V, I, L, 4, PART)                                           \
    FC_FEW_KERNEL(P##5, ATTR, T, V, I, L, 5, PART)                                           \
    FC_FEW_KERNEL(P##6, ATTR, T, V, I, L, 6, PART)                                           \
    static const TYPE P[FC_FEW_NR_MAX + 1] = {NULL, P##1, P##2, P##3, P##4, P##5, P##6};

#if FC_SIMD
typedef int fc_few_v4i __attribute__((vector_size(16)));
typedef long long fc_few_v2l __attribute__((vector_size(16)));
FC_FEW_FAMILY(fc_few_generic_s, FC_FEW_ATTR_generic, float, fc_v4f, fc_few_v4i, 4,
              FC_FEW_PART, fc_few_kernel_s)
FC_FEW_FAMILY(fc_few_generic_d, FC_FEW_ATTR_generic, double, fc_v2d, fc_few_v2l, 2,
              FC_FEW_PART, fc_few_kernel_d)
#else
/* no vector extensions (MSVC): one element per "vector" */
#define FC_FEW_SCALAR_KERNEL(NAME, T, NR)                                                    \
    static void NAME(ptrdiff_t k, const T *in, const ptrdiff_t *off, const T *w,             \
                     ptrdiff_t cpad, T *buf, ptrdiff_t bp, const T *bias, int relu, int pool, \
                     int mc, int last)                                                       \
    {                                                                                        \
        T acc[FC_FEW_MR][NR];                                                                \
        ptrdiff_t kk;                                                                        \
        int m, v;                                                                            \
        for (m = 0; m < FC_FEW_MR; m++)                                                      \
            for (v = 0; v < NR; v++)                                                         \
                acc[m][v] = 0;                                                               \
        for (kk = 0; kk < k; kk++)                                                           \
            for (m = 0; m < FC_FEW_MR; m++)                                                  \
                for (v = 0; v < NR; v++)                                                     \
                    acc[m][v] += in[off[kk] + v] * w[kk * cpad + m];                         \
        (void)last;  /* (one element per vector: always whole) */                            \
        for (m = 0; m < FC_FEW_MR && m < mc; m++)                                            \
            for (v = 0; v < NR; v++) {                                                       \
                T r = acc[m][v];                                                             \
                if (bias)                                                                    \
                    r += bias[m];                                                            \
                r = relu ? FC_RELU(T, r) : r;                                                \
                if (pool && !(r != r || r > buf[m * bp + v]))                                \
                    r = buf[m * bp + v];                                                     \
                buf[m * bp + v] = r;                                                         \
            }                                                                                \
    }
FC_FEW_SCALAR_KERNEL(fc_few_generic_s1, float, 1)
FC_FEW_SCALAR_KERNEL(fc_few_generic_s2, float, 2)
FC_FEW_SCALAR_KERNEL(fc_few_generic_s3, float, 3)
FC_FEW_SCALAR_KERNEL(fc_few_generic_d1, double, 1)
FC_FEW_SCALAR_KERNEL(fc_few_generic_d2, double, 2)
FC_FEW_SCALAR_KERNEL(fc_few_generic_d3, double, 3)
static const fc_few_kernel_s fc_few_generic_s[FC_FEW_NR_MAX + 1] = {
    NULL, fc_few_generic_s1, fc_few_generic_s2, fc_few_generic_s3, NULL, NULL, NULL};
static const fc_few_kernel_d fc_few_generic_d[FC_FEW_NR_MAX + 1] = {
    NULL, fc_few_generic_d1, fc_few_generic_d2, fc_few_generic_d3, NULL, NULL, NULL};
#endif

#if FC_HAVE_X86_TARGETS
typedef float fc_few_v16f __attribute__((vector_size(64)));
typedef double fc_few_v8d __attribute__((vector_size(64)));
typedef int fc_few_v16i __attribute__((vector_size(64)));
typedef long long fc_few_v8l __attribute__((vector_size(64)));
typedef float fc_few_v8f __attribute__((vector_size(32)));
typedef double fc_few_v4d __attribute__((vector_size(32)));
typedef int fc_few_v8i __attribute__((vector_size(32)));
typedef long long fc_few_v4l __attribute__((vector_size(32)));
#include <immintrin.h>
FC_FEW_FAMILY(fc_few_avx512_s, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16,
              FC_FEW_PART_512S, fc_few_kernel_s)
FC_FEW_FAMILY(fc_few_avx512_d, FC_FEW_ATTR_avx512, double, fc_few_v8d, fc_few_v8l, 8,
              FC_FEW_PART_512D, fc_few_kernel_d)
FC_FEW_FAMILY(fc_few_avx2_s, FC_FEW_ATTR_avx2, float, fc_few_v8f, fc_few_v8i, 8, FC_FEW_PART,
              fc_few_kernel_s)
FC_FEW_FAMILY(fc_few_avx2_d, FC_FEW_ATTR_avx2, double, fc_few_v4d, fc_few_v4l, 4, FC_FEW_PART,
              fc_few_kernel_d)
#endif

/* ---- unpooled: the grid's positions dense, stored straight into the output ----------------
 *
 * fc_few_block computes a grid of Wp-wide rows (the phase planes' pitch), so a vector of
 * flat positions straddles the Wp - grid_w columns past the grid, and fc_few_store then
 * copies each channel's rows into the output planes: on bench's "seed" (64 x 1 x 28 x 28 ->
 * 16 5x5 stride 2, a 12 x 12 grid, Wp 14) 176 positions computed for 144 and a second pass
 * over the output. Unpooled, the kernels instead read column planes with the grid's own
 * width (fc_few_cols), one per input channel c, row phase a < S_h and kernel column q,
 *
 *     cols[c][a][q][i][j] = xpad[c][S_h*(r0 + i) + a][S_w*j + q*dil_w]     (0 outside x)
 *
 * for the grid rows of a band [r0, r1) and the rows below them the taps reach: tap (c, p, q)
 * of grid position (y, j) is cols[c][ry % S_h][q][y - r0 + ry / S_h][j] (ry = p*dil_h), at
 * one offset from the position's flat index (y - r0)*grid_w + j, which is also its flat
 * index in the output plane. So the kernels' vectors run over the band's positions with no
 * column past the grid (144 for the seed's 144: 9 vectors of 16) and store straight into the
 * output planes (fc_few_dense), only the grid's last vector partly. The planes hold kW / S_w
 * times the phase planes' columns; a thread fills them per band, for the rows it computes,
 * de-interleaving each zero-padded input row by S_w (AVX-512: one two-source permute per 16
 * columns). Each output is the chain fc_few_block computes (the same input values, taps,
 * order, contraction, bias and ReLU): the same bits, at any band or thread count. */

/* One input row's part of the column planes: dst[q*plane + j] = xpad[sw*j + q*dil_w] for
 * q < kw, j < gw, where xpad[col] = xrow[col - pad_left] for 0 <= col - pad_left < in_w,
 * else 0 (the row's left and right padding), the portable way: the padded columns [0,
 * span) of the row copied into ``line`` (fc_few_cols_len's room), gathered from there. */
#define FC_FEW_ROW_GENERIC(SFX, T, V, L, LOAD, STORE, EVEN)                                  \
    static inline void fc_few_row_generic_##SFX(const T *xrow, ptrdiff_t in_w,               \
                                                ptrdiff_t pad_left,                          \
                                         ptrdiff_t sw, ptrdiff_t kw, ptrdiff_t dil_w,        \
                                         ptrdiff_t gw, T *dst, ptrdiff_t plane, T *line)     \
    {                                                                                        \
        ptrdiff_t span = sw * (gw - 1) + dil_w * (kw - 1) + 1, first, last, head, q, j;      \
        first = pad_left < 0 ? -pad_left : 0;                                                \
        last = span - pad_left < in_w ? span - pad_left : in_w;                              \
        if (last < first)                                                                    \
            last = first;                                                                    \
        head = pad_left + first;                                                             \
        memset(line, 0, (size_t)head * sizeof(T));                                           \
        memcpy(line + head, xrow + first, (size_t)(last - first) * sizeof(T));               \
        if (head + last - first < span)                                                      \
            memset(line + head + last - first, 0,                                            \
                   (size_t)(span - head - (last - first)) * sizeof(T));                      \
        for (q = 0; q < kw; q++) {                                                           \
            const T *src = line + q * dil_w;                                                 \
            T *d = dst + q * plane;                                                          \
            j = 0;                                                                           \
            if (sw == 1) {                                                                   \
                memcpy(d, src, (size_t)gw * sizeof(T));                                      \
                continue;                                                                    \
            }                                                                                \
            if (FC_SIMD && sw == 2)                                                          \
                for (; j + L <= gw; j += L)                                                  \
                    STORE(d + j, EVEN(LOAD(src + 2 * j), LOAD(src + 2 * j + L)));            \
            for (; j < gw; j++)                                                              \
                d[j] = src[sw * j];                                                          \
        }                                                                                    \
    }
#if FC_SIMD
#define FC_FEW_EVEN4(lo, hi) FC_SHUFFLE4(lo, hi, 0, 2, 4, 6)
#define FC_FEW_EVEN2(lo, hi) FC_SHUFFLE2(lo, hi, 0, 2)
FC_FEW_ROW_GENERIC(s, float, fc_v4f, 4, fc_v4f_load, fc_v4f_store, FC_FEW_EVEN4)
FC_FEW_ROW_GENERIC(d, double, fc_v2d, 2, fc_v2d_load, fc_v2d_store, FC_FEW_EVEN2)
#else
#define FC_FEW_SCALAR_ID(p) (*(p))
#define FC_FEW_SCALAR_PUT(p, v) (*(p) = (v))
#define FC_FEW_SCALAR_EVEN(lo, hi) (lo)
FC_FEW_ROW_GENERIC(s, float, float, 1, FC_FEW_SCALAR_ID, FC_FEW_SCALAR_PUT, FC_FEW_SCALAR_EVEN)
FC_FEW_ROW_GENERIC(d, double, double, 1, FC_FEW_SCALAR_ID, FC_FEW_SCALAR_PUT,
                   FC_FEW_SCALAR_EVEN)
#endif

/* The column planes of grid rows [r0, r0 + rows) (the section above):
 *     cols[((c*sh + a)*kw + q)*plane + i*gw + j] = x[c][sh*(r0 + i) + a - pad_top]
 *                                                   [sw*j + q*dil_w - pad_left]
 * (0 outside x) for i < rows, j < gw; plane = hb*gw (hb >= rows). Then FC_FEW_SLACK zeros
 * after the planes (a vector may read them), and room for the portable way's padded row
 * (fc_few_cols_len). One function per level, ROW its rows' way. */
#define FC_FEW_COLS(NAME, ATTR, T, ROW)                                                      \
    ATTR static void NAME(const T *x, ptrdiff_t channels, ptrdiff_t in_h, ptrdiff_t in_w,    \
                          ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t sh, ptrdiff_t sw, \
                          ptrdiff_t kw, ptrdiff_t dil_w, ptrdiff_t r0, ptrdiff_t rows,       \
                          ptrdiff_t hb, ptrdiff_t gw, T *cols)                               \
    {                                                                                        \
        ptrdiff_t plane = hb * gw, planes = channels * sh * kw * plane, c, a, i, q, row;     \
        T *line = cols + planes + FC_FEW_SLACK;                                              \
        for (c = 0; c < channels; c++)                                                       \
            for (a = 0; a < sh; a++)                                                         \
                for (i = 0; i < rows; i++) {                                                 \
                    T *dst = cols + (c * sh + a) * kw * plane + i * gw;                      \
                    row = sh * (r0 + i) + a - pad_top;                                       \
                    if (row < 0 || row >= in_h)                                              \
                        for (q = 0; q < kw; q++)                                             \
                            memset(dst + q * plane, 0, (size_t)gw * sizeof(T));              \
                    else                                                                     \
                        ROW(x + (c * in_h + row) * in_w, in_w, pad_left, sw, kw, dil_w, gw,  \
                            dst, plane, line);                                               \
                }                                                                            \
        memset(cols + planes, 0, FC_FEW_SLACK * sizeof(T));                                  \
    }
typedef void (*fc_few_cols_s_fn)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, float *);
typedef void (*fc_few_cols_d_fn)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                 ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, double *);
FC_FEW_COLS(fc_few_cols_generic_s, FC_FEW_ATTR_generic, float, fc_few_row_generic_s)
FC_FEW_COLS(fc_few_cols_generic_d, FC_FEW_ATTR_generic, double, fc_few_row_generic_d)

#if FC_HAVE_X86_TARGETS
/* the lanes l < L with 0 <= c + l < in_w, as a mask */
static inline unsigned fc_few_inside(ptrdiff_t c, ptrdiff_t in_w, ptrdiff_t lanes)
{
    ptrdiff_t lo = c < 0 ? -c : 0, hi = in_w - c < lanes ? in_w - c : lanes;
    return hi <= lo ? 0u : ((1u << hi) - 1u) & ~((1u << lo) - 1u);
}
/* AVX-512, strides 1 and 2, a reach of at most 2L columns (else the portable way): the
 * column planes straight from x by masked loads (the lanes outside a row are zeros and
 * touch no memory), L grid columns at a time. At stride 2 two permutes split the 4L padded
 * columns from 2*j0 on into their even and odd phases (2L of each); kernel column q then
 * takes phase (q*dil_w) % 2 from its lane (q*dil_w) / 2 on: one two-source permute
 * (vpermt2ps / vpermt2pd) and one store each. At stride 1 the phase is the row itself.
 * Where the columns a vector takes for every q lie in the first 2L (a grid row of at most
 * L - reach/2 columns at stride 2, the seed's 12), each q's vector is one permute of the
 * first two loads, no phases. A row's last vector is stored whole where the lanes past the
 * grid land in rows of its plane written after it, else masked. */
#define FC_FEW_COLS_AVX512(SFX, T, V, L, MASK, LOADZ, STOREM, STOREU, PERM, IDX, SET1, ADD)    \
    FC_FEW_ATTR_avx512 static void fc_few_cols_avx512_##SFX(                                 \
        const T *x, ptrdiff_t channels, ptrdiff_t in_h, ptrdiff_t in_w, ptrdiff_t pad_top,   \
        ptrdiff_t pad_left, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t kw, ptrdiff_t dil_w,       \
        ptrdiff_t r0, ptrdiff_t rows, ptrdiff_t hb, ptrdiff_t gw, T *cols)                   \
    {                                                                                        \
        const __m512i iota = IDX(), even = ADD(iota, iota), odd = ADD(even, SET1(1));        \
        /* kernel column q: the odd phase (bit q of odd_q) from lane shift[q] on */          \
        __m512i shift[2 * FC_FEW_LANES_MAX + 1], pick[2 * FC_FEW_LANES_MAX + 1];             \
        unsigned long long odd_q = 0;                                                        \
        MASK head[4];                                                                        \
        ptrdiff_t plane = hb * gw, planes = channels * sh * kw * plane, ch, a, i, q, j0, row; \
        if (sw > 2 || dil_w * (kw - 1) > sw * L) {                                           \
            fc_few_cols_generic_##SFX(x, channels, in_h, in_w, pad_top, pad_left, sh, sw, kw, \
                                      dil_w, r0, rows, hb, gw, cols);                        \
            return;                                                                          \
        }                                                                                    \
        for (q = 0; q < kw; q++) {                                                           \
            shift[q] = ADD(iota, SET1(q * dil_w / sw));                                      \
            odd_q |= (unsigned long long)(q * dil_w % sw) << q;                              \
            pick[q] = ADD(sw == 2 ? even : iota, SET1(q * dil_w));                           \
        }                                                                                    \
        for (q = 0; q < 4; q++)  /* the first vector's loads, the same for every row */      \
            head[q] = (MASK)fc_few_inside(q * L - pad_left, in_w, L);                        \
        for (ch = 0; ch < channels; ch++)                                                    \
            for (a = 0; a < sh; a++)                                                         \
                for (i = 0; i < rows; i++) {                                                 \
                    T *dst = cols + (ch * sh + a) * kw * plane + i * gw;                     \
                    const T *xrow;                                                           \
                    row = sh * (r0 + i) + a - pad_top;                                       \
                    if (row < 0 || row >= in_h) {                                            \
                        for (q = 0; q < kw; q++)                                             \
                            memset(dst + q * plane, 0, (size_t)gw * sizeof(T));              \
                        continue;                                                            \
                    }                                                                        \
                    xrow = x + (ch * in_h + row) * in_w;                                     \
                    for (j0 = 0; j0 < gw; j0 += L) {                                         \
                        /* the padded columns from sw*j0 on: x's from c on */                \
                        ptrdiff_t c = sw * j0 - pad_left;                                    \
                        MASK m[4];                                                           \
                        V e0, e1, o0, o1, v;                                                 \
                        int whole = gw - j0 >= L || i * gw + j0 + L <= rows * gw;            \
                        for (q = 0; q < 4; q++)                                              \
                            m[q] = j0 == 0 ? head[q]                                         \
                                           : (MASK)fc_few_inside(c + q * L, in_w, L);        \
                        e0 = o0 = LOADZ(m[0], xrow + c);                                     \
                        e1 = o1 = LOADZ(m[1], xrow + c + L);                                 \
                        if (sw * ((gw - j0 < L ? gw - j0 : L) - 1) + dil_w * (kw - 1)        \
                            < 2 * L) {                                                       \
                            /* every column this vector takes is in the two loads */         \
                            for (q = 0; q < kw; q++) {                                       \
                                v = PERM(e0, pick[q], e1);                                   \
                                if (whole)                                                   \
                                    STOREU(dst + q * plane + j0, v);                         \
                                else                                                         \
                                    STOREM(dst + q * plane + j0,                             \
                                           (MASK)((1u << (gw - j0)) - 1u), v);               \
                            }                                                                \
                            continue;                                                        \
                        }                                                                    \
                        if (sw == 2) {                                                       \
                            V r2 = LOADZ(m[2], xrow + c + 2 * L);                            \
                            V r3 = LOADZ(m[3], xrow + c + 3 * L);                            \
                            e0 = PERM(o0, even, o1);                                         \
                            o0 = PERM(o0, odd, o1);                                          \
                            e1 = PERM(r2, even, r3);                                         \
                            o1 = PERM(r2, odd, r3);                                          \
                        }                                                                    \
                        for (q = 0; q < kw; q++) {                                           \
                            v = (odd_q >> q) & 1 ? PERM(o0, shift[q], o1)                    \
                                                 : PERM(e0, shift[q], e1);                   \
                            if (whole)                                                       \
                                STOREU(dst + q * plane + j0, v);                             \
                            else                                                             \
                                STOREM(dst + q * plane + j0, (MASK)((1u << (gw - j0)) - 1u), \
                                       v);                                                   \
                        }                                                                    \
                    }                                                                        \
                }                                                                            \
        memset(cols + planes, 0, FC_FEW_SLACK * sizeof(T));                                  \
    }
#define FC_FEW_IDX_S() _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define FC_FEW_IDX_D() _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7)
FC_FEW_COLS_AVX512(s, float, __m512, 16, __mmask16, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                  _mm512_storeu_ps, _mm512_permutex2var_ps, FC_FEW_IDX_S, _mm512_set1_epi32,
                  _mm512_add_epi32)
FC_FEW_COLS_AVX512(d, double, __m512d, 8, __mmask8, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                  _mm512_storeu_pd, _mm512_permutex2var_pd, FC_FEW_IDX_D, _mm512_set1_epi64,
                  _mm512_add_epi64)
#endif

/* elements past the portable row copy's span (fc_few_row_generic's line): room for a
 * vector's read past the span's end */
#define FC_FEW_LINE_SLACK 32

/* ---- the variant with output channels across the lanes (FewChannelsLanes) -----------------
 *
 * For 16, 32, 48 ... output channels, the pixels-across-lanes kernels above compute whole
 * vectors of grid positions, Wp - grid_w of each row's columns past the grid (a quarter to a
 * third of the lanes on the tutorial net's 6 x 6 pooled grid). Here a vector holds 16 output
 * channels (or 16 / L vectors of L), each input value of the phase planes is broadcast, and a
 * micro-kernel computes J consecutive grid positions of one grid row (J <= the row's width:
 * no column past the grid). The taps' offsets are the same (fc_few_phase, off[qd*k + kk]);
 * or, where no tap of any grid position leaves the input (no padding), the kernels read x
 * itself: its scalars need no de-interleaved planes, only the grid's row pitch (wp = stride_h
 * * pool_h * in_w) and column step (shape->step = stride_w * pool_w; 1 in the phase planes),
 * and the per-sample phase split (a tenth of the tutorial net's pooled step) is skipped.
 * The loads, not the multiply-adds, bound these kernels: one broadcast per multiply-add
 * (16 channels, one vector), about two loads a cycle on Zen 5, so about 70% of the FMA peak.
 *
 * Each output is still sum_kk w[o][kk] * x[..] from 0 in tap order (then + bias, ReLU), one
 * multiply-add per tap (contracted as the kernels above are): the same bits as those at the
 * same level. With several window positions the micro-kernel keeps the max of the positions
 * done so far in registers (src/_pool_impl.h's rule, scan order) beside the sums of the one
 * being computed, so pooling costs no memory traffic. With a finite bias (or none: ``late``)
 * the bias and the ReLU are applied once, to that max: both are monotonic (adding the same
 * finite bias never reverses an order, keeps a NaN's payload, and ties keep the first as the
 * pooling rule does; every zero the ReLU makes is +0), so max(relu(s_q + b)) and
 * relu(max(s_q) + b) are the same bits (tests/test_fewchan_lanes.py checks it against the
 * pooling kernel, NaN and zeros included). An infinite or NaN bias would break that (5 and
 * -inf with a bias of +inf: +inf and NaN, whose pooled max is NaN), so it takes them per
 * window position. The results go to a pixel-major block
 * buf[t*cpad + o] (t: position in the band, rows of grid_w), transposed into the output planes
 * by fc_cl_store (4 x 4 blocks).
 */

/* output channels per micro-kernel call (packed weights and bias padded to a multiple) */
#define FC_CL_OC 16
/* the most grid positions per micro-kernel call at any level */
#define FC_CL_J_MAX 12

/* One micro-kernel: 16 channels (CV vectors of L) x J grid positions in each of R grid rows,
 *     buf[(rr*grid_w + j)*cpad + c] = relu?(max over window positions qd < quads (scan
 *         order) of sum_kk w[kk*cpad + c] * in[off[qd*k + kk] + rr*wp + j]  (+ bias[c]))
 * for rr < R, j < J, c < 16 (with ``late`` 0, the bias and ReLU per window position before
 * the max, the same bits for a finite bias). R*J independent chains of multiply-adds: enough to cover the
 * FMA latency on a short grid row (the tutorial net's pooled one is 6 wide) with R = 2. */
#define FC_CL_KERNEL(NAME, ATTR, T, V, I, L, R, J)                                           \
    ATTR static void NAME(ptrdiff_t k, ptrdiff_t quads, const T *in, const ptrdiff_t *off,   \
                          ptrdiff_t wp, ptrdiff_t step, const T *w, ptrdiff_t cpad,          \
                          const T *bias, int relu, int late, T *buf, ptrdiff_t grid_w)       \
    {                                                                                        \
        enum { CV = FC_CL_OC / L, P = R * J };                                               \
        V acc[P][CV], best[P][CV], wv[CV], bv[CV];                                           \
        ptrdiff_t kk, qd;                                                                    \
        int j, c;                                                                            \
        for (j = 0; j < P; j++)  /* (quads >= 1: set before it is read) */                   \
            for (c = 0; c < CV; c++)                                                         \
                best[j][c] = (V){0};                                                         \
        for (c = 0; c < CV; c++) {                                                           \
            bv[c] = (V){0};                                                                  \
            if (bias)                                                                        \
                __builtin_memcpy(&bv[c], bias + c * L, sizeof(V));                           \
        }                                                                                    \
        for (qd = 0; qd < quads; qd++) {                                                     \
            const ptrdiff_t *oq = off + qd * k;                                              \
            for (j = 0; j < P; j++)                                                          \
                for (c = 0; c < CV; c++)                                                     \
                    acc[j][c] = (V){0};                                                      \
            for (kk = 0; kk < k; kk++) {                                                     \
                const T *s = in + oq[kk];                                                    \
                for (c = 0; c < CV; c++)                                                     \
                    __builtin_memcpy(&wv[c], w + kk * cpad + c * L, sizeof(V));              \
                for (j = 0; j < P; j++) {                                                    \
                    const T xs = s[(j / J) * wp + (j % J) * step];                           \
                    for (c = 0; c < CV; c++)                                                 \
                        acc[j][c] += wv[c] * xs;                                             \
                }                                                                            \
            }                                                                                \
            for (j = 0; j < P; j++)                                                          \
                for (c = 0; c < CV; c++) {                                                   \
                    V r = acc[j][c];                                                         \
                    if (!late) {                                                             \
                        if (bias)                                                            \
                            r += bv[c];                                                      \
                        if (relu) {                                                          \
                            I keep = (r > (T)0) | (r != r);                                  \
                            r = (V)((I)r & keep);                                            \
                        }                                                                    \
                    }                                                                        \
                    if (qd > 0) {  /* FC_SEL(r, best): the NaN or the greater */             \
                        V mx = best[j][c];                                                   \
                        I take = (r != r) | (r > mx);                                        \
                        r = (V)(((I)r & take) | ((I)mx & ~take));                            \
                    }                                                                        \
                    best[j][c] = r;                                                          \
                }                                                                            \
        }                                                                                    \
        for (j = 0; j < P; j++)                                                              \
            for (c = 0; c < CV; c++) {                                                       \
                V r = best[j][c];                                                            \
                if (bias && late)                                                            \
                    r += bv[c];                                                              \
                if (relu && late) {  /* FC_RELU: keep v > 0 and NaN, else +0 */              \
                    I keep = (r > (T)0) | (r != r);                                          \
                    r = (V)((I)r & keep);                                                    \
                }                                                                            \
                __builtin_memcpy(buf + ((j / J) * grid_w + j % J) * cpad + c * L, &r,        \
                                 sizeof(V));                                                 \
            }                                                                                \
    }

typedef void (*fc_cl_kernel_s)(ptrdiff_t, ptrdiff_t, const float *, const ptrdiff_t *,
                               ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, const float *,
                               int, int, float *, ptrdiff_t);
typedef void (*fc_cl_kernel_d)(ptrdiff_t, ptrdiff_t, const double *, const ptrdiff_t *,
                               ptrdiff_t, ptrdiff_t, const double *, ptrdiff_t, const double *,
                               int, int, double *, ptrdiff_t);

/* a level's kernels for R rows and J = 1 .. 3, 1 .. 6 or 1 .. 12 positions, and their table
 * (FC_CL_J_MAX + 1 entries, NULL past the level's J) */
#define FC_CL_FAMILY3(P, ATTR, T, V, I, L, R)                                                \
    FC_CL_KERNEL(P##1, ATTR, T, V, I, L, R, 1)                                               \
    FC_CL_KERNEL(P##2, ATTR, T, V, I, L, R, 2)                                               \
    FC_CL_KERNEL(P##3, ATTR, T, V, I, L, R, 3)
#define FC_CL_FAMILY6(P, ATTR, T, V, I, L, R)                                                \
    FC_CL_FAMILY3(P, ATTR, T, V, I, L, R)                                                    \
    FC_CL_KERNEL(P##4, ATTR, T, V, I, L, R, 4)                                               \
    FC_CL_KERNEL(P##5, ATTR, T, V, I, L, R, 5)                                               \
    FC_CL_KERNEL(P##6, ATTR, T, V, I, L, R, 6)
#define FC_CL_FAMILY12(P, ATTR, T, V, I, L, R)                                               \
    FC_CL_FAMILY6(P, ATTR, T, V, I, L, R)                                                    \
    FC_CL_KERNEL(P##7, ATTR, T, V, I, L, R, 7)                                               \
    FC_CL_KERNEL(P##8, ATTR, T, V, I, L, R, 8)                                               \
    FC_CL_KERNEL(P##9, ATTR, T, V, I, L, R, 9)                                               \
    FC_CL_KERNEL(P##10, ATTR, T, V, I, L, R, 10)                                             \
    FC_CL_KERNEL(P##11, ATTR, T, V, I, L, R, 11)                                             \
    FC_CL_KERNEL(P##12, ATTR, T, V, I, L, R, 12)
#define FC_CL_TABLE3(P, TYPE)                                                                \
    static const TYPE P[FC_CL_J_MAX + 1] = {NULL, P##1, P##2, P##3};
#define FC_CL_TABLE6(P, TYPE)                                                                \
    static const TYPE P[FC_CL_J_MAX + 1] = {NULL, P##1, P##2, P##3, P##4, P##5, P##6};
#define FC_CL_TABLE12(P, TYPE)                                                               \
    static const TYPE P[FC_CL_J_MAX + 1] = {NULL, P##1, P##2, P##3, P##4, P##5, P##6,         \
                                            P##7, P##8, P##9, P##10, P##11, P##12};

#if FC_SIMD
/* 16-byte vectors, 16 registers: 4 x 3 sums (float), 8 x 1 (double) beside the maxima */
FC_CL_FAMILY3(fc_cl_generic_s, FC_FEW_ATTR_generic, float, fc_v4f, fc_few_v4i, 4, 1)
FC_CL_TABLE3(fc_cl_generic_s, fc_cl_kernel_s)
FC_CL_FAMILY3(fc_cl_generic_d, FC_FEW_ATTR_generic, double, fc_v2d, fc_few_v2l, 2, 1)
FC_CL_TABLE3(fc_cl_generic_d, fc_cl_kernel_d)
#else
/* no vector extensions (MSVC): one channel per "vector", one position per call */
#define FC_CL_SCALAR_KERNEL(NAME, T)                                                         \
    static void NAME(ptrdiff_t k, ptrdiff_t quads, const T *in, const ptrdiff_t *off,        \
                     ptrdiff_t wp, ptrdiff_t step, const T *w, ptrdiff_t cpad, const T *bias, \
                     int relu, int late, T *buf, ptrdiff_t grid_w)                           \
    {                                                                                        \
        ptrdiff_t kk, qd;                                                                    \
        int c;                                                                               \
        (void)wp;                                                                            \
        (void)step;                                                                          \
        (void)grid_w;                                                                        \
        (void)late;  /* (the bias and ReLU per position: the same bits either way) */        \
        for (c = 0; c < FC_CL_OC; c++) {                                                     \
            T best = 0;                                                                      \
            for (qd = 0; qd < quads; qd++) {                                                 \
                T r = 0;                                                                     \
                for (kk = 0; kk < k; kk++)                                                   \
                    r += w[kk * cpad + c] * in[off[qd * k + kk]];                            \
                if (bias)                                                                    \
                    r += bias[c];                                                            \
                r = relu ? FC_RELU(T, r) : r;                                                \
                if (qd > 0 && !(r != r || r > best))                                         \
                    r = best;                                                                \
                best = r;                                                                    \
            }                                                                                \
            buf[c] = best;                                                                   \
        }                                                                                    \
    }
FC_CL_SCALAR_KERNEL(fc_cl_generic_s1, float)
FC_CL_SCALAR_KERNEL(fc_cl_generic_d1, double)
static const fc_cl_kernel_s fc_cl_generic_s[FC_CL_J_MAX + 1] = {NULL, fc_cl_generic_s1};
static const fc_cl_kernel_d fc_cl_generic_d[FC_CL_J_MAX + 1] = {NULL, fc_cl_generic_d1};
#endif

#if FC_HAVE_X86_TARGETS
/* AVX-512 float: 1 x 12 sums and 12 maxima, a weight vector: 25 of the 32 registers, in one
 * row (J <= 12) or two (J <= 6); double: 2 x 6. AVX2 float: 2 x 3 (+ 6 maxima, 2 weights: 14
 * of 16); double 4 x 1 (x2, 4 weights) */
FC_CL_FAMILY12(fc_cl_avx512_s, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16, 1)
FC_CL_TABLE12(fc_cl_avx512_s, fc_cl_kernel_s)
FC_CL_FAMILY6(fc_cl_avx512_rows_s, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16, 2)
FC_CL_TABLE6(fc_cl_avx512_rows_s, fc_cl_kernel_s)
FC_CL_FAMILY6(fc_cl_avx512_d, FC_FEW_ATTR_avx512, double, fc_few_v8d, fc_few_v8l, 8, 1)
FC_CL_TABLE6(fc_cl_avx512_d, fc_cl_kernel_d)
FC_CL_FAMILY3(fc_cl_avx2_s, FC_FEW_ATTR_avx2, float, fc_few_v8f, fc_few_v8i, 8, 1)
FC_CL_TABLE3(fc_cl_avx2_s, fc_cl_kernel_s)
FC_CL_FAMILY3(fc_cl_avx2_d, FC_FEW_ATTR_avx2, double, fc_few_v4d, fc_few_v4l, 4, 1)
FC_CL_TABLE3(fc_cl_avx2_d, fc_cl_kernel_d)
#endif

/* The 2 x 2 pooled variant (quads = 4, a finite bias or none: ``late``), AVX-512 only: the
 * kernels above take the window positions one after the other, keeping J sums and J maxima
 * in registers, the maxima's update and the bias and ReLU's branches between them. Here the
 * four positions' sums of J grid positions are all in registers at once (4 x J chains of
 * multiply-adds, 24 of the 32 registers at J = 6), each weight vector loaded once a tap for
 * all of them, and the maxima taken once, after the last tap:
 *     buf[j*cpad + c] = relu?(max over qd < 4 (scan order) of sum_kk w[kk*cpad + c] *
 *                             in[off[qd*k + kk] + j*step]  (+ bias[c]))
 * for j < J, c < 16. The same chains (from 0, tap order), the same max rule and the same
 * late bias and ReLU as fc_cl_*: the same bits. The loops over the sums are unrolled whole:
 * otherwise GCC 12 kept a stack copy of them (zeroed, spilled after the taps, the maxima read
 * back from it), 9% of the seed's pooled step on one thread (bench's "seed", 45 -> 49
 * GMAC/s, batch 64 and 1000). */
#define FC_CLQ_QUADS 4
#define FC_CLQ_KERNEL(NAME, ATTR, T, V, I, L, J)                                             \
    ATTR static void NAME(ptrdiff_t k, const T *in, const ptrdiff_t *off, ptrdiff_t step,    \
                          const T *w, ptrdiff_t cpad, const T *bias, int relu, T *buf)       \
    {                                                                                        \
        enum { CV = FC_CL_OC / L };                                                          \
        V acc[FC_CLQ_QUADS][J][CV], wv[CV];                                                  \
        ptrdiff_t kk;                                                                        \
        int q, j, c;                                                                         \
        _Pragma("GCC unroll 24") for (q = 0; q < FC_CLQ_QUADS; q++)                           \
            _Pragma("GCC unroll 24") for (j = 0; j < J; j++)                                  \
                for (c = 0; c < CV; c++)                                                     \
                    acc[q][j][c] = (V){0};                                                   \
        for (kk = 0; kk < k; kk++) {                                                         \
            for (c = 0; c < CV; c++)                                                         \
                __builtin_memcpy(&wv[c], w + kk * cpad + c * L, sizeof(V));                  \
            for (q = 0; q < FC_CLQ_QUADS; q++) {                                             \
                const T *s = in + off[q * k + kk];                                           \
                for (j = 0; j < J; j++) {                                                    \
                    const T xs = s[j * step];                                                \
                    for (c = 0; c < CV; c++)                                                 \
                        acc[q][j][c] += wv[c] * xs;                                          \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        _Pragma("GCC unroll 24") for (j = 0; j < J; j++)                                      \
            _Pragma("GCC unroll 24") for (c = 0; c < CV; c++) {                               \
                V r = acc[0][j][c], b;                                                       \
                _Pragma("GCC unroll 24") for (q = 1; q < FC_CLQ_QUADS; q++) {  /* FC_SEL */   \
                    V s = acc[q][j][c];                                                      \
                    I take = (s != s) | (s > r);                                             \
                    r = (V)(((I)s & take) | ((I)r & ~take));                                 \
                }                                                                            \
                if (bias) {                                                                  \
                    __builtin_memcpy(&b, bias + c * L, sizeof(V));                           \
                    r += b;                                                                  \
                }                                                                            \
                if (relu) {  /* FC_RELU: keep v > 0 and NaN, else +0 */                      \
                    I keep = (r > (T)0) | (r != r);                                          \
                    r = (V)((I)r & keep);                                                    \
                }                                                                            \
                __builtin_memcpy(buf + j * cpad + c * L, &r, sizeof(V));                     \
            }                                                                                \
    }

typedef void (*fc_clq_kernel_s)(ptrdiff_t, const float *, const ptrdiff_t *, ptrdiff_t,
                                const float *, ptrdiff_t, const float *, int, float *);
typedef void (*fc_clq_kernel_d)(ptrdiff_t, const double *, const ptrdiff_t *, ptrdiff_t,
                                const double *, ptrdiff_t, const double *, int, double *);
/* the most grid positions per call of the 2 x 2 pooled kernels */
#define FC_CLQ_J_MAX 6

#if FC_HAVE_X86_TARGETS
/* float: 4 x 6 sums and a weight vector, 25 of the 32 registers; double (two vectors of 8
 * channels): 4 x 3 x 2 sums and 2 weight vectors, 26 */
FC_CLQ_KERNEL(fc_clq_avx512_s1, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16, 1)
FC_CLQ_KERNEL(fc_clq_avx512_s2, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16, 2)
FC_CLQ_KERNEL(fc_clq_avx512_s3, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16, 3)
FC_CLQ_KERNEL(fc_clq_avx512_s4, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16, 4)
FC_CLQ_KERNEL(fc_clq_avx512_s5, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16, 5)
FC_CLQ_KERNEL(fc_clq_avx512_s6, FC_FEW_ATTR_avx512, float, fc_few_v16f, fc_few_v16i, 16, 6)
static const fc_clq_kernel_s fc_clq_avx512_s[FC_CLQ_J_MAX + 1] = {
    NULL, fc_clq_avx512_s1, fc_clq_avx512_s2, fc_clq_avx512_s3, fc_clq_avx512_s4,
    fc_clq_avx512_s5, fc_clq_avx512_s6};
FC_CLQ_KERNEL(fc_clq_avx512_d1, FC_FEW_ATTR_avx512, double, fc_few_v8d, fc_few_v8l, 8, 1)
FC_CLQ_KERNEL(fc_clq_avx512_d2, FC_FEW_ATTR_avx512, double, fc_few_v8d, fc_few_v8l, 8, 2)
FC_CLQ_KERNEL(fc_clq_avx512_d3, FC_FEW_ATTR_avx512, double, fc_few_v8d, fc_few_v8l, 8, 3)
static const fc_clq_kernel_d fc_clq_avx512_d[FC_CLQ_J_MAX + 1] = {
    NULL, fc_clq_avx512_d1, fc_clq_avx512_d2, fc_clq_avx512_d3};
#endif

/* The level's kernels, lanes and vectors per call, picked once (fc_few_init, at import). */
static const fc_few_kernel_s *fc_few_table_s = NULL;
static const fc_few_kernel_d *fc_few_table_d = NULL;
/* the column planes' way (fc_few_cols) */
static fc_few_cols_s_fn fc_few_cols_level_s = fc_few_cols_generic_s;
static fc_few_cols_d_fn fc_few_cols_level_d = fc_few_cols_generic_d;
static ptrdiff_t fc_few_lanes_s = 4, fc_few_lanes_d = 2, fc_few_nr = 3;
/* and the channels-across-lanes variant's: positions per call at most */
static const fc_cl_kernel_s *fc_cl_table_s = NULL;
static const fc_cl_kernel_d *fc_cl_table_d = NULL;
static ptrdiff_t fc_cl_j_s = 3, fc_cl_j_d = 3;
/* two grid rows per call where the row is at most fc_cl_rows_j_s wide (0: never) */
static const fc_cl_kernel_s *fc_cl_rows_table_s = NULL;
static ptrdiff_t fc_cl_rows_j_s = 0;
/* and the 2 x 2 pooled kernels' (NULL: none at this level) */
static const fc_clq_kernel_s *fc_clq_table_s = NULL;
static const fc_clq_kernel_d *fc_clq_table_d = NULL;
static ptrdiff_t fc_clq_j_s = 0, fc_clq_j_d = 0;

/* returns the level in force (src/_cpu.h) */
static int fc_few_init(void)
{
    int level = fc_cpu_isa();
#if FC_SIMD
    fc_few_table_s = fc_few_generic_s;
    fc_few_table_d = fc_few_generic_d;
    fc_few_lanes_s = 4;
    fc_few_lanes_d = 2;
#else
    fc_few_table_s = fc_few_generic_s;
    fc_few_table_d = fc_few_generic_d;
    fc_few_lanes_s = 1;
    fc_few_lanes_d = 1;
#endif
    fc_few_nr = 3;
    fc_few_cols_level_s = fc_few_cols_generic_s;
    fc_few_cols_level_d = fc_few_cols_generic_d;
    fc_cl_table_s = fc_cl_generic_s;
    fc_cl_table_d = fc_cl_generic_d;
    fc_cl_rows_table_s = NULL;
    fc_cl_rows_j_s = 0;
    fc_clq_table_s = NULL;
    fc_clq_table_d = NULL;
    fc_clq_j_s = 0;
    fc_clq_j_d = 0;
#if FC_SIMD
    fc_cl_j_s = 3;
    fc_cl_j_d = 1;
#else
    fc_cl_j_s = 1;
    fc_cl_j_d = 1;
#endif
#if FC_HAVE_X86_TARGETS
    if (level >= FC_ISA_AVX512) {
        /* 4 x 6 sums, 6 pixel vectors and a weight: 31 of the 32 registers */
        fc_few_table_s = fc_few_avx512_s;
        fc_few_table_d = fc_few_avx512_d;
        fc_few_lanes_s = 16;
        fc_few_lanes_d = 8;
        fc_few_nr = 6;
        fc_few_cols_level_s = fc_few_cols_avx512_s;
        fc_few_cols_level_d = fc_few_cols_avx512_d;
        fc_cl_table_s = fc_cl_avx512_s;
        fc_cl_table_d = fc_cl_avx512_d;
        fc_cl_j_s = 12;
        fc_cl_j_d = 6;
        fc_cl_rows_table_s = fc_cl_avx512_rows_s;
        fc_cl_rows_j_s = 6;
        fc_clq_table_s = fc_clq_avx512_s;
        fc_clq_table_d = fc_clq_avx512_d;
        fc_clq_j_s = 6;
        fc_clq_j_d = 3;
    } else if (level >= FC_ISA_AVX2) {
        fc_few_table_s = fc_few_avx2_s;
        fc_few_table_d = fc_few_avx2_d;
        fc_few_lanes_s = 8;
        fc_few_lanes_d = 4;
        fc_few_nr = 3;
        fc_cl_table_s = fc_cl_avx2_s;
        fc_cl_table_d = fc_cl_avx2_d;
        fc_cl_j_s = 3;
        fc_cl_j_d = 1;
    }
#endif
    return level;
}

/* elements of fc_few_cols's planes of hb rows, their slack and the padded input row */
static inline ptrdiff_t fc_few_cols_len(ptrdiff_t channels, ptrdiff_t sh, ptrdiff_t sw,
                                        ptrdiff_t kw, ptrdiff_t dil_w, ptrdiff_t hb,
                                        ptrdiff_t gw)
{
    return channels * sh * kw * hb * gw + FC_FEW_SLACK + sw * (gw - 1) + dil_w * (kw - 1) + 1
           + FC_FEW_LINE_SLACK;
}

/* the block's row pitch for a band of ``rows`` grid rows: whole 64-byte vectors of any level */
static inline ptrdiff_t fc_few_pitch(ptrdiff_t rows, ptrdiff_t wp, ptrdiff_t itemsize)
{
    ptrdiff_t per_line = 64 / itemsize, count = rows * wp;
    return (count + per_line - 1) / per_line * per_line;
}

/* The phase split's de-interleave of one zero-padded row: dst[b*plane + j] = row[sw*j + b]
 * for b < sw, j < wp (a 4 x 4 transpose per 4 columns at sw = 4, two shuffles at sw = 2) */
static inline void fc_few_split_s(const float *row, ptrdiff_t sw, ptrdiff_t wp, float *dst,
                                  ptrdiff_t plane)
{
    ptrdiff_t j = 0, b;
    if (sw == 1) {
        memcpy(dst, row, (size_t)wp * sizeof(float));
        return;
    }
#if FC_SIMD
    if (sw == 4)
        for (; j + 4 <= wp; j += 4)
            fc_v4f_transpose4x4(row + 4 * j, 4, dst + j, plane);
    if (sw == 2)
        for (; j + 4 <= wp; j += 4) {
            fc_v4f lo = fc_v4f_load(row + 2 * j), hi = fc_v4f_load(row + 2 * j + 4);
            fc_v4f_store(dst + j, FC_SHUFFLE4(lo, hi, 0, 2, 4, 6));
            fc_v4f_store(dst + plane + j, FC_SHUFFLE4(lo, hi, 1, 3, 5, 7));
        }
#endif
    for (; j < wp; j++)
        for (b = 0; b < sw; b++)
            dst[b * plane + j] = row[sw * j + b];
}

static inline void fc_few_split_d(const double *row, ptrdiff_t sw, ptrdiff_t wp, double *dst,
                                  ptrdiff_t plane)
{
    ptrdiff_t j = 0, b;
    if (sw == 1) {
        memcpy(dst, row, (size_t)wp * sizeof(double));
        return;
    }
#if FC_SIMD
    if (sw == 2)
        for (; j + 2 <= wp; j += 2)
            fc_v2d_transpose2x2(row + 2 * j, 2, dst + j, plane);
#endif
    for (; j < wp; j++)
        for (b = 0; b < sw; b++)
            dst[b * plane + j] = row[sw * j + b];
}

/* dst[r*width + j] = src[r*pitch + j] for r < rows, j < width: whole 16-byte vectors, a row's
 * last one spilling into the next rows' place (written right after), but never past the
 * last row (the rows after it may be another thread's) */
#define FC_FEW_ROWS(SFX, T, V, L)                                                            \
    static inline void fc_few_rows_##SFX(const T *src, ptrdiff_t pitch, ptrdiff_t rows,      \
                                         ptrdiff_t width, T *dst)                            \
    {                                                                                        \
        ptrdiff_t r, j;                                                                      \
        for (r = 0; r < rows; r++) {                                                         \
            const T *s = src + r * pitch;                                                    \
            T *d = dst + r * width;                                                          \
            ptrdiff_t room = (rows - r) * width;                                             \
            for (j = 0; j < width && j + L <= room; j += L) {                                \
                V v;                                                                         \
                __builtin_memcpy(&v, s + j, sizeof v);                                       \
                __builtin_memcpy(d + j, &v, sizeof v);                                       \
            }                                                                                \
            for (; j < width; j++)                                                           \
                d[j] = s[j];                                                                 \
        }                                                                                    \
    }
#if FC_SIMD
FC_FEW_ROWS(s, float, fc_v4f, 4)
FC_FEW_ROWS(d, double, fc_v2d, 2)
#else
FC_FEW_ROWS(s, float, float, 1)
FC_FEW_ROWS(d, double, double, 1)
#endif

/* The body shared by both types: the phase split of one sample, the band's block, and its
 * store. Instantiated as fc_few_*_s (float) and fc_few_*_d (double). */
#define FC_FEW_DEFINE(SFX, T)                                                                 \
    /* phase[((c*sh + a)*sw + b)*plane + i*wp + j] = x[c][sh*i + a - pad_top][sw*j + b -      \
     * pad_left], 0 outside x; plane = hp*wp. The wp + FC_FEW_SLACK elements after the      \
     * planes are zeroed too (a vector may read them), and the sw*wp + 16 after them hold   \
     * each zero-padded input row while it is split. */                                      \
    static inline void fc_few_phase_##SFX(const T *x, ptrdiff_t channels, ptrdiff_t in_h,     \
                                          ptrdiff_t in_w, ptrdiff_t pad_top,                  \
                                          ptrdiff_t pad_left, ptrdiff_t sh, ptrdiff_t sw,     \
                                          ptrdiff_t hp, ptrdiff_t wp, T *phase)               \
    {                                                                                         \
        ptrdiff_t plane = hp * wp, c, a, i, row, first, last, b;                              \
        ptrdiff_t padded = sw * wp, planes = channels * sh * sw * plane;                      \
        T *line = phase + planes + wp + FC_FEW_SLACK;                                         \
        /* the input columns [first, last) land at line[pad_left + col] inside the line */    \
        first = pad_left < 0 ? -pad_left : 0;                                                 \
        last = padded - pad_left < in_w ? padded - pad_left : in_w;                           \
        if (last < first)                                                                     \
            last = first;                                                                     \
        for (c = 0; c < channels; c++)                                                        \
            for (a = 0; a < sh; a++)                                                          \
                for (i = 0; i < hp; i++) {                                                    \
                    T *dst = phase + (c * sh + a) * sw * plane + i * wp;                      \
                    row = sh * i + a - pad_top;                                               \
                    if (row < 0 || row >= in_h) {                                             \
                        for (b = 0; b < sw; b++)                                              \
                            memset(dst + b * plane, 0, (size_t)wp * sizeof(T));              \
                        continue;                                                             \
                    }                                                                         \
                    if (pad_left == 0 && in_w >= padded) { /* the row as it is */             \
                        fc_few_split_##SFX(x + (c * in_h + row) * in_w, sw, wp, dst, plane);  \
                        continue;                                                             \
                    }                                                                         \
                    memset(line, 0, (size_t)padded * sizeof(T));                              \
                    memcpy(line + pad_left + first, x + (c * in_h + row) * in_w + first,      \
                           (size_t)(last - first) * sizeof(T));                               \
                    fc_few_split_##SFX(line, sw, wp, dst, plane);                             \
                }                                                                             \
        memset(phase + planes, 0, (size_t)(wp + FC_FEW_SLACK) * sizeof(T));                   \
    }                                                                                         \
                                                                                              \
    /* The block of grid rows [r0, r1): buf[o*bp + t] = the sums of grid position r0*wp + t  \
     * (t < (r1 - r0)*wp, rounded up to vectors), or with several window positions their    \
     * max in scan order, taken by the micro-kernel as it stores each position's sums.      \
     * off[qd*k + kk]: tap kk's phase offset for window position qd; w: [kk][cpad]. */        \
    static inline void fc_few_block_##SFX(const T *phase, const ptrdiff_t *off, const T *w,   \
                                          const T *bias, const fc_few_shape *shape,           \
                                          ptrdiff_t r0, ptrdiff_t r1, int relu, T *buf)       \
    {                                                                                         \
        const fc_few_kernel_##SFX *table = fc_few_table_##SFX;                                \
        ptrdiff_t lanes = fc_few_lanes_##SFX, nr_max = fc_few_nr;                             \
        ptrdiff_t k = shape->k, cpad = shape->cpad, bp = shape->bp;                           \
        ptrdiff_t count = (r1 - r0) * shape->wp;                                              \
        ptrdiff_t vectors = (count + lanes - 1) / lanes, qd, o, v, nr;                        \
        const T *in = phase + r0 * shape->wp;                                                 \
        for (qd = 0; qd < shape->quads; qd++)                                                 \
            for (o = 0; o < cpad; o += FC_FEW_MR)                                             \
                for (v = 0; v < vectors; v += nr) {                                           \
                    nr = vectors - v < nr_max ? vectors - v : nr_max;                         \
                    table[nr](k, in + v * lanes, off + qd * k, w + o, cpad,                   \
                              buf + o * bp + v * lanes, bp, bias ? bias + o : NULL, relu,     \
                              qd > 0, FC_FEW_MR, (int)lanes);                                 \
                }                                                                             \
    }                                                                                         \
                                                                                              \
    /* y[o*plane + (r0 + r)*width + j] = buf[o*bp + r*wp + j] for o < channels,              \
     * r < r1 - r0, j < width: the block's grid values into the output planes */             \
    static inline void fc_few_store_##SFX(const T *buf, const fc_few_shape *shape,            \
                                          ptrdiff_t channels, ptrdiff_t r0, ptrdiff_t r1,     \
                                          ptrdiff_t width, T *y, ptrdiff_t plane)             \
    {                                                                                         \
        ptrdiff_t o;                                                                          \
        for (o = 0; o < channels; o++)                                                        \
            fc_few_rows_##SFX(buf + o * shape->bp, shape->wp, r1 - r0, width,                 \
                              y + o * plane + r0 * width);                                    \
    }                                                                                         \
                                                                                              \
    /* the column planes of grid rows [r0, r0 + rows) at the level in force (FC_FEW_COLS) */ \
    static inline void fc_few_cols_##SFX(const T *x, ptrdiff_t channels, ptrdiff_t in_h,      \
                                         ptrdiff_t in_w, ptrdiff_t pad_top,                   \
                                         ptrdiff_t pad_left, ptrdiff_t sh, ptrdiff_t sw,      \
                                         ptrdiff_t kw, ptrdiff_t dil_w, ptrdiff_t r0,         \
                                         ptrdiff_t rows, ptrdiff_t hb, ptrdiff_t gw, T *cols) \
    {                                                                                         \
        fc_few_cols_level_##SFX(x, channels, in_h, in_w, pad_top, pad_left, sh, sw, kw, dil_w, \
                                r0, rows, hb, gw, cols);                                      \
    }                                                                                         \
                                                                                              \
    /* y[o*plane + t] for o < channels, t < count: the sums (+ bias, ReLU) of the band's     \
     * positions t from its column planes (off[kk]: tap kk's offset in them), stored by the  \
     * micro-kernels straight into the output planes. */                                     \
    static inline void fc_few_dense_##SFX(const T *cols, const ptrdiff_t *off, const T *w,    \
                                          const T *bias, const fc_few_shape *shape,           \
                                          ptrdiff_t count, ptrdiff_t channels, int relu,      \
                                          T *y, ptrdiff_t plane)                              \
    {                                                                                         \
        const fc_few_kernel_##SFX *table = fc_few_table_##SFX;                                \
        ptrdiff_t lanes = fc_few_lanes_##SFX, nr_max = fc_few_nr;                             \
        ptrdiff_t k = shape->k, cpad = shape->cpad;                                           \
        ptrdiff_t vectors = (count + lanes - 1) / lanes, tail = count - (vectors - 1) * lanes; \
        ptrdiff_t o, v, nr, mc;                                                               \
        for (o = 0; o < channels; o += FC_FEW_MR) {                                           \
            mc = channels - o < FC_FEW_MR ? channels - o : FC_FEW_MR;                         \
            for (v = 0; v < vectors; v += nr) {                                               \
                nr = vectors - v < nr_max ? vectors - v : nr_max;                             \
                table[nr](k, cols + v * lanes, off, w + o, cpad, y + o * plane + v * lanes,   \
                          plane, bias ? bias + o : NULL, relu, 0, (int)mc,                    \
                          (int)(v + nr == vectors ? tail : lanes));                           \
            }                                                                                 \
        }                                                                                     \
    }

FC_FEW_DEFINE(s, float)
FC_FEW_DEFINE(d, double)

/* The channels-across-lanes variant's block of grid rows [r0, r1): buf[t*cpad + o] for the
 * band's positions t = (r - r0)*grid_w + x (the max over the window positions, as
 * fc_few_block), and its store: y[o*plane + t] = buf[t*cpad + o] for o < channels, t < count
 * (4 x 4 transposes of floats, 2 x 2 of doubles, in the portable vectors; channels is a
 * multiple of FC_CL_OC). */
#define FC_CL_DEFINE(SFX, T, ROWS_TABLE, ROWS_J)                                            \
    static inline void fc_cl_block_##SFX(const T *phase, const ptrdiff_t *off, const T *w,    \
                                         const T *bias, const fc_few_shape *shape,            \
                                         ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t grid_w,        \
                                         int relu, int late, T *buf)                          \
    {                                                                                         \
        const fc_cl_kernel_##SFX *table = fc_cl_table_##SFX, *rows_table = ROWS_TABLE;        \
        const fc_clq_kernel_##SFX *quads = fc_clq_table_##SFX;                                \
        ptrdiff_t j_max = fc_cl_j_##SFX, k = shape->k, cpad = shape->cpad, wp = shape->wp;    \
        ptrdiff_t cs = shape->step, r, o, x, j, step;                                         \
        if (quads && late && shape->quads == FC_CLQ_QUADS) {                                  \
            /* 2 x 2 windows: the four positions' sums at once (fc_clq_*) */                  \
            j_max = fc_clq_j_##SFX;                                                           \
            for (r = r0; r < r1; r++)                                                         \
                for (x = 0; x < grid_w; x += j) {                                             \
                    j = grid_w - x < j_max ? grid_w - x : j_max;                              \
                    for (o = 0; o < cpad; o += FC_CL_OC)                                      \
                        quads[j](k, phase + r * wp + x * cs, off, cs, w + o, cpad,            \
                                 bias ? bias + o : NULL, relu,                                \
                                 buf + ((r - r0) * grid_w + x) * cpad + o);                   \
                }                                                                             \
            return;                                                                           \
        }                                                                                     \
        for (r = r0; r < r1; r += step) {                                                     \
            /* two rows per call where the row is short (more chains of multiply-adds) */     \
            const fc_cl_kernel_##SFX *use = table;                                            \
            step = 1;                                                                         \
            if (r + 1 < r1 && grid_w <= (ROWS_J)) {                                           \
                use = rows_table;                                                             \
                step = 2;                                                                     \
            }                                                                                 \
            for (x = 0; x < grid_w; x += j) {                                                 \
                j = grid_w - x < j_max ? grid_w - x : j_max;                                  \
                for (o = 0; o < cpad; o += FC_CL_OC)                                          \
                    use[j](k, shape->quads, phase + r * wp + x * cs, off, wp, cs, w + o,      \
                           cpad, bias ? bias + o : NULL, relu, late,                          \
                           buf + ((r - r0) * grid_w + x) * cpad + o, grid_w);                 \
            }                                                                                 \
        }                                                                                     \
    }
FC_CL_DEFINE(s, float, fc_cl_rows_table_s, fc_cl_rows_j_s)
FC_CL_DEFINE(d, double, NULL, 0)

/* y[o * plane + t] = buf[t * cpad + o] for o < channels, t < count: the pixel-major block
 * into the channel planes (src/_simd.h's register transposes where whole) */
#if FC_SIMD
#define FC_CL_STORE_DEFINE(sfx, T)                                                            \
    static inline void fc_cl_store_##sfx(const T *buf, ptrdiff_t cpad, ptrdiff_t channels,   \
                                         ptrdiff_t count, T *y, ptrdiff_t plane)              \
    {                                                                                         \
        fc_transpose_vec_##sfx(buf, cpad, count, channels, y, plane);                         \
    }
#else
#define FC_CL_STORE_DEFINE(sfx, T)                                                            \
    static inline void fc_cl_store_##sfx(const T *buf, ptrdiff_t cpad, ptrdiff_t channels,   \
                                         ptrdiff_t count, T *y, ptrdiff_t plane)              \
    {                                                                                         \
        ptrdiff_t o, t;                                                                       \
        for (t = 0; t < count; t++)                                                           \
            for (o = 0; o < channels; o++)                                                    \
                y[o * plane + t] = buf[t * cpad + o];                                         \
    }
#endif
FC_CL_STORE_DEFINE(s, float)
FC_CL_STORE_DEFINE(d, double)
#undef FC_CL_STORE_DEFINE

#endif
