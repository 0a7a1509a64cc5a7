/* Direct convolution against the staged input (src/_conv.pyx, stage_input), float32 only:
 * output channels across the lanes of 512-bit vectors, output pixels broadcast.
 *
 * For a run of MR consecutive output pixels of one output row and a block of 16*V output
 * channels, a micro-kernel keeps the MR x 16V sums in registers over all k taps:
 *
 *     out[r*ldo + j] = sum_kk src[off[kk] + r] * w[kk*16V + j]     (+ bias[j])
 *
 * where ``src`` is the stage at the run's first pixel and off[kk] the stage offset of tap kk
 * (channel, row, column; the column phases of a strided stage make the run's pixels
 * consecutive there too). Every input value is read from the stage in place: there is no
 * im2col block, and no lane is wasted on the edge of a narrow output row, which is why this
 * beats im2col + GEMM on small images with 16, 32, 64 ... output channels (LeNet-sized
 * layers). The sums come out pixel-major; fc_direct_store transposes them into the
 * channel-major output by 8 x 8 register transposes.
 *
 * Each output element is the same chain of FMAs from 0 over kk = 0 .. k-1 (then the bias)
 * whoever computes it: results depend on the shapes only. The kernels need AVX-512F (and the
 * AVX2 transposes of src/_gemm.h); fc_direct_init says whether this CPU has them.
 */
#ifndef FASTCONV_DIRECT_H
#define FASTCONV_DIRECT_H

#include <stddef.h>

#include "_gemm.h"

/* Pixels per micro-kernel call: V = 2 (32 channels) keeps 2*MR accumulators, V = 1 keeps MR,
 * in AVX-512's 32 vector registers, with the weights and a broadcast beside them. */
#define FC_DIRECT_MR2 12
#define FC_DIRECT_MR1 24

typedef void (*fc_direct_kernel_t)(ptrdiff_t, const float *, const ptrdiff_t *, const float *,
                                   float *, ptrdiff_t, const float *);

static int fc_direct_ok = 0;

#if FC_GEMM_X86
#define FC_DIRECT_KERNEL(NAME, MR, V)                                                        \
    __attribute__((target("avx512f"))) static void                                           \
    NAME(ptrdiff_t k, const float *src, const ptrdiff_t *off, const float *w, float *out,    \
         ptrdiff_t ldo, const float *bias)                                                   \
    {                                                                                        \
        __m512 acc[MR][V], wv[V], b;                                                         \
        ptrdiff_t kk;                                                                        \
        int r, v;                                                                            \
        _Pragma("GCC unroll 24") for (r = 0; r < MR; r++)                                    \
            _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                  \
                acc[r][v] = _mm512_setzero_ps();                                             \
        for (kk = 0; kk < k; kk++) {                                                         \
            const float *s = src + off[kk];                                                  \
            _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                  \
                wv[v] = _mm512_load_ps(w + 16 * v);                                          \
            _Pragma("GCC unroll 24") for (r = 0; r < MR; r++) {                              \
                b = _mm512_set1_ps(s[r]);                                                    \
                _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                              \
                    acc[r][v] = _mm512_fmadd_ps(b, wv[v], acc[r][v]);                        \
            }                                                                                \
            w += 16 * V;                                                                     \
        }                                                                                    \
        _Pragma("GCC unroll 24") for (r = 0; r < MR; r++)                                    \
            _Pragma("GCC unroll 2") for (v = 0; v < V; v++) {                                \
                __m512 x = acc[r][v];                                                        \
                if (bias)                                                                    \
                    x = _mm512_add_ps(x, _mm512_loadu_ps(bias + 16 * v));                    \
                _mm512_storeu_ps(out + r * ldo + 16 * v, x);                                 \
            }                                                                                \
    }

