/* The Winograd transforms for one element type and one instruction set. _winograd.h includes
 * this file once per (type, ISA) after defining FC_T (float or double), FC_WN(name) (the
 * suffixed name) and FC_W_TARGET (a target attribute, or nothing); it undefines them at the
 * end. No include guard, on purpose.
 *
 * Vectors run across FC_WINO_LANES tiles (or, for the weights, (output, input) channel
 * pairs), never across the terms of one element, and each transform is written out from its
 * constant matrix (FC_WN(apply), unrolled) or, for the output transform and the input
 * transform at m = 4 and 5, by hand with shared parts (FC_WN(at_apply), FC_WN(bt_apply)), so
 * the bits depend only on the shapes.
 */

#define FC_LOCAL static inline __attribute__((always_inline)) FC_W_TARGET
#define FC_KERNEL static FC_W_TARGET
#define FC_L FC_WINO_LANES

typedef FC_T FC_WN(vec) __attribute__((vector_size(FC_W_VBYTES)));
typedef double FC_WN(vec_d) __attribute__((vector_size(FC_W_VBYTES)));
/* FC_WN(apply): _winograd.h's FC_WINO_APPLY, the matrices as they are (tr = 0) */
FC_LOCAL FC_WINO_APPLY(FC_WN(apply), FC_T, FC_WN(vec), FC_W_VBYTES)
FC_LOCAL FC_WINO_APPLY(FC_WN(apply_d), double, FC_WN(vec_d), FC_W_VBYTES)

/* dst[j] = src[j] for j < n <= 8, in moves of constant size: a loop or a memcpy of m values
 * (20 or 24 bytes for m = 5 or 6, or of a size the compiler cannot see) became a call to
 * libc's memcpy per tile row, 12% of bench_ops.py's small case at m = 5 (perf, one thread) */
FC_LOCAL void FC_WN(copy_short)(FC_T* dst, const FC_T* src, int n)
{
    int o = 0;
    if (n & 8) {
        __builtin_memcpy(dst, src, 8 * sizeof(FC_T));
        o = 8;
    }
    if (n & 4) {
        __builtin_memcpy(dst + o, src + o, 4 * sizeof(FC_T));
        o += 4;
    }
    if (n & 2) {
        __builtin_memcpy(dst + o, src + o, 2 * sizeof(FC_T));
        o += 2;
    }
    if (n & 1)
        dst[o] = src[o];
}

/* The patch rows of a tile on the plane's edges. At AVX-512 each lane's rows are set up once
 * per group of tiles (input_any: an offset and the mask of col_mask, zero for rows above or
 * below the plane) and copied per channel by one masked load and one store each, without
 * branches: copying the patch rows with branches, tests and masks per row (below) had been
 * 45% of the input transform of bench_ops.py's small case (14x14 planes at m = 5: 8 of 9
 * tiles touch an edge; input stage 0.184 -> 0.143 ms, winograd_stages.c, one thread). */
#if FC_W_VBYTES == 64
/* the bits q < FC_WINO_PITCH with 0 <= col0 + q < in_w */
FC_LOCAL __mmask8 FC_WN(col_mask)(ptrdiff_t col0, ptrdiff_t in_w)
{
    enum { P = FC_WINO_PITCH };
    const ptrdiff_t lo = col0 >= 0 ? 0 : (-col0 < P ? -col0 : P);
    const ptrdiff_t hi = in_w - col0 >= P ? P : (in_w - col0 > 0 ? in_w - col0 : 0);
    return hi > lo ? (__mmask8)(((1u << hi) - 1u) & ~((1u << lo) - 1u)) : 0;
}
#elif FC_W_VBYTES == 32
/* slot[q] = row[col0 + q] where 0 <= col0 + q < in_w, else 0, for q < FC_WINO_PITCH: the
 * patch row of a tile on the plane's left or right edge. On x86 one masked load (the values
 * outside the row are not read, so they cannot fault) and one store of the whole slot row;
 * elsewhere value by value, each read at a clamped column and kept only where it is inside.
 * The value-by-value copies had been a quarter of the input transform of bench_ops.py's
 * small case (14x14 planes at m = 5: 8 of 9 tiles touch an edge; perf, one thread). */
