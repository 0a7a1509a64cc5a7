/* The convolution's GEMM: C (m x n, row-major, row stride ldc) = A (m x k) * B (k x n)
 * [+ bias per row], A packed, B read in place.
 *
 * - A is packed in panels of MR rows, zero-padded: panel i holds a[i*MR + r][kk] at
 *   [kk*MR + r], panels k*MR apart. The convolution packs its weights once per call.
 * - B is read as panels of NR columns: element (kk, j) at b[(j / NR)*panel + kk*ldb + j % NR],
 *   zero past column n up to a whole panel. The im2col block is written once, as plain rows
 *   (panel = NR, ldb = the row length): the micro-kernel reads NR contiguous values per row,
 *   which is all packing would give it, so B is never copied a second time.
 * A K-range of a panel is contiguous (A) or evenly strided (B), so blocking K needs no copy.
 *
 * The micro-kernel keeps an MR x NR block of C in registers over a block of K (the B block,
 * at most KC_MAX rows of NR values, stays in L1 while the A panels stream past). K is cut into
 * blocks by its size alone, so every element of C is summed in the same order whoever
 * calls: results depend on the shapes only, never on threads. The micro-kernel is chosen
 * once, at import, from the level of src/_cpu.h (fc_gemm_init): AVX-512F at avx512, AVX2+FMA
 * at avx2, else a plain C kernel of the same shape that computes the same panels.
 */
#ifndef FASTCONV_GEMM_H
#define FASTCONV_GEMM_H

#include <stddef.h>
#include <string.h>
#include "_epilogue.h"

#include "_cpu.h"
#include "_simd.h"

/* Rows of A per panel: 6 with AVX2's 16 vector registers (12 accumulators), 8 with AVX-512
 * (8 accumulators of one zmm each; 8 divides the usual channel counts). Set once by
 * fc_gemm_init; the packing and the micro-kernel always agree on it. */
#define FC_GEMM_MR_MAX 8
#define FC_SGEMM_NR 16
#define FC_DGEMM_NR 8
/* B's K-block of one panel: KC_MAX rows of 64 bytes, in L1 */
#define FC_GEMM_KC_MAX 256

#if FC_HAVE_X86_TARGETS
#include <immintrin.h>
#endif

typedef void (*fc_skernel_t)(ptrdiff_t, const float *, const float *, ptrdiff_t, float *,
                             ptrdiff_t, int, const float *);
typedef void (*fc_dkernel_t)(ptrdiff_t, const double *, const double *, ptrdiff_t, double *,
                             ptrdiff_t, int, const double *);

/* c[r][s] = (accumulate ? c[r][s] : 0) + sum_kk a[kk][r] * b[kk*ldb + s]  (+ bias[r] if bias) */
#define FC_GEMM_GENERIC_KERNEL(NAME, T, MR, NR)                                              \
    static void NAME(ptrdiff_t kc, const T *a, const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc,\
                     int accumulate, const T *bias)                                          \
    {                                                                                        \
        T acc[MR][NR];                                                                       \
        ptrdiff_t kk;                                                                        \
        int r, s;                                                                            \
        for (r = 0; r < MR; r++)                                                             \
            for (s = 0; s < NR; s++)                                                         \
                acc[r][s] = 0;                                                               \
        for (kk = 0; kk < kc; kk++) {                                                        \
            for (r = 0; r < MR; r++) {                                                       \
                T av = a[kk * MR + r];                                                       \
                for (s = 0; s < NR; s++)                                                     \
                    acc[r][s] += av * b[kk * ldb + s];                                       \
            }                                                                                \
        }                                                                                    \
        for (r = 0; r < MR; r++)                                                             \
            for (s = 0; s < NR; s++) {                                                       \
                T v = acc[r][s];                                                             \
                if (accumulate)                                                              \
                    v = c[r * ldc + s] + v;                                                  \
                if (bias)                                                                    \
                    v = v + bias[r];                                                         \
                c[r * ldc + s] = v;                                                          \
            }                                                                                \
    }

