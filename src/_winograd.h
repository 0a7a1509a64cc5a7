/* Winograd F(m x m, 3 x 3) transforms (src/conv/winograd.pxi runs them around the packed GEMM
 * of _gemm.h): y = A^T [(G g G^T) . (B^T d B)] A per tile of m x m outputs, alpha = m + 2,
 * for m = 2, 4, 5, 6 (the matrices: _winograd_matrices.h, from tools/winograd_matrices.py).
 *
 * A convolution's tiles are numbered over the whole batch (sample-major, then tile rows, then
 * tile columns), and a kernel transforms a run [t0, t0 + count) of them: FC_WINO_LANES tiles
 * at a time, one tile per vector lane, so every transform is a few dozen vector operations
 * with constant coefficients (the matrices are compile-time constants: zero terms vanish, and
 * the loops unroll; the output transform, and the input transform at m = 4 and 5, are written
 * out by hand with the parts that the rows of the points +-a share computed once). The
 * transformed tiles are written as the rows the GEMM reads in place: V[xi][c][tile] (the
 * input) with the tiles contiguous, M[xi][k][tile] (the GEMM's result) likewise; the weights
 * go straight into the GEMM's packed A panels.
 *
 * One source, _winograd_impl.h, is compiled for float and double, each for the compiler's
 * baseline (SSE2 on x86-64, NEON on aarch64), AVX2+FMA and AVX-512F (GCC/Clang target
 * attributes on x86-64); fc_wino_select() picks one build per type with fc_cpu_isa()
 * (src/_cpu.h: detected once, capped by FASTCONV_ISA). Each output element of a transform
 * is computed by the same operations in the same order whatever the lane or the thread,
 * so results never depend on the thread count. The patches are copied row by row into one
 * slot per lane and transposed in registers (FC_W_TRANSPOSE below): gathering them element
 * by element cost 2.5x the transform's arithmetic, and masked AVX-512 gathers (vpgatherdps)
 * were measured 1.5x slower than that on Zen 4. The arithmetic runs on explicit vectors of
 * the build's width (FC_W_VBYTES). (Like the packed GEMM's micro-kernels, the builds with FMA
 * may round differently from the baseline in the last bit.)
 * Nothing here allocates or fails: the caller has checked the shapes and sized every row.
 */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_cpu.h"
#include "_gemm.h" /* the AVX2 register transposes */
#include "_simd.h"
#include "_winograd_matrices.h"

/* A patch row's slot in the per-lane copies of the input transform: 8 values whatever alpha,
 * so that the row copies and the transposes' loads cover the same bytes (a load spanning two
 * earlier stores waits for them to reach the cache) */
#define FC_WINO_PITCH 8

/* A TB x TB block transposed in registers, dst[j*step + r] = src[r*ld + j] (moves only), per
 * build: the portable 16-byte ones of _simd.h, the AVX2 ones of _gemm.h at avx2 and avx512 */
#if FC_SIMD
#define FC_W_TRANSPOSE_float_generic(src, ld, dst, step) fc_v4f_transpose4x4(src, ld, dst, step)
#define FC_W_TB_float_generic 4
#define FC_W_TRANSPOSE_double_generic(src, ld, dst, step) fc_v2d_transpose2x2(src, ld, dst, step)
#define FC_W_TB_double_generic 2
#else
#define FC_W_TRANSPOSE_float_generic(src, ld, dst, step) (dst)[0] = (src)[0]
#define FC_W_TB_float_generic 1
#define FC_W_TRANSPOSE_double_generic(src, ld, dst, step) (dst)[0] = (src)[0]
#define FC_W_TB_double_generic 1
#endif
#if FC_HAVE_X86_TARGETS
#define FC_W_TRANSPOSE_float_avx2(src, ld, dst, step) fc_stranspose8x8_avx2(src, ld, dst, step)
#define FC_W_TB_float_avx2 8
#define FC_W_TRANSPOSE_double_avx2(src, ld, dst, step) fc_dtranspose4x4_avx2(src, ld, dst, step)
#define FC_W_TB_double_avx2 4
#define FC_W_TRANSPOSE_float_avx512 FC_W_TRANSPOSE_float_avx2
#define FC_W_TB_float_avx512 8
#define FC_W_TRANSPOSE_double_avx512 FC_W_TRANSPOSE_double_avx2
#define FC_W_TB_double_avx512 4
#endif

