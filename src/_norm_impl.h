/* The batch-norm loops for one x86 instruction set, with GCC/clang vector extensions of
 * FC_N_BYTES (32: AVX2, 64: AVX-512). _norm.h includes this file once per ISA after defining
 * FC_N_TARGET (the target attribute), FC_N_BYTES and FC_NN(name) (the suffixed name); it
 * undefines them at the end. No include guard, on purpose.
 *
 * Each function computes what its generic twin in _norm.h computes, operation for operation
 * (the same 16 partial sums, the same tree, the same element-wise expressions), so the bits
 * are the generic build's: a block of 16 elements is FC_NK vectors of FC_ND doubles, vector k
 * holding partial sums k * FC_ND ... k * FC_ND + FC_ND - 1; a row's tail (its shorter last
 * block) runs scalar code on the tail sums. FC_NORM_OPAQUE keeps every product
 * that is then added from being fused into a multiply-add.
 */

#define FC_LOCAL static inline __attribute__((always_inline)) FC_N_TARGET
#define FC_KERNEL static FC_N_TARGET

typedef double FC_NN(vd) __attribute__((vector_size(FC_N_BYTES)));
typedef long long FC_NN(vl) __attribute__((vector_size(FC_N_BYTES)));
typedef float FC_NN(vf) __attribute__((vector_size(FC_N_BYTES)));
typedef int FC_NN(vi) __attribute__((vector_size(FC_N_BYTES)));
/* as many floats as a double vector has doubles (converted to one with vcvtps2pd) */
typedef float FC_NN(vh) __attribute__((vector_size(FC_N_BYTES / 2)));
typedef int FC_NN(vhi) __attribute__((vector_size(FC_N_BYTES / 2)));

#define FC_ND ((int)(FC_N_BYTES / sizeof(double)))  /* doubles in a vector */
#define FC_NFL ((int)(FC_N_BYTES / sizeof(float)))  /* floats in a vector */
#define FC_NK (FC_NORM_BLOCK / FC_ND)               /* double vectors in a block */
#define FC_NLOAD(v, p) __builtin_memcpy(&(v), (p), sizeof(v))
#define FC_NSTORE(p, v) __builtin_memcpy((p), &(v), sizeof(v))
#define FC_NUNROLLED _Pragma("GCC unroll 8")

/* value where key > 0, +0 elsewhere (bit masks) */
FC_LOCAL FC_NN(vh) FC_NN(mask_h)(FC_NN(vh) value, FC_NN(vh) key)
{
    const FC_NN(vh) zero = {0};
    return (FC_NN(vh))((FC_NN(vhi))value & (FC_NN(vhi))(key > zero));
}
FC_LOCAL FC_NN(vf) FC_NN(mask_f)(FC_NN(vf) value, FC_NN(vf) key)
{
    const FC_NN(vf) zero = {0};
    return (FC_NN(vf))((FC_NN(vi))value & (FC_NN(vi))(key > zero));
}
FC_LOCAL FC_NN(vd) FC_NN(mask_d)(FC_NN(vd) value, FC_NN(vd) key)
{
    const FC_NN(vd) zero = {0};
    return (FC_NN(vd))((FC_NN(vl))value & (FC_NN(vl))(key > zero));
}
FC_LOCAL FC_NN(vd) FC_NN(splat_d)(double value)
{
    FC_NN(vd) v = {0};
    return v + value;
}
FC_LOCAL FC_NN(vf) FC_NN(splat_f)(float value)
{
    FC_NN(vf) v = {0};
    return v + value;
}

/* the vector partial sums to memory (vector k = partial sums k*FC_ND ...) */
FC_LOCAL void FC_NN(spill)(const FC_NN(vd) *sums, double *to)
{
    FC_NUNROLLED
    for (int k = 0; k < FC_NK; k++) FC_NSTORE(to + k * FC_ND, sums[k]);
}

/* ----------------------------------------------------------- shifted sums (forward) */