#if FC_SIMD
/* The same sums in portable 16-byte vectors (src/_simd.h): the MR x NR block in passes of
 * FC_GEMM_CHUNK vectors across, each pass an MR x CHUNK tile of accumulators held in
 * registers over the whole K block (the A panel, MR values per K step, is read once per pass,
 * from L1). Two vectors across (12 accumulators) fit x86-64's 16 registers beside the B
 * vectors and a broadcast; on aarch64 four across (24) would fit its 32 only without the A
 * values GCC keeps in registers for its lane-indexed FMAs, and spilled, so it takes two as
 * well. Each element gets the scalar kernel's operations in its order: acc = acc + a * b from
 * 0 over kk, then c + acc, then + bias. */
#define FC_GEMM_CHUNK 2
#define FC_GEMM_VECTOR_KERNEL(NAME, T, VEC, LANES, LOAD, STORE, SET1, MR, NR)                \
    static void NAME(ptrdiff_t kc, const T *a, const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc,\
                     int accumulate, const T *bias)                                          \
    {                                                                                        \
        int j0, r, v;                                                                        \
        for (j0 = 0; j0 < NR; j0 += FC_GEMM_CHUNK * LANES) {                                 \
            VEC acc[MR][FC_GEMM_CHUNK];                                                      \
            const T *ap = a, *bp = b + j0;                                                   \
            ptrdiff_t kk;                                                                    \
            _Pragma("GCC unroll 8") for (r = 0; r < MR; r++)                                 \
                _Pragma("GCC unroll 4") for (v = 0; v < FC_GEMM_CHUNK; v++)                  \
                    acc[r][v] = SET1(0);                                                     \
            for (kk = 0; kk < kc; kk++) {                                                    \
                VEC bv[FC_GEMM_CHUNK];                                                       \
                _Pragma("GCC unroll 4") for (v = 0; v < FC_GEMM_CHUNK; v++)                  \
                    bv[v] = LOAD(bp + v * LANES);                                            \
                _Pragma("GCC unroll 8") for (r = 0; r < MR; r++) {                           \
                    VEC av = SET1(ap[r]);                                                    \
                    _Pragma("GCC unroll 4") for (v = 0; v < FC_GEMM_CHUNK; v++)              \
                        acc[r][v] = acc[r][v] + av * bv[v];                                  \
                }                                                                            \
                ap += MR;                                                                    \
                bp += ldb;                                                                   \
            }                                                                                \
            _Pragma("GCC unroll 8") for (r = 0; r < MR; r++) {                               \
                T *row = c + r * ldc + j0;                                                   \
                _Pragma("GCC unroll 4") for (v = 0; v < FC_GEMM_CHUNK; v++) {                \
                    VEC x = acc[r][v];                                                       \
                    if (accumulate)                                                          \
                        x = LOAD(row + v * LANES) + x;                                       \
                    if (bias)                                                                \
                        x = x + SET1(bias[r]);                                               \
                    STORE(row + v * LANES, x);                                               \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }

FC_GEMM_VECTOR_KERNEL(fc_skernel_generic, float, fc_v4f, 4, fc_v4f_load, fc_v4f_store,
                      fc_v4f_set1, 6, FC_SGEMM_NR)
FC_GEMM_VECTOR_KERNEL(fc_dkernel_generic, double, fc_v2d, 2, fc_v2d_load, fc_v2d_store,
                      fc_v2d_set1, 6, FC_DGEMM_NR)
#else
FC_GEMM_GENERIC_KERNEL(fc_skernel_generic, float, 6, FC_SGEMM_NR)
FC_GEMM_GENERIC_KERNEL(fc_dkernel_generic, double, 6, FC_DGEMM_NR)
#endif

#if FC_HAVE_X86_TARGETS
/* An MR x (2 vectors) micro-kernel in 256-bit vectors, for one ISA (TARGET) and type; the
 * AVX2+FMA one is 6 x 16 floats (6 x 8 doubles): 12 accumulators, 2 for B and 1 broadcast in
 * its 16 registers. The loops have constant bounds and are unrolled, so the arrays live in
 * registers. */
#define FC_GEMM_SIMD_KERNEL(NAME, TARGET, MR, T, VEC, LANES, SET0, LOAD, STORE, BCAST, FMA, \
                            ADD)                                                             \
    __attribute__((target(TARGET))) static void                                              \
    NAME(ptrdiff_t kc, const T *a, const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc,           \
         int accumulate, const T *bias)                                                      \
    {                                                                                        \
        VEC acc[MR][2], b0, b1, av;                                                           \
        ptrdiff_t kk;                                                                        \
        int r;                                                                               \
        _Pragma("GCC unroll 8") for (r = 0; r < MR; r++) {                                    \
            acc[r][0] = SET0();                                                              \
            acc[r][1] = SET0();                                                              \
        }                                                                                    \
        for (kk = 0; kk < kc; kk++) {                                                        \
            b0 = LOAD(b);                                                                    \
            b1 = LOAD(b + LANES);                                                            \
            _Pragma("GCC unroll 8") for (r = 0; r < MR; r++) {                                \
                av = BCAST(a + r);                                                           \
                acc[r][0] = FMA(av, b0, acc[r][0]);                                          \
                acc[r][1] = FMA(av, b1, acc[r][1]);                                          \
            }                                                                                \
            a += MR;                                                                         \
            b += ldb;                                                                        \
        }                                                                                    \
        _Pragma("GCC unroll 8") for (r = 0; r < MR; r++) {                                    \
            T *row = c + r * ldc;                                                            \
            VEC x0 = acc[r][0], x1 = acc[r][1];                                              \
            if (accumulate) {                                                                \
                x0 = ADD(LOAD(row), x0);                                                     \
                x1 = ADD(LOAD(row + LANES), x1);                                             \
            }                                                                                \
            if (bias) {                                                                      \
                VEC bv = BCAST(bias + r);                                                    \
                x0 = ADD(x0, bv);                                                            \
                x1 = ADD(x1, bv);                                                            \
            }                                                                                \
            STORE(row, x0);                                                                  \
            STORE(row + LANES, x1);                                                          \
        }                                                                                    \
    }

FC_GEMM_SIMD_KERNEL(fc_skernel_avx2, "avx2,fma", 6, float, __m256, 8, _mm256_setzero_ps,
                    _mm256_loadu_ps, _mm256_storeu_ps, _mm256_broadcast_ss, _mm256_fmadd_ps,
                    _mm256_add_ps)
FC_GEMM_SIMD_KERNEL(fc_dkernel_avx2, "avx2,fma", 6, double, __m256d, 4, _mm256_setzero_pd,
                    _mm256_loadu_pd, _mm256_storeu_pd, _mm256_broadcast_sd, _mm256_fmadd_pd,
                    _mm256_add_pd)

/* An MR x (1 vector) micro-kernel in 512-bit vectors (AVX-512F), 8 x 16 floats (8 x 8
 * doubles): a zmm holds a whole row of the panel, so the MR rows take MR accumulators and
 * each A value is broadcast from memory inside its FMA ({1to16}): per K step one load of B
 * and MR FMAs, a third of the 256-bit kernel's instructions for the same FLOPs (Zen 4 runs a
 * 512-bit FMA as two 256-bit halves, at the same FLOP rate). Each element of C gets the same
 * operations in the same order as in the 256-bit kernels. */
#define FC_GEMM_ZMM_KERNEL(NAME, MR, T, VEC, SET0, LOAD, STORE, SET1, FMA, ADD)              \
    __attribute__((target("avx512f"))) static void                                           \
    NAME(ptrdiff_t kc, const T *a, const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc,           \
         int accumulate, const T *bias)                                                      \
    {                                                                                        \
        VEC acc[MR], bv;                                                                     \
        ptrdiff_t kk;                                                                        \
        int r;                                                                               \
        _Pragma("GCC unroll 8") for (r = 0; r < MR; r++)                                     \
            acc[r] = SET0();                                                                 \
        for (kk = 0; kk < kc; kk++) {                                                        \
            bv = LOAD(b);                                                                    \
            _Pragma("GCC unroll 8") for (r = 0; r < MR; r++)                                 \
                acc[r] = FMA(SET1(a[r]), bv, acc[r]);                                        \
            a += MR;                                                                         \
            b += ldb;                                                                        \
        }                                                                                    \
        _Pragma("GCC unroll 8") for (r = 0; r < MR; r++) {                                   \
            T *row = c + r * ldc;                                                            \
            VEC x = acc[r];                                                                  \
            if (accumulate)                                                                  \
                x = ADD(LOAD(row), x);                                                       \
            if (bias)                                                                        \
                x = ADD(x, SET1(bias[r]));                                                   \
            STORE(row, x);                                                                   \
        }                                                                                    \
    }

FC_GEMM_ZMM_KERNEL(fc_skernel_avx512, 8, float, __m512, _mm512_setzero_ps, _mm512_loadu_ps,
                   _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps)
FC_GEMM_ZMM_KERNEL(fc_dkernel_avx512, 8, double, __m512d, _mm512_setzero_pd, _mm512_loadu_pd,
                   _mm512_storeu_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd)
#endif

static fc_skernel_t fc_skernel = fc_skernel_generic;
static fc_dkernel_t fc_dkernel = fc_dkernel_generic;
static int fc_gemm_mr = 6;
static const char *fc_gemm_name = "generic 6x16";

/* Pick the micro-kernels for the level of src/_cpu.h; called once, at import, before any
 * thread runs them. fc_gemm_name is then "avx512 8x16", "avx2 6x16" or "generic 6x16". */
static void fc_gemm_init(void)
{
    int level = fc_cpu_isa();
    fc_skernel = fc_skernel_generic;
    fc_dkernel = fc_dkernel_generic;
    fc_gemm_mr = 6;
    fc_gemm_name = "generic 6x16";
#if FC_HAVE_X86_TARGETS
    if (level >= FC_ISA_AVX512) {
        fc_skernel = fc_skernel_avx512;
        fc_dkernel = fc_dkernel_avx512;
        fc_gemm_mr = 8;
        fc_gemm_name = "avx512 8x16";
    } else if (level >= FC_ISA_AVX2) {
        fc_skernel = fc_skernel_avx2;
        fc_dkernel = fc_dkernel_avx2;
        fc_gemm_name = "avx2 6x16";
    }
#else
    (void)level;
#endif
}

static int fc_gemm_rows(void) { return fc_gemm_mr; }

/* The micro-kernel in use, or NULL where the CPU itself has only the plain C one: there the
 * convolutions leave their GEMMs to BLAS (fastconv/conv.py reads the NULL). A FASTCONV_ISA
 * cap below the CPU's level names the plain C kernel instead, so the capped run tests it on a
 * bigger CPU. */
static const char *fc_gemm_kernel_name(void)
{
    /* a CPU with only the plain C kernel (no vector extensions: MSVC) leaves the GEMMs to
     * BLAS; the portable vector kernel (src/_simd.h) runs wherever the compiler has them */
    return (FC_SIMD || fc_cpu_detect() != FC_ISA_GENERIC) ? fc_gemm_name : NULL;
}

/* K blocks: as few as keep each at most KC_MAX, of near-equal size (shape only) */
static ptrdiff_t fc_gemm_kc(ptrdiff_t k)
{
    ptrdiff_t blocks = (k + FC_GEMM_KC_MAX - 1) / FC_GEMM_KC_MAX;
    if (blocks < 1)
        blocks = 1;
    return (k + blocks - 1) / blocks;
}

/* A panel of 8 rows with unit column stride (the weight gradient's tile of grad_output, packed
 * per tile): dst[kk*8 + r] = src[r*rs + kk] for r < 8, kk < k, by 8x8 (floats) or 4x4
 * (doubles) transposes in registers. Only the AVX-512 kernel's panels have 8 rows, and its
 * CPUs have AVX2. */
#if FC_HAVE_X86_TARGETS
/* dst[j*step + r] = src[r*ld + j] for r, j < 8: one 8 x 8 block of floats transposed in
 * registers (the packing of A below and the B panels of the weight gradient use it) */
__attribute__((target("avx2"))) static inline void
fc_stranspose8x8_avx2(const float *src, ptrdiff_t ld, float *dst, ptrdiff_t step)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld);
    __m256 r2 = _mm256_loadu_ps(src + 2 * ld), r3 = _mm256_loadu_ps(src + 3 * ld);
    __m256 r4 = _mm256_loadu_ps(src + 4 * ld), r5 = _mm256_loadu_ps(src + 5 * ld);
    __m256 r6 = _mm256_loadu_ps(src + 6 * ld), r7 = _mm256_loadu_ps(src + 7 * ld);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst + 0 * step, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + 1 * step, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * step, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * step, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * step, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * step, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * step, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * step, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* the same for a 4 x 4 block of doubles */
__attribute__((target("avx2"))) static inline void
fc_dtranspose4x4_avx2(const double *src, ptrdiff_t ld, double *dst, ptrdiff_t step)
{
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ld);
    __m256d r2 = _mm256_loadu_pd(src + 2 * ld), r3 = _mm256_loadu_pd(src + 3 * ld);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst + 0 * step, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + 1 * step, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * step, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * step, _mm256_permute2f128_pd(t1, t3, 0x31));
}

