/* The convolutions' fused epilogue: ReLU applied where a kernel stores its sums.
 *
 * FC_RELU(v) is exactly what fastconv.nn.ReLU computes, numpy.maximum(v, 0): v where v > 0
 * or v is NaN (the NaN itself, payload kept), +0 everywhere else (so -0 becomes +0, as
 * numpy's maximum gives). Applied to the very sums the unfused convolution stores (after the
 * bias, in the same order), the fused result is bit-identical to relu(conv(x)).
 *
 * The kernels call it on blocks they have just stored (an MR x NR block of C, a run of the
 * direct kernels' pixel-major sums, one depthwise plane), so the values are still in L1: the
 * unfused ReLU's second pass over the whole output in memory is gone. One code for every
 * FASTCONV_ISA (the baseline's vectors, see fc_srelu_rows): cheap next to the convolution
 * that produced the block, and the same bits from every build. */
#ifndef FASTCONV_EPILOGUE_H
#define FASTCONV_EPILOGUE_H

#include <stddef.h>

#define FC_RELU(T, v) (((v) > (T)0 || (v) != (v)) ? (v) : (T)0)

#if defined(__SSE2__)
#include <emmintrin.h>
#define FC_EPILOGUE_SSE2 1
#else
#define FC_EPILOGUE_SSE2 0
#endif

/* p[r*ld + j] = FC_RELU(p[r*ld + j]) for r < rows, j < cols. On x86-64 by SSE2 (every x86-64
 * CPU has it, so every FASTCONV_ISA level runs this same code): max(v, 0) gives v where v > 0
 * and +0 elsewhere, NaN included (maxps returns its second operand when either is NaN, or
 * when both are zeros); an unordered compare puts the NaNs back. Branch-free: the signs of
 * a convolution's sums are random, and a branch per element mispredicts half the time (8x
 * slower on the packed GEMM's 8 x 16 blocks, measured). */
static inline void fc_srelu_rows(float *p, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld)
{
    ptrdiff_t r, j;
    for (r = 0; r < rows; r++) {
        float *row = p + r * ld;
        j = 0;
#if FC_EPILOGUE_SSE2
        {
            const __m128 zero = _mm_setzero_ps();
            for (; j + 4 <= cols; j += 4) {
                __m128 v = _mm_loadu_ps(row + j);
                __m128 nan = _mm_cmpunord_ps(v, v);
                __m128 m = _mm_max_ps(v, zero);
                _mm_storeu_ps(row + j, _mm_or_ps(_mm_and_ps(nan, v), _mm_andnot_ps(nan, m)));
            }
        }
#endif
        for (; j < cols; j++) {
            float v = row[j];
            row[j] = FC_RELU(float, v);
        }
    }
}

static inline void fc_drelu_rows(double *p, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld)
{
    ptrdiff_t r, j;
    for (r = 0; r < rows; r++) {
        double *row = p + r * ld;
        j = 0;
#if FC_EPILOGUE_SSE2
        {
            const __m128d zero = _mm_setzero_pd();
            for (; j + 2 <= cols; j += 2) {
                __m128d v = _mm_loadu_pd(row + j);
                __m128d nan = _mm_cmpunord_pd(v, v);
                __m128d m = _mm_max_pd(v, zero);
                _mm_storeu_pd(row + j, _mm_or_pd(_mm_and_pd(nan, v), _mm_andnot_pd(nan, m)));
            }
        }
#endif
        for (; j < cols; j++) {
            double v = row[j];
            row[j] = FC_RELU(double, v);
        }
    }
}

#endif
