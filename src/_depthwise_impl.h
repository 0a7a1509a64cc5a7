/* The depthwise kernels for one element type and one instruction set. _depthwise.h includes
 * this file once per (type, ISA) after defining FC_T (float or double), FC_DW_NAME(name)
 * (the suffixed function name) and FC_DW_TARGET (a target attribute, or nothing); it undefines
 * FC_T and FC_DW_NAME at the end. No include guard, on purpose.
 *
 * Geometry: y[i, j] = b + sum_{p,q} w[p,q] * x[i*sh + p*dh - pad_top, j*sw + q*dw - pad_left],
 * x read as 0 outside the plane. Every output receives its taps in (p, q) order and the bias
 * last, whatever the loop structure, so the order of the floating-point sums depends only on
 * the shapes. Vectors run across outputs of a row, never across the terms of one sum.
 */

#define FC_FN FC_DW_NAME
#define FC_LOCAL FC_DW_INLINE FC_DW_TARGET
#define FC_KERNEL static FC_DW_TARGET
#define FC_R FC_DW_RESTRICT

/* 1 if any of the n values is inf or NaN */
FC_LOCAL int FC_FN(any_nonfinite)(const FC_T* v, ptrdiff_t n) {
    ptrdiff_t k;
    for (k = 0; k < n; ++k)
        if (v[k] - v[k] != 0)
            return 1;
    return 0;
}

/* ---- one "pass": a row of outputs gets the kw taps of one kernel row --------------------
 * For j in [0, n): a = (first ? 0 : y[j]); a += w[q] * src[j*stride + base + q*dil] for q in
 * order, for each tap that lands in [0, src_len); y[j] = (last ? a + bias : a). A tap that
 * lands outside adds w[q] * 0 when pad_products is set (the zero padding of the forward: an
 * inf/NaN tap times a padded zero is NaN, as in PyTorch) and nothing otherwise. dil may be
 * negative (the grad-input gather walks the taps backwards). src may be NULL (src_len 0): a
 * row made of padding. */

#define FC_FIRST 1
#define FC_LAST 2

/* the interior: all taps land in src; s0 is where output 0's tap 0 reads */
FC_LOCAL void FC_FN(interior)(FC_T* FC_R y, const FC_T* FC_R s0, const FC_T* FC_R w,
                              ptrdiff_t n, ptrdiff_t stride, ptrdiff_t dil, ptrdiff_t kw,
                              int mode, FC_T bias) {
    ptrdiff_t j, q;
    for (j = 0; j < n; ++j) {
        const FC_T* s = s0 + j * stride;
        FC_T a = (mode & FC_FIRST) ? (FC_T)0 : y[j];
        for (q = 0; q < kw; ++q)
            a = a + w[q] * s[q * dil];
        y[j] = (mode & FC_LAST) ? a + bias : a;
    }
}

/* the interior for any kw: tap by tap over the row (each loop still vectorises over j) */
FC_LOCAL void FC_FN(interior_taps)(FC_T* FC_R y, const FC_T* FC_R s0, const FC_T* FC_R w,
                                   ptrdiff_t n, ptrdiff_t stride, ptrdiff_t dil, ptrdiff_t kw,
                                   int mode, FC_T bias) {
    ptrdiff_t j, q;
    for (q = 0; q < kw; ++q) {
        const FC_T wq = w[q];
        const FC_T* s = s0 + q * dil;
        if (q == 0 && (mode & FC_FIRST)) {
            for (j = 0; j < n; ++j)
                y[j] = (FC_T)0 + wq * s[j * stride];
        } else {
            for (j = 0; j < n; ++j)
                y[j] = y[j] + wq * s[j * stride];
        }
    }
    if (mode & FC_LAST)
        for (j = 0; j < n; ++j)
            y[j] = y[j] + bias;
}