#define FC_N_SHIFTED(T, SUFFIX)                                                              \
    FC_KERNEL void FC_NN(shifted_sums_##SUFFIX)(const T *values, ptrdiff_t rows,             \
                                                ptrdiff_t stride, ptrdiff_t length,          \
                                                double shift, double *total, double *squares) \
    {                                                                                        \
        FC_NN(vd) t[FC_NK], q[FC_NK];                                                        \
        const FC_NN(vd) less = FC_NN(splat_d)(-shift);                                       \
        FC_NN(vd) one = FC_NN(splat_d)(1.0);                                                 \
        double t_mem[FC_NORM_BLOCK], q_mem[FC_NORM_BLOCK];                                   \
        double t_tail[FC_NORM_BLOCK] = {0}, q_tail[FC_NORM_BLOCK] = {0};                     \
        ptrdiff_t r, i;                                                                      \
        int k, lane;                                                                         \
        FC_NORM_OPAQUE(one);                                                                 \
        FC_NUNROLLED                                                                         \
        for (k = 0; k < FC_NK; k++) t[k] = q[k] = FC_NN(splat_d)(0.0);                       \
        for (r = 0; r < rows; r++) {                                                         \
            const T *row = values + r * stride;                                              \
            for (i = 0; i + FC_NORM_BLOCK <= length; i += FC_NORM_BLOCK) {                   \
                FC_NUNROLLED                                                                 \
                for (k = 0; k < FC_NK; k++) {                                                \
                    FC_NN(vd) d = FC_NN(add)(FC_N_LOAD_WIDE_##SUFFIX(row + i + k * FC_ND),   \
                                             less, one);                                     \
                    FC_NN(vd) square = d * d;                                                \
                    FC_NORM_OPAQUE(square);                                                  \
                    t[k] = FC_NN(add)(d, t[k], one);                                         \
                    q[k] += square;                                                          \
                }                                                                            \
            }                                                                                \
            for (lane = 0; lane < (int)(length - i); lane++) {                               \
                double d = (double)row[i + lane] - shift, square = d * d;                    \
                FC_NORM_OPAQUE(square);                                                      \
                t_tail[lane] += d;                                                           \
                q_tail[lane] += square;                                                      \
            }                                                                                \
        }                                                                                    \
        FC_NN(spill)(t, t_mem);                                                              \
        FC_NN(spill)(q, q_mem);                                                              \
        *total = fc_norm_tree(t_mem) + fc_norm_tree(t_tail);                                 \
        *squares = fc_norm_tree(q_mem) + fc_norm_tree(q_tail);                               \
    }

/* FC_ND floats as doubles: FC_N_WIDEN, which _norm.h defines per build (GCC 12 lowers the
 * 8-float __builtin_convertvector to two 128-bit conversions and an insert, an intrinsic to
 * one vcvtps2pd) */
FC_LOCAL FC_NN(vd) FC_NN(widen)(FC_NN(vh) v)
{
    return FC_N_WIDEN(v);
}

/* a + b as fma(a, one, b) with one = 1.0 hidden from the compiler (FC_NORM_OPAQUE): the
 * same bits as the addition (a * 1 is exact, and the one rounding is the sum's), on the
 * multiply-add pipes. Zen 4 has two 256-bit add pipes and two multiply-add pipes, and the
 * sums' additions and subtractions all went to the add pipes (about 8 cycles per 16
 * elements of the shifted sums); moving the subtraction and one sum's additions to the
 * multiply-add pipes made that loop 1.34x faster (measured alone, one thread, L1-resident) */
FC_LOCAL FC_NN(vd) FC_NN(add)(FC_NN(vd) a, FC_NN(vd) b, FC_NN(vd) one)
{
    return FC_N_FMA(a, one, b);
}

