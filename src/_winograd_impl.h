/* The Winograd transforms for one element type and one instruction set. _winograd.h includes
 * this file once per (type, ISA) after defining FC_T (float or double), FC_WN(name) (the
 * suffixed name) and FC_W_TARGET (a target attribute, or nothing); it undefines them at the
 * end. No include guard, on purpose.
 *
 * Vectors run across FC_WINO_LANES tiles (or, for the weights, (output, input) channel
 * pairs), never across the terms of one element, and each transform is written out from its
 * constant matrix (FC_WN(apply), unrolled), so the bits depend only on the shapes.
 */

#define FC_LOCAL static inline __attribute__((always_inline)) FC_W_TARGET
#define FC_KERNEL static FC_W_TARGET
#define FC_L FC_WINO_LANES

/* out[i*out_step + l] = sum_j mat[i*cols + j] * in[j*in_step + l] for i < rows, l < FC_L:
 * each row's terms in the order of j, the zero ones skipped and the +-1 ones added or
 * subtracted (mat is a constant table, rows and cols constants: after inlining and
 * unrolling, the compiler resolves every test below) */
#define FC_W_APPLY(NAME, TYPE)                                                               \
    FC_LOCAL void NAME(int rows, int cols, const double* mat, const TYPE* in,                 \
                       ptrdiff_t in_step, TYPE* out, ptrdiff_t out_step)                      \
    {                                                                                        \
        int i, j, l;                                                                         \
        _Pragma("GCC unroll 8") for (i = 0; i < rows; i++) {                                  \
            TYPE acc[FC_L];                                                                  \
            int first = 1;                                                                   \
            _Pragma("GCC unroll 8") for (j = 0; j < cols; j++) {                              \
                const double c = mat[i * cols + j];                                          \
                const TYPE cf = (TYPE)c;                                                     \
                const TYPE* src = in + j * in_step;                                          \
                if (c == 0)                                                                  \
                    continue;                                                                \
                if (first) {                                                                 \
                    if (c == 1)                                                              \
                        for (l = 0; l < FC_L; l++) acc[l] = src[l];                          \
                    else if (c == -1)                                                        \
                        for (l = 0; l < FC_L; l++) acc[l] = -src[l];                         \
                    else                                                                     \
                        for (l = 0; l < FC_L; l++) acc[l] = cf * src[l];                     \
                    first = 0;                                                               \
                } else if (c == 1) {                                                         \
                    for (l = 0; l < FC_L; l++) acc[l] += src[l];                             \
                } else if (c == -1) {                                                        \
                    for (l = 0; l < FC_L; l++) acc[l] -= src[l];                             \
                } else {                                                                     \
                    for (l = 0; l < FC_L; l++) acc[l] += cf * src[l];                        \
                }                                                                            \
            }                                                                                \
            if (first)                                                                       \
                for (l = 0; l < FC_L; l++) acc[l] = 0;                                       \
            for (l = 0; l < FC_L; l++)                                                       \
                out[i * out_step + l] = acc[l];                                              \
        }                                                                                    \
    }
FC_W_APPLY(FC_WN(apply), FC_T)
FC_W_APPLY(FC_WN(apply_d), double)
#undef FC_W_APPLY