/* tiles per vector pass: one 64-byte row of floats (two zmm of doubles) */
#define FC_WINO_LANES 16
#define FC_WINO_ALPHA_MAX 8

typedef struct {
    ptrdiff_t channels;        /* the planes transformed: the first `channels` of each sample */
    ptrdiff_t in_h, in_w;      /* the input plane */
    ptrdiff_t out_h, out_w;    /* the output plane */
    ptrdiff_t pad_top, pad_left;
    ptrdiff_t tiles_h, tiles_w; /* tiles per plane: ceil(out / m) each way */
    ptrdiff_t planes;          /* planes per sample of the array read or written (>= channels) */
} fc_wino_geometry;

/* A function NAME(rows, cols, tr, mat, in, in_step, out, out_step) for the builds' _impl.h
 * files (the forward pass's, _winograd_impl.h, and the weight gradient's,
 * _winograd_wgrad_impl.h), which put their qualifiers (static inline, the target) before it:
 * out[i*out_step + l] = sum_j M[i][j] * in[j*in_step + l] for i < rows, l < FC_WINO_LANES,
 * where M is mat (rows x cols, row-major) or, with tr, mat read transposed (mat is cols x
 * rows): each row's terms in the order of j, the zero ones skipped and the +-1 ones added or
 * subtracted (mat is a constant table, rows, cols and tr constants: after inlining and
 * unrolling, the compiler resolves every test below). The lanes go in explicit vectors VEC
 * of VBYTES (the build's register width): loops over a plain array of FC_WINO_LANES left the
 * vectorising to the compiler, which split them into 128-bit pieces and spilled (the input
 * transform ran at a tenth of its arithmetic's speed). Every lane gets the same operations. */
#define FC_WINO_APPLY(NAME, TYPE, VEC, VBYTES)                                                 \
    void NAME(int rows, int cols, int tr, const double* mat, const TYPE* in,                  \
              ptrdiff_t in_step, TYPE* out, ptrdiff_t out_step)                               \
    {                                                                                        \
        enum { VL = (VBYTES) / (int)sizeof(TYPE) };                                          \
        int i, j, s;                                                                         \
        _Pragma("GCC unroll 8") for (s = 0; s < FC_WINO_LANES; s += VL) {                     \
            VEC src[FC_WINO_ALPHA_MAX];                                                      \
            _Pragma("GCC unroll 8") for (j = 0; j < cols; j++)                                \
                __builtin_memcpy(&src[j], in + j * in_step + s, sizeof src[j]);              \
            _Pragma("GCC unroll 8") for (i = 0; i < rows; i++) {                              \
                VEC acc = {0};                                                               \
                int first = 1;                                                               \
                _Pragma("GCC unroll 8") for (j = 0; j < cols; j++) {                          \
                    const double c = tr ? mat[j * rows + i] : mat[i * cols + j];             \
                    const TYPE cf = (TYPE)c;                                                 \
                    if (c == 0)                                                              \
                        continue;                                                            \
                    if (first) {                                                             \
                        if (c == 1)                                                          \
                            acc = src[j];                                                    \
                        else if (c == -1)                                                    \
                            acc = -src[j];                                                   \
                        else                                                                 \
                            acc = cf * src[j];                                               \
                        first = 0;                                                           \
                    } else if (c == 1) {                                                     \
                        acc = acc + src[j];                                                  \
                    } else if (c == -1) {                                                    \
                        acc = acc - src[j];                                                  \
                    } else {                                                                 \
                        acc = acc + cf * src[j];                                             \
                    }                                                                        \
                }                                                                            \
                __builtin_memcpy(out + i * out_step + s, &acc, sizeof acc);                  \
            }                                                                                \
        }                                                                                    \
    }

/* the tile's sample and the top-left input pixel its alpha x alpha patch starts at */
static inline void fc_wino_tile(const fc_wino_geometry* g, int m, ptrdiff_t t, ptrdiff_t* n,
                                ptrdiff_t* row, ptrdiff_t* col)
{
    ptrdiff_t per_plane = g->tiles_h * g->tiles_w, r;
    *n = t / per_plane;
    r = t % per_plane;
    *row = (r / g->tiles_w) * m;
    *col = (r % g->tiles_w) * m;
}

/* ---- the builds ------------------------------------------------------------------------ */