/* FC_ND values from p as doubles */
FC_LOCAL FC_NN(vd) FC_NN(load_wide_f)(const float *p)
{
    FC_NN(vh) v;
    FC_NLOAD(v, p);
    return FC_NN(widen)(v);
}
FC_LOCAL FC_NN(vd) FC_NN(load_wide_d)(const double *p)
{
    FC_NN(vd) v;
    FC_NLOAD(v, p);
    return v;
}
#define FC_N_LOAD_WIDE_f FC_NN(load_wide_f)
#define FC_N_LOAD_WIDE_d FC_NN(load_wide_d)

FC_N_SHIFTED(float, f)
FC_N_SHIFTED(double, d)

/* ------------------------------------------------------- gradient sums (backward) */

/* one full block of float gradients: FC_NK vectors of FC_ND elements */
FC_LOCAL void FC_NN(gradient_block_f)(const float *grad, const float *values,
                                      const float *output, float *grad_residual,
                                      FC_NN(vd) less, FC_NN(vd) one, FC_NN(vd) *t,
                                      FC_NN(vd) *p)
{
    FC_NUNROLLED
    for (int k = 0; k < FC_NK; k++) {
        FC_NN(vh) g;
        FC_NLOAD(g, grad + k * FC_ND);
        if (output) {
            FC_NN(vh) o;
            FC_NLOAD(o, output + k * FC_ND);
            g = FC_NN(mask_h)(g, o);
        }
        if (grad_residual) FC_NSTORE(grad_residual + k * FC_ND, g);
        FC_NN(vd) gd = FC_NN(widen)(g);
        FC_NN(vd) product = gd * FC_NN(add)(FC_NN(load_wide_f)(values + k * FC_ND), less, one);
        FC_NORM_OPAQUE(product);
        t[k] = FC_NN(add)(gd, t[k], one);
        p[k] += product;
    }
}
FC_LOCAL void FC_NN(gradient_block_d)(const double *grad, const double *values,
                                      const double *output, double *grad_residual,
                                      FC_NN(vd) less, FC_NN(vd) one, FC_NN(vd) *t,
                                      FC_NN(vd) *p)
{
    FC_NUNROLLED
    for (int k = 0; k < FC_NK; k++) {
        FC_NN(vd) g;
        FC_NLOAD(g, grad + k * FC_ND);
        if (output) {
            FC_NN(vd) o;
            FC_NLOAD(o, output + k * FC_ND);
            g = FC_NN(mask_d)(g, o);
        }
        if (grad_residual) FC_NSTORE(grad_residual + k * FC_ND, g);
        FC_NN(vd) product = g * FC_NN(add)(FC_NN(load_wide_d)(values + k * FC_ND), less, one);
        FC_NORM_OPAQUE(product);
        t[k] = FC_NN(add)(g, t[k], one);
        p[k] += product;
    }
}

