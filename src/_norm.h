/* The inner loops of the batch-norm kernels (src/_norm.pyx): one row of one channel each.
 *
 * Sums are float64, in four partial sums per quantity (element i goes to partial sum i % 4)
 * added as (s0 + s1) + (s2 + s3) at the end, the tail into s0. The vector versions keep that
 * exact assignment: a 2-double vector holds (s0, s1), another (s2, s3), so they give the
 * same bits as the plain-C versions (float -> double conversion and the IEEE +, -, * are
 * exact per lane), and the same bits for any thread count (one thread sums a channel).
 * The element-wise passes (affine, ReLU, input gradient) compute each element with the same
 * operations in the same order in either version.
 *
 * The ReLU and its gradient are bit masks (``value > 0``): branch-free, and a NaN or -0.0
 * becomes +0, an inf or NaN gradient where the unit is off becomes 0 (PyTorch's ReLU and
 * its backward).
 *
 * FC_NORM_SIMD is 0 without GCC/clang vector extensions (src/_simd.h): the plain-C versions
 * then run.
 */
#ifndef FASTCONV_NORM_H
#define FASTCONV_NORM_H

#include <stddef.h>
#include <string.h>

#include "_simd.h"

#if FC_SIMD && (defined(__clang__) || __GNUC__ >= 9)
#define FC_NORM_SIMD 1
#else
#define FC_NORM_SIMD 0
#endif

/* ----------------------------------------------------------------- plain C, both types */

#define FC_NORM_SCALAR(T, SUFFIX, UINT)                                                      \
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
    static inline void fc_norm_shifted_sums_##SUFFIX##_c(                                    \
        const T *values, ptrdiff_t count, double shift, double *total, double *squares)      \
    {                                                                                        \
        double t0 = 0, t1 = 0, t2 = 0, t3 = 0, q0 = 0, q1 = 0, q2 = 0, q3 = 0;               \
        double d0, d1, d2, d3;                                                               \
        ptrdiff_t i = 0;                                                                     \
        for (; i + 4 <= count; i += 4) {                                                     \
            d0 = values[i] - shift;                                                          \
            d1 = values[i + 1] - shift;                                                      \
            d2 = values[i + 2] - shift;                                                      \
            d3 = values[i + 3] - shift;                                                      \
            t0 += d0; t1 += d1; t2 += d2; t3 += d3;                                          \
            q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3;                      \
        }                                                                                    \
        for (; i < count; i++) {                                                             \
            d0 = values[i] - shift;                                                          \
            t0 += d0;                                                                        \
            q0 += d0 * d0;                                                                   \
        }                                                                                    \
        *total += (t0 + t1) + (t2 + t3);                                                     \
        *squares += (q0 + q1) + (q2 + q3);                                                   \
    }                                                                                        \
    static inline void fc_norm_gradient_sums_##SUFFIX##_c(                                   \
        const T *grad, const T *values, const T *output, T *grad_residual, ptrdiff_t count,  \
        double mean, int relu, double *total, double *products)                              \
    {                                                                                        \
        double t[4] = {0, 0, 0, 0}, p[4] = {0, 0, 0, 0};                                     \
        ptrdiff_t i = 0;                                                                     \
        int lane;                                                                            \
        T g;                                                                                 \
        for (; i + 4 <= count; i += 4) {                                                     \
            for (lane = 0; lane < 4; lane++) {                                               \
                g = relu ? fc_norm_relu_grad_##SUFFIX(grad[i + lane], output[i + lane])      \
                         : grad[i + lane];                                                   \
                if (grad_residual) grad_residual[i + lane] = g;                              \
                t[lane] += g;                                                                \
                p[lane] += g * ((double)values[i + lane] - mean);                            \
            }                                                                                \
        }                                                                                    \
        for (; i < count; i++) {                                                             \
            g = relu ? fc_norm_relu_grad_##SUFFIX(grad[i], output[i]) : grad[i];             \
            if (grad_residual) grad_residual[i] = g;                                         \
            t[0] += g;                                                                       \
            p[0] += g * ((double)values[i] - mean);                                          \
        }                                                                                    \
        *total += (t[0] + t[1]) + (t[2] + t[3]);                                             \
        *products += (p[0] + p[1]) + (p[2] + p[3]);                                          \
    }                                                                                        \
    static inline void fc_norm_affine_##SUFFIX##_c(                                          \
        T *out, const T *values, const T *residual, ptrdiff_t count, T scale, T shift,       \
        int relu)                                                                            \
    {                                                                                        \
        ptrdiff_t i;                                                                         \
        T value;                                                                             \
        for (i = 0; i < count; i++) {                                                        \
            value = values[i] * scale + shift;                                               \
            if (residual) value = value + residual[i];                                       \
            out[i] = relu ? fc_norm_relu_##SUFFIX(value) : value;                            \
        }                                                                                    \
    }                                                                                        \
    static inline void fc_norm_grad_input_##SUFFIX##_c(                                      \
        T *grad_input, const T *grad, const T *values, const T *output, ptrdiff_t count,     \
        T a, T b, T c)                                                                       \
    {                                                                                        \
        ptrdiff_t i;                                                                         \
        T g;                                                                                 \
        for (i = 0; i < count; i++) {                                                        \
            g = output ? fc_norm_relu_grad_##SUFFIX(grad[i], output[i]) : grad[i];           \
            grad_input[i] = g * a + values[i] * b + c;                                       \
        }                                                                                    \
    }

