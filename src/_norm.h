/* The loops of the batch-norm kernels (src/_norm.pyx): one channel each, its N rows of L
 * elements (row r at ``base + r * stride``).
 *
 * Sums are float64: lane k of every block adds into partial sum k (the same 16 partial sums
 * for all the rows of the channel), and the 16 partial sums are added in a fixed tree at the
 * end (fc_norm_tree). Each row is cut into blocks of FC_NORM_BLOCK (16) elements from its
 * start; a shorter last block (the row's tail) adds to 16 other partial sums, lane k to
 * tail sum k, and the sum is tree(sums) + tree(tail sums). (The tails kept apart: the
 * vector builds add them in scalar code, which would otherwise move the vector sums to
 * memory and back for every row.) Every build below runs
 * exactly those operations, so all of them give the same bits, and one thread sums a
 * channel, so the bits do not depend on the thread count either. Sixteen
 * partial sums, not four: a 4-way sum waits on the latency of its adds (the kernel was
 * latency-bound at about a cycle per element), 16 lanes are two AVX-512 vectors per sum.
 * The element-wise passes (affine, ReLU, input gradient) compute each element with the same
 * operations in the same order in every build.
 *
 * Builds: ``generic`` is plain C (the only one off x86-64 and for compilers without GCC's
 * target attributes; GCC vectorises it for the baseline, SSE2 or NEON); on x86-64 with GCC or
 * clang also ``avx2`` and ``avx512`` (src/_norm_impl.h, vector extensions under a target
 * attribute). fc_norm_select() picks one with fc_cpu_isa() (src/_cpu.h). Those two may use
 * FMA instructions elsewhere, so every product that is then added goes through
 * FC_NORM_OPAQUE, which keeps the compiler from contracting a * b + c into one fused
 * multiply-add: a fused one rounds once, and the bits would differ from the generic build's.
 * (The one multiply-add they do use on purpose is fma(a, 1, b) for a + b, exactly the sum's
 * bits: _norm_impl.h's FC_NN(add), to move additions off the add pipes.)
 *
 * The ReLU and its gradient are bit masks (``value > 0``): branch-free, and a NaN or -0.0
 * becomes +0, an inf or NaN gradient where the unit is off becomes 0 (PyTorch's ReLU and
 * its backward).
 */
#ifndef FASTCONV_NORM_H
#define FASTCONV_NORM_H

#include <stddef.h>
#include <string.h>

#include "_cpu.h"

#define FC_NORM_BLOCK 16

/* the sum of 16 partial sums, in a fixed tree: adjacent pairs, then pairs of pairs, ... */
static inline double fc_norm_tree(const double *s)
{
    return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) +
           (((s[8] + s[9]) + (s[10] + s[11])) + ((s[12] + s[13]) + (s[14] + s[15])));
}

/* ------------------------------------------------------------------- generic, plain C */

