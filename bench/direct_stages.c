/* Where the direct forward pass (src/_direct.h, Direct; src/conv/direct.pxi, forward_direct)
 * spends its time, stage by stage, on one thread: the weights packed (fc_direct_pack), each
 * sample's input staged (stage_input: a row copy at stride 1; at stride 2 the columns split
 * by phase, column by column as stage_input does without AVX-512 and by src/_stage.h's
 * fc_gather_rows), its sums by the micro-kernels (fc_direct_tile, one call over the whole
 * plane) and their transposing store into the output (fc_direct_store); then the weight
 * gradient's sums both ways (weight_gradient). Each stage is timed over the whole batch (the
 * least of `repeats` passes); then the per-sample stages run together as forward_direct
 * interleaves them: the plane in runs of the tile's pixels (the geometry's tile, at most 256
 * KiB of sums), each run's sums stored before the next.
 *
 *   cc -O3 -g0 -Isrc bench/direct_stages.c -o /tmp/direct_stages
 *   flock /work/bench.lock /tmp/direct_stages [N C_in C_out H k stride [repeats]]
 *
 * Defaults: one thread's share of the small ResNet's l3.c2 at batch 32 (2 threads), 16 x 128
 * x 7 x 7 -> 128, 3x3, stride 1, padding k / 2. Thread CPU time, float32, AVX-512 only.
 * GFLOP/s count 2 * C_out * C_in * k*k per output pixel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_direct.h"
#include "_stage.h"
#include "stages_common.h"

/* src/conv/direct.pxi's stage_taps and direct_tap_lists for a k x k kernel, stride s,
 * padding pad on every side, no dilation: a list per output row (rows sharing the kernel
 * rows that reach the input share one) */
static void tap_lists(ptrdiff_t c_in, ptrdiff_t in_h, ptrdiff_t in_w, ptrdiff_t out_h,
                      ptrdiff_t out_w, ptrdiff_t ks, ptrdiff_t s, ptrdiff_t pad,
                      ptrdiff_t st_w, ptrdiff_t st_row, ptrdiff_t st_plane, ptrdiff_t width,
                      int skip, ptrdiff_t *rows)
{
    ptrdiff_t oy, c, p, q, lo, hi, kind, end = 2 * out_h;
    for (oy = 0; oy < out_h; oy++) {
        lo = 0;
        hi = ks - 1;
        if (skip) {
            while (lo <= hi && oy * s + lo < pad)
                lo++;
            while (hi >= lo && oy * s + hi >= pad + in_h)
                hi--;
        }
        rows[2 * oy] = end;
        for (c = 0; c < c_in; c++)
            for (p = lo; p <= hi; p++)
                for (q = 0; q < ks; q++) {
                    kind = 0;
                    if (skip) {
                        kind = q < pad;
                        if ((out_w - 1) * s + q - pad >= in_w)
                            kind += 2;
                    }
                    rows[end++] = c * st_plane + p * st_row + q % s * st_w + q / s;
                    rows[end++] = ((c * ks + p) * ks + q) * width + kind;
                }
        rows[2 * oy + 1] = (end - rows[2 * oy]) / 2;
    }
}

/* stage_input of one sample: the rows copied (stride 1) or split by phase (stride 2), by
 * a column loop (scalar) or src/_stage.h's fc_gather_rows (fast: AVX-512 permutes) */
