/* Portable SIMD for the generic kernels: GCC/clang vector extensions, so one source gives
 * SSE2 code on baseline x86-64 and NEON on aarch64 (and whatever else the compiler targets),
 * with no -m flags and no intrinsics.
 *
 * The vectors are 16 bytes (4 floats, 2 doubles), the width every target here has in its
 * baseline: wider types would be split by the compiler, which then loses track of which
 * halves stay in registers. Operations are element-wise IEEE ones (+, *), so a vector lane
 * computes what the scalar loop computes for that element. The compiler may contract a * b + c
 * into one fused multiply-add where the baseline has one (aarch64, not x86-64's SSE2): the
 * same code then always contracts the same way, so results still depend on the shapes only,
 * never on the thread count.
 *
 * FC_SIMD is 0 for other compilers (MSVC): the callers keep a plain-C version behind it.
 */
#ifndef FASTCONV_SIMD_H
#define FASTCONV_SIMD_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define FC_SIMD 1
#else
#define FC_SIMD 0
#endif

#if FC_SIMD
#define FC_SIMD_BYTES 16
typedef float fc_v4f __attribute__((vector_size(16)));
typedef double fc_v2d __attribute__((vector_size(16)));

#define FC_SIMD_INLINE static inline __attribute__((always_inline))

/* unaligned loads and stores: memcpy of a vector's bytes compiles to one move */
FC_SIMD_INLINE fc_v4f fc_v4f_load(const float *p)
{
    fc_v4f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
FC_SIMD_INLINE void fc_v4f_store(float *p, fc_v4f v) { __builtin_memcpy(p, &v, sizeof v); }
FC_SIMD_INLINE fc_v4f fc_v4f_set1(float x)
{
    fc_v4f v = {x, x, x, x};
    return v;
}
FC_SIMD_INLINE fc_v4f fc_v4f_zero(void) { return fc_v4f_set1(0.0f); }

FC_SIMD_INLINE fc_v2d fc_v2d_load(const double *p)
{
    fc_v2d v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
FC_SIMD_INLINE void fc_v2d_store(double *p, fc_v2d v) { __builtin_memcpy(p, &v, sizeof v); }
FC_SIMD_INLINE fc_v2d fc_v2d_set1(double x)
{
    fc_v2d v = {x, x};
    return v;
}
FC_SIMD_INLINE fc_v2d fc_v2d_zero(void) { return fc_v2d_set1(0.0); }

/* lanes of two vectors picked by index (0..3 from a, 4..7 from b; for doubles 0..1, 2..3):
 * clang and GCC >= 12 spell it __builtin_shufflevector, older GCC __builtin_shuffle */
#if defined(__clang__) || __GNUC__ >= 12
#define FC_SHUFFLE4(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#define FC_SHUFFLE2(a, b, i0, i1) __builtin_shufflevector(a, b, i0, i1)
#else
typedef int fc_v4i __attribute__((vector_size(16)));
typedef long long fc_v2l __attribute__((vector_size(16)));
#define FC_SHUFFLE4(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (fc_v4i){i0, i1, i2, i3})
#define FC_SHUFFLE2(a, b, i0, i1) __builtin_shuffle(a, b, (fc_v2l){i0, i1})
#endif

/* dst[j*step + r] = src[r*ld + j] for r, j < 4: a 4 x 4 block of floats transposed in
 * registers (moves only, so any order of them gives the same bits) */
FC_SIMD_INLINE void fc_v4f_transpose4x4(const float *src, ptrdiff_t ld, float *dst,
                                        ptrdiff_t step)
{
    fc_v4f r0 = fc_v4f_load(src), r1 = fc_v4f_load(src + ld);
    fc_v4f r2 = fc_v4f_load(src + 2 * ld), r3 = fc_v4f_load(src + 3 * ld);
    fc_v4f t0 = FC_SHUFFLE4(r0, r1, 0, 4, 1, 5), t1 = FC_SHUFFLE4(r0, r1, 2, 6, 3, 7);
    fc_v4f t2 = FC_SHUFFLE4(r2, r3, 0, 4, 1, 5), t3 = FC_SHUFFLE4(r2, r3, 2, 6, 3, 7);
    fc_v4f_store(dst, FC_SHUFFLE4(t0, t2, 0, 1, 4, 5));
    fc_v4f_store(dst + step, FC_SHUFFLE4(t0, t2, 2, 3, 6, 7));
    fc_v4f_store(dst + 2 * step, FC_SHUFFLE4(t1, t3, 0, 1, 4, 5));
    fc_v4f_store(dst + 3 * step, FC_SHUFFLE4(t1, t3, 2, 3, 6, 7));
}

/* the same for a 2 x 2 block of doubles */
FC_SIMD_INLINE void fc_v2d_transpose2x2(const double *src, ptrdiff_t ld, double *dst,
                                        ptrdiff_t step)
{
    fc_v2d r0 = fc_v2d_load(src), r1 = fc_v2d_load(src + ld);
    fc_v2d_store(dst, FC_SHUFFLE2(r0, r1, 0, 2));
    fc_v2d_store(dst + step, FC_SHUFFLE2(r0, r1, 1, 3));
}

/* dst[j*dst_ld + r] = src[r*ld + j] for r < rows, j < count, by B x B blocks in registers
 * (B = 4 floats, 2 doubles), the edges one element at a time. Moves only: the same bits as
 * the element-by-element copies. (The GEMM panels, src/_gemm.h; the few-channel kernels'
 * pixel-major blocks into channel planes, src/_fewchan.h.) */
#define FC_TRANSPOSE_VEC_DEFINE(NAME, T, B, BLOCK)                                           \
    static inline void NAME(const T *src, ptrdiff_t ld, ptrdiff_t rows, ptrdiff_t count,     \
                            T *dst, ptrdiff_t dst_ld)                                        \
    {                                                                                        \
        ptrdiff_t whole = rows - rows % B, r0, r, j;                                         \
        for (r0 = 0; r0 < whole; r0 += B) {                                                  \
            for (j = 0; j + B <= count; j += B)                                              \
                BLOCK(src + r0 * ld + j, ld, dst + j * dst_ld + r0, dst_ld);                 \
            for (; j < count; j++)                                                           \
                for (r = r0; r < r0 + B; r++)                                                \
                    dst[j * dst_ld + r] = src[r * ld + j];                                   \
        }                                                                                    \
        for (r = whole; r < rows; r++)                                                       \
            for (j = 0; j < count; j++)                                                      \
                dst[j * dst_ld + r] = src[r * ld + j];                                       \
    }
FC_TRANSPOSE_VEC_DEFINE(fc_transpose_vec_s, float, 4, fc_v4f_transpose4x4)
FC_TRANSPOSE_VEC_DEFINE(fc_transpose_vec_d, double, 2, fc_v2d_transpose2x2)
#undef FC_TRANSPOSE_VEC_DEFINE
#endif

#endif
