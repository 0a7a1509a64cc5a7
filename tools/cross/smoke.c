/* The C kernel headers outside Python: tools/cross-aarch64 compiles this driver for aarch64
 * (and for the host) with -Wall -Wextra -Werror and runs it. FASTCONV_ISA=generic is set
 * before the first fc_cpu_isa() call, so every family runs its portable code even on an x86
 * host; on aarch64 that is the only code there is. Each kernel is called on small inputs and
 * checked against plain loops in double (the direct kernels are AVX-512 only: on a CPU
 * without them fc_direct_init() must say so, and only their portable staging is run).
 * Prints one line per check and exits 1 on the first failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_cpu.h"
#include "_depthwise.h"
#include "_direct.h"
#include "_fewchan.h"
#include "_gemm.h"
#include "_pool.h"
#include "_stage.h"
#include "_winograd.h"
#include "_winograd_wgrad.h"

static int failures = 0;

static void check(const char *what, double worst, double tolerance)
{
    int ok = worst <= tolerance;
    printf("%-56s %s (worst relative error %.2g)\n", what, ok ? "ok" : "FAILED", worst);
    failures += !ok;
}

static double rel_err(double got, double want)
{
    double scale = fabs(want) > 1.0 ? fabs(want) : 1.0;
    return fabs(got - want) / scale;
}

/* deterministic values in [-1, 1) */
static double next_value(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (double)(*state >> 8) / (double)(1u << 23) - 1.0;
}

/* ---- packed GEMM: C = A B + bias, over several K blocks, edges in both directions ----- */
#define GEMM_CHECK(PREFIX, T, NR, NAME, TOL)                                                 \
    static void NAME(void)                                                                   \
    {                                                                                        \
        enum { M = 13, N = 37, K = 300 };                                                    \
        const ptrdiff_t ldb = (N + NR - 1) / NR * NR;                                        \
        T *a = malloc(sizeof(T) * M * K), *b = calloc((size_t)(K * ldb), sizeof(T));         \
        T *packed = malloc(sizeof(T) * (M + FC_GEMM_MR_MAX) * K);                           \
        T *c = malloc(sizeof(T) * M * N), bias[M];                                           \
        uint32_t state = 1;                                                                  \
        double worst = 0;                                                                    \
        int i, j, kk, pass;                                                                  \
        for (i = 0; i < M * K; i++)                                                          \
            a[i] = (T)next_value(&state);                                                    \
        for (kk = 0; kk < K; kk++)                                                           \
            for (j = 0; j < N; j++)                                                          \
                b[kk * ldb + j] = (T)next_value(&state);                                     \
        for (i = 0; i < M; i++)                                                              \
            bias[i] = (T)next_value(&state);                                                 \
        PREFIX##pack_a(M, K, a, K, 1, packed);                                               \
        for (i = 0; i < M * N; i++)                                                          \
            c[i] = 1;                                                                        \
        /* pass 0: C = A B + bias; pass 1: C += A B (the weight gradient's accumulation);  \
         * pass 2: C = relu(A B + bias) (the fused epilogue, src/_epilogue.h) */             \
        for (pass = 0; pass < 3; pass++) {                                                   \
            PREFIX##gemm_packed(M, N, K, packed, b, NR, ldb, pass == 1 ? NULL : bias, c, N,  \
                                pass == 1, pass == 2);                                       \
            for (i = 0; i < M; i++)                                                          \
                for (j = 0; j < N; j++) {                                                    \
                    double want = 0, e;                                                      \
                    for (kk = 0; kk < K; kk++)                                               \
                        want += (double)a[i * K + kk] * (double)b[kk * ldb + j];             \
                    want = pass == 1 ? 2 * want + bias[i] : want + bias[i];                  \
                    if (pass == 2 && want < 0)                                               \
                        want = 0;                                                            \
                    e = rel_err(c[i * N + j], want);                                         \
                    worst = e > worst ? e : worst;                                           \
                }                                                                            \
        }                                                                                    \
        check(#PREFIX "gemm_packed (" #T ", 13x37x300)", worst, TOL);                       \
        free(a);                                                                             \
        free(b);                                                                             \
        free(packed);                                                                        \
        free(c);                                                                             \
    }
