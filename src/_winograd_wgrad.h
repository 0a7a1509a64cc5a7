/* The weight gradient by Winograd F(m x m, 3 x 3) (src/conv/winograd_wgrad.pxi runs these
 * around the packed GEMM of _gemm.h and the input transform of _winograd.h).
 *
 * For one tile (m x m outputs at the tile's place, e its grad_output values, d the alpha x
 * alpha input patch the forward pass would read, alpha = m + 2), the forward identity
 * y = A^T [(G g G^T) . (B^T d B)] A read as a trilinear form in (e, g, d) gives
 *     dW_tile = sum_ij e[i][j] d[i + p][j + q] = G^T [(A e A^T) . (B^T d B)] G,
 * so the weight gradient is, per alpha^2 position xi, one GEMM summing over the tiles,
 *     dW_hat[xi] (K x C) += Gy[xi] (K x tiles) V[xi]^T (tiles x C),
 * then dW[k][c] = G^T dW_hat[k][c] G once at the end. This file has the two transforms the
 * forward pass lacks: grad_output's tiles (A e A^T, the output transform run backwards) and
 * the final G^T . G, per element type and instruction set like _winograd.h (the same matrices,
 * _winograd_matrices.h, read transposed; the same register transposes).
 *
 * Each output element of a transform is computed by the same operations in the same order
 * whatever the lane or the thread. Nothing here allocates or fails: the caller has checked
 * the shapes and sized every row.
 */
#ifndef FASTCONV_WINOGRAD_WGRAD_H
#define FASTCONV_WINOGRAD_WGRAD_H

#include <stddef.h>
#include <string.h>

#include "_cpu.h"
#include "_gemm.h" /* the AVX2 register transposes */
#include "_simd.h"
#include "_winograd.h"
#include "_winograd_matrices.h"

/* The register transposes: _winograd.h's, FC_W_TRANSPOSE_<type>_<isa> and FC_W_TB_... */

/* ---- the builds ------------------------------------------------------------------------ */

#define FC_GW_TARGET
#define FC_GW_VBYTES 16
#define FC_T float
#define FC_GWN(name) fc_wgrad_##name##_float_generic
#define FC_GW_TRANSPOSE FC_W_TRANSPOSE_float_generic
#define FC_GW_TB FC_W_TB_float_generic
#include "_winograd_wgrad_impl.h"
#define FC_GW_TARGET
#define FC_GW_VBYTES 16
#define FC_T double
#define FC_GWN(name) fc_wgrad_##name##_double_generic
#define FC_GW_TRANSPOSE FC_W_TRANSPOSE_double_generic
#define FC_GW_TB FC_W_TB_double_generic
#include "_winograd_wgrad_impl.h"

#if FC_HAVE_X86_TARGETS
#define FC_GW_TARGET __attribute__((target("avx2,fma")))
#define FC_GW_VBYTES 32
#define FC_T float
#define FC_GWN(name) fc_wgrad_##name##_float_avx2
#define FC_GW_TRANSPOSE FC_W_TRANSPOSE_float_avx2
#define FC_GW_TB FC_W_TB_float_avx2
#include "_winograd_wgrad_impl.h"
#define FC_GW_TARGET __attribute__((target("avx2,fma")))
#define FC_GW_VBYTES 32
#define FC_T double
#define FC_GWN(name) fc_wgrad_##name##_double_avx2
#define FC_GW_TRANSPOSE FC_W_TRANSPOSE_double_avx2
#define FC_GW_TB FC_W_TB_double_avx2
#include "_winograd_wgrad_impl.h"
#define FC_GW_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define FC_GW_VBYTES 64
#define FC_T float
#define FC_GWN(name) fc_wgrad_##name##_float_avx512
#define FC_GW_TRANSPOSE FC_W_TRANSPOSE_float_avx2
#define FC_GW_TB FC_W_TB_float_avx2
#include "_winograd_wgrad_impl.h"
#define FC_GW_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define FC_GW_VBYTES 64
#define FC_T double
#define FC_GWN(name) fc_wgrad_##name##_double_avx512
#define FC_GW_TRANSPOSE FC_W_TRANSPOSE_double_avx2
#define FC_GW_TB FC_W_TB_double_avx2
#include "_winograd_wgrad_impl.h"
#endif

