/* Which instruction sets the kernels may use: detected once, capped by FASTCONV_ISA. The one
 * CPU-feature module: every kernel family (the packed GEMM, src/_gemm.h; the staged copies,
 * src/_stage.h; the direct kernels, src/_direct.h; depthwise, src/_depthwise.h; pooling,
 * src/_pool.h) picks its code from fc_cpu_isa() and nothing else, so a capped run executes
 * no instruction above the cap anywhere in fastconv.
 *
 * FASTCONV_ISA=generic|avx2|avx512 caps the level (to test or measure a lesser path on a
 * bigger CPU); unset, empty or unknown means "what the CPU has" (fastconv._config warns about
 * an unknown value). A level is only ever lowered: asking for avx512 on an AVX2 CPU gives
 * avx2. The levels:
 *   generic  plain C (whatever the compiler's baseline vectorises to: SSE2 on x86-64, NEON
 *            on aarch64); the only level off x86-64 or without GCC/clang's target attributes
 *   avx2     AVX2 and FMA
 *   avx512   AVX-512 F, BW, VL and DQ, besides AVX2 and FMA (the AVX-512 kernels use the
 *            AVX2 transposes of src/_gemm.h)
 * Each family may use less than the level (pooling runs its AVX2 build at avx512), never more.
 */
#ifndef FASTCONV_CPU_H
#define FASTCONV_CPU_H

#include <stdlib.h>
#include <string.h>

#define FC_ISA_GENERIC 0
#define FC_ISA_AVX2 1
#define FC_ISA_AVX512 2

#if defined(__x86_64__) && defined(__GNUC__)
#define FC_HAVE_X86_TARGETS 1
#else
#define FC_HAVE_X86_TARGETS 0
#endif

/* the CPU's own level, without the cap */
static int fc_cpu_detect(void)
{
#if FC_HAVE_X86_TARGETS
    __builtin_cpu_init();
    /* (libgcc and compiler-rt also check that the OS saves the YMM / ZMM registers) */
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return FC_ISA_GENERIC;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return FC_ISA_AVX512;
    return FC_ISA_AVX2;
#endif
    return FC_ISA_GENERIC;
}

/* the level in force: the CPU's, lowered by FASTCONV_ISA (read once, at the first call; the
 * extensions call it at import, before any kernel runs) */
static int fc_cpu_isa(void)
{
    static int level = -1;
    if (level < 0) {
        const char* cap = getenv("FASTCONV_ISA");
        int detected = fc_cpu_detect();
        int limit = FC_ISA_AVX512;
        if (cap != NULL) {
            if (strcmp(cap, "generic") == 0)
                limit = FC_ISA_GENERIC;
            else if (strcmp(cap, "avx2") == 0)
                limit = FC_ISA_AVX2;
        }
        level = detected < limit ? detected : limit;
    }
    return level;
}

static const char* fc_cpu_isa_name(int level)
{
    return level == FC_ISA_AVX512 ? "avx512" : level == FC_ISA_AVX2 ? "avx2" : "generic";
}

#endif