GEMM_CHECK(fc_s, float, FC_SGEMM_NR, check_sgemm, 1e-4)
GEMM_CHECK(fc_d, double, FC_DGEMM_NR, check_dgemm, 1e-12)

/* the fused ReLU's rule, bit for bit: numpy.maximum(v, 0) (NaN kept with its payload and
 * sign, -0 and negatives made +0), over a row longer than a vector with a tail */
static void check_relu(void)
{
    const float fv[] = {1.5f, -2.0f, 0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-40f,
                        -1e-40f, 3.0f};
    const double dv[] = {-0.0, NAN, -1.0, 2.0, -NAN};
    float f[11];
    double d[5];
    double bad = 0;
    int j;
    memcpy(f, fv, sizeof f);
    memcpy(d, dv, sizeof d);
    fc_srelu_rows(f, 1, 11, 11);
    fc_drelu_rows(d, 1, 5, 5);
    for (j = 0; j < 11; j++) {
        float want = (fv[j] > 0 || fv[j] != fv[j]) ? fv[j] : 0.0f;
        bad += memcmp(&f[j], &want, sizeof want) != 0;
    }
    for (j = 0; j < 5; j++) {
        double want = (dv[j] > 0 || dv[j] != dv[j]) ? dv[j] : 0.0;
        bad += memcmp(&d[j], &want, sizeof want) != 0;
    }
    check("fc_?relu_rows (bits differing from the rule)", bad, 0);
}

/* B panels by transposition: dst[j*NR + r] = src[r*ld + j], 0 for r >= rows */
static void check_transpose_panels(void)
{
    float src[FC_SGEMM_NR * 21], dst[FC_SGEMM_NR * 21];
    double dsrc[FC_DGEMM_NR * 21], ddst[FC_DGEMM_NR * 21];
    double worst = 0;
    int r, j, rows;
    for (r = 0; r < FC_SGEMM_NR * 21; r++)
        src[r] = (float)r;
    for (r = 0; r < FC_DGEMM_NR * 21; r++)
        dsrc[r] = r;
    for (rows = FC_SGEMM_NR - 3; rows <= FC_SGEMM_NR; rows += 3) {
        fc_stranspose_panel(src, 21, rows, 21, dst);
        for (j = 0; j < 21; j++)
            for (r = 0; r < FC_SGEMM_NR; r++)
                worst += dst[j * FC_SGEMM_NR + r] != (r < rows ? src[r * 21 + j] : 0.0f);
    }
    for (rows = FC_DGEMM_NR - 3; rows <= FC_DGEMM_NR; rows += 3) {
        fc_dtranspose_panel(dsrc, 21, rows, 21, ddst);
        for (j = 0; j < 21; j++)
            for (r = 0; r < FC_DGEMM_NR; r++)
                worst += ddst[j * FC_DGEMM_NR + r] != (r < rows ? dsrc[r * 21 + j] : 0.0);
    }
    check("fc_?transpose_panel (mismatches)", worst, 0);
}

/* ---- staged copies and sums ------------------------------------------------------------ */
static void check_stage(void)
{
    enum { RUNS = 5, BYTES = 100, STEP = 3 * FC_STAGE_CHUNK };
    static char src[RUNS * STEP + FC_STAGE_CHUNK], dst[RUNS * STEP + FC_STAGE_CHUNK];
    float fs[RUNS * 9], fd[RUNS * 11];
    double ds[RUNS * 9], dd[RUNS * 11];
    double bad = 0;
    int r, j;
    for (j = 0; j < (int)sizeof src; j++)
        src[j] = (char)(j * 7 + 3);
    memset(dst, 0, sizeof dst);
    fc_copy_runs(dst, STEP, src, STEP, RUNS, BYTES);
    for (r = 0; r < RUNS; r++)
        for (j = 0; j < BYTES; j++)
            bad += dst[r * STEP + j] != src[r * STEP + j];
    memset(dst, 0x55, sizeof dst);
    fc_copy_rows(dst, STEP, src + 1, STEP, RUNS, 57);
    for (r = 0; r < RUNS; r++)
        for (j = 0; j < STEP; j++)
            bad += dst[r * STEP + j] != (j < 57 ? src[r * STEP + j + 1] : 0x55);
    for (j = 0; j < RUNS * 9; j++)
        fs[j] = (float)(ds[j] = j * 0.5);
    for (j = 0; j < RUNS * 11; j++)
        fd[j] = (float)(dd[j] = 1.0 + j);
    fc_sadd_runs(fd, 11, fs, 9, RUNS, 9);
    fc_dadd_runs(dd, 11, ds, 9, RUNS, 9);
    for (r = 0; r < RUNS; r++)
        for (j = 0; j < 11; j++) {
            double want = 1.0 + r * 11 + j + (j < 9 ? (r * 9 + j) * 0.5 : 0.0);
            bad += fd[r * 11 + j] != (float)want || dd[r * 11 + j] != want;
        }
    check("fc_copy_runs / copy_rows / ?add_runs (mismatches)", bad, 0);
}