/* constant kw, stride and mode at each call, so that each inlined copy is specialised */
#define FC_MODES(KW, STRIDE)                                                              \
    switch (mode) {                                                                       \
    case 0: FC_FN(interior)(y, s0, w, n, STRIDE, dil, KW, 0, bias); break;                \
    case 1: FC_FN(interior)(y, s0, w, n, STRIDE, dil, KW, 1, bias); break;                \
    case 2: FC_FN(interior)(y, s0, w, n, STRIDE, dil, KW, 2, bias); break;                \
    default: FC_FN(interior)(y, s0, w, n, STRIDE, dil, KW, 3, bias); break;               \
    }
#define FC_KERNEL_WIDTHS(STRIDE)                                                          \
    switch (kw) {                                                                         \
    case 1: FC_MODES(1, STRIDE) break;                                                    \
    case 2: FC_MODES(2, STRIDE) break;                                                    \
    case 3: FC_MODES(3, STRIDE) break;                                                    \
    case 5: FC_MODES(5, STRIDE) break;                                                    \
    case 7: FC_MODES(7, STRIDE) break;                                                    \
    default: FC_FN(interior_taps)(y, s0, w, n, STRIDE, dil, kw, mode, bias); break;      \
    }

FC_LOCAL void FC_FN(interior_any)(FC_T* FC_R y, const FC_T* FC_R s0, const FC_T* FC_R w,
                                  ptrdiff_t n, ptrdiff_t stride, ptrdiff_t dil, ptrdiff_t kw,
                                  int mode, FC_T bias) {
    if (stride == 1) {
        FC_KERNEL_WIDTHS(1)
    } else if (stride == 2) {
        FC_KERNEL_WIDTHS(2)
    } else {
        FC_KERNEL_WIDTHS(stride)
    }
}
#undef FC_MODES
#undef FC_KERNEL_WIDTHS

/* outputs [j0, j1) where some tap falls outside src: one by one, checking each tap */
FC_LOCAL void FC_FN(border)(FC_T* y, ptrdiff_t j0, ptrdiff_t j1, const FC_T* src,
                            ptrdiff_t src_len, const FC_T* w, ptrdiff_t kw, ptrdiff_t stride,
                            ptrdiff_t base, ptrdiff_t dil, int mode, FC_T bias,
                            int pad_products) {
    ptrdiff_t j, q, index;
    for (j = j0; j < j1; ++j) {
        FC_T a = (mode & FC_FIRST) ? (FC_T)0 : y[j];
        for (q = 0; q < kw; ++q) {
            index = j * stride + base + q * dil;
            if (index >= 0 && index < src_len)
                a = a + w[q] * src[index];
            else if (pad_products)
                a = a + w[q] * (FC_T)0;
        }
        y[j] = (mode & FC_LAST) ? a + bias : a;
    }
}

FC_LOCAL void FC_FN(pass)(FC_T* y, ptrdiff_t n, const FC_T* src, ptrdiff_t src_len,
                          const FC_T* w, ptrdiff_t kw, ptrdiff_t stride, ptrdiff_t base,
                          ptrdiff_t dil, int mode, FC_T bias, int pad_products) {
    ptrdiff_t j, jlo, jhi, need, room;
    ptrdiff_t span = (kw - 1) * dil;
    ptrdiff_t low = span < 0 ? span : 0, high = span < 0 ? 0 : span;
    if (src == NULL && !pad_products) {
        /* a padded row with finite taps adds only zeros: skipping them is exact */
        if (mode == 0)
            return;
        for (j = 0; j < n; ++j) {
            FC_T a = (mode & FC_FIRST) ? (FC_T)0 : y[j];
            y[j] = (mode & FC_LAST) ? a + bias : a;
        }
        return;
    }
    /* interior [jlo, jhi): 0 <= j*stride + base + low and j*stride + base + high < src_len */
    need = -(base + low);
    jlo = need <= 0 ? 0 : (need + stride - 1) / stride;
    room = src_len - 1 - base - high;
    jhi = room < 0 ? 0 : room / stride + 1;
    if (jlo > n)
        jlo = n;
    if (jhi > n)
        jhi = n;
    if (jhi < jlo)
        jhi = jlo;
    FC_FN(border)(y, 0, jlo, src, src_len, w, kw, stride, base, dil, mode, bias, pad_products);
    if (jhi > jlo)
        FC_FN(interior_any)(y + jlo, src + (jlo * stride + base), w, jhi - jlo, stride, dil, kw,
                            mode, bias);
    FC_FN(border)(y, jhi, n, src, src_len, w, kw, stride, base, dil, mode, bias, pad_products);
}

