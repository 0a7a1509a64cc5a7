/* Direct convolution against the staged input (src/_conv.pyx, stage_input), float32 only:
 * output channels across the lanes of 512-bit vectors, output pixels broadcast.
 *
 * For a run of MR consecutive output pixels of one output row and a block of 16*V output
 * channels, a micro-kernel keeps the MR x 16V sums in registers over a list of k taps:
 *
 *     out[r*ldo + j] = sum_kk src[tap[2kk] + r] * w[tap[2kk + 1] + j]     (+ bias[j])
 *
 * where ``src`` is the stage at the run's first pixel, tap[2kk] the stage offset of the
 * list's tap kk (channel, row, column; the column phases of a strided stage make the run's
 * pixels consecutive there too) and tap[2kk + 1] where its 16V weights start (a multiple of
 * 16; its low 2 bits give the tap's kind, below). The list is every tap in order, or, where
 * the weights are finite, every tap but those whose kernel row reads only the stage's zero
 * padding rows for the output row (src/conv/direct.pxi, direct_tap_lists), and a run at an
 * edge of its row leaves out the products of its first or last pixel with the taps whose
 * kind says they read a padding column there: all those products would be exact zeros, and a
 * sum that starts at +0 never becomes -0, so adding them changes no bit (an inf or NaN
 * weight keeps every product: its product with a padded zero is NaN). Every input value is read from the stage in place: there is no
 * im2col block, and no lane is wasted on the edge of a narrow output row, which is why this
 * beats im2col + GEMM on small images with 16, 32, 64 ... output channels (LeNet-sized
 * layers). The sums come out pixel-major; fc_direct_store transposes them into the
 * channel-major output by 8 x 8 register transposes.
 *
 * Each output element is the same chain of FMAs from 0 over its row's list in order (then
 * the bias) whoever computes it: results depend on the shapes only. The kernels need
 * AVX-512F (and the AVX2 transposes of src/_gemm.h); fc_direct_init says whether they may
 * run here.
 */
#ifndef FASTCONV_DIRECT_H
#define FASTCONV_DIRECT_H

#include <stddef.h>
#include <string.h>

#include "_cpu.h"
#include "_gemm.h"

/* Pixels per micro-kernel call: V = 2 (32 channels) keeps 2*MR accumulators, V = 1 keeps MR,
 * in AVX-512's 32 vector registers, with the weights and a broadcast beside them. */
#define FC_DIRECT_MR2 12
#define FC_DIRECT_MR1 24

typedef void (*fc_direct_kernel_t)(ptrdiff_t, const float *, const ptrdiff_t *, const float *,
                                   float *, ptrdiff_t, const float *);
typedef void (*fc_direct_edge_kernel_t)(ptrdiff_t, const float *, const ptrdiff_t *,
                                        const float *, float *, ptrdiff_t, const float *,
                                        ptrdiff_t);

#if FC_HAVE_X86_TARGETS
/* the micro-kernels' parts: the sums set to zero; the products of one tap with pixels R0 ..
 * R1 - 1 added; the sums (and the bias) stored */
#define FC_DIRECT_ZERO(MR, V)                                                                \
    _Pragma("GCC unroll 24") for (r = 0; r < MR; r++)                                        \
        _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                      \
            acc[r][v] = _mm512_setzero_ps();
#define FC_DIRECT_FMAS(V, R0, R1)                                                            \
    _Pragma("GCC unroll 24") for (r = R0; r < R1; r++) {                                     \
        b = _mm512_set1_ps(s[r]);                                                            \
        _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                      \
            acc[r][v] = _mm512_fmadd_ps(b, wv[v], acc[r][v]);                                \
    }
#define FC_DIRECT_STORE(MR, V)                                                               \
    _Pragma("GCC unroll 24") for (r = 0; r < MR; r++)                                        \
        _Pragma("GCC unroll 2") for (v = 0; v < V; v++) {                                    \
            __m512 x = acc[r][v];                                                            \
            if (bias)                                                                        \
                x = _mm512_add_ps(x, _mm512_loadu_ps(bias + 16 * v));                        \
            _mm512_storeu_ps(out + r * ldo + 16 * v, x);                                     \
        }
#define FC_DIRECT_TAP(V)                                                                     \
    const float *s = src + tap[2 * kk];                                                      \
    const ptrdiff_t t = tap[2 * kk + 1];                                                     \
    _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                          \
        wv[v] = _mm512_load_ps(w + (t & ~(ptrdiff_t)3) + 16 * v);

#define FC_DIRECT_KERNEL(NAME, MR, V)                                                        \
    __attribute__((target("avx512f"))) static void                                           \
    NAME(ptrdiff_t k, const float *src, const ptrdiff_t *tap, const float *w, float *out,    \
         ptrdiff_t ldo, const float *bias)                                                   \
    {                                                                                        \
        __m512 acc[MR][V], wv[V], b;                                                         \
        ptrdiff_t kk;                                                                        \
        int r, v;                                                                            \
        FC_DIRECT_ZERO(MR, V)                                                                \
        for (kk = 0; kk < k; kk++) {                                                         \
            FC_DIRECT_TAP(V)                                                                 \
            FC_DIRECT_FMAS(V, 0, MR)                                                         \
        }                                                                                    \
        FC_DIRECT_STORE(MR, V)                                                               \
    }

/* The same for a run at an edge of its output row: the tap's first pixel left out where
 * bit 0 of both ``edges`` (the run starts the row) and the tap's kind (the low bits of
 * tap[2kk + 1]: its column is padding for the row's first pixel) are set, the last where
 * bit 1 of both are */