#define FC_WGRAD_TABLE(T)                                                                    \
    typedef struct {                                                                         \
        void (*gy[4])(const T*, const fc_wino_geometry*, ptrdiff_t, ptrdiff_t, T*, ptrdiff_t, \
                      ptrdiff_t);                                                            \
        void (*weights[4])(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,  \
                           T*);                                                              \
    } fc_wgrad_kernels_##T;
FC_WGRAD_TABLE(float)
FC_WGRAD_TABLE(double)

#define FC_WGRAD_FILL(TABLE, T, ISA)                                                         \
    do {                                                                                     \
        TABLE.gy[0] = fc_wgrad_gy2_##T##_##ISA;                                              \
        TABLE.gy[1] = fc_wgrad_gy4_##T##_##ISA;                                              \
        TABLE.gy[2] = fc_wgrad_gy5_##T##_##ISA;                                              \
        TABLE.gy[3] = fc_wgrad_gy6_##T##_##ISA;                                              \
        TABLE.weights[0] = fc_wgrad_weights2_##T##_##ISA;                                    \
        TABLE.weights[1] = fc_wgrad_weights4_##T##_##ISA;                                    \
        TABLE.weights[2] = fc_wgrad_weights5_##T##_##ISA;                                    \
        TABLE.weights[3] = fc_wgrad_weights6_##T##_##ISA;                                    \
    } while (0)

static fc_wgrad_kernels_float fc_wgrad_float;
static fc_wgrad_kernels_double fc_wgrad_double;

/* the tables' slot of tile size m: 2, 4, 5, 6 -> 0, 1, 2, 3 */
static inline int fc_wgrad_index(int m) { return m == 2 ? 0 : m - 3; }

/* pick the build for fc_cpu_isa(); called once at import, before any kernel runs */
static int fc_wgrad_select(void)
{
    int level = fc_cpu_isa();
    FC_WGRAD_FILL(fc_wgrad_float, float, generic);
    FC_WGRAD_FILL(fc_wgrad_double, double, generic);
#if FC_HAVE_X86_TARGETS
    if (level == FC_ISA_AVX512) {
        FC_WGRAD_FILL(fc_wgrad_float, float, avx512);
        FC_WGRAD_FILL(fc_wgrad_double, double, avx512);
    } else if (level == FC_ISA_AVX2) {
        FC_WGRAD_FILL(fc_wgrad_float, float, avx2);
        FC_WGRAD_FILL(fc_wgrad_double, double, avx2);
    }
#else
    level = FC_ISA_GENERIC;
#endif
    return level;
}

/* The entry points (m = 2, 4, 5 or 6; the caller checks it).
 *
 * gy: out[xi*xi_step + k*ld + (t - t0)] = (A e A^T)[xi] of channel k of tile t, for the
 *   tiles [t0, t0 + count) and every channel (g->channels planes of gy per sample, g's
 *   output plane: the tile's values past its edges are zeros); the columns up to count
 *   rounded up to FC_WINO_LANES are zeros. ld >= that rounded count.
 * weights: dw[(k*c_in + c)*9 + p*3 + q] = (G^T H G)[p][q] for k in [k0, k1), c < c_in, where
 *   H[xi] = acc[xi*xi_step + k*ldc + c] (computed in double whatever the element type).
 */
#define FC_WGRAD_ENTRIES(T)                                                                  \
    static void fc_wgrad_gy_##T(int m, const T* gy, const fc_wino_geometry* g, ptrdiff_t t0, \
                                ptrdiff_t count, T* out, ptrdiff_t ld, ptrdiff_t xi_step)     \
    {                                                                                        \
        fc_wgrad_##T.gy[fc_wgrad_index(m)](gy, g, t0, count, out, ld, xi_step);            \
    }                                                                                        \
    static void fc_wgrad_weights_##T(int m, const T* acc, ptrdiff_t ldc, ptrdiff_t xi_step,  \
                                     ptrdiff_t k0, ptrdiff_t k1, ptrdiff_t c_in, T* dw)      \
    {                                                                                        \
        fc_wgrad_##T.weights[fc_wgrad_index(m)](acc, ldc, xi_step, k0, k1, c_in, dw);       \
    }
FC_WGRAD_ENTRIES(float)
FC_WGRAD_ENTRIES(double)

#endif