/* dst[j*dst_ld + r] = src[r*ld + j] for r < rows, j < count: 8 x 8 blocks in registers, the
 * edges one element at a time. The panels below (rows 8 or 16 across, dst_ld = rows) and the
 * direct kernels' pixel-major tiles (src/_direct.h) are both such transposes. */
__attribute__((target("avx2"))) static void
fc_stranspose_avx2(const float *src, ptrdiff_t ld, ptrdiff_t rows, ptrdiff_t count, float *dst,
                   ptrdiff_t dst_ld)
{
    ptrdiff_t blocks = rows / 8, b, j, e;
    /* a block of 8 rows across all columns, then the next: the direct kernels' tiles have
     * hundreds of pixel rows and few channels (one block at a time kept the depthwise forward
     * pass as fast as its own copy of this loop; the other order made it 5% slower) */
    for (b = 0; b < blocks; b++) {
        const float *s = src + 8 * b * ld;
        float *d = dst + 8 * b;
        for (j = 0; j + 8 <= count; j += 8)
            fc_stranspose8x8_avx2(s + j, ld, d + j * dst_ld, dst_ld);
        for (; j < count; j++)
            for (e = 0; e < 8; e++)
                d[j * dst_ld + e] = s[e * ld + j];
    }
    /* the rows past the last block of 8 */
    src += 8 * blocks * ld;
    dst += 8 * blocks;
    for (e = 0; e < rows % 8; e++)
        for (j = 0; j < count; j++)
            dst[j * dst_ld + e] = src[e * ld + j];
}