#define FC_W_MASKED 1
FC_LOCAL void FC_WN(row_masked)(FC_T* slot, const FC_T* row, ptrdiff_t col0, ptrdiff_t in_w)
{
    enum { P = FC_WINO_PITCH };
    const ptrdiff_t lo = col0 >= 0 ? 0 : (-col0 < P ? -col0 : P);
    const ptrdiff_t hi = in_w - col0 >= P ? P : (in_w - col0 > 0 ? in_w - col0 : 0);
    const FC_T* src = row + col0;
    if (sizeof(FC_T) == 4) {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i mask =
            _mm256_and_si256(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32((int)lo - 1)),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), idx));
        _mm256_storeu_ps((float*)slot, _mm256_maskload_ps((const float*)src, mask));
    } else {
        const __m256i lo4 = _mm256_set1_epi64x((long long)lo - 1);
        const __m256i hi4 = _mm256_set1_epi64x((long long)hi);
        const __m256i idx0 = _mm256_setr_epi64x(0, 1, 2, 3), idx1 = _mm256_setr_epi64x(4, 5, 6, 7);
        const __m256i mask0 =
            _mm256_and_si256(_mm256_cmpgt_epi64(idx0, lo4), _mm256_cmpgt_epi64(hi4, idx0));
        const __m256i mask1 =
            _mm256_and_si256(_mm256_cmpgt_epi64(idx1, lo4), _mm256_cmpgt_epi64(hi4, idx1));
        _mm256_storeu_pd((double*)slot, _mm256_maskload_pd((const double*)src, mask0));
        _mm256_storeu_pd((double*)slot + 4, _mm256_maskload_pd((const double*)src + 4, mask1));
    }
}
#else
#define FC_W_MASKED 0
FC_LOCAL void FC_WN(row_masked)(FC_T* slot, const FC_T* row, ptrdiff_t col0, ptrdiff_t in_w)
{
    int q;
    _Pragma("GCC unroll 8") for (q = 0; q < FC_WINO_PITCH; q++) {
        const ptrdiff_t xx = col0 + q;
        const ptrdiff_t xc = xx < 0 ? 0 : (xx >= in_w ? in_w - 1 : xx);
        const FC_T value = row[xc];
        slot[q] = (xx >= 0 && xx < in_w) ? value : (FC_T)0;
    }
}
#endif

/* out[i*out_step + l] = (B^T in)[i][l] for i < alpha, l < FC_L, in having alpha rows in_step
 * apart. For m = 4 and 5, B^T's rows written out by hand with their common parts shared
 * (m = 5: rows 1-4 from u_j = d_j - 2 d_{j+1} and w_j = d_{j+3} - d_{j+2} / 2, j = 1, 2, as
 * row 1 = f_1 + f_2, row 2 = f_2 - f_1 with f_j = 2 u_j + w_j and row 3 = h_1 + h_2 / 2,
 * row 4 = h_2 / 2 - h_1 with h_j = u_j + 2 w_j; row 0 from row 5): 22 vector operations a
 * column against 39 from the matrix at m = 5, 13 against 22 at m = 4 (the pairing of the
 * points +-1 and +-2). m = 2 and 6 run the matrix (FC_WN(apply)). */
