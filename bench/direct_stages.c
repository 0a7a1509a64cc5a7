/* Where the direct forward pass (src/_direct.h, Direct; src/conv/direct.pxi, forward_direct)
 * spends its time, stage by stage, on one thread: the weights packed (fc_direct_pack), each
 * sample's input staged (a plain copy into the zero-padded stage, as stage_input does at
 * stride 1), its sums by the micro-kernels (fc_direct_tile, one call over the whole plane)
 * and their transposing store into the output (fc_direct_store); then the weight gradient's
 * sums both ways (weight_gradient). Each stage is timed over
 * the whole batch (the least of `repeats` passes); then the three per-sample stages run
 * together as forward_direct interleaves them.
 *
 *   cc -O3 -g0 -Isrc bench/direct_stages.c -o /tmp/direct_stages
 *   flock /work/bench.lock /tmp/direct_stages [N C_in C_out H k [repeats]]
 *
 * Defaults: one thread's share of the small ResNet's l3.c2 at batch 32 (2 threads), 16 x 128
 * x 7 x 7 -> 128, 3x3, stride 1, 'same' padding. Thread CPU time, float32, AVX-512 only.
 * GFLOP/s count 2 * C_out * C_in * k*k per output pixel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_direct.h"
#include "stages_common.h"

/* src/conv/direct.pxi's direct_tap_lists at stride 1, no dilation, 'same' padding (odd k) */
static void tap_lists(ptrdiff_t out_h, ptrdiff_t ks, ptrdiff_t k, const ptrdiff_t *off,
                      ptrdiff_t width, int skip, ptrdiff_t *rows)
{
    ptrdiff_t oy, kk, p, q, lo, hi, end = 2 * out_h, pad = ks / 2;
    for (oy = 0; oy < out_h; oy++) {
        lo = skip && oy < pad ? pad - oy : 0;
        hi = skip && oy + ks - 1 - pad >= out_h ? out_h - 1 + pad - oy : ks - 1;
        rows[2 * oy] = end;
        for (kk = 0; kk < k; kk++) {
            p = kk % (ks * ks) / ks;
            q = kk % ks;
            if (lo <= p && p <= hi) {  /* the kinds of the columns' taps, where skipped */
                rows[end++] = off[kk];
                rows[end++] = kk * width + (skip && q < pad) + 2 * (skip && q - pad >= 1);
            }
        }
        rows[2 * oy + 1] = (end - rows[2 * oy]) / 2;
    }
}

static float *falloc(size_t n)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64 + 64);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memset(p, 0, (n * sizeof(float) + 63) / 64 * 64 + 64);
    return p;
}

/* The weight gradient's sums (src/conv/direct.pxi, grad_weight_direct_chunks_impl) over the
 * batch into one row of partial sums, the taps blocked by kernel position as
 * direct_wgrad_blocks does at stride 1 (the first sample's sums stored, the others added):
 * each sample staged and its grad_output transposed
 * (fc_direct_load), then fc_dgrad_tile on the stage's rows (cin 0: fc_dgrad_1/2) or on the
 * stage transposed channel-minor (fc_dgrad_stage_t, fc_dgrad_list_1/2); the two rows of sums
 * must agree bit for bit. */