/* ---- fused taps over a padded source -----------------------------------------------------
 * With the source copied into a zero-padded scratch plane, every tap of every output reads
 * memory: no borders, no branches, and a padded zero multiplies its tap like any input (an
 * inf/NaN tap gives NaN there, as PyTorch; a finite one adds an exact zero, which changes no
 * sum: the running sums start at +0 and so are never -0). Up to FC_DW_CHUNK taps are summed
 * in registers per output; more go in chunks, each adding to the previous chunk's result. */

#define FC_DW_CHUNK 9

/* for rows i: y[i*ld_y + j] = (first ? 0 : that) + sum_t w[t] * s[i*row_step + j*stride + off[t]]
 * in t order, + add; j < n. The rows loop is inside, so the weights stay in registers. */
FC_LOCAL void FC_FN(taps_block)(FC_T* FC_R y, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t ld_y,
                                const FC_T* FC_R s, ptrdiff_t row_step, ptrdiff_t stride,
                                const FC_T* FC_R w, const ptrdiff_t* FC_R off, ptrdiff_t count,
                                int first, FC_T add) {
    FC_T wt[FC_DW_CHUNK];
    ptrdiff_t o[FC_DW_CHUNK];
    ptrdiff_t i, j, t;
    for (t = 0; t < count; ++t) {
        wt[t] = w[t];
        o[t] = off[t];
    }
    for (i = 0; i < rows; ++i) {
        FC_T* FC_R y_row = y + i * ld_y;
        const FC_T* FC_R s_row = s + i * row_step;
        for (j = 0; j < n; ++j) {
            FC_T a = first ? (FC_T)0 : y_row[j];
            for (t = 0; t < count; ++t)
                a = a + wt[t] * s_row[j * stride + o[t]];
            y_row[j] = a + add;
        }
    }
}

#define FC_FIRSTS(COUNT, STRIDE)                                                          \
    if (first)                                                                            \
        FC_FN(taps_block)(y, rows, n, ld_y, s, row_step, STRIDE, w, off, COUNT, 1, add);  \
    else                                                                                  \
        FC_FN(taps_block)(y, rows, n, ld_y, s, row_step, STRIDE, w, off, COUNT, 0, add);
#define FC_COUNTS(STRIDE)                                                                 \
    switch (count) {                                                                      \
    case 1: FC_FIRSTS(1, STRIDE) break;                                                   \
    case 2: FC_FIRSTS(2, STRIDE) break;                                                   \
    case 3: FC_FIRSTS(3, STRIDE) break;                                                   \
    case 4: FC_FIRSTS(4, STRIDE) break;                                                   \
    case 5: FC_FIRSTS(5, STRIDE) break;                                                   \
    case 6: FC_FIRSTS(6, STRIDE) break;                                                   \
    case 7: FC_FIRSTS(7, STRIDE) break;                                                   \
    case 8: FC_FIRSTS(8, STRIDE) break;                                                   \
    default: FC_FIRSTS(9, STRIDE) break;                                                  \
    }