FC_LOCAL void FC_WN(bt_apply)(int m, const double* bt, const FC_T* in, ptrdiff_t in_step,
                              FC_T* out, ptrdiff_t out_step)
{
    typedef FC_WN(vec) V;
    enum { VL = FC_W_VBYTES / (int)sizeof(FC_T) };
    int s, j;
    if (m != 4 && m != 5) {
        FC_WN(apply)(m + 2, m + 2, 0, bt, in, in_step, out, out_step);
        return;
    }
    _Pragma("GCC unroll 8") for (s = 0; s < FC_L; s += VL) {
        V d[FC_WINO_ALPHA_MAX], y[FC_WINO_ALPHA_MAX];
        _Pragma("GCC unroll 8") for (j = 0; j < m + 2; j++)
            __builtin_memcpy(&d[j], in + j * in_step + s, sizeof d[j]);
        if (m == 4) {
            const V t1 = d[4] - (FC_T)4 * d[2], t2 = d[3] - (FC_T)4 * d[1];
            const V t3 = d[4] - d[2], t4 = (FC_T)2 * (d[3] - d[1]);
            y[0] = (FC_T)4 * d[0] - (FC_T)5 * d[2] + d[4];
            y[1] = t1 + t2;
            y[2] = t1 - t2;
            y[3] = t3 + t4;
            y[4] = t3 - t4;
            y[5] = (FC_T)4 * d[1] - (FC_T)5 * d[3] + d[5];
        } else {
            const V u1 = d[1] - (FC_T)2 * d[2], u2 = d[2] - (FC_T)2 * d[3];
            const V w1 = d[4] - (FC_T)0.5 * d[3], w2 = d[5] - (FC_T)0.5 * d[4];
            const V f1 = (FC_T)2 * u1 + w1, f2 = (FC_T)2 * u2 + w2;
            const V h1 = u1 + (FC_T)2 * w1, h2 = u2 + (FC_T)2 * w2;
            y[5] = (FC_T)4 * d[1] - (FC_T)5 * d[3] + d[5];
            y[0] = y[5] - (FC_T)2 * d[0] + (FC_T)2.5 * d[2] - (FC_T)0.5 * d[4];
            y[1] = f1 + f2;
            y[2] = f2 - f1;
            y[3] = h1 + (FC_T)0.5 * h2;
            y[4] = (FC_T)0.5 * h2 - h1;
            y[6] = (FC_T)4 * d[2] - (FC_T)5 * d[4] + d[6] - (FC_T)2 * d[1] + (FC_T)2.5 * d[3] -
                   (FC_T)0.5 * d[5];
        }
        _Pragma("GCC unroll 8") for (j = 0; j < m + 2; j++)
            __builtin_memcpy(out + j * out_step + s, &y[j], sizeof y[j]);
    }
}

/* see fc_wino_input_* in _winograd.h. Per channel and group of FC_L tiles, each tile's
 * patch is copied row by row into its lane's slot of `rows` (whole rows of FC_WINO_PITCH
 * values: vector moves), the FC_L slots are transposed in registers into d (patch element
 * down, tile across), and the transform runs across the lanes. Gathering element by element
 * straight into d cost 2.5x the transform itself: 2 scalar memory operations per element,
 * and each vector load of d waited for the 16 stores it spans. */
