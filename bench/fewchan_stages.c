/* Where the few-channels forward pass (src/_fewchan.h, FewChannels) spends its time, stage by
 * stage, on one thread: per sample either the phase split (fc_few_phase), the block of sums
 * (fc_few_block) and its copy into the output planes (fc_few_store) -- the pooled pass's
 * stages, run unpooled -- or, as src/conv/fewchan.pxi runs an unpooled band, the column
 * planes (fc_few_cols) and the sums stored straight into the output (fc_few_dense), one band
 * per sample. The stages are timed one at a time over the whole batch (each the least of
 * `repeats` passes), and the two ways' outputs compared bit for bit.
 *
 *   cc -O3 -g0 -Isrc bench/fewchan_stages.c -o /tmp/fewchan_stages
 *   flock /work/bench.lock /tmp/fewchan_stages [N H W C_out k stride [repeats]]
 *
 * Defaults: bench's "seed", 64 x 1 x 28 x 28 -> 16, 5x5, stride 2, no padding. Thread CPU time
 * (CLOCK_THREAD_CPUTIME_ID), float32, one input channel, at the ISA of src/_cpu.h
 * (FASTCONV_ISA caps it). GFLOP/s count the grid's outputs only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_fewchan.h"
#include "stages_common.h"

int main(int argc, char **argv)
{
    const ptrdiff_t batch = argc > 1 ? atol(argv[1]) : 64, height = argc > 2 ? atol(argv[2]) : 28,
                    width = argc > 3 ? atol(argv[3]) : 28, c_out = argc > 4 ? atol(argv[4]) : 16,
                    ks = argc > 5 ? atol(argv[5]) : 5, stride = argc > 6 ? atol(argv[6]) : 2;
    const int repeats = argc > 7 ? atoi(argv[7]) : 20;
    const ptrdiff_t out_h = (height - ks) / stride + 1, out_w = (width - ks) / stride + 1;
    const ptrdiff_t k = ks * ks, cpad = (c_out + FC_FEW_MR - 1) / FC_FEW_MR * FC_FEW_MR;
    /* src/conv/fewchan.pxi's few_layout, unpooled, one band of the whole grid */
    const ptrdiff_t wp = out_w + (ks - 1) / stride, hp = out_h + (ks - 1) / stride;
    const ptrdiff_t phase_len =
        (stride * stride * hp * wp + wp + FC_FEW_SLACK + stride * wp + 16 + 15) / 16 * 16;
    const fc_few_shape shape = {k, cpad, 1, wp, 1, fc_few_pitch(out_h, wp, sizeof(float))};
    /* and its dense layout: the band's column planes, ks - 1 / stride rows below it */
    const ptrdiff_t hb = out_h + (ks - 1) / stride;
    const ptrdiff_t cols_len = fc_few_cols_len(1, stride, stride, ks, 1, hb, out_w);
    const ptrdiff_t plane = out_h * out_w, in_plane = height * width;
    float *x = malloc(sizeof(float) * batch * in_plane);
    float *y = malloc(sizeof(float) * batch * c_out * plane);
    float *y2 = malloc(sizeof(float) * batch * c_out * plane);
    float *w = aligned_alloc(64, sizeof(float) * (k * cpad + cpad + 16));
    float *phase = aligned_alloc(64, sizeof(float) * (phase_len + cpad * shape.bp + 16));
    float *block = phase + phase_len;
    float *cols = aligned_alloc(64, sizeof(float) * (cols_len + 16) / 16 * 16);
    ptrdiff_t *off = malloc(sizeof(ptrdiff_t) * k), *off_cols = malloc(sizeof(ptrdiff_t) * k);
    ptrdiff_t kk, n, i;
    double t_phase = 1e9, t_block = 1e9, t_store = 1e9, t_cols = 1e9, t_dense = 1e9, t, t0;
    int r, level = fc_few_init();
    for (i = 0; i < batch * in_plane; i++)
        x[i] = (float)((i * 7919) % 1000) / 1000.f - 0.5f;
    for (i = 0; i < k * cpad + cpad; i++)
        w[i] = (float)(i % 13) / 13.f - 0.4f;
    for (kk = 0; kk < k; kk++) {
        ptrdiff_t p = kk / ks, q = kk % ks;
        off[kk] = ((p % stride) * stride + q % stride) * hp * wp + p / stride * wp + q / stride;
        off_cols[kk] = ((p % stride) * ks + q) * hb * out_w + p / stride * out_w;
    }
    for (r = 0; r < repeats; r++) {
        t0 = seconds();
        for (n = 0; n < batch; n++)
            fc_few_phase_s(x + n * in_plane, 1, height, width, 0, 0, stride, stride, hp, wp,
                           phase);
        t = seconds() - t0;
        t_phase = t < t_phase ? t : t_phase;
        t0 = seconds();
        for (n = 0; n < batch; n++)
            fc_few_block_s(phase, off, w, w + k * cpad, &shape, 0, out_h, 0, block);
        t = seconds() - t0;
        t_block = t < t_block ? t : t_block;
        t0 = seconds();
        for (n = 0; n < batch; n++)
            fc_few_store_s(block, &shape, c_out, 0, out_h, out_w, y + n * c_out * plane, plane);
        t = seconds() - t0;
        t_store = t < t_store ? t : t_store;
        t0 = seconds();
        for (n = 0; n < batch; n++)
            fc_few_cols_s(x + n * in_plane, 1, height, width, 0, 0, stride, stride, ks, 1, 0, hb,
                          hb, out_w, cols);
        t = seconds() - t0;
        t_cols = t < t_cols ? t : t_cols;
        t0 = seconds();
        for (n = 0; n < batch; n++)
            fc_few_dense_s(cols, off_cols, w, w + k * cpad, &shape, out_h * out_w, c_out, 0,
                           y2 + n * c_out * plane, plane);
        t = seconds() - t0;
        t_dense = t < t_dense ? t : t_dense;
    }
    /* (every sample's block here is the last sample's phase planes' sums: compare the last) */
    const double flops = 2.0 * batch * c_out * plane * k;
    printf("level %d, %td x 1 x %td x %td -> %td, %tdx%td stride %td (grid %td x %td, pitch %td)\n",
           level, batch, height, width, c_out, ks, ks, stride, out_h, out_w, wp);
    printf("  phase split   %8.1f us\n", t_phase * 1e6);
    printf("  block         %8.1f us  %6.1f GFLOP/s\n", t_block * 1e6, flops / t_block / 1e9);
    printf("  store (copy)  %8.1f us\n", t_store * 1e6);
    printf("  column planes %8.1f us\n", t_cols * 1e6);
    printf("  dense         %8.1f us  %6.1f GFLOP/s  (same bits as block + store: %s)\n",
           t_dense * 1e6, flops / t_dense / 1e9,
           memcmp(y + (batch - 1) * c_out * plane, y2 + (batch - 1) * c_out * plane,
                  sizeof(float) * c_out * plane) == 0 ? "yes" : "NO");
    return 0;
}
