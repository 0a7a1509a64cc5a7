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
 * FASTCONV_ISA (the baseline's vectors, see FC_RELU_ROWS): cheap next to the convolution
 * that produced the block, and the same bits from every build. */
#ifndef FASTCONV_EPILOGUE_H
#define FASTCONV_EPILOGUE_H

#include <stddef.h>

#define FC_RELU(T, v) (((v) > (T)0 || (v) != (v)) ? (v) : (T)0)

#include "_simd.h"

/* p[r*ld + j] = FC_RELU(p[r*ld + j]) for r < rows, j < cols, in 16-byte vectors of the
 * portable kind (src/_simd.h: SSE2 on every x86-64 CPU, so every FASTCONV_ISA level runs this
 * same code; NEON on aarch64). Branch-free: the signs of a convolution's sums are random, and a
 * branch per element mispredicts half the time (8x slower on the packed GEMM's 8 x 16 blocks,
 * measured). A lane keeps its bits where v > 0 or v != v (NaN, payload kept) and becomes all
 * zero bits (+0) elsewhere: exactly FC_RELU. The tail runs FC_RELU itself. */
#if FC_SIMD
#define FC_RELU_ROWS(PREFIX, T, V, W)                                                         \
    static inline void PREFIX##relu_rows(T *p, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld) \
    {                                                                                        \
        const V zero = {0};                                                                  \
        /* the tail counted from cols % W (GCC 12 -O3 warned of a bogus iteration count in */ \
        /* it when cols was a constant multiple of W) */                                     \
        const ptrdiff_t whole = cols - cols % W;                                             \
        ptrdiff_t r, j;                                                                      \
        for (r = 0; r < rows; r++) {                                                         \
            T *row = p + r * ld;                                                             \
            for (j = 0; j < whole; j += W) {                                                 \
                V v;                                                                         \
                __builtin_memcpy(&v, row + j, sizeof v);                                     \
                {   /* the comparisons' lanes: all ones (keep) or all zeros */               \
                    __typeof__(v > zero) keep = (v > zero) | (v != v);                       \
                    v = (V)((__typeof__(keep))v & keep);                                     \
                }                                                                            \
                __builtin_memcpy(row + j, &v, sizeof v);                                     \
            }                                                                                \
            for (j = whole; j < cols; j++) {                                                 \
                T v = row[j];                                                                \
                row[j] = FC_RELU(T, v);                                                      \
            }                                                                                \
        }                                                                                    \
    }
FC_RELU_ROWS(fc_s, float, fc_v4f, 4)
FC_RELU_ROWS(fc_d, double, fc_v2d, 2)
#else
#define FC_RELU_ROWS(PREFIX, T)                                                               \
    static inline void PREFIX##relu_rows(T *p, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld) \
    {                                                                                        \
        ptrdiff_t r, j;                                                                      \
        for (r = 0; r < rows; r++)                                                           \
            for (j = 0; j < cols; j++) {                                                     \
                T v = p[r * ld + j];                                                         \
                p[r * ld + j] = FC_RELU(T, v);                                               \
            }                                                                                \
    }
FC_RELU_ROWS(fc_s, float)
FC_RELU_ROWS(fc_d, double)
#endif

#endif