/* taps_block with count, stride and first constant in each inlined copy */
static FC_DW_TARGET void FC_FN(taps_block_any)(FC_T* FC_R y, ptrdiff_t rows, ptrdiff_t n,
                                               ptrdiff_t ld_y, const FC_T* FC_R s,
                                               ptrdiff_t row_step, ptrdiff_t stride,
                                               const FC_T* FC_R w, const ptrdiff_t* FC_R off,
                                               ptrdiff_t count, int first, FC_T add) {
    if (stride == 1) {
        FC_COUNTS(1)
    } else if (stride == 2) {
        FC_COUNTS(2)
    } else {
        FC_COUNTS(stride)
    }
}
#undef FC_FIRSTS
#undef FC_COUNTS

/* Taps t = (m, p, q) in order, m < planes: weight w[t], read at
 * m*plane_step + P*dil_h*ld + Q*dil_w from an output's origin, P = p and Q = q, or
 * kh-1-p and kw-1-q when flip is set. Output row i's origin is s + i*row_step, j's is
 * j*stride further. `add` goes onto each output after its last tap. */
typedef struct {
    ptrdiff_t planes, plane_step, kh, kw, dil_h, dil_w, ld;
    int flip;
} FC_FN(taps);

FC_LOCAL void FC_FN(taps_rows)(FC_T* y, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t ld_y,
                               const FC_T* s, ptrdiff_t row_step, ptrdiff_t stride,
                               const FC_T* w, const FC_FN(taps)* k, FC_T add) {
    ptrdiff_t off[FC_DW_CHUNK];
    const ptrdiff_t per_plane = k->kh * k->kw, total = k->planes * per_plane;
    ptrdiff_t t0, t, count;
    for (t0 = 0; t0 < total; t0 += FC_DW_CHUNK) {
        count = total - t0 < FC_DW_CHUNK ? total - t0 : FC_DW_CHUNK;
        for (t = 0; t < count; ++t) {
            ptrdiff_t m = (t0 + t) / per_plane, p = (t0 + t) % per_plane / k->kw;
            ptrdiff_t q = (t0 + t) % k->kw;
            if (k->flip) {
                p = k->kh - 1 - p;
                q = k->kw - 1 - q;
            }
            off[t] = m * k->plane_step + p * k->dil_h * k->ld + q * k->dil_w;
        }
        FC_FN(taps_block_any)(y, rows, n, ld_y, s, row_step, stride, w + t0, off, count,
                              t0 == 0, t0 + count == total ? add : (FC_T)0);
    }
}

/* dst[r][c] = src[r - top][c - left] for r < rows, c < width, 0 outside src (h x w, row
 * stride w); top and left may be negative */
FC_LOCAL void FC_FN(pad_copy)(FC_T* FC_R dst, ptrdiff_t rows, ptrdiff_t width,
                              const FC_T* FC_R src, ptrdiff_t h, ptrdiff_t w, ptrdiff_t top,
                              ptrdiff_t left) {
    ptrdiff_t r, sr;
    ptrdiff_t c0 = left > 0 ? left : 0;
    ptrdiff_t c1 = left + w < width ? left + w : width;
    if (c0 > width)
        c0 = width;
    if (c1 < c0)
        c1 = c0;
    for (r = 0; r < rows; ++r) {
        FC_T* d = dst + r * width;
        sr = r - top;
        if (sr < 0 || sr >= h) {
            memset(d, 0, (size_t)width * sizeof(FC_T));
            continue;
        }
        if (c0 > 0)
            memset(d, 0, (size_t)c0 * sizeof(FC_T));
        if (c1 > c0)
            memcpy(d + c0, src + sr * w + (c0 - left), (size_t)(c1 - c0) * sizeof(FC_T));
        if (width > c1)
            memset(d + c1, 0, (size_t)(width - c1) * sizeof(FC_T));
    }
}

/* rows of a band of `rows` outputs along one axis: (rows-1)*stride + (k-1)*dil + 1 */
FC_LOCAL ptrdiff_t FC_FN(span)(ptrdiff_t rows, ptrdiff_t stride, ptrdiff_t k, ptrdiff_t dil) {
    return (rows - 1) * stride + (k - 1) * dil + 1;
}