#define FC_N_GRADIENT(T, SUFFIX)                                                             \
    FC_KERNEL void FC_NN(gradient_sums_##SUFFIX)(                                            \
        const T *grad, const T *values, const T *output, T *grad_residual, ptrdiff_t rows,   \
        ptrdiff_t stride, ptrdiff_t length, double mean, double *total, double *products)    \
    {                                                                                        \
        FC_NN(vd) t[FC_NK], p[FC_NK];                                                        \
        const FC_NN(vd) less = FC_NN(splat_d)(-mean);                                        \
        FC_NN(vd) one = FC_NN(splat_d)(1.0);                                                 \
        double t_mem[FC_NORM_BLOCK], p_mem[FC_NORM_BLOCK];                                   \
        double t_tail[FC_NORM_BLOCK] = {0}, p_tail[FC_NORM_BLOCK] = {0};                     \
        ptrdiff_t r, i, at;                                                                  \
        int k, lane;                                                                         \
        FC_NORM_OPAQUE(one);                                                                 \
        FC_NUNROLLED                                                                         \
        for (k = 0; k < FC_NK; k++) t[k] = p[k] = FC_NN(splat_d)(0.0);                       \
        for (r = 0; r < rows; r++) {                                                         \
            at = r * stride;                                                                 \
            /* the same loop for each case, so that no test is left inside it */             \
            if (output && grad_residual) {                                                   \
                for (i = 0; i + FC_NORM_BLOCK <= length; i += FC_NORM_BLOCK)                 \
                    FC_NN(gradient_block_##SUFFIX)(grad + at + i, values + at + i,           \
                                                   output + at + i, grad_residual + at + i,  \
                                                   less, one, t, p);                                \
            } else if (output) {                                                             \
                for (i = 0; i + FC_NORM_BLOCK <= length; i += FC_NORM_BLOCK)                 \
                    FC_NN(gradient_block_##SUFFIX)(grad + at + i, values + at + i,           \
                                                   output + at + i, NULL, less, one, t, p);         \
            } else {                                                                         \
                for (i = 0; i + FC_NORM_BLOCK <= length; i += FC_NORM_BLOCK)                 \
                    FC_NN(gradient_block_##SUFFIX)(grad + at + i, values + at + i, NULL,     \
                                                   NULL, less, one, t, p);                          \
            }                                                                                \
            for (lane = 0; lane < (int)(length - i); lane++) {                               \
                T g = output ? fc_norm_relu_grad_##SUFFIX(grad[at + i + lane],               \
                                                          output[at + i + lane])             \
                             : grad[at + i + lane];                                          \
                double product = (double)g * ((double)values[at + i + lane] - mean);         \
                FC_NORM_OPAQUE(product);                                                     \
                if (grad_residual) grad_residual[at + i + lane] = g;                         \
                t_tail[lane] += (double)g;                                                   \
                p_tail[lane] += product;                                                     \
            }                                                                                \
        }                                                                                    \
        FC_NN(spill)(t, t_mem);                                                              \
        FC_NN(spill)(p, p_mem);                                                              \
        *total = fc_norm_tree(t_mem) + fc_norm_tree(t_tail);                                 \
        *products = fc_norm_tree(p_mem) + fc_norm_tree(p_tail);                              \
    }

FC_N_GRADIENT(float, f)
FC_N_GRADIENT(double, d)

/* ------------------------------------------------------------ element-wise passes */