/* 8 rows of doubles to a panel of 8 across, 4 columns at a time: two 4x4 transposes */
__attribute__((target("avx2"))) static void
fc_dtranspose8_avx2(const double *src, ptrdiff_t ld, ptrdiff_t count, double *dst)
{
    ptrdiff_t j = 0;
    int r;
    for (; j + 4 <= count; j += 4) {
        fc_dtranspose4x4_avx2(src + j, ld, dst + j * 8, 8);
        fc_dtranspose4x4_avx2(src + 4 * ld + j, ld, dst + j * 8 + 4, 8);
    }
    for (; j < count; j++)
        for (r = 0; r < 8; r++)
            dst[j * 8 + r] = src[r * ld + j];
}

/* A panels of 8 rows with unit column stride: the same transposes */
#define fc_spack8_avx2(src, rs, k, dst) fc_stranspose_avx2(src, rs, 8, k, dst, 8)
#define fc_dpack8_avx2(src, rs, k, dst) fc_dtranspose8_avx2(src, rs, k, dst)
#define FC_GEMM_PACK8 1
#else
#define FC_GEMM_PACK8 0
#define fc_spack8_avx2(src, rs, k, dst) ((void)0)
#define fc_dpack8_avx2(src, rs, k, dst) ((void)0)
#endif