#define FC_W_TARGET
#define FC_W_VBYTES 16
#define FC_T float
#define FC_WN(name) fc_wino_##name##_float_generic
#define FC_W_TRANSPOSE FC_W_TRANSPOSE_float_generic
#define FC_W_TB FC_W_TB_float_generic
#include "_winograd_impl.h"
#define FC_W_TARGET
#define FC_W_VBYTES 16
#define FC_T double
#define FC_WN(name) fc_wino_##name##_double_generic
#define FC_W_TRANSPOSE FC_W_TRANSPOSE_double_generic
#define FC_W_TB FC_W_TB_double_generic
#include "_winograd_impl.h"

#if FC_HAVE_X86_TARGETS
#define FC_W_TARGET __attribute__((target("avx2,fma")))
#define FC_W_VBYTES 32
#define FC_T float
#define FC_WN(name) fc_wino_##name##_float_avx2
#define FC_W_TRANSPOSE FC_W_TRANSPOSE_float_avx2
#define FC_W_TB FC_W_TB_float_avx2
#include "_winograd_impl.h"
#define FC_W_TARGET __attribute__((target("avx2,fma")))
#define FC_W_VBYTES 32
#define FC_T double
#define FC_WN(name) fc_wino_##name##_double_avx2
#define FC_W_TRANSPOSE FC_W_TRANSPOSE_double_avx2
#define FC_W_TB FC_W_TB_double_avx2
#include "_winograd_impl.h"
#define FC_W_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define FC_W_VBYTES 64
#define FC_T float
#define FC_WN(name) fc_wino_##name##_float_avx512
#define FC_W_TRANSPOSE FC_W_TRANSPOSE_float_avx512
#define FC_W_TB FC_W_TB_float_avx512
#include "_winograd_impl.h"
#define FC_W_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define FC_W_VBYTES 64
#define FC_T double
#define FC_WN(name) fc_wino_##name##_double_avx512
#define FC_W_TRANSPOSE FC_W_TRANSPOSE_double_avx512
#define FC_W_TB FC_W_TB_double_avx512
#include "_winograd_impl.h"
#endif

/* one table of kernels per element type, indexed by fc_wino_index(m) */
#define FC_WINO_TABLE(T)                                                                     \
    typedef struct {                                                                         \
        void (*input[4])(const T*, const fc_wino_geometry*, ptrdiff_t, ptrdiff_t, T*,        \
                         ptrdiff_t, ptrdiff_t);                                              \
        void (*output[4])(const T*, ptrdiff_t, ptrdiff_t, const T*, T*,                      \
                          const fc_wino_geometry*, ptrdiff_t, ptrdiff_t);                    \
        void (*weights[4])(const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t, int, ptrdiff_t,        \
                           ptrdiff_t, int, T*, ptrdiff_t);                                   \
    } fc_wino_kernels_##T;
FC_WINO_TABLE(float)
FC_WINO_TABLE(double)

#define FC_WINO_FILL(TABLE, T, ISA)                                                          \
    do {                                                                                     \
        TABLE.input[0] = fc_wino_input2_##T##_##ISA;                                         \
        TABLE.input[1] = fc_wino_input4_##T##_##ISA;                                         \
        TABLE.input[2] = fc_wino_input5_##T##_##ISA;                                         \
        TABLE.input[3] = fc_wino_input6_##T##_##ISA;                                         \
        TABLE.output[0] = fc_wino_output2_##T##_##ISA;                                       \
        TABLE.output[1] = fc_wino_output4_##T##_##ISA;                                       \
        TABLE.output[2] = fc_wino_output5_##T##_##ISA;                                       \
        TABLE.output[3] = fc_wino_output6_##T##_##ISA;                                       \
        TABLE.weights[0] = fc_wino_weights2_##T##_##ISA;                                     \
        TABLE.weights[1] = fc_wino_weights4_##T##_##ISA;                                     \
        TABLE.weights[2] = fc_wino_weights5_##T##_##ISA;                                     \
        TABLE.weights[3] = fc_wino_weights6_##T##_##ISA;                                     \
    } while (0)

/* the tables' slot of tile size m: 2, 4, 5, 6 -> 0, 1, 2, 3 */
static inline int fc_wino_index(int m) { return m == 2 ? 0 : m - 3; }

