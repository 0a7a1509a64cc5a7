/* The Winograd weight gradient's transforms for one element type and one instruction set.
 * _winograd_wgrad.h includes this file once per (type, ISA) after defining FC_T, FC_GWN(name),
 * FC_GW_TARGET, FC_GW_VBYTES, FC_GW_TRANSPOSE and FC_GW_TB; it undefines them at the end. No
 * include guard, on purpose.
 *
 * As in _winograd_impl.h, vectors run across FC_WINO_LANES tiles (or input channels, for the
 * final transform), never across the terms of one element, and each transform is written out
 * from its constant matrix (unrolled: zero terms vanish), so the bits depend only on the
 * shapes.
 */

#define FC_LOCAL static inline __attribute__((always_inline)) FC_GW_TARGET
#define FC_KERNEL static FC_GW_TARGET
#define FC_L FC_WINO_LANES

typedef FC_T FC_GWN(vec) __attribute__((vector_size(FC_GW_VBYTES)));
typedef double FC_GWN(vec_d) __attribute__((vector_size(FC_GW_VBYTES)));
/* FC_GWN(apply): _winograd.h's FC_WINO_APPLY, the matrices read transposed (tr = 1) */
FC_LOCAL FC_WINO_APPLY(FC_GWN(apply), FC_T, FC_GWN(vec), FC_GW_VBYTES)
FC_LOCAL FC_WINO_APPLY(FC_GWN(apply_d), double, FC_GWN(vec_d), FC_GW_VBYTES)

/* see fc_wgrad_gy_* in _winograd_wgrad.h. Per channel and group of FC_L tiles, each tile's
 * m x m values are copied a row at a time into its lane's slot (YS values), the slots are
 * transposed in registers into e (value down, tile across), and A e A^T runs across the
 * lanes, its alpha x alpha results stored as the rows the GEMM's packing reads. */