/* Portable transposes for the panels (src/_simd.h's fc_transpose_vec_*), where the AVX2
 * ones above are not run */
#if FC_SIMD
#define fc_stranspose_vec fc_transpose_vec_s
#define fc_dtranspose_vec fc_transpose_vec_d

/* A panel of 6 rows with unit column stride (the generic and AVX2 kernels' MR): for floats
 * rows 0-3 and rows 2-5 as two 4 x 4 blocks (the second rewrites rows 2-3 with the same
 * values), for doubles three 2 x 2 blocks */
static void fc_spack6_vec(const float *src, ptrdiff_t rs, ptrdiff_t k, float *dst)
{
    /* (the columns past the last whole block counted from k % 4, as the transposes above:
     * GCC warns of a bogus iteration count when k is a constant otherwise) */
    ptrdiff_t whole = k - k % 4, j;
    int r;
    for (j = 0; j < whole; j += 4) {
        fc_v4f_transpose4x4(src + j, rs, dst + j * 6, 6);
        fc_v4f_transpose4x4(src + 2 * rs + j, rs, dst + j * 6 + 2, 6);
    }
    for (j = whole; j < k; j++)
        for (r = 0; r < 6; r++)
            dst[j * 6 + r] = src[r * rs + j];
}
#define fc_dpack6_vec(src, rs, k, dst) fc_dtranspose_vec(src, rs, 6, k, dst, 6)
#define FC_GEMM_VEC_TRANSPOSE 1
#else
#define FC_GEMM_VEC_TRANSPOSE 0
#define fc_stranspose_vec(src, ld, rows, count, dst, dst_ld) ((void)0)
#define fc_dtranspose_vec(src, ld, rows, count, dst, dst_ld) ((void)0)
#define fc_spack6_vec(src, rs, k, dst) ((void)0)
#define fc_dpack6_vec(src, rs, k, dst) ((void)0)
#endif