/* ---- forward: one output plane ----------------------------------------------------------
 * The input is read in place when no padding is needed, else copied zero-padded into the
 * scratch (scratch_len elements) in bands of output rows; fused taps over each band. */
FC_KERNEL void FC_FN(forward_plane)(const FC_T* x, const FC_T* w, FC_T bias, FC_T* y,
                                    const fc_dw_geometry* g, FC_T* scratch,
                                    ptrdiff_t scratch_len) {
    const ptrdiff_t width = FC_FN(span)(g->out_w, g->stride_w, g->kernel_w, g->dil_w);
    FC_FN(taps) k;
    ptrdiff_t i0, band, rows;
    k.planes = 1;
    k.plane_step = 0;
    k.kh = g->kernel_h;
    k.kw = g->kernel_w;
    k.dil_h = g->dil_h;
    k.dil_w = g->dil_w;
    k.flip = 0;
    if (g->pad_top == 0 && g->pad_left == 0 && width <= g->in_w
            && FC_FN(span)(g->out_h, g->stride_h, g->kernel_h, g->dil_h) <= g->in_h) {
        k.ld = g->in_w;
        FC_FN(taps_rows)(y, g->out_h, g->out_w, g->out_w, x, g->stride_h * g->in_w,
                         g->stride_w, w, &k, bias);
        return;
    }
    k.ld = width;
    /* the most output rows whose padded input fits the scratch (the wrapper sizes it for one) */
    band = (scratch_len / width - (g->kernel_h - 1) * g->dil_h - 1) / g->stride_h + 1;
    if (band < 1)
        band = 1;
    for (i0 = 0; i0 < g->out_h; i0 += band) {
        rows = g->out_h - i0 < band ? g->out_h - i0 : band;
        FC_FN(pad_copy)(scratch, FC_FN(span)(rows, g->stride_h, g->kernel_h, g->dil_h), width,
                        x, g->in_h, g->in_w, g->pad_top - i0 * g->stride_h, g->pad_left);
        FC_FN(taps_rows)(y + i0 * g->out_w, rows, g->out_w, g->out_w, scratch,
                         g->stride_h * width, g->stride_w, w, &k, bias);
    }
}

/* ---- grad input: one input plane from its `multiplier` output planes ---------------------
 * gx[iy, ix] = sum_{m,p,q} w[m,p,q] * gy[m, i, j] over the (i, j) whose taps read (iy, ix),
 * in (m, p, q) order; overwrites gx. Stride 1 with finite weights: a correlation of the
 * zero-padded gy planes with the taps reversed (fused taps, as the forward; a padded zero
 * adds an exact 0). Otherwise only real products: the gx row is gathered (stride_w 1: a
 * pass over gy's row with the taps reversed, dil < 0) or scattered tap by tap. An inf/NaN
 * weight must not meet the padding here: those positions are not outputs, PyTorch has no
 * product there. */
FC_LOCAL void FC_FN(scatter_row)(FC_T* FC_R gx_row, ptrdiff_t in_w, const FC_T* FC_R gy_row,
                                 ptrdiff_t out_w, const FC_T* w, ptrdiff_t kw, ptrdiff_t stride,
                                 ptrdiff_t pad_left, ptrdiff_t dil) {
    ptrdiff_t q, j, lo, hi, first;
    for (q = 0; q < kw; ++q) {
        const FC_T tap = w[q];
        /* j with 0 <= j*stride + first < in_w */
        first = q * dil - pad_left;
        lo = first < 0 ? (-first + stride - 1) / stride : 0;
        hi = first >= in_w ? 0 : (in_w - 1 - first) / stride + 1;
        if (hi > out_w)
            hi = out_w;
        for (j = lo; j < hi; ++j)
            gx_row[j * stride + first] += tap * gy_row[j];
    }
}

