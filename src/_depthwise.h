/* Depthwise convolution kernels in C, with run-time ISA dispatch (cimported by _conv.pyx).
 *
 * Each kernel body lives in _depthwise_impl.h, which is compiled several times: for float
 * and double, and for each instruction set: the portable baseline (SSE2 on x86-64) and,
 * on x86-64 with GCC or clang, an AVX2 version selected at import when the level of
 * src/_cpu.h is avx2 or above.
 * The default build stays portable (no -march flags); only these functions use AVX2.
 *
 * No FMA on purpose: a fused multiply-add rounds once where the baseline rounds twice, so
 * the versions would disagree in the last bit. Without it every version performs the same
 * IEEE operations in the same order (vectors run across independent outputs, and the
 * reductions use a fixed number of lanes written out in C), so results are bit-identical
 * whichever version runs. On Zen 4 separate multiplies and adds issue on different pipes
 * at the same rate, and these kernels are bound by loads and memory anyway.
 *
 * Kernels never allocate, never fail, and hold no global state beyond the choice of
 * version made once at import (fc_dw_select).
 */
#ifndef FASTCONV_DEPTHWISE_H
#define FASTCONV_DEPTHWISE_H

#include <stddef.h>
#include <string.h>

#include "_cpu.h"

typedef struct {
    ptrdiff_t in_h, in_w, out_h, out_w;
    ptrdiff_t kernel_h, kernel_w, stride_h, stride_w;
    ptrdiff_t pad_top, pad_left, dil_h, dil_w;
} fc_dw_geometry;

/* lanes of the float64 accumulators in the weight-gradient sums (and as many for the rows'
 * leftovers): fixed here, never taken from the vector width, so the summation order is the
 * same for every ISA */
#define FC_DW_LANES 8

#if defined(__GNUC__) || defined(__clang__)
#define FC_DW_INLINE static inline __attribute__((always_inline))
#define FC_DW_RESTRICT __restrict__
#elif defined(_MSC_VER)
#define FC_DW_INLINE static __forceinline
#define FC_DW_RESTRICT __restrict
#else
#define FC_DW_INLINE static inline
#define FC_DW_RESTRICT
#endif

/* GCC/clang vector extensions for the weight-gradient sums: element-wise IEEE operations, so
 * the same results as the plain loops used elsewhere, in whatever registers the target has */
#if (defined(__GNUC__) && __GNUC__ >= 9) || defined(__clang__)
#define FC_DW_VECTORS 1
typedef float fc_dw_v8f __attribute__((vector_size(32)));
typedef float fc_dw_v4f __attribute__((vector_size(16)));
typedef double fc_dw_v4d __attribute__((vector_size(32)));
#else
#define FC_DW_VECTORS 0
#endif

/* ---- the portable versions ---- */
#define FC_DW_TARGET
#define FC_DW_WIDEN(v) __builtin_convertvector(v, fc_dw_v4d)
#define FC_T float
#define FC_DW_FLOAT 1
#define FC_DW_NAME(name) fc_dw_##name##_float_generic
#include "_depthwise_impl.h"
#define FC_T double
#define FC_DW_FLOAT 0
#define FC_DW_NAME(name) fc_dw_##name##_double_generic
#include "_depthwise_impl.h"
#undef FC_DW_TARGET
#undef FC_DW_WIDEN

/* ---- AVX2 versions (no FMA: see above) ---- */
#if FC_HAVE_X86_TARGETS
#include <immintrin.h>
#define FC_DW_TARGET __attribute__((target("avx2")))
/* GCC 12 splits __builtin_convertvector(v4f -> v4d) into 128-bit halves */
#define FC_DW_WIDEN(v) ((fc_dw_v4d)_mm256_cvtps_pd((__m128)(v)))
#define FC_T float
#define FC_DW_FLOAT 1
#define FC_DW_NAME(name) fc_dw_##name##_float_avx2
#include "_depthwise_impl.h"
#define FC_T double
#define FC_DW_FLOAT 0
#define FC_DW_NAME(name) fc_dw_##name##_double_avx2
#include "_depthwise_impl.h"
#undef FC_DW_TARGET
#undef FC_DW_WIDEN
#endif

/* ---- run-time dispatch ---- */
typedef struct {
    void (*forward_plane_float)(const float*, const float*, float, float*,
                                const fc_dw_geometry*, float*, ptrdiff_t);
    void (*forward_plane_double)(const double*, const double*, double, double*,
                                 const fc_dw_geometry*, double*, ptrdiff_t);
    void (*grad_input_plane_float)(const float*, const float*, ptrdiff_t, float*,
                                   const fc_dw_geometry*, float*, ptrdiff_t);
    void (*grad_input_plane_double)(const double*, const double*, ptrdiff_t, double*,
                                    const fc_dw_geometry*, double*, ptrdiff_t);
    void (*grad_weight_channel_float)(const float*, ptrdiff_t, const float*, ptrdiff_t,
                                      ptrdiff_t, float*, const fc_dw_geometry*, float*,
                                      ptrdiff_t, double*);
    void (*grad_weight_channel_double)(const double*, ptrdiff_t, const double*, ptrdiff_t,
                                       ptrdiff_t, double*, const fc_dw_geometry*, double*,
                                       ptrdiff_t, double*);
    const char* name;
} fc_dw_table;

#define FC_DW_TABLE(isa) {                                                                \
    fc_dw_forward_plane_float_##isa, fc_dw_forward_plane_double_##isa,                    \
    fc_dw_grad_input_plane_float_##isa, fc_dw_grad_input_plane_double_##isa,              \
    fc_dw_grad_weight_channel_float_##isa, fc_dw_grad_weight_channel_double_##isa, #isa }