/* full vectors, then each row's tail in scalar code (the same operations) */
#define FC_N_AFFINE(T, SUFFIX, VT)                                                           \
    FC_LOCAL VT FC_NN(affine_one_##SUFFIX)(VT value, VT residual, VT scale, VT shift,        \
                                           int add, int relu)                                \
    {                                                                                        \
        VT scaled = value * scale;                                                           \
        FC_NORM_OPAQUE(scaled);                                                              \
        value = scaled + shift;                                                              \
        if (add) value = value + residual;                                                   \
        if (relu) value = FC_NN(mask_##SUFFIX)(value, value);                                \
        return value;                                                                        \
    }                                                                                        \
    FC_KERNEL void FC_NN(affine_##SUFFIX)(T *out, const T *values, const T *residual,        \
                                          ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t length,\
                                          T scale, T shift, int relu)                        \
    {                                                                                        \
        const int lanes = (int)(FC_N_BYTES / sizeof(T));                                     \
        const VT by = FC_NN(splat_##SUFFIX)(scale), plus = FC_NN(splat_##SUFFIX)(shift);     \
        ptrdiff_t r, i, at;                                                                  \
        VT value, extra = by;                                                                \
        for (r = 0; r < rows; r++) {                                                         \
            at = r * stride;                                                                 \
            for (i = at; i + lanes <= at + length; i += lanes) {                             \
                FC_NLOAD(value, values + i);                                                 \
                if (residual) FC_NLOAD(extra, residual + i);                                 \
                value = FC_NN(affine_one_##SUFFIX)(value, extra, by, plus, residual != NULL, \
                                                   relu);                                    \
                FC_NSTORE(out + i, value);                                                   \
            }                                                                                \
            for (; i < at + length; i++) {                                                   \
                T scaled = values[i] * scale, one;                                           \
                FC_NORM_OPAQUE(scaled);                                                      \
                one = scaled + shift;                                                        \
                if (residual) one = one + residual[i];                                       \
                out[i] = relu ? fc_norm_relu_##SUFFIX(one) : one;                            \
            }                                                                                \
        }                                                                                    \
    }

FC_N_AFFINE(float, f, FC_NN(vf))
FC_N_AFFINE(double, d, FC_NN(vd))

#define FC_N_GRAD_INPUT(T, SUFFIX, VT)                                                       \
    FC_LOCAL VT FC_NN(grad_input_one_##SUFFIX)(VT g, VT x, VT a, VT b, VT c)                 \
    {                                                                                        \
        VT ga = g * a, xb = x * b;                                                           \
        FC_NORM_OPAQUE(ga);                                                                  \
        FC_NORM_OPAQUE(xb);                                                                  \
        return ga + xb + c;                                                                  \
    }                                                                                        \
    FC_KERNEL void FC_NN(grad_input_##SUFFIX)(T *grad_input, const T *grad, const T *values, \
                                              const T *output, ptrdiff_t rows,               \
                                              ptrdiff_t stride, ptrdiff_t length, T a, T b,  \
                                              T c)                                           \
    {                                                                                        \
        const int lanes = (int)(FC_N_BYTES / sizeof(T));                                     \
        const VT va = FC_NN(splat_##SUFFIX)(a), vb = FC_NN(splat_##SUFFIX)(b),               \
                 vc = FC_NN(splat_##SUFFIX)(c);                                              \
        ptrdiff_t r, i, at;                                                                  \
        VT g, x, o;                                                                          \
        for (r = 0; r < rows; r++) {                                                         \
            at = r * stride;                                                                 \
            if (output) {                                                                    \
                for (i = at; i + lanes <= at + length; i += lanes) {                         \
                    FC_NLOAD(g, grad + i);                                                   \
                    FC_NLOAD(o, output + i);                                                 \
                    FC_NLOAD(x, values + i);                                                 \
                    g = FC_NN(mask_##SUFFIX)(g, o);                                          \
                    g = FC_NN(grad_input_one_##SUFFIX)(g, x, va, vb, vc);                    \
                    FC_NSTORE(grad_input + i, g);                                            \
                }                                                                            \
            } else {                                                                         \
                for (i = at; i + lanes <= at + length; i += lanes) {                         \
                    FC_NLOAD(g, grad + i);                                                   \
                    FC_NLOAD(x, values + i);                                                 \
                    g = FC_NN(grad_input_one_##SUFFIX)(g, x, va, vb, vc);                    \
                    FC_NSTORE(grad_input + i, g);                                            \
                }                                                                            \
            }                                                                                \
            for (; i < at + length; i++) {                                                   \
                T one = output ? fc_norm_relu_grad_##SUFFIX(grad[i], output[i]) : grad[i];   \
                T ga = one * a, xb = values[i] * b;                                          \
                FC_NORM_OPAQUE(ga);                                                          \
                FC_NORM_OPAQUE(xb);                                                          \
                grad_input[i] = ga + xb + c;                                                 \
            }                                                                                \
        }                                                                                    \
    }

FC_N_GRAD_INPUT(float, f, FC_NN(vf))
FC_N_GRAD_INPUT(double, d, FC_NN(vd))

#undef FC_N_SHIFTED
#undef FC_N_GRADIENT
#undef FC_N_AFFINE
#undef FC_N_GRAD_INPUT
#undef FC_N_LOAD_WIDE_f
#undef FC_N_LOAD_WIDE_d
#undef FC_N_WIDEN
#undef FC_N_FMA
#undef FC_ND
#undef FC_NFL
#undef FC_NK
#undef FC_NLOAD
#undef FC_NSTORE
#undef FC_NUNROLLED
#undef FC_LOCAL
#undef FC_KERNEL
#undef FC_N_TARGET
#undef FC_N_BYTES
#undef FC_NN