FC_KERNEL void FC_FN(grad_input_plane)(const FC_T* gy, const FC_T* w, ptrdiff_t multiplier,
                                       FC_T* gx, const fc_dw_geometry* g, FC_T* scratch,
                                       ptrdiff_t scratch_len) {
    ptrdiff_t iy, m, p, t, i;
    const ptrdiff_t kh = g->kernel_h, kw = g->kernel_w, taps = kh * kw;
    const ptrdiff_t out_plane = g->out_h * g->out_w;
    if (g->stride_h == 1 && g->stride_w == 1 && !FC_FN(any_nonfinite)(w, multiplier * taps)) {
        const ptrdiff_t width = g->in_w + (kw - 1) * g->dil_w, halo = (kh - 1) * g->dil_h;
        ptrdiff_t band = scratch_len / (multiplier * width) - halo, rows;
        FC_FN(taps) k;
        if (band < 1)
            band = 1;
        k.planes = multiplier;
        k.plane_step = (band + halo) * width;
        k.kh = kh;
        k.kw = kw;
        k.dil_h = g->dil_h;
        k.dil_w = g->dil_w;
        k.ld = width;
        k.flip = 1;
        for (iy = 0; iy < g->in_h; iy += band) {
            rows = g->in_h - iy < band ? g->in_h - iy : band;
            for (m = 0; m < multiplier; ++m)
                FC_FN(pad_copy)(scratch + m * k.plane_step, rows + halo, width,
                                gy + m * out_plane, g->out_h, g->out_w,
                                halo - g->pad_top - iy, (kw - 1) * g->dil_w - g->pad_left);
            FC_FN(taps_rows)(gx + iy * g->in_w, rows, g->in_w, g->in_w, scratch, width, 1, w,
                             &k, (FC_T)0);
        }
        return;
    }
    for (iy = 0; iy < g->in_h; ++iy) {
        FC_T* gx_row = gx + iy * g->in_w;
        int first = 1;
        for (m = 0; m < multiplier; ++m) {
            for (p = 0; p < kh; ++p) {
                /* the output row i whose tap p reads input row iy, if there is one */
                t = iy + g->pad_top - p * g->dil_h;
                if (t < 0 || t % g->stride_h != 0)
                    continue;
                i = t / g->stride_h;
                if (i >= g->out_h)
                    continue;
                const FC_T* gy_row = gy + m * out_plane + i * g->out_w;
                const FC_T* w_row = w + m * taps + p * kw;
                if (g->stride_w == 1) {
                    FC_FN(pass)(gx_row, g->in_w, gy_row, g->out_w, w_row, kw, 1, g->pad_left,
                                -g->dil_w, first ? FC_FIRST : 0, (FC_T)0, 0);
                } else {
                    if (first)
                        memset(gx_row, 0, (size_t)g->in_w * sizeof(FC_T));
                    FC_FN(scatter_row)(gx_row, g->in_w, gy_row, g->out_w, w_row, kw,
                                       g->stride_w, g->pad_left, g->dil_w);
                }
                first = 0;
            }
        }
        if (first)  /* no output reads this row (stride or dilation skip it) */
            memset(gx_row, 0, (size_t)g->in_w * sizeof(FC_T));
    }
}

/* ---- grad weight: one output channel, summed over the batch -------------------------------
 * gw[p,q] = sum_{n,i,j} gy[n,i,j] * x[n, i*sh + p*dh - pad_top, j*sw + q*dw - pad_left].
 * Each tap's sum runs in 2 x FC_DW_LANES = 16 float64 lanes, in (n, i, j) order: lane l
 * takes the j = l (mod 8) of each row's whole blocks of 8, tail lane l the row's l-th
 * leftover j (the last j % 8); each set is added pairwise at the end, then the two. Fixed by
 * the shapes, so the same for every thread count and ISA. The products are rounded to FC_T
 * first (as PyTorch's are).
 *
 * The input is read from the forward's zero-padded bands, so gy times a padded zero is a
 * product like any other: exactly 0 for finite gy (adding it changes no lane: they start at
 * +0 and so are never -0), NaN for inf/NaN gy, as in PyTorch. */