FC_LOCAL void FC_GWN(gy_any)(int m, int alpha, const double* at, const FC_T* gy,
                             const fc_wino_geometry* g, ptrdiff_t t0, ptrdiff_t count,
                             FC_T* out, ptrdiff_t ld, ptrdiff_t xi_step)
{
    enum { YS = FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX };
    const ptrdiff_t plane = g->out_h * g->out_w, out_w = g->out_w;
    FC_T slots[FC_L * YS] __attribute__((aligned(64)));
    FC_T e[YS * FC_L] __attribute__((aligned(64)));
    FC_T tmp[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    /* the slot's values the transposes move: m*m rounded up to whole blocks */
    const int used = (m * m + FC_GW_TB - 1) / FC_GW_TB * FC_GW_TB;
    ptrdiff_t base[FC_L];
    int rows[FC_L], cols[FC_L];
    ptrdiff_t l0, k, n, row, col;
    int lane, lanes, i, j;
    memset(slots, 0, sizeof slots);
    for (l0 = 0; l0 < count; l0 += FC_L) {
        lanes = (int)(count - l0 < FC_L ? count - l0 : FC_L);
        for (lane = 0; lane < lanes; lane++) {
            fc_wino_tile(g, m, t0 + l0 + lane, &n, &row, &col);
            base[lane] = n * g->planes * plane + row * out_w + col;
            rows[lane] = (int)(g->out_h - row < m ? g->out_h - row : m);
            cols[lane] = (int)(out_w - col < m ? out_w - col : m);
        }
        /* the lanes past the last tile: zeros (the channels keep them) */
        for (lane = lanes; lane < FC_L; lane++)
            for (i = 0; i < YS; i++)
                slots[lane * YS + i] = 0;
        for (k = 0; k < g->channels; k++) {
            if (k + 1 < g->channels)
                for (lane = 0; lane < lanes; lane++)
                    if ((lane & 1) == 0 || lane == lanes - 1) {
                        const FC_T* p = gy + base[lane] + (k + 1) * plane;
                        _Pragma("GCC unroll 8") for (i = 0; i < m; i++)
                            if (i < rows[lane])
                                __builtin_prefetch(p + i * out_w, 0, 3);
                    }
            for (lane = 0; lane < lanes; lane++) {
                const FC_T* p = gy + base[lane] + k * plane;
                FC_T* slot = slots + lane * YS;
                if (rows[lane] == m && cols[lane] == m) {
                    _Pragma("GCC unroll 8") for (i = 0; i < m; i++)
                        __builtin_memcpy(slot + i * m, p + i * out_w, m * sizeof(FC_T));
                } else {
                    for (i = 0; i < m; i++)
                        for (j = 0; j < m; j++)
                            slot[i * m + j] =
                                (i < rows[lane] && j < cols[lane]) ? p[i * out_w + j] : (FC_T)0;
                }
            }
            /* e[v*FC_L + lane] = slots[lane*YS + v] */
            for (j = 0; j < FC_L; j += FC_GW_TB)
                for (i = 0; i < used; i += FC_GW_TB)
                    FC_GW_TRANSPOSE(slots + j * YS + i, YS, e + i * FC_L + j, FC_L);
            /* A e: tmp[a][j] = sum_i A[a][i] e[i][j], A = AT^T (alpha x m) */
            _Pragma("GCC unroll 8") for (j = 0; j < m; j++)
                FC_GWN(apply)(alpha, m, 1, at, e + j * FC_L, m * FC_L, tmp + j * FC_L,
                              m * FC_L);
            /* (A e) A^T: out[a][b] = sum_j A[b][j] tmp[a][j], straight into the rows */
            _Pragma("GCC unroll 8") for (i = 0; i < alpha; i++)
                FC_GWN(apply)(alpha, m, 1, at, tmp + i * m * FC_L, FC_L,
                              out + (ptrdiff_t)i * alpha * xi_step + k * ld + l0, xi_step);
        }
    }
}

/* see fc_wgrad_weights_* in _winograd_wgrad.h: FC_L input channels of one output channel at
 * a time, in double */
FC_LOCAL void FC_GWN(weights_any)(int alpha, const double* gm, const FC_T* acc, ptrdiff_t ldc,
                                  ptrdiff_t xi_step, ptrdiff_t k0, ptrdiff_t k1,
                                  ptrdiff_t c_in, FC_T* dw)
{
    double h[FC_WINO_ALPHA_MAX * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    double tmp[3 * FC_WINO_ALPHA_MAX * FC_L] __attribute__((aligned(64)));
    double r[9 * FC_L] __attribute__((aligned(64)));
    ptrdiff_t k, c0;
    int lane, lanes, xi, p, b, tap;
    for (k = k0; k < k1; k++)
        for (c0 = 0; c0 < c_in; c0 += FC_L) {
            lanes = (int)(c_in - c0 < FC_L ? c_in - c0 : FC_L);
            for (xi = 0; xi < alpha * alpha; xi++) {
                const FC_T* src = acc + xi * xi_step + k * ldc + c0;
                if (lanes == FC_L) {
                    _Pragma("GCC unroll 16") for (lane = 0; lane < FC_L; lane++)
                        h[xi * FC_L + lane] = (double)src[lane];
                } else {
                    for (lane = 0; lane < FC_L; lane++)
                        h[xi * FC_L + lane] = lane < lanes ? (double)src[lane] : 0.0;
                }
            }
            /* G^T H: tmp[p][b] = sum_a G[a][p] H[a][b] */
            _Pragma("GCC unroll 8") for (b = 0; b < alpha; b++)
                FC_GWN(apply_d)(3, alpha, 1, gm, h + b * FC_L, alpha * FC_L, tmp + b * FC_L,
                                alpha * FC_L);
            /* (G^T H) G: r[p][q] = sum_b G[b][q] tmp[p][b] */
            _Pragma("GCC unroll 3") for (p = 0; p < 3; p++)
                FC_GWN(apply_d)(3, alpha, 1, gm, tmp + p * alpha * FC_L, FC_L, r + p * 3 * FC_L,
                                FC_L);
            for (lane = 0; lane < lanes; lane++) {
                FC_T* dst = dw + (k * c_in + c0 + lane) * 9;
                _Pragma("GCC unroll 9") for (tap = 0; tap < 9; tap++)
                    dst[tap] = (FC_T)r[tap * FC_L + lane];
            }
        }
}

#define FC_GW_KERNELS(M, ALPHA)                                                              \
    FC_KERNEL void FC_GWN(gy##M)(const FC_T* gy, const fc_wino_geometry* g, ptrdiff_t t0,    \
                                 ptrdiff_t count, FC_T* out, ptrdiff_t ld, ptrdiff_t xi_step) \
    {                                                                                        \
        FC_GWN(gy_any)(M, ALPHA, &FC_WINO##M##_AT[0][0], gy, g, t0, count, out, ld, xi_step); \
    }                                                                                        \
    FC_KERNEL void FC_GWN(weights##M)(const FC_T* acc, ptrdiff_t ldc, ptrdiff_t xi_step,      \
                                      ptrdiff_t k0, ptrdiff_t k1, ptrdiff_t c_in, FC_T* dw)    \
    {                                                                                        \
        FC_GWN(weights_any)(ALPHA, &FC_WINO##M##_G[0][0], acc, ldc, xi_step, k0, k1, c_in,   \
                            dw);                                                             \
    }
FC_GW_KERNELS(2, 4)
FC_GW_KERNELS(4, 6)
FC_GW_KERNELS(5, 7)
FC_GW_KERNELS(6, 8)
#undef FC_GW_KERNELS

#undef FC_LOCAL
#undef FC_KERNEL
#undef FC_L
#undef FC_T
#undef FC_GWN
#undef FC_GW_TARGET
#undef FC_GW_VBYTES
#undef FC_GW_TRANSPOSE
#undef FC_GW_TB