#define FC_DIRECT_EDGE_KERNEL(NAME, MR, V)                                                   \
    __attribute__((target("avx512f"))) static void                                           \
    NAME(ptrdiff_t k, const float *src, const ptrdiff_t *tap, const float *w, float *out,    \
         ptrdiff_t ldo, const float *bias, ptrdiff_t edges)                                  \
    {                                                                                        \
        __m512 acc[MR][V], wv[V], b;                                                         \
        ptrdiff_t kk;                                                                        \
        int r, v;                                                                            \
        FC_DIRECT_ZERO(MR, V)                                                                \
        for (kk = 0; kk < k; kk++) {                                                         \
            FC_DIRECT_TAP(V)                                                                 \
            switch (t & edges) {                                                             \
            case 0: FC_DIRECT_FMAS(V, 0, MR) break;                                          \
            case 1: FC_DIRECT_FMAS(V, 1, MR) break;                                          \
            case 2: FC_DIRECT_FMAS(V, 0, MR - 1) break;                                      \
            default: FC_DIRECT_FMAS(V, 1, MR - 1) break;                                     \
            }                                                                                \
        }                                                                                    \
        FC_DIRECT_STORE(MR, V)                                                               \
    }

/* A family of micro-kernels: KERNEL(name, count, V) for V = 2 and counts 1 .. FC_DIRECT_MR2,
 * and V = 1 and counts 1 .. FC_DIRECT_MR1, with the tables P##2 and P##1 indexed
 * by the count (the forward kernels by pixels, the weight gradient's by taps). */