#if FC_DW_VECTORS
/* lanes of taps q < G += the products of 8 gy with the 8 inputs each tap reads */
FC_LOCAL void FC_FN(weight_block)(fc_dw_v4d* lo, fc_dw_v4d* hi, const FC_T* g, const FC_T* x,
                                  ptrdiff_t stride, ptrdiff_t dil, ptrdiff_t G) {
    ptrdiff_t q, l;
#if FC_DW_FLOAT
    fc_dw_v4f g0, g1, x0, x1;
    memcpy(&g0, g, sizeof(g0));
    memcpy(&g1, g + 4, sizeof(g1));
#else
    fc_dw_v4d g0, g1, x0, x1;
    memcpy(&g0, g, sizeof(g0));
    memcpy(&g1, g + 4, sizeof(g1));
#endif
    for (q = 0; q < G; ++q) {
        if (stride == 1) {
            memcpy(&x0, x + q * dil, sizeof(x0));
            memcpy(&x1, x + 4 + q * dil, sizeof(x1));
        } else {
            for (l = 0; l < 4; ++l) {
                x0[l] = x[l * stride + q * dil];
                x1[l] = x[(l + 4) * stride + q * dil];
            }
        }
#if FC_DW_FLOAT
        lo[q] += FC_DW_WIDEN(g0 * x0);
        hi[q] += FC_DW_WIDEN(g1 * x1);
#else
        lo[q] += g0 * x0;
        hi[q] += g1 * x1;
#endif
    }
}
#endif

/* the lanes of taps q < G of one kernel row over `rows` rows of gy (n per row), G constant */
FC_LOCAL void FC_FN(weight_taps)(double* FC_R lanes, double* FC_R tail, const FC_T* FC_R gy,
                                 ptrdiff_t rows,
                                 ptrdiff_t n, const FC_T* FC_R s, ptrdiff_t row_step,
                                 ptrdiff_t stride, ptrdiff_t dil, ptrdiff_t G) {
    ptrdiff_t i, j, l, q;
#if FC_DW_VECTORS
    fc_dw_v4d lo[3], hi[3];
    for (q = 0; q < G; ++q) {
        memcpy(&lo[q], lanes + q * 8, sizeof(fc_dw_v4d));
        memcpy(&hi[q], lanes + q * 8 + 4, sizeof(fc_dw_v4d));
    }
    for (i = 0; i < rows; ++i) {
        const FC_T* g = gy + i * n;
        const FC_T* x = s + i * row_step;
        for (j = 0; j + 8 <= n; j += 8)
            FC_FN(weight_block)(lo, hi, g + j, x + j * stride, stride, dil, G);
        for (l = 0; j + l < n; ++l)
            for (q = 0; q < G; ++q)
                tail[q * 8 + l] += (double)(g[j + l] * x[(j + l) * stride + q * dil]);
    }
    for (q = 0; q < G; ++q) {
        memcpy(lanes + q * 8, &lo[q], sizeof(fc_dw_v4d));
        memcpy(lanes + q * 8 + 4, &hi[q], sizeof(fc_dw_v4d));
    }
#else
    for (i = 0; i < rows; ++i) {
        const FC_T* g = gy + i * n;
        const FC_T* x = s + i * row_step;
        for (q = 0; q < G; ++q) {
            double* a = lanes + q * 8;
            for (j = 0; j + 8 <= n; j += 8)
                for (l = 0; l < 8; ++l)
                    a[l] += (double)(g[j + l] * x[(j + l) * stride + q * dil]);
            for (l = 0; j + l < n; ++l)
                tail[q * 8 + l] += (double)(g[j + l] * x[(j + l) * stride + q * dil]);
        }
    }
#endif
}