#define FC_NORM_GENERIC(T, SUFFIX, UINT)                                                     \
    static inline T fc_norm_relu_##SUFFIX(T value)                                           \
    {                                                                                        \
        union { T value; UINT bits; } v;                                                     \
        v.value = value;                                                                     \
        v.bits &= -(UINT)(value > 0);                                                        \
        return v.value;                                                                      \
    }                                                                                        \
    static inline T fc_norm_relu_grad_##SUFFIX(T grad, T output)                             \
    {                                                                                        \
        union { T value; UINT bits; } g;                                                     \
        g.value = grad;                                                                      \
        g.bits &= -(UINT)(output > 0);                                                       \
        return g.value;                                                                      \
    }                                                                                        \
    /* one block of count <= 16 elements: lane k adds d = values[k] - shift to total[k],     \
     * d * d to squares[k] */                                                                \
    static inline void fc_norm_shifted_block_##SUFFIX(const T *values, int count,            \
                                                      double shift, double *total,           \
                                                      double *squares)                       \
    {                                                                                        \
        int lane;                                                                            \
        for (lane = 0; lane < count; lane++) {                                               \
            double d = (double)values[lane] - shift;                                         \
            total[lane] += d;                                                                \
            squares[lane] += d * d;                                                          \
        }                                                                                    \
    }                                                                                        \
    static void fc_norm_shifted_sums_##SUFFIX##_generic(                                     \
        const T *values, ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t length, double shift,   \
        double *total, double *squares)                                                      \
    {                                                                                        \
        double t[FC_NORM_BLOCK] = {0}, q[FC_NORM_BLOCK] = {0};                               \
        double t_tail[FC_NORM_BLOCK] = {0}, q_tail[FC_NORM_BLOCK] = {0};                     \
        ptrdiff_t r, i;                                                                      \
        for (r = 0; r < rows; r++) {                                                         \
            const T *row = values + r * stride;                                              \
            for (i = 0; i + FC_NORM_BLOCK <= length; i += FC_NORM_BLOCK)                     \
                fc_norm_shifted_block_##SUFFIX(row + i, FC_NORM_BLOCK, shift, t, q);         \
            if (i < length)                                                                  \
                fc_norm_shifted_block_##SUFFIX(row + i, (int)(length - i), shift, t_tail,    \
                                               q_tail);                                      \
        }                                                                                    \
        *total = fc_norm_tree(t) + fc_norm_tree(t_tail);                                     \
        *squares = fc_norm_tree(q) + fc_norm_tree(q_tail);                                   \
    }                                                                                        \
    /* one block of count <= 16 elements: g = grad (masked by output > 0 when output is     \
     * not NULL; stored to grad_residual when that is not NULL); lane k adds g to total[k]   \
     * and g * (values[k] - mean) to products[k] */                                          \
    static inline void fc_norm_gradient_block_##SUFFIX(                                      \
        const T *grad, const T *values, const T *output, T *grad_residual, int count,        \
        double mean, double *total, double *products)                                        \
    {                                                                                        \
        int lane;                                                                            \
        for (lane = 0; lane < count; lane++) {                                               \
            T g = output ? fc_norm_relu_grad_##SUFFIX(grad[lane], output[lane]) : grad[lane]; \
            if (grad_residual) grad_residual[lane] = g;                                      \
            total[lane] += (double)g;                                                        \
            products[lane] += (double)g * ((double)values[lane] - mean);                     \
        }                                                                                    \
    }                                                                                        \
    static void fc_norm_gradient_sums_##SUFFIX##_generic(                                    \
        const T *grad, const T *values, const T *output, T *grad_residual, ptrdiff_t rows,   \
        ptrdiff_t stride, ptrdiff_t length, double mean, double *total, double *products)    \
    {                                                                                        \
        double t[FC_NORM_BLOCK] = {0}, p[FC_NORM_BLOCK] = {0};                               \
        double t_tail[FC_NORM_BLOCK] = {0}, p_tail[FC_NORM_BLOCK] = {0};                     \
        ptrdiff_t r, i, at;                                                                  \
        int full;                                                                            \
        for (r = 0; r < rows; r++) {                                                         \
            at = r * stride;                                                                 \
            for (i = 0; i < length; i += FC_NORM_BLOCK) {                                    \
                full = i + FC_NORM_BLOCK <= length;                                          \
                fc_norm_gradient_block_##SUFFIX(                                             \
                    grad + at + i, values + at + i, output ? output + at + i : NULL,         \
                    grad_residual ? grad_residual + at + i : NULL,                           \
                    full ? FC_NORM_BLOCK : (int)(length - i), mean, full ? t : t_tail,       \
                    full ? p : p_tail);                                                      \
            }                                                                                \
        }                                                                                    \
        *total = fc_norm_tree(t) + fc_norm_tree(t_tail);                                     \
        *products = fc_norm_tree(p) + fc_norm_tree(p_tail);                                  \
    }                                                                                        \
    static void fc_norm_affine_##SUFFIX##_generic(                                           \
        T *out, const T *values, const T *residual, ptrdiff_t rows, ptrdiff_t stride,        \
        ptrdiff_t length, T scale, T shift, int relu)                                        \
    {                                                                                        \
        ptrdiff_t r, i, at;                                                                  \
        T value;                                                                             \
        for (r = 0; r < rows; r++) {                                                         \
            at = r * stride;                                                                 \
            for (i = at; i < at + length; i++) {                                             \
                value = values[i] * scale + shift;                                           \
                if (residual) value = value + residual[i];                                   \
                out[i] = relu ? fc_norm_relu_##SUFFIX(value) : value;                        \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    static void fc_norm_grad_input_##SUFFIX##_generic(                                       \
        T *grad_input, const T *grad, const T *values, const T *output, ptrdiff_t rows,      \
        ptrdiff_t stride, ptrdiff_t length, T a, T b, T c)                                   \
    {                                                                                        \
        ptrdiff_t r, i, at;                                                                  \
        T g;                                                                                 \
        for (r = 0; r < rows; r++) {                                                         \
            at = r * stride;                                                                 \
            for (i = at; i < at + length; i++) {                                             \
                g = output ? fc_norm_relu_grad_##SUFFIX(grad[i], output[i]) : grad[i];       \
                grad_input[i] = g * a + values[i] * b + c;                                   \
            }                                                                                \
        }                                                                                    \
    }

FC_NORM_GENERIC(float, f, unsigned int)
FC_NORM_GENERIC(double, d, unsigned long long)

/* ------------------------------------------------------- AVX2 and AVX-512 (x86-64 only) */

/* the wide builds need __builtin_convertvector (clang, GCC >= 9) besides target attributes */
#if FC_HAVE_X86_TARGETS && (defined(__clang__) || __GNUC__ >= 9)
#define FC_NORM_WIDE 1
#else
#define FC_NORM_WIDE 0
#endif

#if FC_NORM_WIDE
#include <immintrin.h>

/* an empty asm that claims to change v (kept in a vector register): what it returns cannot
 * be fused with the operation that made it, nor with the one that takes it */
#define FC_NORM_OPAQUE(v) __asm__("" : "+v"(v))

#define FC_N_TARGET __attribute__((target("avx2,fma")))
#define FC_N_BYTES 32
#define FC_NN(name) fc_norm_##name##_avx2
#define FC_N_WIDEN(v) __builtin_convertvector((v), FC_NN(vd))
#define FC_N_FMA(a, b, c) ((FC_NN(vd))_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#include "_norm_impl.h"

#define FC_N_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define FC_N_BYTES 64
#define FC_NN(name) fc_norm_##name##_avx512
#define FC_N_WIDEN(v) ((FC_NN(vd))_mm512_cvtps_pd((__m256)(v)))
#define FC_N_FMA(a, b, c) ((FC_NN(vd))_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#include "_norm_impl.h"
#endif

/* ------------------------------------------------------------ the build in force */

typedef struct {
    void (*shifted_sums_f)(const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, double, double *,
                           double *);
    void (*shifted_sums_d)(const double *, ptrdiff_t, ptrdiff_t, ptrdiff_t, double, double *,
                           double *);
    void (*gradient_sums_f)(const float *, const float *, const float *, float *, ptrdiff_t,
                            ptrdiff_t, ptrdiff_t, double, double *, double *);
    void (*gradient_sums_d)(const double *, const double *, const double *, double *,
                            ptrdiff_t, ptrdiff_t, ptrdiff_t, double, double *, double *);
    void (*affine_f)(float *, const float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                     float, float, int);
    void (*affine_d)(double *, const double *, const double *, ptrdiff_t, ptrdiff_t,
                     ptrdiff_t, double, double, int);
    void (*grad_input_f)(float *, const float *, const float *, const float *, ptrdiff_t,
                         ptrdiff_t, ptrdiff_t, float, float, float);
    void (*grad_input_d)(double *, const double *, const double *, const double *, ptrdiff_t,
                         ptrdiff_t, ptrdiff_t, double, double, double);
} fc_norm_kernels;

static fc_norm_kernels fc_norm_in_force;

#define FC_NORM_FILL(ISA)                                                        \
    do {                                                                         \
        fc_norm_in_force.shifted_sums_f = fc_norm_shifted_sums_f_##ISA;          \
        fc_norm_in_force.shifted_sums_d = fc_norm_shifted_sums_d_##ISA;          \
        fc_norm_in_force.gradient_sums_f = fc_norm_gradient_sums_f_##ISA;        \
        fc_norm_in_force.gradient_sums_d = fc_norm_gradient_sums_d_##ISA;        \
        fc_norm_in_force.affine_f = fc_norm_affine_f_##ISA;                      \
        fc_norm_in_force.affine_d = fc_norm_affine_d_##ISA;                      \
        fc_norm_in_force.grad_input_f = fc_norm_grad_input_f_##ISA;              \
        fc_norm_in_force.grad_input_d = fc_norm_grad_input_d_##ISA;              \
    } while (0)

/* fill the table for the level in force (called once, at import); returns the build chosen
 * (AVX-512 CPUs run the AVX-512 build: 16 sums are two of its vectors) */
static int fc_norm_select(void)
{
    FC_NORM_FILL(generic);
#if FC_NORM_WIDE
    int level = fc_cpu_isa();
    if (level >= FC_ISA_AVX512) {
        FC_NORM_FILL(avx512);
        return FC_ISA_AVX512;
    }
    if (level >= FC_ISA_AVX2) {
        FC_NORM_FILL(avx2);
        return FC_ISA_AVX2;
    }
#endif
    return FC_ISA_GENERIC;
}

/* The kernels the extension calls; a channel's rows at base + r * stride, r < rows, each of
 * length elements. Sums are stored (not added) to *total and *squares / *products. */

/* total = sum(values - shift), squares = sum((values - shift)^2) */
static inline void fc_norm_shifted_sums_f(const float *values, ptrdiff_t rows, ptrdiff_t stride,
                                          ptrdiff_t length, double shift, double *total,
                                          double *squares)
{
    fc_norm_in_force.shifted_sums_f(values, rows, stride, length, shift, total, squares);
}
static inline void fc_norm_shifted_sums_d(const double *values, ptrdiff_t rows,
                                          ptrdiff_t stride, ptrdiff_t length, double shift,
                                          double *total, double *squares)
{
    fc_norm_in_force.shifted_sums_d(values, rows, stride, length, shift, total, squares);
}
/* total = sum(g), products = sum(g * (values - mean)); g = grad, masked by output > 0 when
 * output is not NULL, written to grad_residual when that is not NULL */
static inline void fc_norm_gradient_sums_f(const float *grad, const float *values,
                                           const float *output, float *grad_residual,
                                           ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t length,
                                           double mean, double *total, double *products)
{
    fc_norm_in_force.gradient_sums_f(grad, values, output, grad_residual, rows, stride, length,
                                     mean, total, products);
}
static inline void fc_norm_gradient_sums_d(const double *grad, const double *values,
                                           const double *output, double *grad_residual,
                                           ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t length,
                                           double mean, double *total, double *products)
{
    fc_norm_in_force.gradient_sums_d(grad, values, output, grad_residual, rows, stride, length,
                                     mean, total, products);
}
/* out = values * scale + shift (+ residual when not NULL), then max(., 0) with relu */
static inline void fc_norm_affine_f(float *out, const float *values, const float *residual,
                                    ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t length,
                                    float scale, float shift, int relu)
{
    fc_norm_in_force.affine_f(out, values, residual, rows, stride, length, scale, shift, relu);
}
static inline void fc_norm_affine_d(double *out, const double *values, const double *residual,
                                    ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t length,
                                    double scale, double shift, int relu)
{
    fc_norm_in_force.affine_d(out, values, residual, rows, stride, length, scale, shift, relu);
}
/* grad_input = g * a + values * b + c, g = grad masked by output > 0 (output not NULL) */
static inline void fc_norm_grad_input_f(float *grad_input, const float *grad,
                                        const float *values, const float *output,
                                        ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t length,
                                        float a, float b, float c)
{
    fc_norm_in_force.grad_input_f(grad_input, grad, values, output, rows, stride, length, a, b,
                                  c);
}
static inline void fc_norm_grad_input_d(double *grad_input, const double *grad,
                                        const double *values, const double *output,
                                        ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t length,
                                        double a, double b, double c)
{
    fc_norm_in_force.grad_input_d(grad_input, grad, values, output, rows, stride, length, a, b,
                                  c);
}

#endif