#define FC_DIRECT_1_TO_12(KERNEL, P, V)                                                       \
    KERNEL(P##V##_1, 1, V) KERNEL(P##V##_2, 2, V) KERNEL(P##V##_3, 3, V)                      \
    KERNEL(P##V##_4, 4, V) KERNEL(P##V##_5, 5, V) KERNEL(P##V##_6, 6, V)                      \
    KERNEL(P##V##_7, 7, V) KERNEL(P##V##_8, 8, V) KERNEL(P##V##_9, 9, V)                      \
    KERNEL(P##V##_10, 10, V) KERNEL(P##V##_11, 11, V) KERNEL(P##V##_12, 12, V)
#define FC_DIRECT_NAMES_1_TO_12(P, V)                                                        \
    P##V##_1, P##V##_2, P##V##_3, P##V##_4, P##V##_5, P##V##_6, P##V##_7, P##V##_8,          \
    P##V##_9, P##V##_10, P##V##_11, P##V##_12
#define FC_DIRECT_FAMILY(KERNEL, TYPE, P)                                                    \
    FC_DIRECT_1_TO_12(KERNEL, P, 2)                                                          \
    FC_DIRECT_1_TO_12(KERNEL, P, 1)                                                          \
    KERNEL(P##1_13, 13, 1) KERNEL(P##1_14, 14, 1) KERNEL(P##1_15, 15, 1)                      \
    KERNEL(P##1_16, 16, 1) KERNEL(P##1_17, 17, 1) KERNEL(P##1_18, 18, 1)                      \
    KERNEL(P##1_19, 19, 1) KERNEL(P##1_20, 20, 1) KERNEL(P##1_21, 21, 1)                      \
    KERNEL(P##1_22, 22, 1) KERNEL(P##1_23, 23, 1) KERNEL(P##1_24, 24, 1)                      \
    static const TYPE P##2[FC_DIRECT_MR2 + 1] = {NULL, FC_DIRECT_NAMES_1_TO_12(P, 2)};       \
    static const TYPE P##1[FC_DIRECT_MR1 + 1] = {                                            \
        NULL, FC_DIRECT_NAMES_1_TO_12(P, 1), P##1_13, P##1_14, P##1_15, P##1_16, P##1_17,    \
        P##1_18, P##1_19, P##1_20, P##1_21, P##1_22, P##1_23, P##1_24};

/* fc_direct_2[mr], fc_direct_1[mr]: the forward micro-kernel of mr pixels; fc_direct_edge_2,
 * fc_direct_edge_1: of a run at an edge of its row */
FC_DIRECT_FAMILY(FC_DIRECT_KERNEL, fc_direct_kernel_t, fc_direct_)
FC_DIRECT_FAMILY(FC_DIRECT_EDGE_KERNEL, fc_direct_edge_kernel_t, fc_direct_edge_)
#endif

/* The weight gradient's micro-kernel: for R taps and a block of 16*V output channels, the
 * sums over the pixels [p0, p0 + count) of one (sample, group) whose column is in [cx0, cx1),
 *
 *     out[oo[r] + j] += sum_i stage[pix(i) + off[r]] * gyt[(i - p0)*ldg + j]
 *
 * (oo NULL: out[r*ldo + j]) kept in R x V registers over the whole tile (pix(i) = oy*row_step
 * + ox for pixel i = (oy, ox)), then added to ``out`` once: grad_output's tile, transposed
 * pixel-major (gyt), is read a vector at a time, the input values broadcast from the stage
 * in place. The column window leaves out pixels whose products are padded zeros (see
 * fc_dgrad_tile). */
#if FC_HAVE_X86_TARGETS
/* the weight gradient's micro-kernels' parts: the R x V sums set to zero; one pixel's
 * products added, its grad_output at G, its input value for tap r at S(r); the sums added to
 * out + ROW(r), or with ``assign`` stored there (the same bits as added to a zeroed ``out``: a
 * sum that starts at +0 is never -0) */
#define FC_DGRAD_ZERO(R, V)                                                                  \
    _Pragma("GCC unroll 24") for (r = 0; r < R; r++)                                         \
        _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                      \
            acc[r][v] = _mm512_setzero_ps();
#define FC_DGRAD_PIXEL(R, V, G, S)                                                           \
    _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                          \
        gv[v] = _mm512_loadu_ps((G) + 16 * v);                                               \
    _Pragma("GCC unroll 24") for (r = 0; r < R; r++) {                                       \
        b = _mm512_set1_ps(S(r));                                                            \
        _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                      \
            acc[r][v] = _mm512_fmadd_ps(b, gv[v], acc[r][v]);                                \
    }
#define FC_DGRAD_ADD(R, V, ROW)                                                              \
    _Pragma("GCC unroll 24") for (r = 0; r < R; r++)                                         \
        _Pragma("GCC unroll 2") for (v = 0; v < V; v++) {                                    \
            float *o = out + (ROW) + 16 * v;                                                 \
            _mm512_storeu_ps(o, assign ? acc[r][v] : _mm512_add_ps(_mm512_loadu_ps(o),       \
                                                                   acc[r][v]));              \
        }

#define FC_DGRAD_ROWS_S(r) s[r][i]
#define FC_DGRAD_KERNEL(NAME, R, V)                                                          \
    __attribute__((target("avx512f"))) static void                                           \
    NAME(const float *stage, const ptrdiff_t *off, ptrdiff_t out_w, ptrdiff_t row_step,      \
         ptrdiff_t p0, ptrdiff_t count, const float *gyt, ptrdiff_t ldg, float *out,         \
         ptrdiff_t ldo, const ptrdiff_t *oo, ptrdiff_t cx0, ptrdiff_t cx1, int assign)       \
    {                                                                                        \
        __m512 acc[R][V], gv[V], b;                                                          \
        const float *s[R];                                                                   \
        const float *g = gyt;                                                                \
        ptrdiff_t p = p0, end = p0 + count, oy, ox, seg, i, lo, hi;                          \
        int r, v;                                                                            \
        FC_DGRAD_ZERO(R, V)                                                                  \
        while (p < end) {                                                                    \
            oy = p / out_w;                                                                  \
            ox = p - oy * out_w;                                                             \
            seg = out_w - ox < end - p ? out_w - ox : end - p;                               \
            lo = cx0 > ox ? cx0 - ox : 0;                                                    \
            hi = cx1 - ox < seg ? cx1 - ox : seg;                                            \
            _Pragma("GCC unroll 24") for (r = 0; r < R; r++)                                 \
                s[r] = stage + oy * row_step + ox + off[r];                                  \
            for (i = lo; i < hi; i++) {                                                      \
                FC_DGRAD_PIXEL(R, V, g + i * ldg, FC_DGRAD_ROWS_S)                           \
            }                                                                                \
            g += seg * ldg;                                                                  \
            p += seg;                                                                        \
        }                                                                                    \
        FC_DGRAD_ADD(R, V, oo ? oo[r] : r * ldo)                                             \
    }

typedef void (*fc_dgrad_kernel_t)(const float *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t,
                                  ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *,
                                  ptrdiff_t, const ptrdiff_t *, ptrdiff_t, ptrdiff_t, int);

/* fc_dgrad_2[taps], fc_dgrad_1[taps]: the weight gradient's micro-kernel for that many taps */
FC_DIRECT_FAMILY(FC_DGRAD_KERNEL, fc_dgrad_kernel_t, fc_dgrad_)

/* The same sums for R consecutive input channels of one kernel position from the stage
 * transposed channel-minor (stage_t[pos*C_in + c], fc_dgrad_stage_t), over a list of n pixels:
 *
 *     out[oo[r] + j] += sum_i src[pix[2i] + r] * gyt[pix[2i + 1] + j]
 *
 * with ``src`` at the block's first tap: a pixel's R input values are adjacent, broadcast from
 * one pointer at fixed offsets (as the forward kernels' pixels), and the whole window of the
 * tile is one loop. Measured against fc_dgrad_2 on the stage's rows (bench/direct_stages.c's
 * weight gradient, one thread, Zen 4): the small ResNet's l3.c2 at batch 16 (7 x 7, 128 ->
 * 128) 2.14 -> 1.86 ms, its l2.c2 (14 x 14, 64 -> 64) 2.18 -> 2.01 ms, the same bits. */
#define FC_DGRAD_LIST_S(r) s[r]
#define FC_DGRAD_LIST_KERNEL(NAME, R, V)                                                     \
    __attribute__((target("avx512f"))) static void                                           \
    NAME(const float *src, const ptrdiff_t *pix, ptrdiff_t n, const float *gyt, float *out,  \
         const ptrdiff_t *oo, int assign)                                                    \
    {                                                                                        \
        __m512 acc[R][V], gv[V], b;                                                          \
        const ptrdiff_t *end = pix + 2 * n;                                                  \
        int r, v;                                                                            \
        FC_DGRAD_ZERO(R, V)                                                                  \
        for (; pix < end; pix += 2) {                                                        \
            const float *s = src + pix[0];                                                   \
            FC_DGRAD_PIXEL(R, V, gyt + pix[1], FC_DGRAD_LIST_S)                              \
        }                                                                                    \
        FC_DGRAD_ADD(R, V, oo[r])                                                            \
    }

typedef void (*fc_dgrad_list_kernel_t)(const float *, const ptrdiff_t *, ptrdiff_t,
                                       const float *, float *, const ptrdiff_t *, int);

/* fc_dgrad_list_2[taps], fc_dgrad_list_1[taps] */
FC_DIRECT_FAMILY(FC_DGRAD_LIST_KERNEL, fc_dgrad_list_kernel_t, fc_dgrad_list_)
#endif

/* Whether the direct kernels run here: at the avx512 level of src/_cpu.h (they use AVX-512F
 * and the AVX2 transposes of src/_gemm.h), so FASTCONV_ISA=avx2 or generic turns them off. */
static int fc_direct_init(void)
{
    return FC_HAVE_X86_TARGETS && fc_cpu_isa() >= FC_ISA_AVX512;
}

/* Output pixels [p0, p0 + count) of one (sample, group) into tbuf (pixel-major, row stride
 * ldt = channels), for channels in blocks of 16 * v (v = 1 or 2; channels a multiple of it):
 * each output row's part cut into near-equal runs of at most the kernel's MR pixels (the
 * runs at an edge of the row by the edge kernels). ``stage`` is the (sample, group)'s stage, ``row_step`` the stage offset between output
 * rows (stride_h staged rows), ``wpack`` the weights as [block][kk][16v], 64-byte aligned;
 * output row oy sums the taps of the list at taps + rows[2*oy] (rows[2*oy + 1] of them;
 * pairs of stage and weight offsets within a block, see the kernels above). */
static void fc_direct_tile(const float *stage, const ptrdiff_t *taps, const ptrdiff_t *rows,
                           const float *wpack, ptrdiff_t k, ptrdiff_t channels, int v,
                           ptrdiff_t out_w, ptrdiff_t row_step, ptrdiff_t p0, ptrdiff_t count,
                           const float *bias, float *tbuf)
{
#if FC_HAVE_X86_TARGETS
    const fc_direct_kernel_t *table = v == 2 ? fc_direct_2 : fc_direct_1;
    const fc_direct_edge_kernel_t *edge = v == 2 ? fc_direct_edge_2 : fc_direct_edge_1;
    ptrdiff_t mr_max = v == 2 ? FC_DIRECT_MR2 : FC_DIRECT_MR1;
    ptrdiff_t width = 16 * v, blocks = channels / width;
    ptrdiff_t p, end = p0 + count, oy, ox, seg, runs, r, first, last, blk, edges;
    /* one block of channels over all the pixels, then the next: a block's weights (k * 16v
     * floats, 295 KB at k = 2304, v = 2) stay in L2 across the runs, where the other order
     * streamed all the weights (2.4 MB, past L2) once per run of MR pixels */
    for (blk = 0; blk < blocks; blk++) {
        const float *wblk = wpack + blk * k * width;
        const float *bblk = bias ? bias + blk * width : NULL;
        for (p = p0; p < end; p += seg) {
            oy = p / out_w;
            ox = p - oy * out_w;
            seg = out_w - ox < end - p ? out_w - ox : end - p;
            runs = (seg + mr_max - 1) / mr_max;
            for (r = 0; r < runs; r++) {
                first = seg * r / runs;
                last = seg * (r + 1) / runs;
                edges = (ox + first == 0) | (ox + last == out_w) << 1;
                if (edges)
                    edge[last - first](rows[2 * oy + 1], stage + oy * row_step + ox + first,
                                       taps + rows[2 * oy], wblk,
                                       tbuf + (p - p0 + first) * channels + blk * width,
                                       channels, bblk, edges);
                else
                    table[last - first](rows[2 * oy + 1], stage + oy * row_step + ox + first,
                                        taps + rows[2 * oy], wblk,
                                        tbuf + (p - p0 + first) * channels + blk * width,
                                        channels, bblk);
            }
        }
    }
#else
    (void)stage; (void)taps; (void)rows; (void)wpack; (void)k; (void)channels; (void)v;
    (void)out_w; (void)row_step; (void)p0; (void)count; (void)bias; (void)tbuf;
#endif
}

#if FC_HAVE_X86_TARGETS
/* whether any of x[0 .. n) (n a multiple of 16) is an inf or a NaN */
__attribute__((target("avx512f"))) static int fc_direct_nonfinite(const float *x, ptrdiff_t n)
{
    const __m512i exponent = _mm512_set1_epi32(0x7f800000);
    __mmask16 any = 0;
    ptrdiff_t i;
    for (i = 0; i < n; i += 16)
        any |= _mm512_cmpeq_epi32_mask(
            _mm512_and_si512(_mm512_loadu_si512((const void *)(x + i)), exponent), exponent);
    return any != 0;
}
#endif

/* wpack[kk*width + j] = weight[j*k + kk] for j < width, kk < k: one block of output channels'
 * weights (rows of k) as the micro-kernels read them, tap-major, by register transposes.
 * Returns whether any of them is an inf or a NaN (then the taps on the padding stay). */
static int fc_direct_pack(const float *weight, ptrdiff_t k, ptrdiff_t width, float *wpack)
{
#if FC_HAVE_X86_TARGETS
    fc_stranspose_avx2(weight, k, width, k, wpack, width);
    return fc_direct_nonfinite(wpack, k * width);
#else
    (void)weight; (void)k; (void)width; (void)wpack;
    return 0;
#endif
}

/* The same packing of the weights of a convolution's input gradient as a forward pass (the
 * Transposed path: its kernels are the convolution's, transposed and flipped) from the
 * convolution's own weights (kernel_h x kernel_w taps, ``taps`` = their product), or of the
 * sub-kernel of one of StridedPhases' phases: the taps (start_h + a*step_h, start_w +
 * b*step_w), a < sub_h, b < sub_w, of the flipped kernel (``slice`` = start_h, step_h,
 * start_w, step_w; 0, 1, 0, 1 with sub_h x sub_w = kernel_h x kernel_w for all of it):
 * wpack[(o*sub + t)*width + j] = flipped[o, j, t-th tap] for o < outer (the convolution's
 * output channels per group), j < width (a block of its input channels, rows of ``taps`` at
 * weight + j*taps, ``ld`` = C_in/groups * taps apart from one o to the next), t < sub =
 * sub_h*sub_w. The whole kernel: each o's width x taps block transposed by register
 * transposes, its taps in reverse order (a negative destination stride); a sub-kernel
 * element by element. Returns whether any is an inf or a NaN. */
static int fc_direct_pack_transposed(const float *weight, ptrdiff_t outer, ptrdiff_t ld,
                                     ptrdiff_t kernel_h, ptrdiff_t kernel_w,
                                     const ptrdiff_t *slice, ptrdiff_t sub_h, ptrdiff_t sub_w,
                                     ptrdiff_t width, float *wpack)
{
#if FC_HAVE_X86_TARGETS
    const ptrdiff_t taps = kernel_h * kernel_w, sub = sub_h * sub_w;
    ptrdiff_t o, a, b, j;
    if (sub_h == kernel_h && sub_w == kernel_w && slice[0] == 0 && slice[1] == 1
            && slice[2] == 0 && slice[3] == 1) {
        for (o = 0; o < outer; o++)
            fc_stranspose_avx2(weight + o * ld, taps, width, taps,
                               wpack + (o * taps + taps - 1) * width, -width);
    } else {
        for (o = 0; o < outer; o++)
            for (a = 0; a < sub_h; a++)
                for (b = 0; b < sub_w; b++) {
                    /* the flipped kernel's tap (p, q) is the kernel's (kH-1-p, kW-1-q) */
                    const float *w = weight + o * ld
                        + (kernel_h - 1 - (slice[0] + a * slice[1])) * kernel_w
                        + (kernel_w - 1 - (slice[2] + b * slice[3]));
                    float *dst = wpack + (o * sub + a * sub_w + b) * width;
                    for (j = 0; j < width; j++)
                        dst[j] = w[j * taps];
                }
    }
    return fc_direct_nonfinite(wpack, outer * sub * width);
#else
    (void)weight; (void)outer; (void)ld; (void)kernel_h; (void)kernel_w; (void)slice;
    (void)sub_h; (void)sub_w; (void)width; (void)wpack;
    return 0;
#endif
}

/* y[o*plane + i] = tbuf[i*channels + o] for i < count, o < channels: the pixel-major sums
 * into the channel-major planes (fc_direct_load the other way), by src/_gemm.h's register
 * transposes (the direct kernels run only where AVX2 is) */
static void fc_direct_store(const float *tbuf, ptrdiff_t channels, ptrdiff_t count, float *y,
                            ptrdiff_t plane)
{
#if FC_HAVE_X86_TARGETS
    fc_stranspose_avx2(tbuf, channels, count, channels, y, plane);
#else
    (void)tbuf; (void)channels; (void)count; (void)y; (void)plane;
#endif
}

/* out[kk*channels + o] += sum over the pixels [p0, p0 + count) of one (sample, group) of
 * stage[pix(i) + off[kk]] * gy[o, i], for the taps in blocks and the channels in blocks of
 * 16 * v: ``gyt`` is grad_output's tile transposed (fc_direct_load), ``out`` the tap-major
 * [kk][o] sums of one group. Block b (of ``blocks``, six entries each: first, count, oy_lo,
 * oy_hi, ox_lo, ox_hi; src/conv/direct.pxi, direct_wgrad_blocks) sums the taps off[first ..
 * first + count) (at most the micro-kernel's) into out + oo[...]; with ``skip`` (gyt all
 * finite) over the output rows [oy_lo, oy_hi) and columns [ox_lo, ox_hi) only, where its
 * taps read the input: the other products are padded zeros times finite values, exact zeros
 * (a sum that starts at +0 never becomes -0), so every sum keeps its bits.
 *
 * cin > 0: ``stage`` is the stage transposed channel-minor (cin channels a position,
 * fc_dgrad_stage_t), each block's taps are consecutive channels of one kernel position and
 * off[first] is where its first tap's values start there (the others follow it); the pixels
 * of a block's window are listed in ``pix`` (2 * count entries: their offsets in that stage
 * and in gyt), once for the blocks that share the window, and summed by fc_dgrad_list_*. The
 * same pixels in the same order: the same bits.
 *
 * ``assign``: the sums are stored into ``out`` instead of added (its rows of a block that
 * sums no pixel set to zero): the first tile of a row of partial sums, which is then never
 * zeroed first. */
static void fc_dgrad_tile(const float *stage, const ptrdiff_t *blocks, ptrdiff_t nblocks,
                          const ptrdiff_t *off, const ptrdiff_t *oo, ptrdiff_t channels, int v,
                          ptrdiff_t out_w, ptrdiff_t row_step, ptrdiff_t p0, ptrdiff_t count,
                          const float *gyt, float *out, int skip, ptrdiff_t cin,
                          ptrdiff_t *pix, int assign)
{
#if FC_HAVE_X86_TARGETS
    const fc_dgrad_kernel_t *table = v == 2 ? fc_dgrad_2 : fc_dgrad_1;
    const fc_dgrad_list_kernel_t *list = v == 2 ? fc_dgrad_list_2 : fc_dgrad_list_1;
    ptrdiff_t width = 16 * v, n_blk = channels / width;
    ptrdiff_t b, blk, pa, pb, cx0, cx1, p, oy, ox, seg, i, lo, hi, n = 0;
    ptrdiff_t listed[4] = {-1, -1, -1, -1};  /* the window whose pixels ``pix`` lists */
    for (b = 0; b < nblocks; b++) {
        const ptrdiff_t *d = blocks + 6 * b;
        pa = p0;
        pb = p0 + count;
        cx0 = 0;
        cx1 = out_w;
        if (skip) {
            pa = d[2] * out_w > pa ? d[2] * out_w : pa;
            pb = d[3] * out_w < pb ? d[3] * out_w : pb;
            cx0 = d[4];
            cx1 = d[5];
        }
        if (pa >= pb || cx0 >= cx1) {
            if (assign)
                for (i = 0; i < d[1]; i++)
                    memset(out + oo[d[0] + i], 0, channels * sizeof(float));
            continue;
        }
        if (cin <= 0) {
            for (blk = 0; blk < n_blk; blk++)
                table[d[1]](stage, off + d[0], out_w, row_step, pa, pb - pa,
                            gyt + (pa - p0) * channels + blk * width, channels,
                            out + blk * width, channels, oo + d[0], cx0, cx1, assign);
            continue;
        }
        if (pa != listed[0] || pb != listed[1] || cx0 != listed[2] || cx1 != listed[3]) {
            listed[0] = pa;
            listed[1] = pb;
            listed[2] = cx0;
            listed[3] = cx1;
            n = 0;
            for (p = pa; p < pb; p += seg) {
                oy = p / out_w;
                ox = p - oy * out_w;
                seg = out_w - ox < pb - p ? out_w - ox : pb - p;
                lo = cx0 > ox ? cx0 - ox : 0;
                hi = cx1 - ox < seg ? cx1 - ox : seg;
                for (i = lo; i < hi; i++, n++) {
                    pix[2 * n] = (oy * row_step + ox + i) * cin;
                    pix[2 * n + 1] = (p + i - p0) * channels;
                }
            }
        }
        for (blk = 0; blk < n_blk; blk++)
            list[d[1]](stage + off[d[0]], pix, n, gyt + blk * width, out + blk * width,
                       oo + d[0], assign);
    }
#else
    (void)stage; (void)blocks; (void)nblocks; (void)off; (void)oo; (void)channels; (void)v;
    (void)out_w; (void)row_step; (void)p0; (void)count; (void)gyt; (void)out; (void)skip;
    (void)cin; (void)pix; (void)assign;
#endif
}

/* stage_t[pos*cin + c] = stage[c*plane + pos] for pos < plane, c < cin: a stage transposed
 * channel-minor for fc_dgrad_tile (by src/_gemm.h's register transposes) */
static void fc_dgrad_stage_t(const float *stage, ptrdiff_t plane, ptrdiff_t cin,
                             float *stage_t)
{
#if FC_HAVE_X86_TARGETS
    fc_stranspose_avx2(stage, plane, cin, plane, stage_t, cin);
#else
    (void)stage; (void)plane; (void)cin; (void)stage_t;
#endif
}

#if FC_HAVE_X86_TARGETS
/* sums[j*lds + o] = 0 + src[c*row + j*ld + o] added for c = 0 .. chunks - 1 in order */
__attribute__((target("avx512f"))) static void
fc_dgrad_add_chunks(const float *src, ptrdiff_t chunks, ptrdiff_t row, ptrdiff_t ld,
                    ptrdiff_t taps, ptrdiff_t width, float *sums, ptrdiff_t lds)
{
    ptrdiff_t j, o, c;
    for (j = 0; j < taps; j++) {
        const float *s = src + j * ld;
        float *d = sums + j * lds;
        for (o = 0; o + 64 <= width; o += 64) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (c = 0; c < chunks; c++) {
                const float *e = s + c * row + o;
                a0 = _mm512_add_ps(a0, _mm512_loadu_ps(e));
                a1 = _mm512_add_ps(a1, _mm512_loadu_ps(e + 16));
                a2 = _mm512_add_ps(a2, _mm512_loadu_ps(e + 32));
                a3 = _mm512_add_ps(a3, _mm512_loadu_ps(e + 48));
            }
            _mm512_storeu_ps(d + o, a0);
            _mm512_storeu_ps(d + o + 16, a1);
            _mm512_storeu_ps(d + o + 32, a2);
            _mm512_storeu_ps(d + o + 48, a3);
        }
        for (; o < width; o += 16) {
            __m512 a = _mm512_setzero_ps();
            for (c = 0; c < chunks; c++)
                a = _mm512_add_ps(a, _mm512_loadu_ps(s + c * row + o));
            _mm512_storeu_ps(d + o, a);
        }
    }
}
#endif

/* The chunks' partial sums of a run of ``taps`` taps by ``width`` channels (a multiple of 16)
 * of the weight gradient, tap-major (src: the first, ``ld`` floats a tap, chunk c ``row``
 * floats on), each added to 0 chunk by chunk in order (np.add.reduce's bits) in ``sums``
 * (``lds`` floats a tap), then transposed into out[o*k + j] (the weights' layout) by
 * src/_gemm.h's register transposes */
static void fc_dgrad_sum_chunks(const float *src, ptrdiff_t chunks, ptrdiff_t row,
                                ptrdiff_t ld, ptrdiff_t taps, ptrdiff_t width, float *sums,
                                ptrdiff_t lds, float *out, ptrdiff_t k)
{
#if FC_HAVE_X86_TARGETS
    fc_dgrad_add_chunks(src, chunks, row, ld, taps, width, sums, lds);
    fc_stranspose_avx2(sums, lds, taps, width, out, k);
#else
    (void)src; (void)chunks; (void)row; (void)ld; (void)taps; (void)width; (void)sums;
    (void)lds; (void)out; (void)k;
#endif
}

/* whether any of x[0 .. n) (n a multiple of 16) is an inf or a NaN */
static int fc_direct_any_nonfinite(const float *x, ptrdiff_t n)
{
#if FC_HAVE_X86_TARGETS
    return fc_direct_nonfinite(x, n);
#else
    (void)x; (void)n;
    return 1;
#endif
}

/* The weight gradient's sums of ``taps`` consecutive taps (at most the micro-kernel's: 12 for
 * v = 2, 24 for v = 1) and one block of 16 * v channels over the pixels [p0, p0 + count) of one
 * (sample, group), added to out[r*ldo + j] once: ``off`` the taps' stage offsets, ``gyt``
 * grad_output of the block's channels from pixel p0 on, pixel-major with row stride ldg. */
static void fc_dgrad_unit(const float *stage, const ptrdiff_t *off, ptrdiff_t taps, int v,
                          ptrdiff_t out_w, ptrdiff_t row_step, ptrdiff_t p0, ptrdiff_t count,
                          const float *gyt, ptrdiff_t ldg, float *out, ptrdiff_t ldo)
{
#if FC_HAVE_X86_TARGETS
    (v == 2 ? fc_dgrad_2 : fc_dgrad_1)[taps](stage, off, out_w, row_step, p0, count, gyt,
                                             ldg, out, ldo, NULL, 0, out_w, 0);
#else
    (void)stage; (void)off; (void)taps; (void)v; (void)out_w; (void)row_step; (void)p0;
    (void)count; (void)gyt; (void)ldg; (void)out; (void)ldo;
#endif
}

/* gyt[i*channels + o] = gy[o*plane + i] for i < count, o < channels */
static void fc_direct_load(const float *gy, ptrdiff_t plane, ptrdiff_t channels,
                           ptrdiff_t count, float *gyt)
{
#if FC_HAVE_X86_TARGETS
    fc_stranspose_avx2(gy, plane, channels, count, gyt, channels);
#else
    (void)gy; (void)plane; (void)channels; (void)count; (void)gyt;
#endif
}

/* ---- depthwise convolutions (one input channel per group, multiplier 1), float32 ------------
 * 16 channels across the lanes: a thread copies the planes of 16 channels of one sample into a
 * zero-padded, pixel-major stage (xs[py][px][16], pw columns; fc_dwd_stage_in, by 8 x 8
 * register transposes), where every tap of 16 neighbouring outputs is one vector. Per output
 * vector the k taps are k FMAs from 0 in (p, q) order, then the bias; the weight gradient sums
 * a sample's pixels per tap in registers, in (oy, ox) order, then adds that to the running
 * sums; the input gradient adds each output's k contributions, in (oy, ox, tap) order, into a
 * zeroed stage (fc_dwd_igrad), which fc_dwd_stage_out transposes back. The forward pass and
 * the weight gradient multiply the stage's padding zeros like any input (an inf or NaN weight
 * or gradient times a padded zero is NaN, as in PyTorch); the input gradient never meets the
 * padding. Results depend on the shapes only. */
#define FC_DWD_MR 8
#define FC_DWD_TAPS 12

typedef void (*fc_dwd_kernel_t)(const float *, ptrdiff_t, const ptrdiff_t *, ptrdiff_t,
                                const float *, const float *, float *);

#if FC_HAVE_X86_TARGETS
/* out[r*16 + l] = sum_t src[off[t] + r*step + l] * w[t*16 + l] (+ bias[l]), r < MR */
#define FC_DWD_FORWARD(NAME, MR)                                                             \
    __attribute__((target("avx512f"))) static void                                           \
    NAME(const float *src, ptrdiff_t step, const ptrdiff_t *off, ptrdiff_t taps,             \
         const float *w, const float *bias, float *out)                                      \
    {                                                                                        \
        __m512 acc[MR], wv;                                                                  \
        ptrdiff_t t;                                                                         \
        int r;                                                                               \
        _Pragma("GCC unroll 8") for (r = 0; r < MR; r++) acc[r] = _mm512_setzero_ps();       \
        for (t = 0; t < taps; t++) {                                                         \
            const float *s = src + off[t];                                                   \
            wv = _mm512_loadu_ps(w + 16 * t);                                                \
            _Pragma("GCC unroll 8") for (r = 0; r < MR; r++)                                 \
                acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(s + r * step), wv, acc[r]);         \
        }                                                                                    \
        _Pragma("GCC unroll 8") for (r = 0; r < MR; r++) {                                   \
            __m512 v = acc[r];                                                               \
            if (bias)                                                                        \
                v = _mm512_add_ps(v, _mm512_loadu_ps(bias));                                 \
            _mm512_storeu_ps(out + 16 * r, v);                                               \
        }                                                                                    \
    }
FC_DWD_FORWARD(fc_dwd_fwd_1, 1)
FC_DWD_FORWARD(fc_dwd_fwd_2, 2)
FC_DWD_FORWARD(fc_dwd_fwd_3, 3)
FC_DWD_FORWARD(fc_dwd_fwd_4, 4)
FC_DWD_FORWARD(fc_dwd_fwd_5, 5)
FC_DWD_FORWARD(fc_dwd_fwd_6, 6)
FC_DWD_FORWARD(fc_dwd_fwd_7, 7)
FC_DWD_FORWARD(fc_dwd_fwd_8, 8)
static const fc_dwd_kernel_t fc_dwd_fwd[FC_DWD_MR + 1] = {
    NULL, fc_dwd_fwd_1, fc_dwd_fwd_2, fc_dwd_fwd_3, fc_dwd_fwd_4, fc_dwd_fwd_5, fc_dwd_fwd_6,
    fc_dwd_fwd_7, fc_dwd_fwd_8};

/* sums[t*16 + l] += sum over the output pixels (in order) of xs[pix + off[t] + l] *
 * gyt[p*16 + l], taps t0 <= t < t0 + count (count <= FC_DWD_TAPS) held in registers */
__attribute__((target("avx512f"))) static void
fc_dwd_wgrad_block(const float *xs, ptrdiff_t row_step, ptrdiff_t step, ptrdiff_t out_h,
                   ptrdiff_t out_w, const ptrdiff_t *off, ptrdiff_t count, const float *gyt,
                   float *sums)
{
    __m512 acc[FC_DWD_TAPS], g;
    ptrdiff_t oy, ox;
    int t;
    _Pragma("GCC unroll 12") for (t = 0; t < FC_DWD_TAPS; t++) acc[t] = _mm512_setzero_ps();
    for (oy = 0; oy < out_h; oy++) {
        const float *base = xs + oy * row_step;
        for (ox = 0; ox < out_w; ox++) {
            g = _mm512_loadu_ps(gyt);
            _Pragma("GCC unroll 12") for (t = 0; t < FC_DWD_TAPS; t++)
                if (t < count)
                    acc[t] = _mm512_fmadd_ps(_mm512_loadu_ps(base + off[t]), g, acc[t]);
            gyt += 16;
            base += step;
        }
    }
    _Pragma("GCC unroll 12") for (t = 0; t < FC_DWD_TAPS; t++)
        if (t < count)
            _mm512_storeu_ps(sums + 16 * t, _mm512_add_ps(_mm512_loadu_ps(sums + 16 * t),
                                                          acc[t]));
}

/* gxs[pix + off[t] + l] += gyt[p*16 + l] * w[t*16 + l] for every output pixel p (in order)
 * and tap t (in order): the input gradient's scatter into a zeroed stage */
__attribute__((target("avx512f"))) static void
fc_dwd_igrad(float *gxs, ptrdiff_t row_step, ptrdiff_t step, ptrdiff_t out_h, ptrdiff_t out_w,
             const ptrdiff_t *off, ptrdiff_t taps, const float *w, const float *gyt)
{
    ptrdiff_t oy, ox, t;
    for (oy = 0; oy < out_h; oy++) {
        float *base = gxs + oy * row_step;
        for (ox = 0; ox < out_w; ox++) {
            __m512 g = _mm512_loadu_ps(gyt);
            for (t = 0; t < taps; t++) {
                float *d = base + off[t];
                _mm512_storeu_ps(d, _mm512_fmadd_ps(g, _mm512_loadu_ps(w + 16 * t),
                                                    _mm512_loadu_ps(d)));
            }
            gyt += 16;
            base += step;
        }
    }
}
#else
/* (without x86 targets the direct kernels never run: fc_direct_init() is 0; the wrappers
 * still link against every name) */
static void fc_dwd_igrad(float *gxs, ptrdiff_t row_step, ptrdiff_t step, ptrdiff_t out_h,
                         ptrdiff_t out_w, const ptrdiff_t *off, ptrdiff_t taps, const float *w,
                         const float *gyt)
{
    (void)gxs; (void)row_step; (void)step; (void)out_h; (void)out_w; (void)off; (void)taps;
    (void)w; (void)gyt;
}
#endif

/* The output planes of 16 channels from the stage: y[l*plane + p] for output pixel p, lane l,
 * through ys (out_h*out_w x 16, pixel-major). off: the k tap offsets in the stage (in
 * floats), step = stride_w*16, row_step = stride_h*pw*16; w: the weights as [tap][16];
 * relu: the fused ReLU on the sums. */
static void fc_dwd_forward(const float *xs, ptrdiff_t row_step, ptrdiff_t step,
                           ptrdiff_t out_h, ptrdiff_t out_w, const ptrdiff_t *off,
                           ptrdiff_t taps, const float *w, const float *bias, float *ys,
                           float *y, ptrdiff_t plane, int relu)
{
#if FC_HAVE_X86_TARGETS
    ptrdiff_t oy, runs, r, first, last;
    runs = (out_w + FC_DWD_MR - 1) / FC_DWD_MR;
    for (oy = 0; oy < out_h; oy++)
        for (r = 0; r < runs; r++) {
            first = out_w * r / runs;
            last = out_w * (r + 1) / runs;
            fc_dwd_fwd[last - first](xs + oy * row_step + first * step, step, off, taps, w, bias,
                                     ys + (oy * out_w + first) * 16);
        }
    if (relu)  /* the fused ReLU (src/_epilogue.h) on the sums, before they leave the tile */
        fc_srelu_rows(ys, 1, out_h * out_w * 16, out_h * out_w * 16);
    fc_direct_store(ys, 16, out_h * out_w, y, plane);
#else
    (void)xs; (void)row_step; (void)step; (void)out_h; (void)out_w; (void)off; (void)taps;
    (void)w; (void)bias; (void)ys; (void)y; (void)plane; (void)relu;
#endif
}

/* sums[t*16 + l] += the sample's contribution to the weight gradient of tap t, lane l, with
 * gyt = its grad_output planes of the 16 channels, pixel-major (fc_direct_load) */
static void fc_dwd_wgrad(const float *xs, ptrdiff_t row_step, ptrdiff_t step, ptrdiff_t out_h,
                         ptrdiff_t out_w, const ptrdiff_t *off, ptrdiff_t taps,
                         const float *gyt, float *sums)
{
#if FC_HAVE_X86_TARGETS
    ptrdiff_t blocks = (taps + FC_DWD_TAPS - 1) / FC_DWD_TAPS, b, first, last;
    for (b = 0; b < blocks; b++) {
        first = taps * b / blocks;
        last = taps * (b + 1) / blocks;
        fc_dwd_wgrad_block(xs, row_step, step, out_h, out_w, off + first, last - first, gyt,
                           sums + 16 * first);
    }
#else
    (void)xs; (void)row_step; (void)step; (void)out_h; (void)out_w; (void)off; (void)taps;
    (void)gyt; (void)sums;
#endif
}

/* xs[((iy + pad_top)*pw + ix + pad_left)*16 + l] = x[l*plane + iy*in_w + ix] for the input
 * pixels inside the stage's rows x pw (the rest of xs, its padding, is left as it is). Both
 * halves of 8 channels per 8 pixels, so that each pixel's 64-byte line is written whole: the
 * general fc_stranspose_avx2 (one half across the row, then the other) made the depthwise
 * forward pass 8-10% slower. */
static void fc_dwd_stage_in(const float *x, ptrdiff_t plane, ptrdiff_t in_h, ptrdiff_t in_w,
                            ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t rows, ptrdiff_t pw,
                            float *xs)
{
    ptrdiff_t h = rows - pad_top < in_h ? rows - pad_top : in_h;
    ptrdiff_t w = pw - pad_left < in_w ? pw - pad_left : in_w;
    ptrdiff_t iy, ix, l;
    for (iy = 0; iy < h; iy++) {
        const float *src = x + iy * in_w;
        float *dst = xs + ((iy + pad_top) * pw + pad_left) * 16;
        ix = 0;
#if FC_HAVE_X86_TARGETS
        for (; ix + 8 <= w; ix += 8) {
            fc_stranspose8x8_avx2(src + ix, plane, dst + ix * 16, 16);
            fc_stranspose8x8_avx2(src + 8 * plane + ix, plane, dst + ix * 16 + 8, 16);
        }
#endif
        for (; ix < w; ix++)
            for (l = 0; l < 16; l++)
                dst[ix * 16 + l] = src[l * plane + ix];
    }
}

/* gx[l*plane + iy*in_w + ix] = gxs[((iy + pad_top)*pw + ix + pad_left)*16 + l] inside the
 * stage, 0 for the input pixels past it (no window reaches them) */
static void fc_dwd_stage_out(const float *gxs, ptrdiff_t plane, ptrdiff_t in_h, ptrdiff_t in_w,
                             ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t rows,
                             ptrdiff_t pw, float *gx)
{
    ptrdiff_t h = rows - pad_top < in_h ? rows - pad_top : in_h;
    ptrdiff_t w = pw - pad_left < in_w ? pw - pad_left : in_w;
    ptrdiff_t iy, ix, l;
    if (h < 0)
        h = 0;
    if (w < 0)
        w = 0;
    for (iy = 0; iy < in_h; iy++) {
        float *dst = gx + iy * in_w;
        const float *src = gxs + ((iy + pad_top) * pw + pad_left) * 16;
        ix = 0;
        if (iy < h) {
#if FC_HAVE_X86_TARGETS
            for (; ix + 8 <= w; ix += 8) {
                fc_stranspose8x8_avx2(src + ix * 16, 16, dst + ix, plane);
                fc_stranspose8x8_avx2(src + ix * 16 + 8, 16, dst + 8 * plane + ix, plane);
            }
#endif
            for (; ix < w; ix++)
                for (l = 0; l < 16; l++)
                    dst[l * plane + ix] = src[ix * 16 + l];
        }
        for (; ix < in_w; ix++)
            for (l = 0; l < 16; l++)
                dst[l * plane + ix] = 0;
    }
}

#endif