/* one kernel row's taps in groups of at most 3 (G and the stride constant in each copy) */
FC_LOCAL void FC_FN(weight_row)(double* lanes, double* tail, const FC_T* gy, ptrdiff_t rows,
                                ptrdiff_t n,
                                const FC_T* s, ptrdiff_t row_step, ptrdiff_t stride,
                                ptrdiff_t dil, ptrdiff_t kw) {
    ptrdiff_t q0, count;
    for (q0 = 0; q0 < kw; q0 += count) {
        count = kw - q0 < 3 ? kw - q0 : 3;
        double* l = lanes + q0 * 8;
        double* t = tail + q0 * 8;
        const FC_T* x = s + q0 * dil;
#define FC_GROUPS(STRIDE)                                                                 \
        switch (count) {                                                                  \
        case 1: FC_FN(weight_taps)(l, t, gy, rows, n, x, row_step, STRIDE, dil, 1); break;\
        case 2: FC_FN(weight_taps)(l, t, gy, rows, n, x, row_step, STRIDE, dil, 2); break;\
        default: FC_FN(weight_taps)(l, t, gy, rows, n, x, row_step, STRIDE, dil, 3); break;\
        }
        if (stride == 1) {
            FC_GROUPS(1)
        } else {
            FC_GROUPS(stride)
        }
#undef FC_GROUPS
    }
}

FC_KERNEL void FC_FN(grad_weight_channel)(const FC_T* gy, ptrdiff_t gy_batch_stride,
                                          const FC_T* x, ptrdiff_t x_batch_stride,
                                          ptrdiff_t batch, FC_T* gw, const fc_dw_geometry* g,
                                          FC_T* scratch, ptrdiff_t scratch_len,
                                          double* lanes) {
    const ptrdiff_t kh = g->kernel_h, kw = g->kernel_w, taps = kh * kw;
    const ptrdiff_t width = FC_FN(span)(g->out_w, g->stride_w, kw, g->dil_w);
    const int in_place = g->pad_top == 0 && g->pad_left == 0 && width <= g->in_w
        && FC_FN(span)(g->out_h, g->stride_h, kh, g->dil_h) <= g->in_h;
    ptrdiff_t n, p, i0, rows, tap, ld, band;
    memset(lanes, 0, (size_t)(2 * taps * FC_DW_LANES) * sizeof(double));
    ld = in_place ? g->in_w : width;
    band = in_place ? g->out_h
                    : (scratch_len / width - (kh - 1) * g->dil_h - 1) / g->stride_h + 1;
    if (band < 1)
        band = 1;
    for (n = 0; n < batch; ++n) {
        const FC_T* x_plane = x + n * x_batch_stride;
        const FC_T* gy_plane = gy + n * gy_batch_stride;
        for (i0 = 0; i0 < g->out_h; i0 += band) {
            const FC_T* s;
            rows = g->out_h - i0 < band ? g->out_h - i0 : band;
            if (in_place) {
                s = x_plane + i0 * g->stride_h * ld;
            } else {
                FC_FN(pad_copy)(scratch, FC_FN(span)(rows, g->stride_h, kh, g->dil_h), width,
                                x_plane, g->in_h, g->in_w, g->pad_top - i0 * g->stride_h,
                                g->pad_left);
                s = scratch;
            }
            for (p = 0; p < kh; ++p)
                FC_FN(weight_row)(lanes + p * kw * FC_DW_LANES,
                                  lanes + (taps + p * kw) * FC_DW_LANES, gy_plane + i0 * g->out_w, rows,
                                  g->out_w, s + p * g->dil_h * ld, g->stride_h * ld,
                                  g->stride_w, g->dil_w, kw);
        }
    }
    for (tap = 0; tap < taps; ++tap) {
        const double* l = lanes + tap * FC_DW_LANES;
        const double* t = lanes + (taps + tap) * FC_DW_LANES;
        gw[tap] = (FC_T)((((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])))
                         + (((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))));
    }
}

#undef FC_FN
#undef FC_LOCAL
#undef FC_KERNEL
#undef FC_R
#undef FC_FIRST
#undef FC_LAST
#undef FC_T
#undef FC_DW_FLOAT
#undef FC_DW_NAME
