/* Which instruction sets the kernels may use: detected once, capped by FASTCONV_ISA.
 *
 * FASTCONV_ISA=generic|avx2|avx512 caps the level (to test or measure a lesser path on a
 * bigger CPU); unset, empty or unknown means "what the CPU has" (fastconv._config warns about
 * an unknown value). A level is only ever lowered: asking for avx512 on an AVX2 CPU gives
 * avx2. Kernel families that pick their code with fc_cpu_isa() run one of three builds of the
 * same source: plain C (whatever the compiler's baseline vectorises to, SSE2 on x86-64, NEON
 * on aarch64), AVX2+FMA, and AVX-512 (F, BW, VL, DQ).
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

static int fc_cpu_detect(void)
{
#if FC_HAVE_X86_TARGETS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return FC_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FC_ISA_AVX2;
#endif
    return FC_ISA_GENERIC;
}

/* the level in force: the CPU's, lowered by FASTCONV_ISA (read once) */
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