static const fc_dw_table fc_dw_tables[] = {
    FC_DW_TABLE(generic),
#if FC_HAVE_X86_TARGETS
    FC_DW_TABLE(avx2),
#endif
};
#define FC_DW_N_TABLES ((int)(sizeof(fc_dw_tables) / sizeof(fc_dw_tables[0])))

static const fc_dw_table* fc_dw_current = &fc_dw_tables[0];

/* the best version allowed here: an index into fc_dw_tables, from the level of src/_cpu.h
 * (the AVX2 version at avx2 and avx512) */
static int fc_dw_best_level(void) {
#if FC_HAVE_X86_TARGETS
    if (fc_cpu_isa() >= FC_ISA_AVX2)
        return 1;
#endif
    return 0;
}

/* Choose a version (clamped to what exists and what the level allows); returns the index in
 * use. Called once at import; tests call it again to compare versions, never during a
 * kernel. */
static int fc_dw_select(int level) {
    int best = fc_dw_best_level();
    if (level > best)
        level = best;
    if (level < 0)
        level = 0;
    fc_dw_current = &fc_dw_tables[level];
    return level;
}

static const char* fc_dw_name(void) { return fc_dw_current->name; }

static void fc_dw_forward_plane_float(const float* x, const float* w, float bias, float* y,
                                      const fc_dw_geometry* g, float* scratch,
                                      ptrdiff_t scratch_len) {
    fc_dw_current->forward_plane_float(x, w, bias, y, g, scratch, scratch_len);
}
static void fc_dw_forward_plane_double(const double* x, const double* w, double bias, double* y,
                                       const fc_dw_geometry* g, double* scratch,
                                       ptrdiff_t scratch_len) {
    fc_dw_current->forward_plane_double(x, w, bias, y, g, scratch, scratch_len);
}
static void fc_dw_grad_input_plane_float(const float* gy, const float* w, ptrdiff_t multiplier,
                                         float* gx, const fc_dw_geometry* g, float* scratch,
                                         ptrdiff_t scratch_len) {
    fc_dw_current->grad_input_plane_float(gy, w, multiplier, gx, g, scratch, scratch_len);
}
static void fc_dw_grad_input_plane_double(const double* gy, const double* w,
                                          ptrdiff_t multiplier, double* gx,
                                          const fc_dw_geometry* g, double* scratch,
                                          ptrdiff_t scratch_len) {
    fc_dw_current->grad_input_plane_double(gy, w, multiplier, gx, g, scratch, scratch_len);
}
static void fc_dw_grad_weight_channel_float(const float* gy, ptrdiff_t gy_batch_stride,
                                            const float* x, ptrdiff_t x_batch_stride,
                                            ptrdiff_t batch, float* gw, const fc_dw_geometry* g,
                                            float* scratch, ptrdiff_t scratch_len,
                                            double* lanes) {
    fc_dw_current->grad_weight_channel_float(gy, gy_batch_stride, x, x_batch_stride, batch, gw,
                                             g, scratch, scratch_len, lanes);
}
static void fc_dw_grad_weight_channel_double(const double* gy, ptrdiff_t gy_batch_stride,
                                             const double* x, ptrdiff_t x_batch_stride,
                                             ptrdiff_t batch, double* gw,
                                             const fc_dw_geometry* g, double* scratch,
                                             ptrdiff_t scratch_len, double* lanes) {
    fc_dw_current->grad_weight_channel_double(gy, gy_batch_stride, x, x_batch_stride, batch, gw,
                                              g, scratch, scratch_len, lanes);
}

/* Elements of the scratch each thread needs (of the array's type), for every kernel: a band of
 * the zero-padded input (forward) or of the multiplier's padded gy planes (grad input), at
 * least one output row's worth and at most about FC_DW_SCRATCH_TARGET (it stays in L2). The
 * weight gradient uses the forward's bands. Depends on the shapes only. */
#define FC_DW_SCRATCH_TARGET 16384

static ptrdiff_t fc_dw_band_size(ptrdiff_t per_row, ptrdiff_t min_rows, ptrdiff_t all_rows) {
    ptrdiff_t size = per_row * all_rows;
    if (size > FC_DW_SCRATCH_TARGET)
        size = FC_DW_SCRATCH_TARGET;
    if (size < per_row * min_rows)
        size = per_row * min_rows;
    return size;
}

static ptrdiff_t fc_dw_scratch_size(const fc_dw_geometry* g, ptrdiff_t multiplier) {
    const ptrdiff_t width = (g->out_w - 1) * g->stride_w + (g->kernel_w - 1) * g->dil_w + 1;
    const ptrdiff_t halo = (g->kernel_h - 1) * g->dil_h;
    const ptrdiff_t gx_width = g->in_w + (g->kernel_w - 1) * g->dil_w;
    ptrdiff_t size = fc_dw_band_size(width, halo + 1, (g->out_h - 1) * g->stride_h + halo + 1);
    ptrdiff_t gx_size = fc_dw_band_size(multiplier * gx_width, halo + 1, g->in_h + halo);
    if (gx_size > size)
        size = gx_size;
    return size;
}

/* float64 elements of the weight gradient's lanes, per thread */
static ptrdiff_t fc_dw_lanes_size(const fc_dw_geometry* g) {
    return 2 * g->kernel_h * g->kernel_w * FC_DW_LANES;
}

#endif