/* fc_gather_rows at steps 1, 2 (the permutes) and 3 (the gather): 37 columns (two whole
 * vectors and a tail), nothing written past a run */
static void check_gather(void)
{
    enum { RUNS = 3, COUNT = 37, LD = 41, SRC_STEP = 3 * COUNT + 5 };
    static float src[RUNS * SRC_STEP], dst[RUNS * LD];
    double bad = 0;
    int r, j, step;
    for (j = 0; j < RUNS * SRC_STEP; j++)
        src[j] = (float)(j * 3 + 1);
    for (step = 1; step <= 3; step++) {
        for (j = 0; j < RUNS * LD; j++)
            dst[j] = -1.0f;
        fc_gather_rows(dst, LD, src, SRC_STEP, RUNS, COUNT, step);
        for (r = 0; r < RUNS; r++)
            for (j = 0; j < LD; j++)
                bad += dst[r * LD + j] != (j < COUNT ? src[r * SRC_STEP + j * step] : -1.0f);
    }
    check("fc_gather_rows (mismatches)", bad, 0);
}

/* ---- depthwise: forward, input and weight gradients of one plane ---------------------- */
static double x_at(const double *x, const fc_dw_geometry *g, ptrdiff_t iy, ptrdiff_t ix)
{
    return iy < 0 || iy >= g->in_h || ix < 0 || ix >= g->in_w ? 0.0 : x[iy * g->in_w + ix];
}

