/* Would a Winograd weight gradient pay? Its stages timed on one thread, next to the Winograd
 * forward pass's (bench/winograd_stages.c), from the same kernels where they exist and from
 * their closest stand-ins where they do not (issue 15: "weight gradient <= 0.8x PyTorch or a
 * measured reason why it does not pay").
 *
 *   cc -O3 -g0 -Isrc bench/winograd_wgrad_stages.c -o /tmp/winograd_wgrad_stages -lm
 *   flock /work/bench.lock /tmp/winograd_wgrad_stages N C H W K m [repeats]
 *
 * The weight gradient dW[k][c] = sum_n,i,j gy[n][k][i][j] x[n][c][i+p][j+q] by Winograd
 * F(m x m, 3 x 3) is, per tile, dW = G^T [(A gy_tile A^T) . (B^T d B)] G summed over the
 * tiles: transform the input patches (the forward pass's input transform), transform the
 * m x m grad_output tiles to alpha x alpha (the output transform's arithmetic run backwards:
 * the same m alpha^2 + m^2 alpha terms, timed here as the output transform), then per
 * alpha^2 position one GEMM dW_hat[xi] (K x C) += Gy[xi] (K x tiles) V[xi]^T (tiles x C)
 * whose inner dimension is the tiles, and at the end dW = G^T dW_hat G per (k, c) (the weight
 * transform's arithmetic, timed as the weight transform). The GEMMs are the packed GEMM of
 * _gemm.h with the shapes above, summed block by block of `block` tiles into one K x C
 * accumulator per xi (as a bounded workspace has to), for several block sizes: the
 * accumulators (alpha^2 K C values) are read and written once per block.
 * Thread CPU time, the least of `repeats` passes; float32, at the ISA of src/_cpu.h. Also
 * printed: the direct weight gradient's multiply-adds at the GEMM's measured peak, the floor
 * any direct kernel can reach. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "_gemm.h"
#include "_winograd.h"
#include "stages_common.h"

int main(int argc, char** argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s N C H W K m [repeats]\n", argv[0]);
        return 2;
    }
    const ptrdiff_t batch = atol(argv[1]), c_in = atol(argv[2]), height = atol(argv[3]),
                    width = atol(argv[4]), k_out = atol(argv[5]);
    const int m = atoi(argv[6]);
    const int repeats = argc > 7 ? atoi(argv[7]) : 3;
    static const ptrdiff_t blocks[] = {16, 64, 256, 1024};
    fc_gemm_init();
    fc_wino_select();
    const int a2 = (m + 2) * (m + 2), mr = fc_gemm_rows();
    const ptrdiff_t nr = FC_SGEMM_NR, line = 16;
    const ptrdiff_t k_pad = (k_out + mr - 1) / mr * mr, u_step = k_pad * c_in + line;
    fc_wino_geometry g = {c_in, height, width, height, width, 1, 1, (height + m - 1) / m,
                          (width + m - 1) / m, c_in};
    fc_wino_geometry g_out = g;
    const ptrdiff_t n_tiles = batch * g.tiles_h * g.tiles_w;
    const ptrdiff_t max_block = 1024, ld_max = panel_ld(max_block, nr);
    const ptrdiff_t c_ld = (c_in + nr - 1) / nr * nr;
    float* x = malloc(sizeof(float) * batch * c_in * height * width);
    float* w = malloc(sizeof(float) * k_out * c_in * 9);
    float* out = malloc(sizeof(float) * batch * k_out * height * width);
    float* u = aligned_alloc(64, sizeof(float) * (a2 * u_step + 64));
    /* the input transform's rows (forward layout; the weight gradient would store them
     * transposed, tiles by channels, for the GEMM's B: the same values, the same stores) */
    float* v = aligned_alloc(64, sizeof(float) * (a2 * (c_in * ld_max + line) + 64));
    float* mm = aligned_alloc(64, sizeof(float) * (a2 * (k_out * ld_max + line) + 64));
    /* the GEMM's operands: Gy[xi] packed as A panels (k_pad x block), V[xi]^T as rows of
     * c_ld (block x C), the accumulators dW_hat[xi] (K x C) */
    float* pa = aligned_alloc(64, sizeof(float) * (k_pad * max_block + 64));
    float* pb = aligned_alloc(64, sizeof(float) * (max_block * c_ld + 64));
    float* acc = aligned_alloc(64, sizeof(float) * ((ptrdiff_t)a2 * k_out * c_ld + 64));
    double best[3] = {1e30, 1e30, 1e30}, gemm_best[4] = {1e30, 1e30, 1e30, 1e30};
    double direct_floor, peak = 0;
    ptrdiff_t i, t0, panel;
    int rep, xi, s, bi;
    if (!x || !w || !out || !u || !v || !mm || !pa || !pb || !acc)
        return 1;
    for (i = 0; i < batch * c_in * height * width; i++)
        x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (i = 0; i < k_out * c_in * 9; i++)
        w[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (i = 0; i < k_pad * max_block; i++)
        pa[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (i = 0; i < max_block * c_ld; i++)
        pb[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (i = 0; i < (ptrdiff_t)a2 * k_out * c_ld; i++)
        acc[i] = 0;
    for (i = 0; i < a2 * (k_out * ld_max + line); i++)
        mm[i] = 0.25f;
    g_out.channels = g_out.planes = k_out;
    for (rep = 0; rep < repeats; rep++) {
        double spent[3] = {0, 0, 0}, start = seconds();
        /* the final G^T dW_hat G: the weight transform's work (K C pairs, alpha^2 <-> 9) */
        for (panel = 0; panel < k_pad / mr; panel++)
            fc_wino_weights_float(m, w, c_in, panel * mr,
                                  (panel + 1) * mr < k_out ? (panel + 1) * mr : k_out, mr,
                                  c_in * 9, 9, 0, u, u_step);
        spent[0] = seconds() - start;
        for (t0 = 0; t0 < n_tiles; t0 += 16) {
            const ptrdiff_t count = n_tiles - t0 < 16 ? n_tiles - t0 : 16;
            const ptrdiff_t ld = panel_ld(16, nr);
            start = seconds();
            fc_wino_input_float(m, x, &g, t0, count, v, ld, c_in * ld + line);
            spent[1] += seconds() - start;
            start = seconds();
            fc_wino_output_float(m, mm, ld, k_out * ld + line, NULL, out, &g_out, t0, count);
            spent[2] += seconds() - start;
        }
        for (s = 0; s < 3; s++)
            best[s] = spent[s] < best[s] ? spent[s] : best[s];
        /* the GEMMs: every tile once, block by block, into the alpha^2 accumulators */
        for (bi = 0; bi < 4; bi++) {
            const ptrdiff_t block = blocks[bi];
            double took;
            start = seconds();
            for (t0 = 0; t0 < n_tiles; t0 += block) {
                const ptrdiff_t count = n_tiles - t0 < block ? n_tiles - t0 : block;
                for (xi = 0; xi < a2; xi++)
                    fc_sgemm_packed(k_out, c_in, count, pa, pb, nr, c_ld, NULL,
                                    acc + (ptrdiff_t)xi * k_out * c_ld, c_ld, 1, 0);
            }
            took = seconds() - start;
            gemm_best[bi] = took < gemm_best[bi] ? took : gemm_best[bi];
        }
    }
    for (bi = 0; bi < 4; bi++) {
        double rate = 2.0 * a2 * k_out * c_in * n_tiles / gemm_best[bi] * 1e-9;
        peak = rate > peak ? rate : peak;
    }
    direct_floor = 2.0 * 9 * k_out * c_in * batch * height * width / (peak * 1e9);
    printf("N=%ld C=%ld %ldx%ld K=%ld m=%d (%s), one thread: input transform %.2f ms, "
           "grad_output transform (~output transform) %.2f, final G^T . G (~weight "
           "transform) %.2f\n",
           (long)batch, (long)c_in, (long)height, (long)width, (long)k_out, m, fc_wino_isa(),
           best[1] * 1e3, best[2] * 1e3, best[0] * 1e3);
    for (bi = 0; bi < 4; bi++)
        printf("  GEMMs in blocks of %4ld tiles: %.2f ms (%.0f GFLOP/s); Winograd weight "
               "gradient total %.2f ms\n",
               (long)blocks[bi], gemm_best[bi] * 1e3,
               2.0 * a2 * k_out * c_in * n_tiles / gemm_best[bi] * 1e-9,
               (best[0] + best[1] + best[2] + gemm_best[bi]) * 1e3);
    printf("  direct weight gradient's multiply-adds at the best GEMM rate above (%.0f "
           "GFLOP/s): %.2f ms\n",
           peak, direct_floor * 1e3);
    free(x);
    free(w);
    free(out);
    free(u);
    free(v);
    free(mm);
    free(pa);
    free(pb);
    free(acc);
    return 0;
}