FC_NORM_SCALAR(float, f, unsigned int)
FC_NORM_SCALAR(double, d, unsigned long long)

#if FC_NORM_SIMD

typedef double fc_norm_v4d __attribute__((vector_size(32)));
typedef int fc_norm_v4i __attribute__((vector_size(16)));
typedef long long fc_norm_v2l __attribute__((vector_size(16)));

/* the four lanes of a float vector as two double vectors: through a 32-byte vector, which
 * compiles to cvtps2pd on both halves (an 8-byte float vector is converted lane by lane) */
FC_SIMD_INLINE void fc_norm_widen(fc_v4f v, fc_v2d *low, fc_v2d *high)
{
    fc_norm_v4d wide = __builtin_convertvector(v, fc_norm_v4d);
    __builtin_memcpy(low, &wide, sizeof *low);
    __builtin_memcpy(high, (const char *)&wide + sizeof *low, sizeof *high);
}
FC_SIMD_INLINE fc_v4f fc_norm_mask_f(fc_v4f value, fc_v4f key)
{
    return (fc_v4f)((fc_norm_v4i)value & (fc_norm_v4i)(key > fc_v4f_zero()));
}
FC_SIMD_INLINE fc_v2d fc_norm_mask_d(fc_v2d value, fc_v2d key)
{
    return (fc_v2d)((fc_norm_v2l)value & (fc_norm_v2l)(key > fc_v2d_zero()));
}
/* (s0 + s1) + (s2 + s3) of low = (s0, s1), high = (s2, s3) */
FC_SIMD_INLINE double fc_norm_total(fc_v2d low, fc_v2d high)
{
    return (low[0] + low[1]) + (high[0] + high[1]);
}

static inline void fc_norm_shifted_sums_f(const float *values, ptrdiff_t count, double shift,
                                          double *total, double *squares)
{
    fc_v2d t01 = fc_v2d_zero(), t23 = fc_v2d_zero(), q01 = fc_v2d_zero(), q23 = fc_v2d_zero();
    const fc_v2d by = fc_v2d_set1(shift);
    ptrdiff_t i = 0;
    for (; i + 4 <= count; i += 4) {
        fc_v2d d01, d23;
        fc_norm_widen(fc_v4f_load(values + i), &d01, &d23);
        d01 -= by;
        d23 -= by;
        t01 += d01;
        t23 += d23;
        q01 += d01 * d01;
        q23 += d23 * d23;
    }
    for (; i < count; i++) {
        double d = values[i] - shift;
        t01[0] += d;
        q01[0] += d * d;
    }
    *total += fc_norm_total(t01, t23);
    *squares += fc_norm_total(q01, q23);
}

