/* Where the Winograd forward pass spends its time, stage by stage, on one thread: the weight
 * transform, then per block of tiles the input transform, the alpha^2 GEMMs and the output
 * transform, as src/conv/winograd.pxi runs them (same headers, same plane steps).
 *
 *   cc -O3 -g0 -Isrc bench/winograd_stages.c -o /tmp/winograd_stages -lm
 *   flock /work/bench.lock /tmp/winograd_stages N C H W K m [block [repeats]]
 *
 * Thread CPU time (CLOCK_THREAD_CPUTIME_ID), the least of `repeats` passes per stage, float32,
 * 3x3 padding 1, at the ISA of src/_cpu.h (FASTCONV_ISA caps it). The GEMM's GFLOP/s counts
 * its padded tiles. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "_gemm.h"
#include "_winograd.h"
#include "stages_common.h"

int main(int argc, char** argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s N C H W K m [block [repeats]]\n", argv[0]);
        return 2;
    }
    const ptrdiff_t batch = atol(argv[1]), c_in = atol(argv[2]), height = atol(argv[3]),
                    width = atol(argv[4]), k_out = atol(argv[5]);
    const int m = atoi(argv[6]);
    const ptrdiff_t block = argc > 7 ? atol(argv[7]) : 16;
    const int repeats = argc > 8 ? atoi(argv[8]) : 3;
    fc_gemm_init();
    fc_wino_select();
    const int a2 = (m + 2) * (m + 2), mr = fc_gemm_rows();
    const ptrdiff_t nr = FC_SGEMM_NR, line = 16;
    const ptrdiff_t k_pad = (k_out + mr - 1) / mr * mr, u_step = k_pad * c_in + line;
    const ptrdiff_t ld = panel_ld(block, nr);
    const ptrdiff_t v_step = c_in * ld + line, m_step = k_out * ld + line;
    float* x = malloc(sizeof(float) * batch * c_in * height * width);
    float* w = malloc(sizeof(float) * k_out * c_in * 9);
    float* out = malloc(sizeof(float) * batch * k_out * height * width);
    float* u = aligned_alloc(64, sizeof(float) * (a2 * u_step + 64));
    float* v = aligned_alloc(64, sizeof(float) * (a2 * (v_step + m_step) + 64));
    float* mm = v + a2 * v_step;
    fc_wino_geometry g = {c_in, height, width, height, width, 1, 1, (height + m - 1) / m,
                          (width + m - 1) / m, c_in};
    fc_wino_geometry g_out = g;
    const ptrdiff_t n_tiles = batch * g.tiles_h * g.tiles_w;
    double best[4] = {1e30, 1e30, 1e30, 1e30};
    ptrdiff_t i, t0, panel;
    int rep, xi, s;
    if (!x || !w || !out || !u || !v)
        return 1;
    for (i = 0; i < batch * c_in * height * width; i++)
        x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (i = 0; i < k_out * c_in * 9; i++)
        w[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    g_out.channels = g_out.planes = k_out;
    for (rep = 0; rep < repeats; rep++) {
        double spent[4] = {0, 0, 0, 0}, start = seconds(), mark;
        for (panel = 0; panel < k_pad / mr; panel++)
            fc_wino_weights_float(m, w, c_in, panel * mr,
                                  (panel + 1) * mr < k_out ? (panel + 1) * mr : k_out, mr,
                                  c_in * 9, 9, 0, u, u_step);
        spent[0] = seconds() - start;
        for (t0 = 0; t0 < n_tiles; t0 += block) {
            const ptrdiff_t count = n_tiles - t0 < block ? n_tiles - t0 : block;
            start = seconds();
            fc_wino_input_float(m, x, &g, t0, count, v, ld, v_step);
            mark = seconds();
            spent[1] += mark - start;
            for (xi = 0; xi < a2; xi++)
                fc_sgemm_packed(k_out, count, c_in, u + xi * u_step, v + xi * v_step, nr, ld,
                                NULL, mm + xi * m_step, ld, 0, 0);
            start = seconds();
            spent[2] += start - mark;
            fc_wino_output_float(m, mm, ld, m_step, NULL, out, &g_out, t0, count);
            spent[3] += seconds() - start;
        }
        for (s = 0; s < 4; s++)
            best[s] = spent[s] < best[s] ? spent[s] : best[s];
    }
    printf("N=%ld C=%ld %ldx%ld K=%ld m=%d block=%ld (%s): weights %.3f ms, input %.3f, "
           "GEMMs %.3f (%.0f GFLOP/s), output %.3f; total %.3f ms\n",
           (long)batch, (long)c_in, (long)height, (long)width, (long)k_out, m, (long)block,
           fc_wino_isa(), best[0] * 1e3, best[1] * 1e3, best[2] * 1e3,
           2.0 * a2 * k_out * c_in * n_tiles / best[2] * 1e-9, best[3] * 1e3,
           (best[0] + best[1] + best[2] + best[3]) * 1e3);
    free(x);
    free(w);
    free(out);
    free(u);
    free(v);
    return 0;
}