static fc_wino_kernels_float fc_wino_float;
static fc_wino_kernels_double fc_wino_double;
static int fc_wino_level = -1;

/* pick the build for fc_cpu_isa(); called once at import, before any kernel runs */
static int fc_wino_select(void)
{
    int level = fc_cpu_isa();
    FC_WINO_FILL(fc_wino_float, float, generic);
    FC_WINO_FILL(fc_wino_double, double, generic);
#if FC_HAVE_X86_TARGETS
    if (level == FC_ISA_AVX512) {
        FC_WINO_FILL(fc_wino_float, float, avx512);
        FC_WINO_FILL(fc_wino_double, double, avx512);
    } else if (level == FC_ISA_AVX2) {
        FC_WINO_FILL(fc_wino_float, float, avx2);
        FC_WINO_FILL(fc_wino_double, double, avx2);
    }
#else
    level = FC_ISA_GENERIC;
#endif
    fc_wino_level = level;
    return level;
}

static const char* fc_wino_isa(void) { return fc_cpu_isa_name(fc_wino_level); }

/* The entry points (m = 2, 4, 5 or 6; the caller checks it).
 *
 * input: V[xi*xi_step + c*ld + (t - t0)] = (B^T d B)[xi] of channel c of tile t, for the
 *   tiles [t0, t0 + count) and every channel (g->channels planes of x per sample, g's input
 *   plane, zero padding outside it); the columns up to count rounded up to FC_WINO_LANES are
 *   zeros. ld >= that rounded count.
 * output: out[n][k][tile's rows and columns] = (A^T M A) (+ bias[k]) for those tiles and the
 *   first g->channels of the g->planes planes per sample of out, cut at the output plane's
 *   edges; M[xi*xi_step + k*ld + col]. (A range [k0, k1) of the output channels: out and
 *   bias advanced by k0 planes, mm by k0 rows, channels = k1 - k0.)
 * weights: packed[xi*xi_step + (k / mr)*c_in*mr + c*mr + k % mr] = (G w[k][c] G^T)[xi] for
 *   k in [k0, k1) (computed in double), 0 for k in [k1, k0 + mr): the packed GEMM's A panel
 *   of rows [k0, k0 + mr) of each U[xi] (k0 a multiple of mr, k1 <= k0 + mr). The 3 x 3
 *   kernel w[k][c] starts at w + k*k_stride + c*c_stride, its 9 taps in row-major order, or
 *   in reverse with flip: (c_in*9, 9, 0) for a (K, C, 3, 3) weight; (9, K*9, 1) for the
 *   flipped, transposed kernels of an input gradient read straight from the forward pass's
 *   (C, K, 3, 3) weight (no transposed copy).
 * The callers keep xi_step off multiples of 4 KiB (a row of alpha^2 at such a stride all
 * falls in one L1 set). */
#define FC_WINO_ENTRIES(T)                                                                   \
    static void fc_wino_input_##T(int m, const T* x, const fc_wino_geometry* g, ptrdiff_t t0, \
                                  ptrdiff_t count, T* v, ptrdiff_t ld, ptrdiff_t xi_step)     \
    {                                                                                        \
        fc_wino_##T.input[fc_wino_index(m)](x, g, t0, count, v, ld, xi_step);              \
    }                                                                                        \
    static void fc_wino_output_##T(int m, const T* mm, ptrdiff_t ld, ptrdiff_t xi_step,      \
                                   const T* bias, T* out, const fc_wino_geometry* g,          \
                                   ptrdiff_t t0, ptrdiff_t count)                             \
    {                                                                                        \
        fc_wino_##T.output[fc_wino_index(m)](mm, ld, xi_step, bias, out, g, t0, count);    \
    }                                                                                        \
    static void fc_wino_weights_##T(int m, const T* w, ptrdiff_t c_in, ptrdiff_t k0,         \
                                    ptrdiff_t k1, int mr, ptrdiff_t k_stride,                 \
                                    ptrdiff_t c_stride, int flip, T* packed,                  \
                                    ptrdiff_t xi_step)                                        \
    {                                                                                        \
        fc_wino_##T.weights[fc_wino_index(m)](w, c_in, k0, k1, mr, k_stride, c_stride, flip, \
                                              packed, xi_step);                              \
    }
FC_WINO_ENTRIES(float)
FC_WINO_ENTRIES(double)

#endif
