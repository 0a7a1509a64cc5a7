/* The convolutions' fused epilogue: ReLU applied where a kernel stores its sums.
 *
 * FC_RELU(v) is exactly what fastconv.nn.ReLU computes, numpy.maximum(v, 0): v where v > 0
 * or v is NaN (the NaN itself, payload kept), +0 everywhere else (so -0 becomes +0, as
 * numpy's maximum gives). Applied to the very sums the unfused convolution stores (after the
 * bias, in the same order), the fused result is bit-identical to relu(conv(x)).
 *
 * The kernels call it on blocks they have just stored (an MR x NR block of C, a run of the
 * direct kernels' pixel-major sums, one depthwise plane), so the values are still in L1: the
 * unfused ReLU's second pass over the whole output in memory is gone. Plain C on purpose:
 * gcc vectorises the loop for the baseline ISA (a compare, an unordered compare and a blend
 * per vector), which is cheap next to the convolution that produced the block, and the same
 * code runs under every FASTCONV_ISA, so every build gives the same bits. */
#ifndef FASTCONV_EPILOGUE_H
#define FASTCONV_EPILOGUE_H

#include <stddef.h>

#define FC_RELU(T, v) (((v) > (T)0 || (v) != (v)) ? (v) : (T)0)

/* p[r*ld + j] = FC_RELU(p[r*ld + j]) for r < rows, j < cols */
static inline void fc_srelu_rows(float *p, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld)
{
    ptrdiff_t r, j;
    for (r = 0; r < rows; r++) {
        float *row = p + r * ld;
        for (j = 0; j < cols; j++) {
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
        for (j = 0; j < cols; j++) {
            double v = row[j];
            row[j] = FC_RELU(double, v);
        }
    }
}

#endif