static void weight_gradient(ptrdiff_t batch, ptrdiff_t c_in, ptrdiff_t c_out, ptrdiff_t h,
                            ptrdiff_t ks, int repeats, const float *x)
{
    const ptrdiff_t pad = ks / 2, plane = h * h, st_w = h + ks - 1;
    const ptrdiff_t st_plane = (h + ks - 1) * st_w, k = c_in * ks * ks;
    const int v = c_out % 32 == 0 ? 2 : 1;
    const ptrdiff_t r_max = v == 2 ? FC_DIRECT_MR2 : FC_DIRECT_MR1;
    const ptrdiff_t runs = (c_in + r_max - 1) / r_max;
    float *gy = falloc(batch * c_out * plane), *gyt = falloc(plane * c_out);
    float *stage = falloc(c_in * st_plane + 16), *stage_t = falloc(c_in * st_plane + 16);
    float *sums[2] = {falloc(c_out * k), falloc(c_out * k)};
    ptrdiff_t *off = malloc(2 * k * sizeof(ptrdiff_t)), *oo = malloc(k * sizeof(ptrdiff_t));
    ptrdiff_t *blocks = malloc(6 * ks * ks * runs * sizeof(ptrdiff_t));
    ptrdiff_t *pix = malloc(2 * plane * sizeof(ptrdiff_t));
    ptrdiff_t i, n, c, r, pq, nb = 0, m = 0, p, q;
    double best[2] = {1e30, 1e30}, t, flop = 0;
    int rep, kind;
    for (i = 0; i < batch * c_out * plane; i++)
        gy[i] = (float)rand() / RAND_MAX - 0.5f;
    for (pq = 0; pq < ks * ks; pq++)
        for (r = 0; r < runs; r++) {
            ptrdiff_t *d = blocks + 6 * nb++, first = c_in * r / runs, last = c_in * (r + 1) / runs;
            p = pq / ks;
            q = pq % ks;
            d[0] = m;
            d[1] = last - first;
            d[2] = p < pad ? pad - p : 0;  /* the rows and columns reading the input */
            d[3] = p > pad ? h + pad - p : h;
            d[4] = q < pad ? pad - q : 0;
            d[5] = q > pad ? h + pad - q : h;
            flop += 2.0 * batch * c_out * (last - first) * (d[3] - d[2]) * (d[5] - d[4]);
            for (c = first; c < last; c++, m++) {
                off[m] = c * st_plane + p * st_w + q;
                off[k + m] = (p * st_w + q) * c_in + c;
                oo[m] = (c * ks * ks + pq) * c_out;
            }
        }
    for (rep = 0; rep < repeats; rep++)
        for (kind = 0; kind < 2; kind++) {
            t = seconds();
            for (n = 0; n < batch; n++) {
                for (c = 0; c < c_in; c++)
                    for (r = 0; r < h; r++)
                        memcpy(stage + c * st_plane + (r + pad) * st_w + pad,
                               x + (n * c_in + c) * plane + r * h, h * sizeof(float));
                if (kind)
                    fc_dgrad_stage_t(stage, st_plane, c_in, stage_t);
                fc_direct_load(gy + n * c_out * plane, plane, c_out, plane, gyt);
                fc_dgrad_tile(kind ? stage_t : stage, blocks, nb, off + kind * k, oo, c_out, v,
                              h, st_w, 0, plane, gyt, sums[kind],
                              !fc_direct_any_nonfinite(gyt, plane * c_out), kind ? c_in : 0,
                              pix, n == 0);
            }
            t = seconds() - t;
            best[kind] = t < best[kind] ? t : best[kind];
        }
    printf("weight gradient, the products with padding left out: ms (GFLOP/s of those)\n");
    printf("  %-9s %8.3f (%.1f)\n", "rows", 1e3 * best[0], flop / best[0] * 1e-9);
    printf("  %-9s %8.3f (%.1f)\n", "list", 1e3 * best[1], flop / best[1] * 1e-9);
    printf("  the sums of the two: %s\n",
           memcmp(sums[0], sums[1], c_out * k * sizeof(float)) ? "DIFFER" : "agree");
}