/* see fc_wino_input_* in _winograd.h */
FC_LOCAL void FC_WN(input_any)(int m, int alpha, const double* bt, const FC_T* x,
                               const fc_wino_geometry* g, ptrdiff_t t0, ptrdiff_t count,
                               FC_T* v, ptrdiff_t ld, ptrdiff_t xi_step)
{
    const ptrdiff_t plane = g->in_h * g->in_w, in_w = g->in_w;
    FC_T d[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    FC_T tmp[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    const FC_T* base[FC_L];
    ptrdiff_t row0[FC_L], col0[FC_L];
    int inside[FC_L];
    ptrdiff_t l0, c, n, row, col;
    int lane, lanes, r, q, i;
    for (l0 = 0; l0 < count; l0 += FC_L) {
        lanes = (int)(count - l0 < FC_L ? count - l0 : FC_L);
        for (lane = 0; lane < lanes; lane++) {
            fc_wino_tile(g, m, t0 + l0 + lane, &n, &row, &col);
            row0[lane] = row - g->pad_top;
            col0[lane] = col - g->pad_left;
            base[lane] = x + n * g->channels * plane;
            inside[lane] = row0[lane] >= 0 && col0[lane] >= 0 && row0[lane] + alpha <= g->in_h
                           && col0[lane] + alpha <= in_w;
        }
        for (c = 0; c < g->channels; c++) {
            /* the patches, lane by lane (zero outside the plane and past the last tile) */
            for (lane = 0; lane < FC_L; lane++) {
                if (lane >= lanes) {
                    for (r = 0; r < alpha * alpha; r++)
                        d[r * FC_L + lane] = 0;
                } else if (inside[lane]) {
                    const FC_T* p = base[lane] + c * plane + row0[lane] * in_w + col0[lane];
                    _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++)
                        _Pragma("GCC unroll 8") for (q = 0; q < alpha; q++)
                            d[(r * alpha + q) * FC_L + lane] = p[r * in_w + q];
                } else {
                    /* an edge tile: every tap reads a clamped position inside the plane and
                     * keeps it only where the tap is inside (branch-free and unrolled as the
                     * inner tiles: a loop cut to the plane's columns cost a quarter of the
                     * transform's time at 56 x 56) */
                    const FC_T* p = base[lane] + c * plane;
                    _Pragma("GCC unroll 8") for (r = 0; r < alpha; r++) {
                        const ptrdiff_t y = row0[lane] + r;
                        const int row_ok = y >= 0 && y < g->in_h;
                        const ptrdiff_t yc = y < 0 ? 0 : (y >= g->in_h ? g->in_h - 1 : y);
                        _Pragma("GCC unroll 8") for (q = 0; q < alpha; q++) {
                            const ptrdiff_t xx = col0[lane] + q;
                            const ptrdiff_t xc = xx < 0 ? 0 : (xx >= in_w ? in_w - 1 : xx);
                            const FC_T value = p[yc * in_w + xc];
                            d[(r * alpha + q) * FC_L + lane] =
                                (row_ok && xx >= 0 && xx < in_w) ? value : (FC_T)0;
                        }
                    }
                }
            }
            /* B^T d: tmp[i][q] = sum_j bt[i][j] d[j][q] */
            _Pragma("GCC unroll 8") for (q = 0; q < alpha; q++)
                FC_WN(apply)(alpha, alpha, bt, d + q * FC_L, alpha * FC_L, tmp + q * FC_L,
                             alpha * FC_L);
            /* (B^T d) B: V[i][k] = sum_j bt[k][j] tmp[i][j], straight into the GEMM's rows */
            _Pragma("GCC unroll 8") for (i = 0; i < alpha; i++)
                FC_WN(apply)(alpha, alpha, bt, tmp + i * alpha * FC_L, FC_L,
                             v + (ptrdiff_t)i * alpha * xi_step + c * ld + l0, xi_step);
        }
    }
}

/* see fc_wino_output_* in _winograd.h */
FC_LOCAL void FC_WN(output_any)(int m, int alpha, const double* at, const FC_T* mm,
                                ptrdiff_t ld, ptrdiff_t xi_step, const FC_T* bias, FC_T* out,
                                const fc_wino_geometry* g, ptrdiff_t t0, ptrdiff_t count)
{
    const ptrdiff_t plane = g->out_h * g->out_w, out_w = g->out_w;
    FC_T tmp[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    FC_T y[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    ptrdiff_t base[FC_L];
    int rows[FC_L], cols[FC_L];
    ptrdiff_t l0, k, n, row, col;
    int lane, lanes, i, j, e;
    for (l0 = 0; l0 < count; l0 += FC_L) {
        lanes = (int)(count - l0 < FC_L ? count - l0 : FC_L);
        for (lane = 0; lane < lanes; lane++) {
            fc_wino_tile(g, m, t0 + l0 + lane, &n, &row, &col);
            base[lane] = n * g->channels * plane + row * out_w + col;
            rows[lane] = (int)(g->out_h - row < m ? g->out_h - row : m);
            cols[lane] = (int)(out_w - col < m ? out_w - col : m);
        }
        for (k = 0; k < g->channels; k++) {
            /* A^T M: tmp[i][j] = sum_x at[i][x] M[x][j] */
            _Pragma("GCC unroll 8") for (j = 0; j < alpha; j++)
                FC_WN(apply)(m, alpha, at, mm + j * xi_step + k * ld + l0, alpha * xi_step,
                             tmp + j * FC_L, alpha * FC_L);
            /* (A^T M) A: y[i][jj] = sum_x at[jj][x] tmp[i][x] */
            _Pragma("GCC unroll 8") for (i = 0; i < m; i++)
                FC_WN(apply)(m, alpha, at, tmp + i * alpha * FC_L, FC_L, y + i * m * FC_L,
                             FC_L);
            if (bias) {
                const FC_T b = bias[k];
                for (e = 0; e < m * m * FC_L; e++)
                    y[e] = y[e] + b;
            }
            for (lane = 0; lane < lanes; lane++) {
                FC_T* p = out + base[lane] + k * plane;
                if (rows[lane] == m && cols[lane] == m) {
                    _Pragma("GCC unroll 8") for (i = 0; i < m; i++)
                        _Pragma("GCC unroll 8") for (j = 0; j < m; j++)
                            p[i * out_w + j] = y[(i * m + j) * FC_L + lane];
                } else {
                    for (i = 0; i < rows[lane]; i++)
                        for (j = 0; j < cols[lane]; j++)
                            p[i * out_w + j] = y[(i * m + j) * FC_L + lane];
                }
            }
        }
    }
}

/* see fc_wino_weights_* in _winograd.h: FC_L (output, input) channel pairs at a time, in
 * double whatever FC_T */
FC_LOCAL void FC_WN(weights_any)(int alpha, const double* gm, const FC_T* w, ptrdiff_t c_in,
                                 ptrdiff_t k0, ptrdiff_t k1, int mr, FC_T* packed,
                                 ptrdiff_t xi_step)
{
    double gw[9 * FC_L] __attribute__((aligned(64)));
    double tmp[FC_WINO_ALPHA_MAX * 3 * FC_L] __attribute__((aligned(64)));
    double u[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    const ptrdiff_t end = k1 * c_in;
    ptrdiff_t e0, e, k, c;
    int lane, lanes, tap, i, q, xi;
    for (e0 = k0 * c_in; e0 < end; e0 += FC_L) {
        lanes = (int)(end - e0 < FC_L ? end - e0 : FC_L);
        for (lane = 0; lane < FC_L; lane++)
            for (tap = 0; tap < 9; tap++)
                gw[tap * FC_L + lane] = lane < lanes ? (double)w[(e0 + lane) * 9 + tap] : 0.0;
        /* G g: tmp[i][q] = sum_p G[i][p] g[p][q] */
        _Pragma("GCC unroll 3") for (q = 0; q < 3; q++)
            FC_WN(apply_d)(alpha, 3, gm, gw + q * FC_L, 3 * FC_L, tmp + q * FC_L, 3 * FC_L);
        /* (G g) G^T: u[i][j] = sum_q G[j][q] tmp[i][q] */
        _Pragma("GCC unroll 8") for (i = 0; i < alpha; i++)
            FC_WN(apply_d)(alpha, 3, gm, tmp + i * 3 * FC_L, FC_L, u + i * alpha * FC_L, FC_L);
        for (lane = 0; lane < lanes; lane++) {
            FC_T* dst;
            e = e0 + lane;
            k = e / c_in;
            c = e % c_in;
            dst = packed + (k / mr) * c_in * mr + c * mr + k % mr;
            for (xi = 0; xi < alpha * alpha; xi++)
                dst[xi * xi_step] = (FC_T)u[xi * FC_L + lane];
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
        FC_WN(output_any)(M, ALPHA, &FC_WINO##M##_AT[0][0], mm, ld, xi_step, bias, out, g,    \
                          t0, count);                                                        \
    }                                                                                        \
    FC_KERNEL void FC_WN(weights##M)(const FC_T* w, ptrdiff_t c_in, ptrdiff_t k0,             \
                                     ptrdiff_t k1, int mr, FC_T* packed, ptrdiff_t xi_step)   \
    {                                                                                        \
        FC_WN(weights_any)(ALPHA, &FC_WINO##M##_G[0][0], w, c_in, k0, k1, mr, packed,        \
                           xi_step);                                                         \
    }
FC_W_KERNELS(2, 4)
FC_W_KERNELS(4, 6)
FC_W_KERNELS(6, 8)
#undef FC_W_KERNELS

#undef FC_LOCAL
#undef FC_KERNEL
#undef FC_L
#undef FC_T
#undef FC_WN
#undef FC_W_TARGET