#define DW_CHECK(T, NAME, TOL)                                                               \
    static void NAME(const fc_dw_geometry *g, const char *label)                             \
    {                                                                                        \
        enum { MULT = 2, BATCH = 2 };                                                        \
        ptrdiff_t in = g->in_h * g->in_w, out = g->out_h * g->out_w;                         \
        ptrdiff_t taps = g->kernel_h * g->kernel_w, len = fc_dw_scratch_size(g, MULT);       \
        T *x = malloc(sizeof(T) * in * BATCH), *w = malloc(sizeof(T) * taps * MULT);          \
        T *y = malloc(sizeof(T) * out * MULT * BATCH), *gx = malloc(sizeof(T) * in);         \
        T *gw = malloc(sizeof(T) * taps), *scratch = malloc(sizeof(T) * len);                \
        double *lanes = malloc(sizeof(double) * fc_dw_lanes_size(g));                        \
        double *xd = malloc(sizeof(double) * in * BATCH), worst = 0, e;                      \
        uint32_t state = 7;                                                                  \
        char what[96];                                                                       \
        ptrdiff_t i, j, p, q, m, n;                                                          \
        for (i = 0; i < in * BATCH; i++)                                                     \
            xd[i] = x[i] = (T)next_value(&state);                                            \
        for (i = 0; i < taps * MULT; i++)                                                    \
            w[i] = (T)next_value(&state);                                                    \
        /* forward: output plane m of sample n from input plane n with weights m */          \
        for (n = 0; n < BATCH; n++)                                                          \
            for (m = 0; m < MULT; m++)                                                       \
                fc_dw_forward_plane_##T(x + n * in, w + m * taps, (T)0.25,                   \
                                        y + (n * MULT + m) * out, g, scratch, len);          \
        for (n = 0; n < BATCH; n++)                                                          \
            for (m = 0; m < MULT; m++)                                                       \
                for (i = 0; i < g->out_h; i++)                                               \
                    for (j = 0; j < g->out_w; j++) {                                         \
                        double want = 0.25;                                                  \
                        for (p = 0; p < g->kernel_h; p++)                                    \
                            for (q = 0; q < g->kernel_w; q++)                                \
                                want += w[m * taps + p * g->kernel_w + q] *                  \
                                        x_at(xd + n * in, g,                                 \
                                             i * g->stride_h + p * g->dil_h - g->pad_top,    \
                                             j * g->stride_w + q * g->dil_w - g->pad_left);  \
                        e = rel_err(y[(n * MULT + m) * out + i * g->out_w + j], want);        \
                        worst = e > worst ? e : worst;                                       \
                    }                                                                        \
        snprintf(what, sizeof what, "fc_dw_forward_plane_" #T ", %s", label);                \
        check(what, worst, TOL);                                                             \
        /* input gradient of sample 0's input plane from its MULT output planes (y as gy) */ \
        worst = 0;                                                                           \
        fc_dw_grad_input_plane_##T(y, w, MULT, gx, g, scratch, len);                         \
        for (i = 0; i < g->in_h; i++)                                                        \
            for (j = 0; j < g->in_w; j++) {                                                  \
                double want = 0;                                                             \
                ptrdiff_t oy, ox;                                                            \
                for (m = 0; m < MULT; m++)                                                   \
                    for (p = 0; p < g->kernel_h; p++)                                        \
                        for (q = 0; q < g->kernel_w; q++) {                                  \
                            ptrdiff_t ry = i + g->pad_top - p * g->dil_h;                    \
                            ptrdiff_t rx = j + g->pad_left - q * g->dil_w;                   \
                            if (ry < 0 || rx < 0 || ry % g->stride_h || rx % g->stride_w)    \
                                continue;                                                    \
                            oy = ry / g->stride_h;                                           \
                            ox = rx / g->stride_w;                                           \
                            if (oy < g->out_h && ox < g->out_w)                              \
                                want += (double)w[m * taps + p * g->kernel_w + q] *          \
                                        y[m * out + oy * g->out_w + ox];                     \
                        }                                                                    \
                e = rel_err(gx[i * g->in_w + j], want);                                      \
                worst = e > worst ? e : worst;                                               \
            }                                                                                \
        snprintf(what, sizeof what, "fc_dw_grad_input_plane_" #T ", %s", label);             \
        check(what, worst, TOL);                                                             \
        /* weight gradient of output channel 0 over the batch (gy: plane 0 of each sample) */ \
        worst = 0;                                                                           \
        fc_dw_grad_weight_channel_##T(y, MULT * out, x, in, BATCH, gw, g, scratch, len,      \
                                      lanes);                                                \
        for (p = 0; p < g->kernel_h; p++)                                                    \
            for (q = 0; q < g->kernel_w; q++) {                                              \
                double want = 0;                                                             \
                for (n = 0; n < BATCH; n++)                                                  \
                    for (i = 0; i < g->out_h; i++)                                           \
                        for (j = 0; j < g->out_w; j++)                                       \
                            want += (double)y[n * MULT * out + i * g->out_w + j] *           \
                                    x_at(xd + n * in, g,                                     \
                                         i * g->stride_h + p * g->dil_h - g->pad_top,        \
                                         j * g->stride_w + q * g->dil_w - g->pad_left);      \
                e = rel_err(gw[p * g->kernel_w + q], want);                                  \
                worst = e > worst ? e : worst;                                               \
            }                                                                                \
        snprintf(what, sizeof what, "fc_dw_grad_weight_channel_" #T ", %s", label);          \
        check(what, worst, TOL);                                                             \
        free(x);                                                                             \
        free(w);                                                                             \
        free(y);                                                                             \
        free(gx);                                                                            \
        free(gw);                                                                            \
        free(scratch);                                                                       \
        free(lanes);                                                                         \
        free(xd);                                                                            \
    }
DW_CHECK(float, check_dw_float, 1e-4)
DW_CHECK(double, check_dw_double, 1e-12)

static void check_depthwise(void)
{
    /* in_h, in_w, out_h, out_w, kernel, stride, pad, dilation */
    fc_dw_geometry g1 = {9, 23, 9, 23, 3, 3, 1, 1, 1, 1, 1, 1};
    fc_dw_geometry g2 = {10, 17, 5, 9, 3, 3, 2, 2, 1, 1, 1, 1};
    fc_dw_geometry g3 = {8, 12, 4, 8, 5, 3, 1, 1, 2, 0, 1, 2};
    printf("depthwise version: %s\n", fc_dw_name());
    check_dw_float(&g1, "9x23 k3 s1 p1");
    check_dw_double(&g1, "9x23 k3 s1 p1");
    check_dw_float(&g2, "10x17 k3 s2 p1");
    check_dw_double(&g2, "10x17 k3 s2 p1");
    check_dw_float(&g3, "8x12 k5x3 p(2,0) d(1,2)");
    check_dw_double(&g3, "8x12 k5x3 p(2,0) d(1,2)");
}

/* ---- pooling: max (with indices) and average of one plane, k3 s2 p1 ------------------- */
#define POOL_CHECK(T, NAME, TABLE, FACTORS)                                                  \
    static void NAME(void)                                                                   \
    {                                                                                        \
        fc_pool_geometry g = {11, 14, 6, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0};             \
        T x[11 * 14], y[6 * 7], a[6 * 7], factors[7];                                        \
        int64_t idx[6 * 7];                                                                  \
        int32_t position[7];                                                                 \
        uint32_t state = 3;                                                                  \
        double worst = 0, e;                                                                 \
        ptrdiff_t i, j, p, q;                                                                \
        for (i = 0; i < 11 * 14; i++)                                                        \
            x[i] = (T)next_value(&state);                                                    \
        TABLE.max_plane(x, y, &g);                                                           \
        for (i = 0; i < 6 * 7; i++)                                                          \
            a[i] = y[i];                                                                     \
        TABLE.max_indices_plane(x, y, idx, position, &g);                                    \
        FACTORS(factors, &g);                                                                \
        for (i = 0; i < 6 * 7; i++)                                                          \
            worst += a[i] != y[i];                                                           \
        TABLE.avg_plane(x, a, factors, &g);                                                  \
        for (i = 0; i < 6; i++)                                                              \
            for (j = 0; j < 7; j++) {                                                        \
                double best = -INFINITY, sum = 0;                                            \
                int64_t at = -1, count = 0;                                                  \
                for (p = 0; p < 3; p++)                                                      \
                    for (q = 0; q < 3; q++) {                                                \
                        ptrdiff_t iy = 2 * i - 1 + p, ix = 2 * j - 1 + q;                    \
                        if (iy < 0 || iy >= 11 || ix < 0 || ix >= 14)                        \
                            continue;                                                        \
                        count++;                                                             \
                        sum += x[iy * 14 + ix];                                              \
                        if (x[iy * 14 + ix] > best) {                                        \
                            best = x[iy * 14 + ix];                                          \
                            at = iy * 14 + ix;                                               \
                        }                                                                    \
                    }                                                                        \
                worst += y[i * 7 + j] != (T)best || idx[i * 7 + j] != at;                    \
                e = rel_err(a[i * 7 + j], sum / (double)count);                              \
                worst = e > worst ? e : worst;                                               \
            }                                                                                \
        check("fc_pool_{max,max_indices,avg}_plane_" #T, worst, 1e-6);                       \
    }
POOL_CHECK(float, check_pool_float, fc_pool_float, fc_pool_column_factors_float)
POOL_CHECK(double, check_pool_double, fc_pool_double, fc_pool_column_factors_double)

/* ---- the direct kernels: AVX-512 only; their portable staging runs everywhere ---------- */
static void check_direct(void)
{
    /* taken by address: compiled (and warning-free) here, called only where DIRECT is set */
    void (*volatile avx512_only[])(void) = {
        (void (*)(void))fc_direct_tile, (void (*)(void))fc_direct_store,
        (void (*)(void))fc_dgrad_tile, (void (*)(void))fc_direct_load,
        (void (*)(void))fc_direct_pack, (void (*)(void))fc_dgrad_unit,
        (void (*)(void))fc_direct_pack_transposed, (void (*)(void))fc_direct_any_nonfinite,
        (void (*)(void))fc_dwd_forward, (void (*)(void))fc_dwd_wgrad,
        (void (*)(void))fc_dwd_igrad, (void (*)(void))fc_dgrad_stage_t,
        (void (*)(void))fc_dgrad_sum_chunks};
    enum { H = 5, W = 11, TOP = 1, LEFT = 2, ROWS = 7, PW = 15 };
    float x[16 * H * W], xs[ROWS * PW * 16], gx[16 * H * W];
    double bad = 0;
    int l, i;
    (void)avx512_only;
    printf("direct kernels: %s\n", fc_direct_init() ? "on" : "off");
    for (i = 0; i < 16 * H * W; i++)
        x[i] = (float)i;
    for (i = 0; i < ROWS * PW * 16; i++)
        xs[i] = -1;
    fc_dwd_stage_in(x, H * W, H, W, TOP, LEFT, ROWS, PW, xs);
    for (i = 0; i < ROWS * PW; i++)
        for (l = 0; l < 16; l++) {
            int iy = i / PW - TOP, ix = i % PW - LEFT;
            int inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
            bad += xs[i * 16 + l] != (inside ? x[l * H * W + iy * W + ix] : -1.0f);
        }
    fc_dwd_stage_out(xs, H * W, H, W, TOP, LEFT, ROWS, PW, gx);
    for (i = 0; i < 16 * H * W; i++)
        bad += gx[i] != x[i];
    check("fc_dwd_stage_in / stage_out (mismatches)", bad, 0);
}

/* ---- the few-channel kernels: a 2-channel 3x3 stride-2 convolution with padding, plain
 * and ReLU'd + 2x2-max-pooled in the store, against plain loops ---------------------------- */
#define FEW_CHECK(T, NAME, SFX)                                                              \
    static void NAME(void)                                                                   \
    {                                                                                        \
        enum { C = 2, H = 13, W = 11, K = 5, KH = 3, S = 2, PAD = 1, OH = 7, OW = 6 };      \
        T x[C * H * W], w[KH * KH * C * 8], bias[8], y[K * OH * OW], yp[K * 3 * 3];         \
        T phase[4096], buf[4096], want[K * OH * OW];                                        \
        ptrdiff_t off[4 * C * KH * KH];                                                     \
        fc_few_shape shape;                                                                 \
        uint32_t state = 7;                                                                 \
        double worst = 0;                                                                   \
        int pool, o, i, j, c, p, q, qd;                                                     \
        for (i = 0; i < C * H * W; i++)                                                     \
            x[i] = (T)next_value(&state);                                                   \
        for (i = 0; i < KH * KH * C * 8; i++)  /* [tap][channel], 8 padded channels */      \
            w[i] = (T)next_value(&state);                                                   \
        for (i = 0; i < 8; i++)                                                             \
            bias[i] = (T)next_value(&state);                                                \
        for (o = 0; o < K; o++)  /* plain loops, the same order of sums */                  \
            for (i = 0; i < OH; i++)                                                        \
                for (j = 0; j < OW; j++) {                                                  \
                    T sum = 0;                                                              \
                    for (c = 0; c < C; c++)                                                 \
                        for (p = 0; p < KH; p++)                                            \
                            for (q = 0; q < KH; q++) {                                      \
                                int iy = i * S + p - PAD, ix = j * S + q - PAD;             \
                                if (iy >= 0 && iy < H && ix >= 0 && ix < W)                 \
                                    sum += x[(c * H + iy) * W + ix]                         \
                                           * w[((c * KH + p) * KH + q) * 8 + o];            \
                            }                                                               \
                    want[(o * OH + i) * OW + j] = sum + bias[o];                            \
                }                                                                           \
        for (pool = 1; pool <= 2; pool++) {                                                 \
            ptrdiff_t sh = S * pool, reach = S * (pool - 1) + KH - 1;                       \
            ptrdiff_t gh = OH / pool, gw = OW / pool, hp = gh + reach / sh;                 \
            ptrdiff_t wp = gw + reach / sh;                                                 \
            shape.k = C * KH * KH;                                                          \
            shape.cpad = 8;                                                                 \
            shape.quads = pool * pool;                                                      \
            shape.wp = wp;                                                                  \
            shape.bp = fc_few_pitch(gh, wp, sizeof(T));                                     \
            for (qd = 0; qd < pool * pool; qd++)                                            \
                for (c = 0; c < C; c++)                                                     \
                    for (p = 0; p < KH; p++)                                                \
                        for (q = 0; q < KH; q++) {                                          \
                            ptrdiff_t ry = S * (qd / pool) + p, rx = S * (qd % pool) + q;   \
                            off[qd * shape.k + (c * KH + p) * KH + q] =                     \
                                ((c * sh + ry % sh) * sh + rx % sh) * hp * wp               \
                                + ry / sh * wp + rx / sh;                                   \
                        }                                                                   \
            fc_few_phase_##SFX(x, C, H, W, PAD, PAD, sh, sh, hp, wp, phase);                \
            fc_few_block_##SFX(phase, off, w, bias, &shape, 0, gh, pool > 1, buf);          \
            fc_few_store_##SFX(buf, &shape, K, 0, gh, gw, pool > 1 ? yp : y, gh * gw);      \
            for (o = 0; o < K; o++)                                                         \
                for (i = 0; i < gh; i++)                                                    \
                    for (j = 0; j < gw; j++) {                                              \
                        T m = 0, got = (pool > 1 ? yp : y)[(o * gh + i) * gw + j];          \
                        if (pool == 1)                                                      \
                            m = want[(o * OH + i) * OW + j];                                \
                        else                                                                \
                            for (qd = 0; qd < 4; qd++) {                                    \
                                T v = want[(o * OH + 2 * i + qd / 2) * OW + 2 * j + qd % 2]; \
                                v = v > 0 ? v : 0;                                          \
                                m = v > m ? v : m;                                          \
                            }                                                               \
                        worst = rel_err(got, m) > worst ? rel_err(got, m) : worst;          \
                    }                                                                       \
        }                                                                                   \
        check("fc_few_{phase,block,store}_" #SFX " (plain, ReLU + 2x2 max)", worst,         \
              sizeof(T) == 4 ? 1e-5 : 1e-12);                                               \
        { /* unpooled, as the extension runs it: column planes, sums straight into y */     \
            enum { HB = OH + (KH - 1) / S };                                                \
            ptrdiff_t offc[C * KH * KH];                                                    \
            shape.quads = 1;                                                                \
            for (c = 0; c < C; c++)                                                         \
                for (p = 0; p < KH; p++)                                                    \
                    for (q = 0; q < KH; q++)                                                \
                        offc[(c * KH + p) * KH + q] =                                       \
                            ((c * S + p % S) * KH + q) * HB * OW + p / S * OW;              \
            fc_few_cols_##SFX(x, C, H, W, PAD, PAD, S, S, KH, 1, 0, HB, HB, OW, phase);      \
            fc_few_dense_##SFX(phase, offc, w, bias, &shape, OH * OW, K, 0, y, OH * OW);     \
            worst = 0;                                                                      \
            for (i = 0; i < K * OH * OW; i++)                                               \
                worst = rel_err(y[i], want[i]) > worst ? rel_err(y[i], want[i]) : worst;    \
            check("fc_few_{cols,dense}_" #SFX, worst, sizeof(T) == 4 ? 1e-5 : 1e-12);       \
        }                                                                                   \
    }
FEW_CHECK(float, check_few_float, s)
FEW_CHECK(double, check_few_double, d)

/* The Winograd weight gradient's transforms (_winograd_wgrad.h) around the forward pass's
 * input transform, the GEMMs as plain loops: dW against the direct sums, each tile size */
#define WGRAD_CHECK(T, NAME, SFX)                                                           \
    static void NAME(void)                                                                  \
    {                                                                                       \
        enum { N = 2, C = 3, K = 5, H = 7, W = 6, LD = 32 };                                \
        static T x[N * C * H * W], gy[N * K * H * W], dw[K * C * 9];                        \
        static T v[64 * (C * LD + 16)], gv[64 * (K * LD + 16)], acc[64 * (K * C + 16)];     \
        static const int tiles[] = {2, 4, 5, 6};                                            \
        uint32_t state = 7;                                                                 \
        double worst = 0;                                                                   \
        int i, mi;                                                                          \
        for (i = 0; i < N * C * H * W; i++)                                                 \
            x[i] = (T)next_value(&state);                                                   \
        for (i = 0; i < N * K * H * W; i++)                                                 \
            gy[i] = (T)next_value(&state);                                                  \
        for (mi = 0; mi < 4; mi++) {                                                        \
            const int m = tiles[mi], a2 = (m + 2) * (m + 2);                                \
            const ptrdiff_t th = (H + m - 1) / m, tw = (W + m - 1) / m, nt = N * th * tw;   \
            const ptrdiff_t vs = C * LD + 16, gs = K * LD + 16, as = K * C + 16;           \
            fc_wino_geometry gin = {C, H, W, H, W, 1, 1, th, tw, C}, gout = gin;           \
            int xi, k, c, p, q, t, n, yy, xx;                                               \
            gout.channels = gout.planes = K;                                                \
            fc_wino_input_##SFX(m, x, &gin, 0, nt, v, LD, vs);                              \
            fc_wgrad_gy_##SFX(m, gy, &gout, 0, nt, gv, LD, gs);                             \
            for (xi = 0; xi < a2; xi++)                                                     \
                for (k = 0; k < K; k++)                                                     \
                    for (c = 0; c < C; c++) {                                               \
                        T sum = 0;                                                          \
                        for (t = 0; t < nt; t++)                                            \
                            sum += gv[xi * gs + k * LD + t] * v[xi * vs + c * LD + t];      \
                        acc[xi * as + k * C + c] = sum;                                     \
                    }                                                                       \
            fc_wgrad_weights_##SFX(m, acc, C, as, 0, K, C, dw);                             \
            for (k = 0; k < K; k++)                                                         \
                for (c = 0; c < C; c++)                                                     \
                    for (p = 0; p < 3; p++)                                                 \
                        for (q = 0; q < 3; q++) {                                           \
                            double want = 0;                                                \
                            for (n = 0; n < N; n++)                                         \
                                for (yy = 0; yy < H; yy++)                                  \
                                    for (xx = 0; xx < W; xx++) {                            \
                                        int iy = yy + p - 1, ix = xx + q - 1;               \
                                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)         \
                                            continue;                                       \
                                        want += (double)gy[((n * K + k) * H + yy) * W + xx] \
                                                * (double)x[((n * C + c) * H + iy) * W + ix]; \
                                    }                                                       \
                            double got = (double)dw[(k * C + c) * 9 + p * 3 + q];           \
                            worst = rel_err(got, want) > worst ? rel_err(got, want) : worst; \
                        }                                                                   \
        }                                                                                   \
        check("fc_wgrad_{gy,weights}_" #SFX " (m = 2, 4, 5, 6)", worst,                     \
              sizeof(T) == 4 ? 1e-4 : 1e-10);                                               \
    }
WGRAD_CHECK(float, check_wgrad_float, float)
WGRAD_CHECK(double, check_wgrad_double, double)

int main(void)
{
    /* the portable code on any host: the cap is read at the first fc_cpu_isa() call */
    setenv("FASTCONV_ISA", "generic", 1);
    printf("instruction set: %s (the CPU's: %s)\n", fc_cpu_isa_name(fc_cpu_isa()),
           fc_cpu_isa_name(fc_cpu_detect()));
    fc_gemm_init();
    printf("GEMM micro-kernel: %s (%d rows; conv would use %s)\n", fc_gemm_name,
           fc_gemm_rows(), fc_gemm_kernel_name() ? "it" : "BLAS");
    printf("staged copies: %s\n", fc_stage_init());
    fc_dw_select(fc_dw_best_level());
    printf("pooling build: %s\n", fc_cpu_isa_name(fc_pool_select()));
    {   /* Winograd: compiled and selected only, no numerical check of the transforms here
         * (tests/test_winograd.py checks them under every FASTCONV_ISA on x86) */
        void (*const entries[])(void) = {
            (void (*)(void))fc_wino_input_float, (void (*)(void))fc_wino_input_double,
            (void (*)(void))fc_wino_output_float, (void (*)(void))fc_wino_output_double,
            (void (*)(void))fc_wino_weights_float, (void (*)(void))fc_wino_weights_double};
        fc_wino_select();
        printf("winograd build: %s (%d entry points)\n", fc_wino_isa(),
               (int)(sizeof entries / sizeof entries[0]));
    }
    fc_wgrad_select();
    check_wgrad_float();
    check_wgrad_double();
    check_sgemm();
    check_dgemm();
    check_transpose_panels();
    check_relu();
    check_stage();
    check_gather();
    check_depthwise();
    check_pool_float();
    check_pool_double();
    check_direct();
    printf("few-channel kernels: %d pixels per vector\n", (fc_few_init(), (int)fc_few_lanes_s));
    check_few_float();
    check_few_double();
    if (failures) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