FC_LOCAL void FC_WN(input_any)(int m, int alpha, const double* bt, const FC_T* x,
                               const fc_wino_geometry* g, ptrdiff_t t0, ptrdiff_t count,
                               FC_T* v, ptrdiff_t ld, ptrdiff_t xi_step)
{
    enum { P = FC_WINO_PITCH, SLOT = FC_WINO_ALPHA_MAX * FC_WINO_PITCH };
    const ptrdiff_t plane = g->in_h * g->in_w, in_w = g->in_w;
    FC_T rows[FC_L * SLOT] __attribute__((aligned(64)));
    FC_T d[SLOT * FC_L] __attribute__((aligned(64)));
    FC_T tmp[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    ptrdiff_t row0[FC_L], col0[FC_L];
#if FC_W_VBYTES == 64
    /* each lane's patch rows: where in x (from the channel's plane; rows above or below the
     * plane at its first row) and which of the slot row's values lie inside the plane (none
     * for rows outside): one masked load per row, whatever the edge, without branches */
    ptrdiff_t off[FC_L * FC_WINO_ALPHA_MAX];
    __mmask8 km[FC_L * FC_WINO_ALPHA_MAX];
#else
    const FC_T* base[FC_L];
    int kind[FC_L]; /* 0: whole slot rows inside the plane, 1: alpha values inside, 2: edge */
#endif
    const int used = alpha * P; /* the slot's values that the transform reads (rows < alpha) */
    ptrdiff_t l0, c, n, row, col;
    int lane, lanes, r, q, i, j;
    for (l0 = 0; l0 < count; l0 += FC_L) {
        lanes = (int)(count - l0 < FC_L ? count - l0 : FC_L);
        for (lane = 0; lane < lanes; lane++) {
            fc_wino_tile(g, m, t0 + l0 + lane, &n, &row, &col);
            row0[lane] = row - g->pad_top;
            col0[lane] = col - g->pad_left;
#if FC_W_VBYTES == 64
            {
                const __mmask8 cols = FC_WN(col_mask)(col0[lane], in_w);
                _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++) {
                    const ptrdiff_t y = row0[lane] + r;
                    const int inside = y >= 0 && y < g->in_h;
                    off[lane * FC_WINO_ALPHA_MAX + r] =
                        n * g->planes * plane + (inside ? y : 0) * in_w + col0[lane];
                    km[lane * FC_WINO_ALPHA_MAX + r] = inside ? cols : 0;
                }
            }
#else
            base[lane] = x + n * g->planes * plane;
            kind[lane] = 2;
            if (row0[lane] >= 0 && col0[lane] >= 0 && row0[lane] + alpha <= g->in_h) {
                if (col0[lane] + P <= in_w)
                    kind[lane] = 0;
                else if (col0[lane] + alpha <= in_w)
                    kind[lane] = 1;
            }
#endif
        }
        /* the lanes past the last tile: zeros, once per group (the channels keep them) */
        for (lane = lanes; lane < FC_L; lane++)
            for (r = 0; r < used; r++)
                rows[lane * SLOT + r] = 0;
        for (c = 0; c < g->channels; c++) {
            /* the next channel's patch rows on their way into the cache: the planes are far
             * apart and each is read a few rows at a time, which the hardware prefetchers
             * do not follow (every other lane and the last: adjacent tiles' rows share
             * cache lines) */
#if FC_W_VBYTES == 64
            if (c + 1 < g->channels)
                for (lane = 0; lane < lanes; lane++)
                    if ((lane & 1) == 0 || lane == lanes - 1) {
                        const FC_T* p = x + (c + 1) * plane;
                        _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++)
                            __builtin_prefetch(p + off[lane * FC_WINO_ALPHA_MAX + r], 0, 3);
                    }
            for (lane = 0; lane < lanes; lane++) {
                const FC_T* p = x + c * plane;
                FC_T* slot = rows + lane * SLOT;
                _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++) {
                    const __mmask8 k = km[lane * FC_WINO_ALPHA_MAX + r];
                    const FC_T* src = p + off[lane * FC_WINO_ALPHA_MAX + r];
                    if (sizeof(FC_T) == 4)
                        _mm256_store_ps((float*)(slot + r * P),
                                        _mm256_maskz_loadu_ps(k, (const float*)src));
                    else
                        _mm512_store_pd((double*)(slot + r * P),
                                        _mm512_maskz_loadu_pd(k, (const double*)src));
                }
            }
#else
            if (c + 1 < g->channels)
                for (lane = 0; lane < lanes; lane++)
                    if (kind[lane] != 2 && ((lane & 1) == 0 || lane == lanes - 1)) {
                        const FC_T* p =
                            base[lane] + (c + 1) * plane + row0[lane] * in_w + col0[lane];
                        _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++)
                            __builtin_prefetch(p + r * in_w, 0, 3);
                    }
            for (lane = 0; lane < lanes; lane++) {
                FC_T* slot = rows + lane * SLOT;
                if (kind[lane] == 0) {
                    const FC_T* p = base[lane] + c * plane + row0[lane] * in_w + col0[lane];
                    _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++)
                        __builtin_memcpy(slot + r * P, p + r * in_w, P * sizeof(FC_T));
                } else if (kind[lane] == 1) {
                    const FC_T* p = base[lane] + c * plane + row0[lane] * in_w + col0[lane];
                    if (FC_W_MASKED) {
                        _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++)
                            FC_WN(row_masked)(slot + r * P, p + r * in_w, 0, in_w - col0[lane]);
                    } else {
                        _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++)
                            _Pragma("GCC unroll 8") for (q = 0; q < alpha; q++)
                                slot[r * P + q] = p[r * in_w + q];
                    }
                } else {
                    /* an edge tile, row by row: zeros above and below the plane, the slot's
                     * row copied where it lies inside, else its part inside the row
                     * (row_masked) */
                    const FC_T* p = base[lane] + c * plane;
                    const int cols_in = col0[lane] >= 0 && col0[lane] + P <= in_w;
                    _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++) {
                        const ptrdiff_t y = row0[lane] + r;
                        if (y < 0 || y >= g->in_h) {
                            for (q = 0; q < P; q++)
                                slot[r * P + q] = 0;
                        } else if (cols_in) {
                            __builtin_memcpy(slot + r * P, p + y * in_w + col0[lane],
                                             P * sizeof(FC_T));
                        } else {
                            FC_WN(row_masked)(slot + r * P, p + y * in_w, col0[lane], in_w);
                        }
                    }
                }
            }