static inline void fc_norm_shifted_sums_d(const double *values, ptrdiff_t count, double shift,
                                          double *total, double *squares)
{
    fc_v2d t01 = fc_v2d_zero(), t23 = fc_v2d_zero(), q01 = fc_v2d_zero(), q23 = fc_v2d_zero();
    const fc_v2d by = fc_v2d_set1(shift);
    ptrdiff_t i = 0;
    for (; i + 4 <= count; i += 4) {
        fc_v2d d01 = fc_v2d_load(values + i) - by, d23 = fc_v2d_load(values + i + 2) - by;
        t01 += d01;
        t23 += d23;
        q01 += d01 * d01;
        q23 += d23 * d23;
    }
    for (; i < count; i++) {
        double d = values[i] - shift;
        t01[0] += d;
        q01[0] += d * d;
    }
    *total += fc_norm_total(t01, t23);
    *squares += fc_norm_total(q01, q23);
}

static inline void fc_norm_gradient_sums_f(const float *grad, const float *values,
                                           const float *output, float *grad_residual,
                                           ptrdiff_t count, double mean, int relu,
                                           double *total, double *products)
{
    fc_v2d t01 = fc_v2d_zero(), t23 = fc_v2d_zero(), p01 = fc_v2d_zero(), p23 = fc_v2d_zero();
    const fc_v2d by = fc_v2d_set1(mean);
    ptrdiff_t i = 0;
    for (; i + 4 <= count; i += 4) {
        fc_v4f g = fc_v4f_load(grad + i);
        if (relu) g = fc_norm_mask_f(g, fc_v4f_load(output + i));
        if (grad_residual) fc_v4f_store(grad_residual + i, g);
        fc_v2d g01, g23, x01, x23;
        fc_norm_widen(g, &g01, &g23);
        fc_norm_widen(fc_v4f_load(values + i), &x01, &x23);
        t01 += g01;
        t23 += g23;
        p01 += g01 * (x01 - by);
        p23 += g23 * (x23 - by);
    }
    for (; i < count; i++) {
        float g = relu ? fc_norm_relu_grad_f(grad[i], output[i]) : grad[i];
        if (grad_residual) grad_residual[i] = g;
        t01[0] += g;
        p01[0] += g * ((double)values[i] - mean);
    }
    *total += fc_norm_total(t01, t23);
    *products += fc_norm_total(p01, p23);
}

static inline void fc_norm_gradient_sums_d(const double *grad, const double *values,
                                           const double *output, double *grad_residual,
                                           ptrdiff_t count, double mean, int relu,
                                           double *total, double *products)
{
    fc_v2d t01 = fc_v2d_zero(), t23 = fc_v2d_zero(), p01 = fc_v2d_zero(), p23 = fc_v2d_zero();
    const fc_v2d by = fc_v2d_set1(mean);
    ptrdiff_t i = 0;
    for (; i + 4 <= count; i += 4) {
        fc_v2d g01 = fc_v2d_load(grad + i), g23 = fc_v2d_load(grad + i + 2);
        if (relu) {
            g01 = fc_norm_mask_d(g01, fc_v2d_load(output + i));
            g23 = fc_norm_mask_d(g23, fc_v2d_load(output + i + 2));
        }
        if (grad_residual) {
            fc_v2d_store(grad_residual + i, g01);
            fc_v2d_store(grad_residual + i + 2, g23);
        }
        t01 += g01;
        t23 += g23;
        p01 += g01 * (fc_v2d_load(values + i) - by);
        p23 += g23 * (fc_v2d_load(values + i + 2) - by);
    }
    for (; i < count; i++) {
        double g = relu ? fc_norm_relu_grad_d(grad[i], output[i]) : grad[i];
        if (grad_residual) grad_residual[i] = g;
        t01[0] += g;
        p01[0] += g * (values[i] - mean);
    }
    *total += fc_norm_total(t01, t23);
    *products += fc_norm_total(p01, p23);
}