#define FC_DIRECT_KERNELS_1_TO_12(V)                                                         \
    FC_DIRECT_KERNEL(fc_direct_##V##_1, 1, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_2, 2, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_3, 3, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_4, 4, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_5, 5, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_6, 6, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_7, 7, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_8, 8, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_9, 9, V)                                                \
    FC_DIRECT_KERNEL(fc_direct_##V##_10, 10, V)                                              \
    FC_DIRECT_KERNEL(fc_direct_##V##_11, 11, V)                                              \
    FC_DIRECT_KERNEL(fc_direct_##V##_12, 12, V)

FC_DIRECT_KERNELS_1_TO_12(2)
FC_DIRECT_KERNELS_1_TO_12(1)
FC_DIRECT_KERNEL(fc_direct_1_13, 13, 1)
FC_DIRECT_KERNEL(fc_direct_1_14, 14, 1)
FC_DIRECT_KERNEL(fc_direct_1_15, 15, 1)
FC_DIRECT_KERNEL(fc_direct_1_16, 16, 1)
FC_DIRECT_KERNEL(fc_direct_1_17, 17, 1)
FC_DIRECT_KERNEL(fc_direct_1_18, 18, 1)
FC_DIRECT_KERNEL(fc_direct_1_19, 19, 1)
FC_DIRECT_KERNEL(fc_direct_1_20, 20, 1)
FC_DIRECT_KERNEL(fc_direct_1_21, 21, 1)
FC_DIRECT_KERNEL(fc_direct_1_22, 22, 1)
FC_DIRECT_KERNEL(fc_direct_1_23, 23, 1)
FC_DIRECT_KERNEL(fc_direct_1_24, 24, 1)

/* [mr] -> the micro-kernel of mr pixels */
static const fc_direct_kernel_t fc_direct2[FC_DIRECT_MR2 + 1] = {
    NULL, fc_direct_2_1, fc_direct_2_2, fc_direct_2_3, fc_direct_2_4, fc_direct_2_5,
    fc_direct_2_6, fc_direct_2_7, fc_direct_2_8, fc_direct_2_9, fc_direct_2_10,
    fc_direct_2_11, fc_direct_2_12};
static const fc_direct_kernel_t fc_direct1[FC_DIRECT_MR1 + 1] = {
    NULL, fc_direct_1_1, fc_direct_1_2, fc_direct_1_3, fc_direct_1_4, fc_direct_1_5,
    fc_direct_1_6, fc_direct_1_7, fc_direct_1_8, fc_direct_1_9, fc_direct_1_10,
    fc_direct_1_11, fc_direct_1_12, fc_direct_1_13, fc_direct_1_14, fc_direct_1_15,
    fc_direct_1_16, fc_direct_1_17, fc_direct_1_18, fc_direct_1_19, fc_direct_1_20,
    fc_direct_1_21, fc_direct_1_22, fc_direct_1_23, fc_direct_1_24};
#endif

/* The weight gradient's micro-kernel: for R taps and a block of 16*V output channels, the
 * sums over the pixels [p0, p0 + count) of one (sample, group),
 *
 *     out[r*ldo + j] += sum_i stage[pix(i) + off[r]] * gyt[(i - p0)*ldg + j]
 *
 * kept in R x V registers over the whole tile (pix(i) = oy*row_step + ox for pixel i = (oy,
 * ox)), then added to ``out`` once: grad_output's tile, transposed pixel-major (gyt), is read
 * a vector at a time, the input values broadcast from the stage in place. */
#if FC_GEMM_X86
#define FC_DGRAD_KERNEL(NAME, R, V)                                                          \
    __attribute__((target("avx512f"))) static void                                           \
    NAME(const float *stage, const ptrdiff_t *off, ptrdiff_t out_w, ptrdiff_t row_step,      \
         ptrdiff_t p0, ptrdiff_t count, const float *gyt, ptrdiff_t ldg, float *out,         \
         ptrdiff_t ldo)                                                                      \
    {                                                                                        \
        __m512 acc[R][V], gv[V], b;                                                          \
        const float *s[R];                                                                   \
        const float *g = gyt;                                                                \
        ptrdiff_t p = p0, end = p0 + count, oy, ox, seg, i;                                  \
        int r, v;                                                                            \
        _Pragma("GCC unroll 24") for (r = 0; r < R; r++)                                     \
            _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                                  \
                acc[r][v] = _mm512_setzero_ps();                                             \
        while (p < end) {                                                                    \
            oy = p / out_w;                                                                  \
            ox = p - oy * out_w;                                                             \
            seg = out_w - ox < end - p ? out_w - ox : end - p;                               \
            _Pragma("GCC unroll 24") for (r = 0; r < R; r++)                                 \
                s[r] = stage + oy * row_step + ox + off[r];                                  \
            for (i = 0; i < seg; i++) {                                                      \
                _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                              \
                    gv[v] = _mm512_loadu_ps(g + 16 * v);                                     \
                _Pragma("GCC unroll 24") for (r = 0; r < R; r++) {                           \
                    b = _mm512_set1_ps(s[r][i]);                                             \
                    _Pragma("GCC unroll 2") for (v = 0; v < V; v++)                          \
                        acc[r][v] = _mm512_fmadd_ps(b, gv[v], acc[r][v]);                    \
                }                                                                            \
                g += ldg;                                                                    \
            }                                                                                \
            p += seg;                                                                        \
        }                                                                                    \
        _Pragma("GCC unroll 24") for (r = 0; r < R; r++)                                     \
            _Pragma("GCC unroll 2") for (v = 0; v < V; v++) {                                \
                float *o = out + r * ldo + 16 * v;                                           \
                _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc[r][v]));           \
            }                                                                                \
    }

typedef void (*fc_dgrad_kernel_t)(const float *, const ptrdiff_t *, ptrdiff_t, ptrdiff_t,
                                  ptrdiff_t, ptrdiff_t, const float *, ptrdiff_t, float *,
                                  ptrdiff_t);

#define FC_DGRAD_KERNELS_1_TO_12(V)                                                          \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_1, 1, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_2, 2, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_3, 3, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_4, 4, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_5, 5, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_6, 6, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_7, 7, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_8, 8, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_9, 9, V)                                                  \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_10, 10, V)                                                \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_11, 11, V)                                                \
    FC_DGRAD_KERNEL(fc_dgrad_##V##_12, 12, V)

FC_DGRAD_KERNELS_1_TO_12(2)
FC_DGRAD_KERNELS_1_TO_12(1)
FC_DGRAD_KERNEL(fc_dgrad_1_13, 13, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_14, 14, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_15, 15, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_16, 16, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_17, 17, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_18, 18, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_19, 19, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_20, 20, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_21, 21, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_22, 22, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_23, 23, 1)
FC_DGRAD_KERNEL(fc_dgrad_1_24, 24, 1)

/* [taps] -> the weight gradient's micro-kernel for that many taps */
static const fc_dgrad_kernel_t fc_dgrad2[FC_DIRECT_MR2 + 1] = {
    NULL, fc_dgrad_2_1, fc_dgrad_2_2, fc_dgrad_2_3, fc_dgrad_2_4, fc_dgrad_2_5, fc_dgrad_2_6,
    fc_dgrad_2_7, fc_dgrad_2_8, fc_dgrad_2_9, fc_dgrad_2_10, fc_dgrad_2_11, fc_dgrad_2_12};
static const fc_dgrad_kernel_t fc_dgrad1[FC_DIRECT_MR1 + 1] = {
    NULL, fc_dgrad_1_1, fc_dgrad_1_2, fc_dgrad_1_3, fc_dgrad_1_4, fc_dgrad_1_5, fc_dgrad_1_6,
    fc_dgrad_1_7, fc_dgrad_1_8, fc_dgrad_1_9, fc_dgrad_1_10, fc_dgrad_1_11, fc_dgrad_1_12,
    fc_dgrad_1_13, fc_dgrad_1_14, fc_dgrad_1_15, fc_dgrad_1_16, fc_dgrad_1_17, fc_dgrad_1_18,
    fc_dgrad_1_19, fc_dgrad_1_20, fc_dgrad_1_21, fc_dgrad_1_22, fc_dgrad_1_23, fc_dgrad_1_24};
#endif

/* Whether the direct kernels run here: AVX-512F and AVX2, and the packed GEMM not forced to
 * a lesser kernel (FASTCONV_GEMM_KERNEL, so that forcing AVX2 tests a pure AVX2 build). Call
 * after fc_gemm_init. */
static int fc_direct_init(void)
{
    fc_direct_ok = 0;
#if FC_GEMM_X86
    __builtin_cpu_init();
    fc_direct_ok = fc_gemm_name != NULL && strncmp(fc_gemm_name, "avx512", 6) == 0 &&
                   __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2");
#endif
    return fc_direct_ok;
}

/* Output pixels [p0, p0 + count) of one (sample, group) into tbuf (pixel-major, row stride
 * ldt = channels), for channels in blocks of 16 * v (v = 1 or 2; channels a multiple of it):
 * each output row's part cut into near-equal runs of at most the kernel's MR pixels.
 * ``stage`` is the (sample, group)'s stage, ``row_step`` the stage offset between output
 * rows (stride_h staged rows), ``wpack`` the weights as [block][kk][16v], 64-byte aligned. */
static void fc_direct_tile(const float *stage, const ptrdiff_t *off, ptrdiff_t k,
                           const float *wpack, ptrdiff_t channels, int v, ptrdiff_t out_w,
                           ptrdiff_t row_step, ptrdiff_t p0, ptrdiff_t count,
                           const float *bias, float *tbuf)
{
#if FC_GEMM_X86
    const fc_direct_kernel_t *table = v == 2 ? fc_direct2 : fc_direct1;
    ptrdiff_t mr_max = v == 2 ? FC_DIRECT_MR2 : FC_DIRECT_MR1;
    ptrdiff_t width = 16 * v, blocks = channels / width;
    ptrdiff_t p = p0, end = p0 + count, oy, ox, seg, runs, r, first, last, blk;
    while (p < end) {
        oy = p / out_w;
        ox = p - oy * out_w;
        seg = out_w - ox < end - p ? out_w - ox : end - p;
        runs = (seg + mr_max - 1) / mr_max;
        for (r = 0; r < runs; r++) {
            first = seg * r / runs;
            last = seg * (r + 1) / runs;
            for (blk = 0; blk < blocks; blk++)
                table[last - first](k, stage + oy * row_step + ox + first, off,
                                    wpack + blk * k * width, tbuf + (p - p0 + first) * channels
                                    + blk * width, channels, bias ? bias + blk * width : NULL);
        }
        p += seg;
    }
#else
    (void)stage; (void)off; (void)k; (void)wpack; (void)channels; (void)v; (void)out_w;
    (void)row_step; (void)p0; (void)count; (void)bias; (void)tbuf;
#endif
}

/* y[o*plane + i] = tbuf[i*channels + o] for i < count, o < channels: 8 x 8 register
 * transposes, the edges one element at a time */
static void fc_direct_store(const float *tbuf, ptrdiff_t channels, ptrdiff_t count, float *y,
                            ptrdiff_t plane)
{
    ptrdiff_t i = 0, o;
#if FC_GEMM_X86
    for (; i + 8 <= count; i += 8)
        for (o = 0; o + 8 <= channels; o += 8)
            fc_stranspose8x8_avx2(tbuf + i * channels + o, channels, y + o * plane + i, plane);
#endif
    for (o = 0; o < channels; o++) {
        ptrdiff_t j;
        for (j = i; j < count; j++)
            y[o * plane + j] = tbuf[j * channels + o];
    }
}


/* out[kk*channels + o] += sum over the pixels [p0, p0 + count) of one (sample, group) of
 * stage[pix(i) + off[kk]] * gy[o, i], for the k taps (near-equal blocks of at most the
 * micro-kernel's) and the channels in blocks of 16 * v: ``gyt`` is grad_output's tile
 * transposed (fc_direct_load), ``out`` the tap-major [kk][o] sums of one group. */
static void fc_dgrad_tile(const float *stage, const ptrdiff_t *off, ptrdiff_t k,
                          ptrdiff_t channels, int v, ptrdiff_t out_w, ptrdiff_t row_step,
                          ptrdiff_t p0, ptrdiff_t count, const float *gyt, float *out)
{
#if FC_GEMM_X86
    const fc_dgrad_kernel_t *table = v == 2 ? fc_dgrad2 : fc_dgrad1;
    ptrdiff_t r_max = v == 2 ? FC_DIRECT_MR2 : FC_DIRECT_MR1;
    ptrdiff_t width = 16 * v, blocks = channels / width;
    ptrdiff_t runs = (k + r_max - 1) / r_max, r, first, last, blk;
    for (r = 0; r < runs; r++) {
        first = k * r / runs;
        last = k * (r + 1) / runs;
        for (blk = 0; blk < blocks; blk++)
            table[last - first](stage, off + first, out_w, row_step, p0, count,
                                gyt + blk * width, channels, out + first * channels
                                + blk * width, channels);
    }
#else
    (void)stage; (void)off; (void)k; (void)channels; (void)v; (void)out_w; (void)row_step;
    (void)p0; (void)count; (void)gyt; (void)out;
#endif
}

/* gyt[i*channels + o] = gy[o*plane + i] for i < count, o < channels: fc_direct_store's
 * transpose the other way */
static void fc_direct_load(const float *gy, ptrdiff_t plane, ptrdiff_t channels,
                           ptrdiff_t count, float *gyt)
{
    ptrdiff_t i = 0, o;
#if FC_GEMM_X86
    for (; i + 8 <= count; i += 8)
        for (o = 0; o + 8 <= channels; o += 8)
            fc_stranspose8x8_avx2(gy + o * plane + i, plane, gyt + i * channels + o, channels);
#endif
    for (o = 0; o < channels; o++) {
        ptrdiff_t j;
        for (j = i; j < count; j++)
            gyt[j * channels + o] = gy[o * plane + j];
    }
}

#endif