#endif
            /* d[(r*P + q)*FC_L + lane] = rows[lane*SLOT + r*P + q]: blocks of FC_W_TB lanes
             * by FC_W_TB values (the slot's unused columns come along, never read) */
            for (j = 0; j < FC_L; j += FC_W_TB)
                for (i = 0; i < used; i += FC_W_TB)
                    FC_W_TRANSPOSE(rows + j * SLOT + i, SLOT, d + i * FC_L + j, FC_L);
            /* B^T d: tmp[i][q] = sum_j bt[i][j] d[j][q] */
            _Pragma("GCC unroll 8") for (q = 0; q < alpha; q++)
                FC_WN(bt_apply)(m, bt, d + q * FC_L, P * FC_L, tmp + q * FC_L, alpha * FC_L);
            /* (B^T d) B: V[i][k] = sum_j bt[k][j] tmp[i][j], straight into the GEMM's rows */
            _Pragma("GCC unroll 8") for (i = 0; i < alpha; i++)
                FC_WN(bt_apply)(m, bt, tmp + i * alpha * FC_L, FC_L,
                                v + (ptrdiff_t)i * alpha * xi_step + c * ld + l0, xi_step);
        }
    }
}

/* out[i*out_step + l] = (A^T in)[i][l] for i < m, l < FC_L, in having alpha rows in_step
 * apart: A^T's rows written out by hand with the sums and differences of the columns of the
 * points +-a shared (A^T[i][+a] = a^i = +-A^T[i][-a]: even rows take in[+a] + in[-a], odd rows
 * in[+a] - in[-a]), 16 vector operations a column for m = 5 against 26 from the matrix (every
 * coefficient is a power of two: each product is exact, fused or not). Output stage 0.205 ->
 * 0.188 ms on bench_ops.py's small case (winograd_stages.c, one thread). */
FC_LOCAL void FC_WN(at_apply)(int m, const FC_T* in, ptrdiff_t in_step, FC_T* out,
                              ptrdiff_t out_step, int add, FC_T b)
{
    typedef FC_WN(vec) V;
    enum { VL = FC_W_VBYTES / (int)sizeof(FC_T) };
    int s, j;
    _Pragma("GCC unroll 8") for (s = 0; s < FC_L; s += VL) {
        V x[FC_WINO_ALPHA_MAX], y[FC_WINO_ALPHA_MAX];
        _Pragma("GCC unroll 8") for (j = 0; j < m + 2; j++)
            __builtin_memcpy(&x[j], in + j * in_step + s, sizeof x[j]);
        if (m == 2) {
            y[0] = x[0] + x[1] + x[2];
            y[1] = x[1] - x[2] + x[3];
        } else {
            /* the points 0, 1, -1, 2, -2 (, 1/2 (, -1/2)), infinity */
            const V s1 = x[1] + x[2], d1 = x[1] - x[2], s2 = x[3] + x[4], d2 = x[3] - x[4];
            if (m == 4) {
                y[0] = x[0] + s1 + s2;
                y[1] = d1 + (FC_T)2 * d2;
                y[2] = s1 + (FC_T)4 * s2;
                y[3] = d1 + (FC_T)8 * d2 + x[5];
            } else if (m == 5) {
                y[0] = x[0] + s1 + s2 + x[5];
                y[1] = d1 + (FC_T)2 * d2 + (FC_T)0.5 * x[5];
                y[2] = s1 + (FC_T)4 * s2 + (FC_T)0.25 * x[5];
                y[3] = d1 + (FC_T)8 * d2 + (FC_T)0.125 * x[5];
                y[4] = s1 + (FC_T)16 * s2 + (FC_T)0.0625 * x[5] + x[6];
            } else {
                const V s3 = x[5] + x[6], d3 = x[5] - x[6];
                y[0] = x[0] + s1 + s2 + s3;
                y[1] = d1 + (FC_T)2 * d2 + (FC_T)0.5 * d3;
                y[2] = s1 + (FC_T)4 * s2 + (FC_T)0.25 * s3;
                y[3] = d1 + (FC_T)8 * d2 + (FC_T)0.125 * d3;
                y[4] = s1 + (FC_T)16 * s2 + (FC_T)0.0625 * s3;
                y[5] = d1 + (FC_T)32 * d2 + (FC_T)0.03125 * d3 + x[7];
            }
        }
        if (add)
            _Pragma("GCC unroll 8") for (j = 0; j < m; j++)
                y[j] = y[j] + b;
        _Pragma("GCC unroll 8") for (j = 0; j < m; j++)
            __builtin_memcpy(out + j * out_step + s, &y[j], sizeof y[j]);
    }
}