#define FC_GEMM_DEFINE(PREFIX, T, NR, KERNEL, PACK8, PACK6, TRANSPOSE)                                         \
    /* packed[panel][kk][r] = A[panel*MR + r][kk] = a[(panel*MR + r)*rs + kk*cs], 0 past   \
     * row m (rs, cs: A's row and column strides, so A may be a transposed view) */         \
    static void PREFIX##pack_a(ptrdiff_t m, ptrdiff_t k, const T *a, ptrdiff_t rs,           \
                               ptrdiff_t cs, T *packed)                                      \
    {                                                                                        \
        ptrdiff_t i0, kk;                                                                    \
        int r, MR = fc_gemm_mr;                                                              \
        for (i0 = 0; i0 < m; i0 += MR) {                                                     \
            int rows = (int)(m - i0 < MR ? m - i0 : MR);                                     \
            if (FC_GEMM_PACK8 && rows == 8 && MR == 8 && cs == 1) {                          \
                PACK8(a + i0 * rs, rs, k, packed);                                           \
                packed += k * MR;                                                            \
                continue;                                                                    \
            }                                                                                \
            if (FC_GEMM_VEC_TRANSPOSE && rows == 6 && MR == 6 && cs == 1) {                  \
                PACK6(a + i0 * rs, rs, k, packed);                                           \
                packed += k * MR;                                                            \
                continue;                                                                    \
            }                                                                                \
            for (kk = 0; kk < k; kk++) {                                                     \
                const T *src = a + i0 * rs + kk * cs;                                        \
                for (r = 0; r < rows; r++)                                                   \
                    packed[kk * MR + r] = src[r * rs];                                       \
                for (; r < MR; r++)                                                          \
                    packed[kk * MR + r] = 0;                                                 \
            }                                                                                \
            packed += k * MR;                                                                \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* c[i][j] = (add_to_c ? c[i][j] : 0) + sum_kk A[i][kk] * B[kk][j] (+ bias[i]) for     \
     * i < m, j < n, K block by K block, then ReLU'd if relu (src/_epilogue.h); A packed, B's \
     * element (kk, j) at b[(j / NR) * panel + kk * ldb + j % NR]: packed panels            \
     * (panel = k*NR, ldb = NR) or plain rows of ldb >= n rounded up to NR (panel = NR),     \
     * zero past column n either way */                                                     \
    static void PREFIX##gemm_packed(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *pa,      \
                                    const T *pb, ptrdiff_t panel, ptrdiff_t ldb,             \
                                    const T *bias, T *c, ptrdiff_t ldc, int add_to_c,        \
                                    int relu)                                                \
    {                                                                                        \
        ptrdiff_t kc = fc_gemm_kc(k);                                                        \
        ptrdiff_t k0, i0, j0;                                                                \
        int MR = fc_gemm_mr;                                                                 \
        T edge[FC_GEMM_MR_MAX * NR];                                                         \
        if (k == 0) {                                                                        \
            /* an empty sum (no input channels, or no output channels for the input       */ \
            /* gradient): C is 0 (or unchanged), plus the bias                            */ \
            for (i0 = 0; i0 < m; i0++)                                                       \
                for (j0 = 0; j0 < n; j0++) {                                                 \
                    T v = add_to_c ? c[i0 * ldc + j0] : 0;                                   \
                    v = bias ? v + bias[i0] : v;                                             \
                    c[i0 * ldc + j0] = relu ? FC_RELU(T, v) : v;                             \
                }                                                                            \
            return;                                                                          \
        }                                                                                    \
        for (k0 = 0; k0 < k; k0 += kc) {                                                     \
            ptrdiff_t klen = k - k0 < kc ? k - k0 : kc;                                      \
            int accumulate = add_to_c || k0 > 0;                                             \
            const T *block_bias = k0 + klen == k ? bias : NULL;                              \
            for (j0 = 0; j0 < n; j0 += NR) {                                                 \
                const T *b = pb + (j0 / NR) * panel + k0 * ldb;                              \
                int cols = (int)(n - j0 < NR ? n - j0 : NR);                                 \
                for (i0 = 0; i0 < m; i0 += MR) {                                             \
                    const T *a = pa + i0 * k + k0 * MR;                                      \
                    int rows = (int)(m - i0 < MR ? m - i0 : MR);                             \
                    T *cb = c + i0 * ldc + j0;                                               \
                    if (rows == MR && cols == NR) {                                          \
                        KERNEL(klen, a, b, ldb, cb, ldc, accumulate,                         \
                               block_bias ? block_bias + i0 : NULL);                         \
                        /* the fused ReLU on the block just stored (in L1), last K block */  \
                        if (relu && k0 + klen == k)                                          \
                            PREFIX##relu_rows(cb, MR, NR, ldc);                              \
                    } else {                                                                 \
                        /* an edge block: the same sums into a scratch block, then the */    \
                        /* same final additions element by element */                        \
                        int r, s;                                                            \
                        KERNEL(klen, a, b, ldb, edge, NR, 0, NULL);                          \
                        for (r = 0; r < rows; r++)                                           \
                            for (s = 0; s < cols; s++) {                                     \
                                T v = edge[r * NR + s];                                      \
                                if (accumulate)                                              \
                                    v = cb[r * ldc + s] + v;                                 \
                                if (block_bias)                                              \
                                    v = v + block_bias[i0 + r];                              \
                                if (relu && k0 + klen == k)                                  \
                                    v = FC_RELU(T, v);                                       \
                                cb[r * ldc + s] = v;                                         \
                            }                                                                \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
                                                                                             \
    /* B panel of NR columns from NR rows of a row-major block (row stride ld):             \
     * dst[j*NR + r] = src[r*ld + j] for j < count, r < rows, 0 for rows <= r < NR */        \
    static void PREFIX##transpose_panel_c(const T *src, ptrdiff_t ld, int rows,              \
                                          ptrdiff_t count, T *dst)                           \
    {                                                                                        \
        ptrdiff_t j;                                                                         \
        int r;                                                                               \
        if (FC_GEMM_VEC_TRANSPOSE) {                                                         \
            TRANSPOSE(src, ld, rows, count, dst, NR);                                        \
            r = rows;                                                                        \
        } else {                                                                             \
            for (r = 0; r < rows; r++) {                                                     \
                const T *row = src + r * ld;                                                 \
                for (j = 0; j < count; j++)                                                  \
                    dst[j * NR + r] = row[j];                                                \
            }                                                                                \
        }                                                                                    \
        for (; r < NR; r++)                                                                  \
            for (j = 0; j < count; j++)                                                      \
                dst[j * NR + r] = 0;                                                         \
    }

FC_GEMM_DEFINE(fc_s, float, FC_SGEMM_NR, fc_skernel, fc_spack8_avx2, fc_spack6_vec,
               fc_stranspose_vec)
FC_GEMM_DEFINE(fc_d, double, FC_DGEMM_NR, fc_dkernel, fc_dpack8_avx2, fc_dpack6_vec,
               fc_dtranspose_vec)

/* fc_?transpose_panel_c (portable vectors), with whole panels transposed by the AVX2 code
 * where the AVX2 or AVX-512 kernels run */
static void fc_stranspose_panel(const float *src, ptrdiff_t ld, int rows, ptrdiff_t count,
                                float *dst)
{
#if FC_HAVE_X86_TARGETS
    if (rows == FC_SGEMM_NR && fc_skernel != fc_skernel_generic) {
        fc_stranspose_avx2(src, ld, 16, count, dst, 16);
        return;
    }
#endif
    fc_stranspose_panel_c(src, ld, rows, count, dst);
}

static void fc_dtranspose_panel(const double *src, ptrdiff_t ld, int rows, ptrdiff_t count,
                                double *dst)
{
#if FC_HAVE_X86_TARGETS
    if (rows == FC_DGEMM_NR && fc_dkernel != fc_dkernel_generic) {
        fc_dtranspose8_avx2(src, ld, count, dst);
        return;
    }
#endif
    fc_dtranspose_panel_c(src, ld, rows, count, dst);
}

#endif
