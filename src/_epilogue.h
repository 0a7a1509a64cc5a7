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
#include <stdint.h>

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

/* ReLU's backward: out[j] = grad[j] where FC_RELU keeps output[j] (output[j] > 0 or NaN), +0
 * where it zeroed it -- what fastconv.nn.ReLU.backward returns (PyTorch's threshold_backward):
 * an inf or NaN gradient becomes +0 where the unit is off, the gradient's bits (NaN payload,
 * -0) pass unchanged where it is on. The comparisons on the output and an AND of the
 * gradient's bits with their lanes, branch-free, in the portable 16-byte vectors (every
 * FASTCONV_ISA level runs the same code); the tail keeps the bits through an integer copy. */
#define FC_RELU_BACKWARD_TAIL(PREFIX, T, U)                                                   \
    static inline void PREFIX##relu_backward_tail(const T *output, const T *grad, T *out,    \
                                                  ptrdiff_t first, ptrdiff_t n)              \
    {                                                                                        \
        ptrdiff_t j;                                                                         \
        for (j = first; j < n; j++) {                                                        \
            T v = output[j];                                                                 \
            U bits = 0;                                                                      \
            if (v > (T)0 || v != v)                                                          \
                __builtin_memcpy(&bits, grad + j, sizeof bits);                              \
            __builtin_memcpy(out + j, &bits, sizeof bits);                                   \
        }                                                                                    \
    }
FC_RELU_BACKWARD_TAIL(fc_s, float, uint32_t)
FC_RELU_BACKWARD_TAIL(fc_d, double, uint64_t)

#if FC_SIMD
#define FC_RELU_BACKWARD(PREFIX, T, V, W)                                                     \
    static inline void PREFIX##relu_backward(const T *output, const T *grad, T *out,         \
                                             ptrdiff_t n)                                    \
    {                                                                                        \
        const V zero = {0};                                                                  \
        const ptrdiff_t whole = n - n % W;                                                   \
        ptrdiff_t j;                                                                         \
        for (j = 0; j < whole; j += W) {                                                     \
            V v, g;                                                                          \
            __builtin_memcpy(&v, output + j, sizeof v);                                      \
            __builtin_memcpy(&g, grad + j, sizeof g);                                        \
            {                                                                                \
                __typeof__(v > zero) keep = (v > zero) | (v != v);                           \
                g = (V)((__typeof__(keep))g & keep);                                         \
            }                                                                                \
            __builtin_memcpy(out + j, &g, sizeof g);                                         \
        }                                                                                    \
        PREFIX##relu_backward_tail(output, grad, out, whole, n);                             \
    }
FC_RELU_BACKWARD(fc_s, float, fc_v4f, 4)
FC_RELU_BACKWARD(fc_d, double, fc_v2d, 2)
#else
static inline void fc_srelu_backward(const float *output, const float *grad, float *out,
                                     ptrdiff_t n)
{
    fc_srelu_backward_tail(output, grad, out, 0, n);
}
static inline void fc_drelu_backward(const double *output, const double *grad, double *out,
                                     ptrdiff_t n)
{
    fc_drelu_backward_tail(output, grad, out, 0, n);
}
#endif

#endif