/* see fc_wino_output_* in _winograd.h */
FC_LOCAL void FC_WN(output_any)(int m, int alpha, const FC_T* mm,
                                ptrdiff_t ld, ptrdiff_t xi_step, const FC_T* bias, FC_T* out,
                                const fc_wino_geometry* g, ptrdiff_t t0, ptrdiff_t count)
{
    const ptrdiff_t plane = g->out_h * g->out_w, out_w = g->out_w;
    FC_T tmp[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    FC_T y[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    /* y transposed: yt[lane*YS + i*m + j], each lane's tile in rows of m values */
    enum { YS = FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX };
    FC_T yt[FC_L * YS] __attribute__((aligned(64)));
    const int ys_used = (m * m + FC_W_TB - 1) / FC_W_TB * FC_W_TB;
    ptrdiff_t base[FC_L];
    int rows[FC_L], cols[FC_L];
    ptrdiff_t l0, k, n, row, col;
    int lane, lanes, i, j, e;
    /* (every element read below is written first; GCC cannot see it through the vectors) */
    memset(y, 0, sizeof y);
    for (l0 = 0; l0 < count; l0 += FC_L) {
        lanes = (int)(count - l0 < FC_L ? count - l0 : FC_L);
        for (lane = 0; lane < lanes; lane++) {
            fc_wino_tile(g, m, t0 + l0 + lane, &n, &row, &col);
            base[lane] = n * g->planes * plane + row * out_w + col;
            rows[lane] = (int)(g->out_h - row < m ? g->out_h - row : m);
            cols[lane] = (int)(out_w - col < m ? out_w - col : m);
        }
        for (k = 0; k < g->channels; k++) {
            /* the next channel's output rows fetched for writing (as the input transform's
             * patch rows: planes far apart, a few rows of each at a time) */
            if (k + 1 < g->channels)
                for (lane = 0; lane < lanes; lane++)
                    if ((lane & 1) == 0 || lane == lanes - 1) {
                        FC_T* p = out + base[lane] + (k + 1) * plane;
                        _Pragma("GCC unroll 8") for (i = 0; i < m; i++)
                            if (i < rows[lane])
                                __builtin_prefetch(p + i * out_w, 1, 3);
                    }
            /* A^T M: tmp[i][j] = sum_x A^T[i][x] M[x][j] */
            _Pragma("GCC unroll 8") for (j = 0; j < alpha; j++)
                FC_WN(at_apply)(m, mm + j * xi_step + k * ld + l0, alpha * xi_step,
                                tmp + j * FC_L, alpha * FC_L, 0, 0);
            /* (A^T M) A: y[i][jj] = sum_x A^T[jj][x] tmp[i][x] */
            /* (and the bias added to each value: a pass of its own over y had cost 8% of the
             * output stage) */
            if (bias) {
                const FC_T b = bias[k];
                _Pragma("GCC unroll 8") for (i = 0; i < m; i++)
                    FC_WN(at_apply)(m, tmp + i * alpha * FC_L, FC_L, y + i * m * FC_L, FC_L, 1, b);
            } else {
                _Pragma("GCC unroll 8") for (i = 0; i < m; i++)
                    FC_WN(at_apply)(m, tmp + i * alpha * FC_L, FC_L, y + i * m * FC_L, FC_L, 0, 0);
            }
            /* each lane's m x m values made contiguous by register transposes (moves only),
             * then stored a tile row (m values) at a time: scattering them one by one from
             * y cost 2 scalar memory operations per value, as much as the transform */
            for (j = 0; j < FC_L; j += FC_W_TB)
                for (e = 0; e < ys_used; e += FC_W_TB)
                    FC_W_TRANSPOSE(y + e * FC_L + j, FC_L, yt + j * YS + e, YS);
            for (lane = 0; lane < lanes; lane++) {
                FC_T* p = out + base[lane] + k * plane;
                const FC_T* src = yt + lane * YS;
#if FC_W_VBYTES == 64
                /* each tile row one masked store (the rows below the plane: none), without
                 * copy_short's branches on the tile's size: output stage 0.30 -> 0.26 ms on
                 * bench_ops.py's small case (5 of 9 tiles cut at m = 5; winograd_stages.c,
                 * one thread, loaded machine) */
                const __mmask8 cm = (__mmask8)((1u << cols[lane]) - 1u);
                _Pragma("GCC unroll 8") for (i = 0; i < m; i++) {
                    const int inside = i < rows[lane];
                    const __mmask8 km = inside ? cm : 0;
                    FC_T* dst = p + (inside ? i : 0) * out_w;
                    if (sizeof(FC_T) == 4)
                        _mm256_mask_storeu_ps((float*)dst, km,
                                              _mm256_loadu_ps((const float*)(src + i * m)));
                    else
                        _mm512_mask_storeu_pd((double*)dst, km,
                                              _mm512_loadu_pd((const double*)(src + i * m)));
                }
                continue;
#endif
                if (rows[lane] == m && cols[lane] == m) {
                    _Pragma("GCC unroll 8") for (i = 0; i < m; i++)
                        FC_WN(copy_short)(p + i * out_w, src + i * m, m);
                } else {
                    for (i = 0; i < rows[lane]; i++)
                        FC_WN(copy_short)(p + i * out_w, src + i * m, cols[lane]);
                }
            }
        }
    }
}

/* see fc_wino_weights_* in _winograd.h: in double whatever FC_T, FC_L consecutive values of
 * the panel of rows [k0, k0 + mr) at a time (its (input channel, row) pairs in the packed
 * order, so that each of the alpha^2 results is one contiguous store; the rows past k1 are
 * zeros). Lanes across (output, input) channel pairs scattered each value to its own place
 * and, with the alpha^2 panels a power of two apart, missed L1 on most stores. Each lane's
 * (channel, row) pair is stepped along, not divided out of its index (two integer divisions
 * per lane had cost as much as the transform). */
FC_LOCAL void FC_WN(weights_any)(int alpha, const double* gm, const FC_T* w, ptrdiff_t c_in,
                                 ptrdiff_t k0, ptrdiff_t k1, int mr, ptrdiff_t k_stride,
                                 ptrdiff_t c_stride, int flip, FC_T* packed, ptrdiff_t xi_step)
{
    double gw[9 * FC_L] __attribute__((aligned(64)));
    double tmp[FC_WINO_ALPHA_MAX * 3 * FC_L] __attribute__((aligned(64)));
    double u[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    const ptrdiff_t end = c_in * mr;
    FC_T* panel = packed + (k0 / mr) * c_in * mr;
    ptrdiff_t e0, c = 0;
    int lane, lanes, tap, i, q, xi, r = 0;
    for (e0 = 0; e0 < end; e0 += FC_L) {
        lanes = (int)(end - e0 < FC_L ? end - e0 : FC_L);
        for (lane = 0; lane < FC_L; lane++) {
            /* here c = (e0 + lane) / mr, r = (e0 + lane) % mr */
            if (lane < lanes && k0 + r < k1) {
                const FC_T* src = w + (k0 + r) * k_stride + c * c_stride;
                if (flip) {
                    _Pragma("GCC unroll 9") for (tap = 0; tap < 9; tap++)
                        gw[tap * FC_L + lane] = (double)src[8 - tap];
                } else {
                    _Pragma("GCC unroll 9") for (tap = 0; tap < 9; tap++)
                        gw[tap * FC_L + lane] = (double)src[tap];
                }
            } else {
                _Pragma("GCC unroll 9") for (tap = 0; tap < 9; tap++)
                    gw[tap * FC_L + lane] = 0.0;
            }
            if (++r == mr) {
                r = 0;
                c++;
            }
        }
        /* G g: tmp[i][q] = sum_p G[i][p] g[p][q] */
        _Pragma("GCC unroll 3") for (q = 0; q < 3; q++)
            FC_WN(apply_d)(alpha, 3, 0, gm, gw + q * FC_L, 3 * FC_L, tmp + q * FC_L, 3 * FC_L);
        /* (G g) G^T: u[i][j] = sum_q G[j][q] tmp[i][q] */
        _Pragma("GCC unroll 8") for (i = 0; i < alpha; i++)
            FC_WN(apply_d)(alpha, 3, 0, gm, tmp + i * 3 * FC_L, FC_L, u + i * alpha * FC_L, FC_L);
        if (lanes == FC_L) {
            for (xi = 0; xi < alpha * alpha; xi++) {
                FC_T* dst = panel + xi * xi_step + e0;
                _Pragma("GCC unroll 16") for (lane = 0; lane < FC_L; lane++)
                    dst[lane] = (FC_T)u[xi * FC_L + lane];
            }
        } else {
            for (xi = 0; xi < alpha * alpha; xi++) {
                FC_T* dst = panel + xi * xi_step + e0;
                for (lane = 0; lane < lanes; lane++)
                    dst[lane] = (FC_T)u[xi * FC_L + lane];
            }
        }
    }
}

/* the kernels, one per tile size */
#define FC_W_KERNELS(M, ALPHA)                                                               \
    FC_KERNEL void FC_WN(input##M)(const FC_T* x, const fc_wino_geometry* g, ptrdiff_t t0,   \
                                   ptrdiff_t count, FC_T* v, ptrdiff_t ld, ptrdiff_t xi_step) \
    {                                                                                        \
        FC_WN(input_any)(M, ALPHA, &FC_WINO##M##_BT[0][0], x, g, t0, count, v, ld, xi_step);  \
    }                                                                                        \
    FC_KERNEL void FC_WN(output##M)(const FC_T* mm, ptrdiff_t ld, ptrdiff_t xi_step,          \
                                    const FC_T* bias, FC_T* out, const fc_wino_geometry* g,   \
                                    ptrdiff_t t0, ptrdiff_t count)                            \
    {                                                                                        \
        FC_WN(output_any)(M, ALPHA, mm, ld, xi_step, bias, out, g, t0, count);                \
    }                                                                                        \
    FC_KERNEL void FC_WN(weights##M)(const FC_T* w, ptrdiff_t c_in, ptrdiff_t k0,             \
                                     ptrdiff_t k1, int mr, ptrdiff_t k_stride,                \
                                     ptrdiff_t c_stride, int flip, FC_T* packed,              \
                                     ptrdiff_t xi_step)                                       \
    {                                                                                        \
        FC_WN(weights_any)(ALPHA, &FC_WINO##M##_G[0][0], w, c_in, k0, k1, mr, k_stride,      \
                           c_stride, flip, packed, xi_step);                                 \
    }
FC_W_KERNELS(2, 4)
FC_W_KERNELS(4, 6)
FC_W_KERNELS(5, 7)
FC_W_KERNELS(6, 8)
#undef FC_W_KERNELS

#undef FC_LOCAL
#undef FC_KERNEL
#undef FC_L
#undef FC_T
#undef FC_WN
#undef FC_W_TARGET
#undef FC_W_VBYTES
#undef FC_W_TRANSPOSE
#undef FC_W_TB
#undef FC_W_MASKED