static void stage(const float *x, ptrdiff_t c_in, ptrdiff_t h, ptrdiff_t s, ptrdiff_t pad,
                  ptrdiff_t st_w, ptrdiff_t st_row, ptrdiff_t st_plane, ptrdiff_t st_rows,
                  int fast, float *st)
{
    ptrdiff_t c, r, ph, j, rows = st_rows - pad < h ? st_rows - pad : h;
    for (c = 0; c < c_in; c++) {
        float *dst = st + c * st_plane + pad * st_row;
        const float *src = x + c * h * h;
        if (s == 1) {
            fc_copy_rows((char *)(dst + pad), st_row * 4, (const char *)src, h * 4, rows, h * 4);
        } else if (fast) {
            for (ph = 0; ph < s; ph++) {  /* the phase's columns j in [lo, hi) inside x */
                ptrdiff_t lo = pad > ph ? (pad - ph + s - 1) / s : 0;
                ptrdiff_t hi = (h - 1 + pad - ph) / s + 1;
                hi = hi < st_w ? hi : st_w;
                if (hi > lo)
                    fc_gather_rows(dst + ph * st_w + lo, st_row, src + lo * s + ph - pad, h,
                                   rows, hi - lo, s);
            }
        } else {
            for (r = 0; r < rows; r++)
                for (ph = 0; ph < s; ph++)
                    for (j = 0; j < st_w; j++)
                        if (j * s + ph - pad >= 0 && j * s + ph - pad < h)
                            dst[r * st_row + ph * st_w + j] = src[r * h + j * s + ph - pad];
        }
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
 * must agree bit for bit. Each way is timed whole and its fc_dgrad_tile calls alone (the rest
 * is the staging and the two transposes: 5-8% at the small ResNet's shapes, 2026-12-05). */
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
    /* best: the whole pass (staging, transposes and sums); tile_best: fc_dgrad_tile alone */
    double best[2] = {1e30, 1e30}, tile[2], tile_best[2] = {1e30, 1e30}, t, t_tile, flop = 0;
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
            tile[kind] = 0;
            t = seconds();
            for (n = 0; n < batch; n++) {
                for (c = 0; c < c_in; c++)
                    for (r = 0; r < h; r++)
                        memcpy(stage + c * st_plane + (r + pad) * st_w + pad,
                               x + (n * c_in + c) * plane + r * h, h * sizeof(float));
                if (kind)
                    fc_dgrad_stage_t(stage, st_plane, c_in, stage_t);
                fc_direct_load(gy + n * c_out * plane, plane, c_out, plane, gyt);
                t_tile = seconds();
                fc_dgrad_tile(kind ? stage_t : stage, blocks, nb, off + kind * k, oo, c_out, v,
                              h, st_w, 0, plane, gyt, sums[kind],
                              !fc_direct_any_nonfinite(gyt, plane * c_out), kind ? c_in : 0,
                              pix, n == 0);
                tile[kind] += seconds() - t_tile;
            }
            t = seconds() - t;
            best[kind] = t < best[kind] ? t : best[kind];
            tile_best[kind] = tile[kind] < tile_best[kind] ? tile[kind] : tile_best[kind];
        }
    printf("weight gradient, the products with padding left out: ms (GFLOP/s of those)\n");
    printf("  %-9s %8.3f (%.1f), the sums alone %.3f (%.1f)\n", "rows", 1e3 * best[0],
           flop / best[0] * 1e-9, 1e3 * tile_best[0], flop / tile_best[0] * 1e-9);
    printf("  %-9s %8.3f (%.1f), the sums alone %.3f (%.1f)\n", "list", 1e3 * best[1],
           flop / best[1] * 1e-9, 1e3 * tile_best[1], flop / tile_best[1] * 1e-9);
    printf("  the sums of the two: %s\n",
           memcmp(sums[0], sums[1], c_out * k * sizeof(float)) ? "DIFFER" : "agree");
}
#define STAGES 8

int main(int argc, char **argv)
{
    const ptrdiff_t batch = argc > 1 ? atol(argv[1]) : 16, c_in = argc > 2 ? atol(argv[2]) : 128,
                    c_out = argc > 3 ? atol(argv[3]) : 128, h = argc > 4 ? atol(argv[4]) : 7,
                    ks = argc > 5 ? atol(argv[5]) : 3, s = argc > 6 ? atol(argv[6]) : 1;
    const int repeats = argc > 7 ? atoi(argv[7]) : 20;
    const ptrdiff_t pad = ks / 2, out_h = (h + 2 * pad - ks) / s + 1, out_w = out_h;
    const ptrdiff_t plane = out_h * out_w;
    const ptrdiff_t st_rows = (out_h - 1) * s + ks, st_w = out_w + (ks - 1) / s;
    const ptrdiff_t st_row = s * st_w, st_plane = st_rows * st_row;
    const ptrdiff_t k = c_in * ks * ks, list = 2 * out_h + 2 * k * out_h;
    const int v = c_out % 32 == 0 ? 2 : 1;
    const ptrdiff_t width = 16 * v;
    /* fastconv/_geometry.py's tile and src/conv/direct.pxi's direct_run */
    ptrdiff_t tile = 256 * 1024 / (4 * k), run = 256 * 1024 / (4 * c_out) / 8 * 8;
    float *x = falloc(batch * c_in * h * h), *w = falloc(c_out * k), *wpack = falloc(c_out * k);
    float *st = falloc(c_in * st_plane + 16), *tbuf = falloc(plane * c_out);
    float *y = falloc(batch * c_out * plane), *y2 = falloc(batch * c_out * plane);
    ptrdiff_t *all = malloc(list * sizeof(ptrdiff_t)), *skip = malloc(list * sizeof(ptrdiff_t));
    double best[STAGES], t;
    ptrdiff_t i, n, blk, p0, count;
    int rep, q;
    if (!fc_direct_init() || strcmp(fc_stage_init(), "avx512") || s < 1 || s > 2) {
        fprintf(stderr, "the direct kernels need AVX-512 here; stride 1 or 2\n");
        return 1;
    }
    tile = tile - tile % 16 > 64 ? tile - tile % 16 : 64;
    tile = tile < plane ? tile : plane;
    run = run < 8 ? 8 : run;
    run = run < tile ? run : tile;
    for (q = 0; q < STAGES; q++)
        best[q] = 1e30;
    srand(1);
    for (i = 0; i < batch * c_in * h * h; i++)
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (i = 0; i < c_out * k; i++)
        w[i] = ((float)rand() / RAND_MAX - 0.5f) * 0.1f;
    tap_lists(c_in, h, h, out_h, out_w, ks, s, pad, st_w, st_row, st_plane, width, 0, all);
    tap_lists(c_in, h, h, out_h, out_w, ks, s, pad, st_w, st_row, st_plane, width, 1, skip);
#define TIME(SLOT, BODY)                                                                     \
    t = seconds();                                                                           \
    BODY;                                                                                    \
    t = seconds() - t;                                                                       \
    best[SLOT] = t < best[SLOT] ? t : best[SLOT];
    for (rep = 0; rep < repeats; rep++) {
        TIME(0, for (blk = 0; blk < c_out / width; blk++)
                    fc_direct_pack(w + blk * width * k, k, width, wpack + blk * width * k))
        TIME(1, for (n = 0; n < batch; n++)
                    stage(x + n * c_in * h * h, c_in, h, s, pad, st_w, st_row, st_plane, st_rows,
                          0, st))
        TIME(2, for (n = 0; n < batch; n++)
                    stage(x + n * c_in * h * h, c_in, h, s, pad, st_w, st_row, st_plane, st_rows,
                          1, st))
        TIME(3, for (n = 0; n < batch; n++)
                    fc_direct_tile(st, all, all, wpack, k, c_out, v, out_w, s * st_row, 0, plane,
                                   NULL, tbuf))
        TIME(4, for (n = 0; n < batch; n++)
                    fc_direct_tile(st, skip, skip, wpack, k, c_out, v, out_w, s * st_row, 0,
                                   plane, NULL, tbuf))
        TIME(5, for (n = 0; n < batch; n++)
                    fc_direct_store(tbuf, c_out, plane, y + n * c_out * plane, plane))
        TIME(6, for (n = 0; n < batch; n++) {
            stage(x + n * c_in * h * h, c_in, h, s, pad, st_w, st_row, st_plane, st_rows, 1, st);
            for (p0 = 0; p0 < plane; p0 += run) {
                count = plane - p0 < run ? plane - p0 : run;
                fc_direct_tile(st, skip, skip, wpack, k, c_out, v, out_w, s * st_row, p0, count,
                               NULL, tbuf);
                fc_direct_store(tbuf, c_out, count, y2 + n * c_out * plane + p0, plane);
            }
        })
    }
    {
        double flop = 2.0 * batch * plane * c_out * k;
        const char *names[STAGES] = {"pack",      "stage",     "stage s2", "tile all",
                                     "tile skip", "store",     "together", ""};
        printf("%ld x %ld x %ld x %ld -> %ld, %ldx%ld stride %ld (runs of %ld pixels), 1 "
               "thread, best of %d: ms (GFLOP/s)\n", (long)batch, (long)c_in, (long)h, (long)h,
               (long)c_out, (long)ks, (long)ks, (long)s, (long)run, repeats);
        for (q = 0; q < 7; q++)
            if (q == 3 || q == 4 || q == 6)
                printf("  %-9s %8.3f (%.1f)\n", names[q], 1e3 * best[q], flop / best[q] * 1e-9);
            else if (q != 2 || s == 2)
                printf("  %-9s %8.3f\n", names[q], 1e3 * best[q]);
        /* (the stages one at a time store the last sample's sums, all taps, into every
         * sample; together, with the padding rows' taps left out) */
        printf("  the last sample's outputs, all taps and padding rows left out: %s\n",
               memcmp(y + (batch - 1) * c_out * plane, y2 + (batch - 1) * c_out * plane,
                      c_out * plane * sizeof(float)) ? "DIFFER" : "agree");
    }
    weight_gradient(batch, c_in, c_out, h, ks, repeats, x);
    return 0;
}
