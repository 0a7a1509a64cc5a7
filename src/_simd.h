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
#endif

#endif