static inline void fc_norm_affine_f(float *out, const float *values, const float *residual,
                                    ptrdiff_t count, float scale, float shift, int relu)
{
    const fc_v4f by = fc_v4f_set1(scale), plus = fc_v4f_set1(shift);
    ptrdiff_t i = 0;
    for (; i + 4 <= count; i += 4) {
        fc_v4f value = fc_v4f_load(values + i) * by + plus;
        if (residual) value = value + fc_v4f_load(residual + i);
        if (relu) value = fc_norm_mask_f(value, value);
        fc_v4f_store(out + i, value);
    }
    if (i < count)
        fc_norm_affine_f_c(out + i, values + i, residual ? residual + i : NULL, count - i,
                           scale, shift, relu);
}

static inline void fc_norm_affine_d(double *out, const double *values, const double *residual,
                                    ptrdiff_t count, double scale, double shift, int relu)
{
    const fc_v2d by = fc_v2d_set1(scale), plus = fc_v2d_set1(shift);
    ptrdiff_t i = 0;
    for (; i + 2 <= count; i += 2) {
        fc_v2d value = fc_v2d_load(values + i) * by + plus;
        if (residual) value = value + fc_v2d_load(residual + i);
        if (relu) value = fc_norm_mask_d(value, value);
        fc_v2d_store(out + i, value);
    }
    if (i < count)
        fc_norm_affine_d_c(out + i, values + i, residual ? residual + i : NULL, count - i,
                           scale, shift, relu);
}

/* grad_input = g * a + values * b + c, g = grad masked by output > 0 (output not NULL) */
static inline void fc_norm_grad_input_f(float *grad_input, const float *grad,
                                        const float *values, const float *output,
                                        ptrdiff_t count, float a, float b, float c)
{
    const fc_v4f va = fc_v4f_set1(a), vb = fc_v4f_set1(b), vc = fc_v4f_set1(c);
    ptrdiff_t i = 0;
    for (; i + 4 <= count; i += 4) {
        fc_v4f g = fc_v4f_load(grad + i);
        if (output) g = fc_norm_mask_f(g, fc_v4f_load(output + i));
        fc_v4f_store(grad_input + i, g * va + fc_v4f_load(values + i) * vb + vc);
    }
    if (i < count)
        fc_norm_grad_input_f_c(grad_input + i, grad + i, values + i,
                               output ? output + i : NULL, count - i, a, b, c);
}

static inline void fc_norm_grad_input_d(double *grad_input, const double *grad,
                                        const double *values, const double *output,
                                        ptrdiff_t count, double a, double b, double c)
{
    const fc_v2d va = fc_v2d_set1(a), vb = fc_v2d_set1(b), vc = fc_v2d_set1(c);
    ptrdiff_t i = 0;
    for (; i + 2 <= count; i += 2) {
        fc_v2d g = fc_v2d_load(grad + i);
        if (output) g = fc_norm_mask_d(g, fc_v2d_load(output + i));
        fc_v2d_store(grad_input + i, g * va + fc_v2d_load(values + i) * vb + vc);
    }
    if (i < count)
        fc_norm_grad_input_d_c(grad_input + i, grad + i, values + i,
                               output ? output + i : NULL, count - i, a, b, c);
}

#else /* plain C */

#define fc_norm_shifted_sums_f fc_norm_shifted_sums_f_c
#define fc_norm_shifted_sums_d fc_norm_shifted_sums_d_c
#define fc_norm_gradient_sums_f fc_norm_gradient_sums_f_c
#define fc_norm_gradient_sums_d fc_norm_gradient_sums_d_c
#define fc_norm_affine_f fc_norm_affine_f_c
#define fc_norm_affine_d fc_norm_affine_d_c
#define fc_norm_grad_input_f fc_norm_grad_input_f_c
#define fc_norm_grad_input_d fc_norm_grad_input_d_c

#endif

#endif