int main(int argc, char **argv)
{
    const ptrdiff_t batch = argc > 1 ? atol(argv[1]) : 16, c_in = argc > 2 ? atol(argv[2]) : 128,
                    c_out = argc > 3 ? atol(argv[3]) : 128, h = argc > 4 ? atol(argv[4]) : 7,
                    ks = argc > 5 ? atol(argv[5]) : 3;
    const int repeats = argc > 6 ? atoi(argv[6]) : 20;
    const ptrdiff_t pad = ks / 2, out_h = h, out_w = h, plane = out_h * out_w;
    const ptrdiff_t st_w = out_w + ks - 1, st_rows = out_h + ks - 1, st_plane = st_rows * st_w;
    const ptrdiff_t k = c_in * ks * ks;
    const int v = c_out % 32 == 0 ? 2 : 1;
    const ptrdiff_t width = 16 * v;
    float *x = falloc(batch * c_in * h * h), *w = falloc(c_out * k), *wpack = falloc(c_out * k);
    float *stage = falloc(c_in * st_plane + 16), *tbuf = falloc(plane * c_out);
    float *y = falloc(batch * c_out * plane), *y2 = falloc(batch * c_out * plane);
    ptrdiff_t *off = malloc(k * sizeof(ptrdiff_t));
    ptrdiff_t *all = malloc((2 * out_h + 2 * k * out_h) * sizeof(ptrdiff_t));
    ptrdiff_t *skip = malloc((2 * out_h + 2 * k * out_h) * sizeof(ptrdiff_t));
    double best[6] = {1e30, 1e30, 1e30, 1e30, 1e30, 1e30}, t;
    ptrdiff_t i, n, c, r, blk, kk;
    int rep, s;
    if (!fc_direct_init()) {
        fprintf(stderr, "the direct kernels need AVX-512 here\n");
        return 1;
    }
    srand(1);
    for (i = 0; i < batch * c_in * h * h; i++)
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (i = 0; i < c_out * k; i++)
        w[i] = ((float)rand() / RAND_MAX - 0.5f) * 0.1f;
    for (kk = 0; kk < k; kk++)  /* stage_taps at stride 1 */
        off[kk] = kk / (ks * ks) * st_plane + kk % (ks * ks) / ks * st_w + kk % ks;
    tap_lists(out_h, ks, k, off, width, 0, all);
    tap_lists(out_h, ks, k, off, width, 1, skip);
    for (rep = 0; rep < repeats; rep++) {
        t = seconds();
        for (blk = 0; blk < c_out / width; blk++)
            fc_direct_pack(w + blk * width * k, k, width, wpack + blk * width * k);
        t = seconds() - t;
        best[0] = t < best[0] ? t : best[0];
        t = seconds();
        for (n = 0; n < batch; n++)
            for (c = 0; c < c_in; c++)
                for (r = 0; r < h; r++)
                    memcpy(stage + c * st_plane + (r + pad) * st_w + pad,
                           x + (n * c_in + c) * h * h + r * h, h * sizeof(float));
        t = seconds() - t;
        best[1] = t < best[1] ? t : best[1];
        t = seconds();
        for (n = 0; n < batch; n++)
            fc_direct_tile(stage, all, all, wpack, k, c_out, v, out_w, st_w, 0, plane, NULL,
                           tbuf);
        t = seconds() - t;
        best[2] = t < best[2] ? t : best[2];
        t = seconds();
        for (n = 0; n < batch; n++)
            fc_direct_store(tbuf, c_out, plane, y + n * c_out * plane, plane);
        t = seconds() - t;
        best[3] = t < best[3] ? t : best[3];
        t = seconds();
        for (n = 0; n < batch; n++)
            fc_direct_tile(stage, skip, skip, wpack, k, c_out, v, out_w, st_w, 0, plane, NULL,
                           tbuf);
        t = seconds() - t;
        best[5] = t < best[5] ? t : best[5];
        t = seconds();
        for (n = 0; n < batch; n++) {
            for (c = 0; c < c_in; c++)
                for (r = 0; r < h; r++)
                    memcpy(stage + c * st_plane + (r + pad) * st_w + pad,
                           x + (n * c_in + c) * h * h + r * h, h * sizeof(float));
            fc_direct_tile(stage, skip, skip, wpack, k, c_out, v, out_w, st_w, 0, plane, NULL,
                           tbuf);
            fc_direct_store(tbuf, c_out, plane, y2 + n * c_out * plane, plane);
        }
        t = seconds() - t;
        best[4] = t < best[4] ? t : best[4];
    }
    {
        double flop = 2.0 * batch * plane * c_out * k;
        const char *names[6] = {"pack", "stage", "tile all", "store", "together", "tile skip"};
        printf("%ld x %ld x %ld x %ld -> %ld, %ldx%ld, 1 thread, best of %d: ms (GFLOP/s)\n",
               (long)batch, (long)c_in, (long)h, (long)h, (long)c_out, (long)ks, (long)ks,
               repeats);
        for (s = 0; s < 6; s++)
            if (s == 2 || s == 4 || s == 5)
                printf("  %-9s %8.3f (%.1f)\n", names[s], 1e3 * best[s], flop / best[s] * 1e-9);
            else
                printf("  %-9s %8.3f\n", names[s], 1e3 * best[s]);
        /* (the stages one at a time store the last sample's sums, all taps, into every
         * sample; together, with the padding rows' taps left out) */
        printf("  the last sample's outputs, all taps and padding rows left out: %s\n",
               memcmp(y + (batch - 1) * c_out * plane, y2 + (batch - 1) * c_out * plane,
                      c_out * plane * sizeof(float)) ? "DIFFER" : "agree");
    }
    weight_gradient(batch, c_in, c_out, h, ks, repeats, x);
    return 0;
}
