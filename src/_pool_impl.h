/* The pooling kernels for one element type and one instruction set. _pool.h includes this
 * file once per (type, ISA) after defining FC_T (float or double), FC_PN(name) (the suffixed
 * name) and FC_P_TARGET (a target attribute, or nothing); it undefines them at the end.
 * No include guard, on purpose.
 *
 * Every kernel computes each output element from its window in PyTorch's order: the taps
 * row-major, the max as `v > m || isnan(v)` from -inf (ties keep the first, the last NaN
 * wins), the average as a sum from 0 divided by an integer divisor. Vectors run across the
 * output elements of a row, never across the terms of one element, so the bits depend only
 * on the shapes.
 */

#define FC_LOCAL static inline __attribute__((always_inline)) FC_P_TARGET
#define FC_KERNEL static FC_P_TARGET

/* m, updated by v as PyTorch does: v if it is NaN or greater. Written as nested selects on
 * the values (max and blend instructions once vectorised) and, where a position follows the
 * value, as a 0/1 int that moves the position arithmetically: GCC turned a shared `take ?:`
 * into branches, which random data mispredicts (six times slower). */
#define FC_SEL(v, m) ((v) != (v) ? (v) : ((v) > (m) ? (v) : (m)))
#define FC_TAKE(v, m) (((v) != (v)) | ((v) > (m)))

/* FC_VL elements of FC_T in one vector of FC_P_VECTOR_BYTES (GCC/Clang vector extensions:
 * element-wise IEEE operations, so a lane computes what the scalar code computes for its
 * element). Loads and stores are memcpy, unaligned; macros rather than functions, so that no
 * 32-byte vector crosses a call boundary outside the AVX2 target. */
typedef FC_T FC_PN(vec) __attribute__((vector_size(FC_P_VECTOR_BYTES)));
#define FC_VL ((ptrdiff_t)(FC_P_VECTOR_BYTES / sizeof(FC_T)))
#define FC_VLOAD(v, p) __builtin_memcpy(&(v), (p), sizeof(v))
#define FC_VSTORE(p, v) __builtin_memcpy((p), &(v), sizeof(v))
/* loops over a block's few vectors, unrolled so that the vectors stay in registers */
#define FC_UNROLLED _Pragma("GCC unroll 4")

/* out[j] = x[j*stride + offset] where that beats out[j], j in [first, stop) */
FC_LOCAL void FC_PN(max_strided)(FC_T* __restrict__ out, const FC_T* __restrict__ x,
                                 ptrdiff_t first, ptrdiff_t stop, ptrdiff_t stride,
                                 ptrdiff_t offset)
{
    ptrdiff_t j;
    for (j = first; j < stop; ++j) {
        FC_T v = x[j * stride + offset], m = out[j];
        out[j] = FC_SEL(v, m);
    }
}

/* literal strides 1 and (FC_P_MAX_STRIDE2) 2: contiguous and de-interleaved vector loads.
 * Without AVX2 a de-interleaved select costs more than the gather it saves (measured). */
FC_LOCAL void FC_PN(max_row)(FC_T* __restrict__ out, const FC_T* __restrict__ x,
                             ptrdiff_t first, ptrdiff_t stop, ptrdiff_t stride,
                             ptrdiff_t offset)
{
    if (stride == 1)
        FC_PN(max_strided)(out, x, first, stop, 1, offset);
    else if (FC_P_MAX_STRIDE2 && stride == 2)
        FC_PN(max_strided)(out, x, first, stop, 2, offset);
    else
        FC_PN(max_strided)(out, x, first, stop, stride, offset);
}

FC_LOCAL void FC_PN(max_index_strided)(FC_T* __restrict__ out, int32_t* __restrict__ position,
                                       const FC_T* __restrict__ x, ptrdiff_t first,
                                       ptrdiff_t stop, ptrdiff_t stride, ptrdiff_t offset,
                                       int32_t row_offset)
{
    ptrdiff_t j;
    for (j = first; j < stop; ++j) {
        FC_T v = x[j * stride + offset], m = out[j];
        int32_t take = FC_TAKE(v, m), at = row_offset + (int32_t)j * (int32_t)stride;
        out[j] = FC_SEL(v, m);
        position[j] += take * (at - position[j]);
    }
}

FC_LOCAL void FC_PN(max_index_row)(FC_T* __restrict__ out, int32_t* __restrict__ position,
                                   const FC_T* __restrict__ x, ptrdiff_t first, ptrdiff_t stop,
                                   ptrdiff_t stride, ptrdiff_t offset, int32_t row_offset)
{
    if (stride == 1)
        FC_PN(max_index_strided)(out, position, x, first, stop, 1, offset, row_offset);
    else if (FC_P_MAX_STRIDE2 && stride == 2)
        FC_PN(max_index_strided)(out, position, x, first, stop, 2, offset, row_offset);
    else
        FC_PN(max_index_strided)(out, position, x, first, stop, stride, offset, row_offset);
}

FC_LOCAL void FC_PN(sum_strided)(FC_T* __restrict__ out, const FC_T* __restrict__ x,
                                 ptrdiff_t first, ptrdiff_t stop, ptrdiff_t stride,
                                 ptrdiff_t offset)
{
    ptrdiff_t j;
    for (j = first; j < stop; ++j)
        out[j] += x[j * stride + offset];
}

FC_LOCAL void FC_PN(sum_row)(FC_T* __restrict__ out, const FC_T* __restrict__ x,
                             ptrdiff_t first, ptrdiff_t stop, ptrdiff_t stride,
                             ptrdiff_t offset)
{
    if (stride == 1)
        FC_PN(sum_strided)(out, x, first, stop, 1, offset);
    else if (stride == 2)
        FC_PN(sum_strided)(out, x, first, stop, 2, offset);
    else
        FC_PN(sum_strided)(out, x, first, stop, stride, offset);
}

FC_LOCAL void FC_PN(scatter_strided)(FC_T* __restrict__ grad_input,
                                     const FC_T* __restrict__ delta, ptrdiff_t first,
                                     ptrdiff_t stop, ptrdiff_t stride, ptrdiff_t offset)
{
    ptrdiff_t j;
    for (j = first; j < stop; ++j)
        grad_input[j * stride + offset] += delta[j];
}

FC_LOCAL void FC_PN(scatter_row)(FC_T* __restrict__ grad_input, const FC_T* __restrict__ delta,
                                 ptrdiff_t first, ptrdiff_t stop, ptrdiff_t stride,
                                 ptrdiff_t offset)
{
    if (stride == 1)
        FC_PN(scatter_strided)(grad_input, delta, first, stop, 1, offset);
    else if (stride == 2)
        FC_PN(scatter_strided)(grad_input, delta, first, stop, 2, offset);
    else
        FC_PN(scatter_strided)(grad_input, delta, first, stop, stride, offset);
}

/* ---- max pooling, any geometry: one plane ---------------------------------------------- */

/* y[i,j] = max_p,q x[i*s_h - pad_t + p*d_h, j*s_w - pad_l + q*d_w] over in-bounds taps */
FC_KERNEL void FC_PN(max_plane)(const FC_T* x, FC_T* out, const fc_pool_geometry* g)
{
    fc_pool_columns columns;
    ptrdiff_t oh, j, tap_h, tap_w, th_first, th_stop;
    fc_pool_columns_init(&columns, g->in_w, g->out_w, g->k_w, g->s_w, g->pad_l, g->d_w);
    for (oh = 0; oh < g->out_h; ++oh) {
        FC_T* out_row = out + oh * g->out_w;
        ptrdiff_t start = oh * g->s_h - g->pad_t;
        for (j = 0; j < g->out_w; ++j)
            out_row[j] = -INFINITY; /* the implicit padding */
        fc_pool_tap_range(start, start, g->d_h, g->k_h, g->in_h, &th_first, &th_stop);
        for (tap_h = th_first; tap_h < th_stop; ++tap_h) {
            const FC_T* x_row = x + (start + tap_h * g->d_h) * g->in_w;
            for (tap_w = columns.tap_first; tap_w < columns.tap_stop; ++tap_w) {
                ptrdiff_t first, stop, offset = tap_w * g->d_w - g->pad_l;
                fc_pool_columns_get(&columns, tap_w, &first, &stop);
                FC_PN(max_row)(out_row, x_row, first, stop, g->s_w, offset);
            }
        }
    }
}

/* as max_plane; idx[i,j] = ih*W + iw of its first max (last NaN) in scan order. ``position``
 * is an out_w-long int32 scratch row (values and positions then vectorise in lanes of one
 * width; the wrapper caps a plane at 2**31 - 1 elements). */
FC_KERNEL void FC_PN(max_indices_plane)(const FC_T* x, FC_T* out, int64_t* indices,
                                        int32_t* position, const fc_pool_geometry* g)
{
    fc_pool_columns columns;
    ptrdiff_t oh, j, tap_h, tap_w, th_first, th_stop;
    fc_pool_columns_init(&columns, g->in_w, g->out_w, g->k_w, g->s_w, g->pad_l, g->d_w);
    for (oh = 0; oh < g->out_h; ++oh) {
        FC_T* out_row = out + oh * g->out_w;
        int64_t* indices_row = indices + oh * g->out_w;
        ptrdiff_t start = oh * g->s_h - g->pad_t, first_row;
        for (j = 0; j < g->out_w; ++j) {
            out_row[j] = -INFINITY;
            position[j] = -1; /* nothing has beaten the -inf padding yet */
        }
        fc_pool_tap_range(start, start, g->d_h, g->k_h, g->in_h, &th_first, &th_stop);
        for (tap_h = th_first; tap_h < th_stop; ++tap_h) {
            ptrdiff_t ih = start + tap_h * g->d_h;
            const FC_T* x_row = x + ih * g->in_w;
            for (tap_w = columns.tap_first; tap_w < columns.tap_stop; ++tap_w) {
                ptrdiff_t first, stop, offset = tap_w * g->d_w - g->pad_l;
                fc_pool_columns_get(&columns, tap_w, &first, &stop);
                FC_PN(max_index_row)(out_row, position, x_row, first, stop, g->s_w, offset,
                                     (int32_t)(ih * g->in_w + offset));
            }
        }
        /* PyTorch starts each window at (-inf, its first in-bounds tap), so a window that
         * never beat -inf reports its first tap; when dilation steps over the whole input that
         * tap lies outside it, and PyTorch reports it anyway. */
        first_row = fc_pool_first_tap(start, g->d_h);
        for (j = 0; j < g->out_w; ++j)
            indices_row[j] = position[j] >= 0
                ? (int64_t)position[j]
                : (int64_t)(first_row * g->in_w
                            + fc_pool_first_tap(j * g->s_w - g->pad_l, g->d_w));
    }
}

/* ---- average pooling, any geometry: one plane ------------------------------------------ */

/* ---- stride-1 columns: sums kept in registers ------------------------------------------
 * The general loops below add each tap into the output row in memory, a load and a store per
 * tap; at stride 1 (the 3x3 stride-1 average of a ResNet or an Inception block) a window's taps
 * are instead summed in vector registers over ``nv`` vectors of output columns at once, and
 * each output stored once. The order of the additions per element does not change: from 0,
 * taps row-major, then one division, so the bits are those of the loops below. */

/* out[b] = (sum over rows r < rows, taps t < k_w of x[r*in_w + b + t])
 *          / (row_factor * column_factor[b]) for b < nv*FC_VL, every tap inside the input */
FC_LOCAL void FC_PN(avg_vectors_s1)(FC_T* __restrict__ out, const FC_T* __restrict__ x,
                                    ptrdiff_t rows, ptrdiff_t in_w, ptrdiff_t k_w,
                                    FC_T row_factor, const FC_T* __restrict__ column_factor,
                                    const int nv)
{
    FC_PN(vec) acc[4], v;
    ptrdiff_t r, t;
    int b;
    FC_UNROLLED
    for (b = 0; b < nv; ++b) {
        FC_PN(vec) zero = {0};
        acc[b] = zero;
    }
    for (r = 0; r < rows; ++r) {
        const FC_T* x_row = x + r * in_w;
        for (t = 0; t < k_w; ++t) {
            FC_UNROLLED
            for (b = 0; b < nv; ++b) {
                FC_VLOAD(v, x_row + t + b * FC_VL);
                acc[b] += v;
            }
        }
    }
    FC_UNROLLED
    for (b = 0; b < nv; ++b) {
        FC_VLOAD(v, column_factor + b * FC_VL);
        acc[b] = acc[b] / (v * row_factor);
        FC_VSTORE(out + b * FC_VL, acc[b]);
    }
}

/* out_row[j] for one column j whose window may run into the padding: the taps inside the input */
FC_LOCAL void FC_PN(avg_column)(FC_T* out_row, const FC_T* x, ptrdiff_t j, ptrdiff_t first_h,
                                ptrdiff_t stop_h, FC_T row_factor, const FC_T* column_factor,
                                const fc_pool_geometry* g)
{
    ptrdiff_t start = j * g->s_w - g->pad_l, ih, t;
    ptrdiff_t t0 = start < 0 ? -start : 0;
    ptrdiff_t t1 = g->in_w - start < g->k_w ? g->in_w - start : g->k_w;
    FC_T sum = (FC_T)0;
    for (ih = first_h; ih < stop_h; ++ih)
        for (t = t0; t < t1; ++t)
            sum += x[ih * g->in_w + start + t];
    out_row[j] = sum / (row_factor * column_factor[j]);
}

/* avg_plane at stride 1 across the width */
FC_LOCAL void FC_PN(avg_plane_s1)(const FC_T* x, FC_T* out, const FC_T* column_factor,
                                  const fc_pool_geometry* g)
{
    /* [inner_first, inner_stop): the columns whose whole window lies inside the input */
    ptrdiff_t inner_first = g->pad_l < g->out_w ? g->pad_l : g->out_w;
    ptrdiff_t inner_stop = g->in_w - g->k_w + 1 + g->pad_l;
    ptrdiff_t oh, j;
    if (inner_stop > g->out_w)
        inner_stop = g->out_w;
    if (inner_stop < inner_first)
        inner_stop = inner_first;
    for (oh = 0; oh < g->out_h; ++oh) {
        FC_T* out_row = out + oh * g->out_w;
        ptrdiff_t start_h, end_h, first_h, stop_h, rows;
        FC_T row_factor;
        const FC_T* x_rows;
        fc_pool_avg_rows(g, oh, &start_h, &end_h, &first_h, &stop_h);
        row_factor = (FC_T)fc_pool_avg_row_factor(g, start_h, end_h, first_h, stop_h);
        rows = stop_h > first_h ? stop_h - first_h : 0;
        x_rows = x + first_h * g->in_w - g->pad_l; /* + j: column j's first tap */
        for (j = 0; j < inner_first; ++j)
            FC_PN(avg_column)(out_row, x, j, first_h, stop_h, row_factor, column_factor, g);
        j = inner_first;
        if (inner_stop - inner_first >= FC_VL) {
            for (; j + 4 * FC_VL <= inner_stop; j += 4 * FC_VL)
                FC_PN(avg_vectors_s1)(out_row + j, x_rows + j, rows, g->in_w, g->k_w,
                                      row_factor, column_factor + j, 4);
            for (; j + FC_VL <= inner_stop; j += FC_VL)
                FC_PN(avg_vectors_s1)(out_row + j, x_rows + j, rows, g->in_w, g->k_w,
                                      row_factor, column_factor + j, 1);
            /* the last few columns: one vector ending at inner_stop, overlapping columns
             * already done (recomputed to the same bits) */
            if (j < inner_stop)
                FC_PN(avg_vectors_s1)(out_row + inner_stop - FC_VL,
                                      x_rows + inner_stop - FC_VL, rows, g->in_w, g->k_w,
                                      row_factor, column_factor + inner_stop - FC_VL, 1);
            j = inner_stop;
        }
        for (; j < g->out_w; ++j)
            FC_PN(avg_column)(out_row, x, j, first_h, stop_h, row_factor, column_factor, g);
    }
}

/* y[i,j] = (sum of x over window (i,j), clipped to the input) / (row factor * col factor) */
FC_KERNEL void FC_PN(avg_plane)(const FC_T* x, FC_T* out, const FC_T* column_factor,
                                const fc_pool_geometry* g)
{
    fc_pool_columns columns;
    ptrdiff_t oh, j, ih, tap_w;
    if (g->s_w == 1) {
        FC_PN(avg_plane_s1)(x, out, column_factor, g);
        return;
    }
    fc_pool_columns_init(&columns, g->in_w, g->out_w, g->k_w, g->s_w, g->pad_l, 1);
    for (oh = 0; oh < g->out_h; ++oh) {
        FC_T* out_row = out + oh * g->out_w;
        ptrdiff_t start_h, end_h, first_h, stop_h;
        FC_T row_factor;
        fc_pool_avg_rows(g, oh, &start_h, &end_h, &first_h, &stop_h);
        for (j = 0; j < g->out_w; ++j)
            out_row[j] = 0;
        /* summed from 0 in row-major tap order in the input's own type, as PyTorch does */
        for (ih = first_h; ih < stop_h; ++ih) {
            const FC_T* x_row = x + ih * g->in_w;
            for (tap_w = columns.tap_first; tap_w < columns.tap_stop; ++tap_w) {
                ptrdiff_t first, stop;
                fc_pool_columns_get(&columns, tap_w, &first, &stop);
                FC_PN(sum_row)(out_row, x_row, first, stop, g->s_w, tap_w - g->pad_l);
            }
        }
        /* Both factors are exact small integers, so their product rounds exactly as PyTorch's
         * integer divisor converted to floating point; dividing (not multiplying by a
         * reciprocal) then rounds the result as PyTorch does. */
        row_factor = (FC_T)fc_pool_avg_row_factor(g, start_h, end_h, first_h, stop_h);
        for (j = 0; j < g->out_w; ++j)
            out_row[j] = out_row[j] / (row_factor * column_factor[j]);
    }
}

/* ---- average pooling backward at stride 1 across the width: gathered ----------------------
 * The general loop below scatters each output's quotient over its window, a load and a store
 * of grad_input per tap. At stride 1 each grad_input element instead gathers, in registers,
 * the quotients of the windows holding it, in the order the scatter adds them: output rows
 * ascending, then kernel columns ascending, from 0. The bits are the scatter's. The quotients
 * of the (at most k_h) output rows whose windows hold input row ih are kept in a ring of k_h
 * rows, output row oh in slot oh % k_h. */

/* gi[b] = sum over ring rows (ascending) and taps t < k_w of row[b + pad_l - t], b < nv*FC_VL,
 * every j = b + pad_l - t inside the output row */
FC_LOCAL void FC_PN(gather_vectors_s1)(FC_T* __restrict__ grad_input_row,
                                       const FC_T* __restrict__ delta, ptrdiff_t out_w,
                                       ptrdiff_t k_h, ptrdiff_t oh_first, ptrdiff_t oh_last,
                                       ptrdiff_t k_w, ptrdiff_t offset, const int nv)
{
    FC_PN(vec) acc[4], v;
    ptrdiff_t oh, t;
    int b;
    FC_UNROLLED
    for (b = 0; b < nv; ++b) {
        FC_PN(vec) zero = {0};
        acc[b] = zero;
    }
    for (oh = oh_first; oh <= oh_last; ++oh) {
        const FC_T* delta_row = delta + (oh % k_h) * out_w + offset;
        for (t = 0; t < k_w; ++t) {
            FC_UNROLLED
            for (b = 0; b < nv; ++b) {
                FC_VLOAD(v, delta_row - t + b * FC_VL);
                acc[b] += v;
            }
        }
    }
    FC_UNROLLED
    for (b = 0; b < nv; ++b)
        FC_VSTORE(grad_input_row + b * FC_VL, acc[b]);
}

/* one grad_input element whose column gathers from fewer than k_w windows */
FC_LOCAL FC_T FC_PN(gather_column_s1)(const FC_T* delta, ptrdiff_t out_w, ptrdiff_t k_h,
                                      ptrdiff_t oh_first, ptrdiff_t oh_last, ptrdiff_t k_w,
                                      ptrdiff_t column)
{
    ptrdiff_t oh, t;
    FC_T sum = (FC_T)0;
    for (oh = oh_first; oh <= oh_last; ++oh) {
        const FC_T* delta_row = delta + (oh % k_h) * out_w;
        for (t = 0; t < k_w; ++t)
            if (column - t >= 0 && column - t < out_w)
                sum += delta_row[column - t];
    }
    return sum;
}

/* avg_backward_plane at stride 1 across the width; ``delta`` holds k_h * out_w */
FC_LOCAL void FC_PN(avg_backward_plane_s1)(const FC_T* grad_output, FC_T* grad_input,
                                           const FC_T* column_factor, FC_T* delta,
                                           const fc_pool_geometry* g)
{
    /* [inner_first, inner_stop): the input columns held by k_w windows, all inside the row */
    ptrdiff_t inner_first = g->k_w - 1 - g->pad_l, inner_stop = g->out_w - g->pad_l;
    ptrdiff_t ready = 0; /* the quotient rows [0, ready) are made, the last k_h in the ring */
    ptrdiff_t ih, iw, j;
    if (inner_first < 0)
        inner_first = 0;
    if (inner_first > g->in_w)
        inner_first = g->in_w;
    if (inner_stop > g->in_w)
        inner_stop = g->in_w;
    if (inner_stop < inner_first)
        inner_stop = inner_first;
    for (ih = 0; ih < g->in_h; ++ih) {
        FC_T* grad_input_row = grad_input + ih * g->in_w;
        /* the output rows whose windows hold row ih: oh*s_h - pad_t <= ih < that + k_h */
        ptrdiff_t reach = ih + g->pad_t - g->k_h + 1;
        ptrdiff_t oh_first = reach <= 0 ? 0 : (reach + g->s_h - 1) / g->s_h;
        ptrdiff_t oh_last = (ih + g->pad_t) / g->s_h;
        if (oh_last > g->out_h - 1)
            oh_last = g->out_h - 1;
        for (; ready <= oh_last; ++ready) {
            const FC_T* grad_output_row = grad_output + ready * g->out_w;
            FC_T* delta_row = delta + (ready % g->k_h) * g->out_w;
            ptrdiff_t start_h, end_h, first_h, stop_h;
            FC_T row_factor;
            fc_pool_avg_rows(g, ready, &start_h, &end_h, &first_h, &stop_h);
            row_factor = (FC_T)fc_pool_avg_row_factor(g, start_h, end_h, first_h, stop_h);
            for (j = 0; j < g->out_w; ++j)
                delta_row[j] = grad_output_row[j] / (row_factor * column_factor[j]);
        }
        if (oh_first > oh_last) {
            for (iw = 0; iw < g->in_w; ++iw)
                grad_input_row[iw] = 0; /* no window holds this row */
            continue;
        }
        for (iw = 0; iw < inner_first; ++iw)
            grad_input_row[iw] = FC_PN(gather_column_s1)(delta, g->out_w, g->k_h, oh_first,
                                                         oh_last, g->k_w, iw + g->pad_l);
        iw = inner_first;
        if (inner_stop - inner_first >= FC_VL) {
            for (; iw + 4 * FC_VL <= inner_stop; iw += 4 * FC_VL)
                FC_PN(gather_vectors_s1)(grad_input_row + iw, delta, g->out_w, g->k_h,
                                         oh_first, oh_last, g->k_w, iw + g->pad_l, 4);
            for (; iw + FC_VL <= inner_stop; iw += FC_VL)
                FC_PN(gather_vectors_s1)(grad_input_row + iw, delta, g->out_w, g->k_h,
                                         oh_first, oh_last, g->k_w, iw + g->pad_l, 1);
            if (iw < inner_stop) /* one vector ending at inner_stop, overlapping */
                FC_PN(gather_vectors_s1)(grad_input_row + inner_stop - FC_VL, delta, g->out_w,
                                         g->k_h, oh_first, oh_last, g->k_w,
                                         inner_stop - FC_VL + g->pad_l, 1);
            iw = inner_stop;
        }
        for (; iw < g->in_w; ++iw)
            grad_input_row[iw] = FC_PN(gather_column_s1)(delta, g->out_w, g->k_h, oh_first,
                                                         oh_last, g->k_w, iw + g->pad_l);
    }
}

/* gx[ih,iw] = sum over windows (i,j) holding (ih,iw) of gy[i,j] / divisor[i,j]; ``delta`` is
 * scratch of k_h * out_w (only its first row here, at strides other than 1) */
FC_KERNEL void FC_PN(avg_backward_plane)(const FC_T* grad_output, FC_T* grad_input,
                                         const FC_T* column_factor, FC_T* delta,
                                         const fc_pool_geometry* g)
{
    fc_pool_columns columns;
    ptrdiff_t oh, j, ih, tap_w;
    if (g->s_w == 1) {
        FC_PN(avg_backward_plane_s1)(grad_output, grad_input, column_factor, delta, g);
        return;
    }
    fc_pool_columns_init(&columns, g->in_w, g->out_w, g->k_w, g->s_w, g->pad_l, 1);
    memset(grad_input, 0, (size_t)(g->in_h * g->in_w) * sizeof(FC_T));
    for (oh = 0; oh < g->out_h; ++oh) {
        const FC_T* grad_output_row = grad_output + oh * g->out_w;
        ptrdiff_t start_h, end_h, first_h, stop_h;
        FC_T row_factor;
        fc_pool_avg_rows(g, oh, &start_h, &end_h, &first_h, &stop_h);
        row_factor = (FC_T)fc_pool_avg_row_factor(g, start_h, end_h, first_h, stop_h);
        /* one division per output element, then only additions in the scatter */
        for (j = 0; j < g->out_w; ++j)
            delta[j] = grad_output_row[j] / (row_factor * column_factor[j]);
        for (ih = first_h; ih < stop_h; ++ih) {
            FC_T* grad_input_row = grad_input + ih * g->in_w;
            for (tap_w = columns.tap_first; tap_w < columns.tap_stop; ++tap_w) {
                ptrdiff_t first, stop;
                fc_pool_columns_get(&columns, tap_w, &first, &stop);
                FC_PN(scatter_row)(grad_input_row, delta, first, stop, g->s_w,
                                   tap_w - g->pad_l);
            }
        }
    }
}

/* ---- stride-1 average pooling as a box filter over zero-padded rows ---------------------
 * The 'box' path (fastconv/pool.py): stride 1 both ways, any window of at most
 * FC_POOL_BOX_MAX_ROWS rows, any padding, count_include_pad and divisor_override. Each input
 * row is copied once into a ring of k_h rows of ``ring_w`` elements, at column pad_l, with
 * zeros on both sides, and a window row above or below the input reads a row of zeros (the
 * ring's row k_h): every output column then runs the same vector loop, the borders included,
 * with no per-column or per-row set-up (the general loops above pay for their edge columns
 * one scalar window at a time). The taps outside the input are added as +0.0, which changes
 * no bit: a sum started from +0.0 is never -0.0, and x + 0.0 == x for every other x, inf and
 * NaN included. So the sums are the general kernels' (taps row-major from 0, one division),
 * bit for bit. The backward pass gathers, the same way, from a ring of k_h rows of quotients
 * gy / divisor, each with k_w - 1 zeros before it and zeros after it. */

/* out[b] = (sum over r < k_h, t < k_w of rows[r][at + b + t]) / (row_factor *
 * column_factor[at + b]), b < nv*FC_VL */
FC_LOCAL void FC_PN(box_vectors)(FC_T* __restrict__ out, const FC_T* const* rows, ptrdiff_t at,
                                 ptrdiff_t k_h, ptrdiff_t k_w, FC_T row_factor,
                                 const FC_T* __restrict__ column_factor, const int nv)
{
    FC_PN(vec) acc[4], v;
    ptrdiff_t r, t;
    int b;
    FC_UNROLLED
    for (b = 0; b < nv; ++b) {
        FC_PN(vec) zero = {0};
        acc[b] = zero;
    }
    for (r = 0; r < k_h; ++r) {
        const FC_T* row = rows[r] + at;
        for (t = 0; t < k_w; ++t) {
            FC_UNROLLED
            for (b = 0; b < nv; ++b) {
                FC_VLOAD(v, row + t + b * FC_VL);
                acc[b] += v;
            }
        }
    }
    FC_UNROLLED
    for (b = 0; b < nv; ++b) {
        FC_VLOAD(v, column_factor + at + b * FC_VL);
        acc[b] = acc[b] / (v * row_factor);
        FC_VSTORE(out + b * FC_VL, acc[b]);
    }
}

/* one output row: vectors of 4, then 1, then one ending at out_w (overlapping, the same bits),
 * or for rows narrower than a vector, one vector into ``tail`` (the rows and column factors
 * are readable that far) */
FC_LOCAL void FC_PN(box_row)(FC_T* out_row, const FC_T* const* rows, ptrdiff_t out_w,
                             ptrdiff_t k_h, ptrdiff_t k_w, FC_T row_factor,
                             const FC_T* column_factor)
{
    ptrdiff_t j = 0;
    for (; j + 4 * FC_VL <= out_w; j += 4 * FC_VL)
        FC_PN(box_vectors)(out_row + j, rows, j, k_h, k_w, row_factor, column_factor, 4);
    /* the rest of the whole vectors in one call: their sums' chains of additions overlap */
    if (j + 3 * FC_VL <= out_w) {
        FC_PN(box_vectors)(out_row + j, rows, j, k_h, k_w, row_factor, column_factor, 3);
        j += 3 * FC_VL;
    } else if (j + 2 * FC_VL <= out_w) {
        FC_PN(box_vectors)(out_row + j, rows, j, k_h, k_w, row_factor, column_factor, 2);
        j += 2 * FC_VL;
    } else if (j + FC_VL <= out_w) {
        FC_PN(box_vectors)(out_row + j, rows, j, k_h, k_w, row_factor, column_factor, 1);
        j += FC_VL;
    }
    if (j < out_w) {
        if (out_w >= FC_VL) {
            FC_PN(box_vectors)(out_row + out_w - FC_VL, rows, out_w - FC_VL, k_h, k_w,
                               row_factor, column_factor, 1);
        } else {
            FC_T tail[FC_P_LANES];
            FC_PN(box_vectors)(tail, rows, 0, k_h, k_w, row_factor, column_factor, 1);
            memcpy(out_row, tail, (size_t)out_w * sizeof(FC_T));
        }
    }
}

/* to[0, width) = from[0, width) in vectors, inline (a call to memcpy cost more than these
 * few vectors of a short row) */
FC_LOCAL void FC_PN(box_copy_row)(FC_T* __restrict__ to, const FC_T* __restrict__ from,
                                  ptrdiff_t width)
{
    FC_PN(vec) v;
    ptrdiff_t j = 0;
    for (; j + FC_VL <= width; j += FC_VL) {
        FC_VLOAD(v, from + j);
        FC_VSTORE(to + j, v);
    }
    for (; j < width; ++j)
        to[j] = from[j];
}

/* zero what no row copy overwrites: [0, lead) and [lead + width, ring_w) of the k_h ring rows,
 * and all of row k_h (the zeros a window row outside the input reads) */
FC_LOCAL void FC_PN(box_ring_init)(FC_T* ring, ptrdiff_t ring_w, ptrdiff_t k_h, ptrdiff_t lead,
                                   ptrdiff_t width)
{
    ptrdiff_t slot;
    for (slot = 0; slot < k_h; ++slot) {
        FC_T* row = ring + slot * ring_w;
        memset(row, 0, (size_t)lead * sizeof(FC_T));
        memset(row + lead + width, 0, (size_t)(ring_w - lead - width) * sizeof(FC_T));
    }
    memset(ring + k_h * ring_w, 0, (size_t)ring_w * sizeof(FC_T));
}

/* y[i,j] = (sum of x over window (i,j), clipped to the input) / (row factor * col factor) at
 * stride 1. ``ring`` holds k_h + 1 rows of ring_w >= max(out_w, FC_VL) + k_w - 1 elements;
 * ``column_factor`` is readable (nonzero) up to max(out_w, FC_VL). */
FC_KERNEL void FC_PN(avg_box_plane)(const FC_T* x, FC_T* out, const FC_T* column_factor,
                                    FC_T* ring, ptrdiff_t ring_w, const fc_pool_geometry* g)
{
    const ptrdiff_t k_h = g->k_h, k_w = g->k_w, in_h = g->in_h, in_w = g->in_w;
    const ptrdiff_t pad_t = g->pad_t, pad_l = g->pad_l;
    const FC_T* rows[FC_POOL_BOX_MAX_ROWS];
    const FC_T* zero = ring + k_h * ring_w;
    ptrdiff_t oh, r, next = 0, next_slot = 0;
    ptrdiff_t first_slot = (k_h - pad_t % k_h) % k_h; /* ring slot of window row 0: (-pad_t) mod k_h */
    FC_PN(box_ring_init)(ring, ring_w, k_h, pad_l, in_w);
    for (oh = 0; oh < g->out_h; ++oh) {
        FC_T* out_row = out + oh * g->out_w;
        ptrdiff_t top = oh - pad_t, slot = first_slot;
        ptrdiff_t start_h, end_h, first_h, stop_h;
        FC_T row_factor;
        /* input row ih lives in slot ih % k_h while the windows need it */
        for (; next < in_h && next < top + k_h; ++next) {
            FC_PN(box_copy_row)(ring + next_slot * ring_w + pad_l, x + next * in_w, in_w);
            next_slot = next_slot + 1 == k_h ? 0 : next_slot + 1;
        }
        for (r = 0; r < k_h; ++r) {
            rows[r] = top + r >= 0 && top + r < in_h ? ring + slot * ring_w : zero;
            slot = slot + 1 == k_h ? 0 : slot + 1;
        }
        first_slot = first_slot + 1 == k_h ? 0 : first_slot + 1;
        fc_pool_avg_rows(g, oh, &start_h, &end_h, &first_h, &stop_h);
        row_factor = (FC_T)fc_pool_avg_row_factor(g, start_h, end_h, first_h, stop_h);
        /* the common 3x3 window with literal sizes: its taps unrolled */
        if (k_h == 3 && k_w == 3)
            FC_PN(box_row)(out_row, rows, g->out_w, 3, 3, row_factor, column_factor);
        else
            FC_PN(box_row)(out_row, rows, g->out_w, k_h, k_w, row_factor, column_factor);
    }
}

/* gi[b] = sum over r < k_h, t < k_w of rows[r][at + b + lead + pad_l - t], b < nv*FC_VL:
 * output rows ascending, kernel columns ascending, as the general kernel's scatter adds them */
FC_LOCAL void FC_PN(box_gather_vectors)(FC_T* __restrict__ grad_input_row,
                                        const FC_T* const* rows, ptrdiff_t at, ptrdiff_t k_h,
                                        ptrdiff_t k_w, ptrdiff_t offset, const int nv)
{
    FC_PN(vec) acc[4], v;
    ptrdiff_t r, t;
    int b;
    FC_UNROLLED
    for (b = 0; b < nv; ++b) {
        FC_PN(vec) zero = {0};
        acc[b] = zero;
    }
    for (r = 0; r < k_h; ++r) {
        const FC_T* row = rows[r] + at + offset;
        for (t = 0; t < k_w; ++t) {
            FC_UNROLLED
            for (b = 0; b < nv; ++b) {
                FC_VLOAD(v, row - t + b * FC_VL);
                acc[b] += v;
            }
        }
    }
    FC_UNROLLED
    for (b = 0; b < nv; ++b)
        FC_VSTORE(grad_input_row + b * FC_VL, acc[b]);
}

FC_LOCAL void FC_PN(box_gather_row)(FC_T* grad_input_row, const FC_T* const* rows,
                                    ptrdiff_t in_w, ptrdiff_t k_h, ptrdiff_t k_w,
                                    ptrdiff_t offset)
{
    ptrdiff_t j = 0;
    for (; j + 4 * FC_VL <= in_w; j += 4 * FC_VL)
        FC_PN(box_gather_vectors)(grad_input_row + j, rows, j, k_h, k_w, offset, 4);
    if (j + 3 * FC_VL <= in_w) {
        FC_PN(box_gather_vectors)(grad_input_row + j, rows, j, k_h, k_w, offset, 3);
        j += 3 * FC_VL;
    } else if (j + 2 * FC_VL <= in_w) {
        FC_PN(box_gather_vectors)(grad_input_row + j, rows, j, k_h, k_w, offset, 2);
        j += 2 * FC_VL;
    } else if (j + FC_VL <= in_w) {
        FC_PN(box_gather_vectors)(grad_input_row + j, rows, j, k_h, k_w, offset, 1);
        j += FC_VL;
    }
    if (j < in_w) {
        if (in_w >= FC_VL) {
            FC_PN(box_gather_vectors)(grad_input_row + in_w - FC_VL, rows, in_w - FC_VL, k_h,
                                      k_w, offset, 1);
        } else {
            FC_T tail[FC_P_LANES];
            FC_PN(box_gather_vectors)(tail, rows, 0, k_h, k_w, offset, 1);
            memcpy(grad_input_row, tail, (size_t)in_w * sizeof(FC_T));
        }
    }
}

/* gx[ih,iw] = sum over windows (i,j) holding (ih,iw) of gy[i,j] / divisor[i,j] at stride 1.
 * ``ring`` holds k_h + 1 rows of ring_w >= max(in_w, FC_VL) + pad_l + k_w - 1 elements (row
 * oh's quotients at [k_w - 1, k_w - 1 + out_w) of slot oh % k_h). */
FC_KERNEL void FC_PN(avg_box_backward_plane)(const FC_T* grad_output, FC_T* grad_input,
                                             const FC_T* column_factor, FC_T* ring,
                                             ptrdiff_t ring_w, const fc_pool_geometry* g)
{
    const ptrdiff_t k_h = g->k_h, k_w = g->k_w, out_h = g->out_h, out_w = g->out_w;
    const ptrdiff_t lead = k_w - 1, pad_t = g->pad_t;
    const FC_T* rows[FC_POOL_BOX_MAX_ROWS];
    const FC_T* zero = ring + k_h * ring_w;
    ptrdiff_t ih, r, j, ready = 0, ready_slot = 0;
    /* ring slot of the first window holding row 0: (pad_t - k_h + 1) mod k_h */
    ptrdiff_t first_slot = ((pad_t - k_h + 1) % k_h + k_h) % k_h;
    FC_PN(box_ring_init)(ring, ring_w, k_h, lead, out_w);
    for (ih = 0; ih < g->in_h; ++ih) {
        ptrdiff_t oh_first = ih + pad_t - k_h + 1, slot = first_slot;
        /* the quotients of every output row whose window holds row ih */
        for (; ready < out_h && ready <= ih + pad_t; ++ready) {
            const FC_T* grad_output_row = grad_output + ready * out_w;
            FC_T* delta_row = ring + ready_slot * ring_w + lead;
            ptrdiff_t start_h, end_h, first_h, stop_h;
            FC_T row_factor;
            FC_PN(vec) v, f;
            fc_pool_avg_rows(g, ready, &start_h, &end_h, &first_h, &stop_h);
            row_factor = (FC_T)fc_pool_avg_row_factor(g, start_h, end_h, first_h, stop_h);
            for (j = 0; j + FC_VL <= out_w; j += FC_VL) {
                FC_VLOAD(v, grad_output_row + j);
                FC_VLOAD(f, column_factor + j);
                v = v / (f * row_factor);
                FC_VSTORE(delta_row + j, v);
            }
            for (; j < out_w; ++j)
                delta_row[j] = grad_output_row[j] / (column_factor[j] * row_factor);
            ready_slot = ready_slot + 1 == k_h ? 0 : ready_slot + 1;
        }
        for (r = 0; r < k_h; ++r) {
            rows[r] = oh_first + r >= 0 && oh_first + r < out_h ? ring + slot * ring_w : zero;
            slot = slot + 1 == k_h ? 0 : slot + 1;
        }
        first_slot = first_slot + 1 == k_h ? 0 : first_slot + 1;
        if (k_h == 3 && k_w == 3)
            FC_PN(box_gather_row)(grad_input + ih * g->in_w, rows, g->in_w, 3, 3,
                                  lead + g->pad_l);
        else
            FC_PN(box_gather_row)(grad_input + ih * g->in_w, rows, g->in_w, k_h, k_w,
                                  lead + g->pad_l);
    }
}

/* ---- 2x2 windows in vectors ------------------------------------------------------------
 * Rows of a few outputs (6 in a 12x12 plane) leave the compiler's vector loop unused: it runs
 * its scalar remainder. Here a row is done in vectors of FC_VL outputs (or, for rows shorter
 * than that, half vectors), the last one ending at the row's end and overlapping the one
 * before (its columns computed again, to the same bits); the window's taps de-interleaved
 * from two vectors of each input row. Rows shorter than the narrowest vector take the scalar
 * loop. */

/* FC_SEL on vectors: lanes of v where v is NaN or greater, else m's */
#define FC_VSEL(v, m)                                                                        \
    __extension__({                                                                          \
        __typeof__((v) > (m)) take_ = ((v) != (v)) | ((v) > (m));                            \
        (__typeof__(v))((take_ & (__typeof__(take_))(v)) | (~take_ & (__typeof__(take_))(m))); \
    })

#if FC_P_LANES == 8
#define FC_P_HALF_LANES 4
#elif FC_P_LANES == 4
#define FC_P_HALF_LANES 2
#endif

/* out_row[j, j + LANES): max and average of the 2x2 windows, from rows top and bottom */
#define FC_POOL_2X2_VECTORS(MAX_NAME, AVG_NAME, VEC, LANES)                                 \
    FC_LOCAL void MAX_NAME(FC_T* __restrict__ out_row, const FC_T* __restrict__ top,           \
                           const FC_T* __restrict__ bottom, ptrdiff_t j)                     \
    {                                                                                        \
        VEC t0, t1, b0, b1, a, b, c, d, upper, lower;                                        \
        FC_VLOAD(t0, top + 2 * j);                                                           \
        FC_VLOAD(t1, top + 2 * j + (LANES));                                                 \
        FC_VLOAD(b0, bottom + 2 * j);                                                        \
        FC_VLOAD(b1, bottom + 2 * j + (LANES));                                              \
        a = FC_POOL_CAT(FC_POOL_EVENS_, LANES)(t0, t1);                                      \
        b = FC_POOL_CAT(FC_POOL_ODDS_, LANES)(t0, t1);                                       \
        c = FC_POOL_CAT(FC_POOL_EVENS_, LANES)(b0, b1);                                      \
        d = FC_POOL_CAT(FC_POOL_ODDS_, LANES)(b0, b1);                                       \
        upper = FC_VSEL(b, a);                                                               \
        lower = FC_VSEL(d, c);                                                               \
        upper = FC_VSEL(lower, upper);                                                       \
        FC_VSTORE(out_row + j, upper);                                                       \
    }                                                                                        \
    FC_LOCAL void AVG_NAME(FC_T* __restrict__ out_row, const FC_T* __restrict__ top,           \
                           const FC_T* __restrict__ bottom, ptrdiff_t j, FC_T divisor)       \
    {                                                                                        \
        VEC t0, t1, b0, b1, sum = {0};                                                       \
        FC_VLOAD(t0, top + 2 * j);                                                           \
        FC_VLOAD(t1, top + 2 * j + (LANES));                                                 \
        FC_VLOAD(b0, bottom + 2 * j);                                                        \
        FC_VLOAD(b1, bottom + 2 * j + (LANES));                                              \
        sum += FC_POOL_CAT(FC_POOL_EVENS_, LANES)(t0, t1);                                   \
        sum += FC_POOL_CAT(FC_POOL_ODDS_, LANES)(t0, t1);                                    \
        sum += FC_POOL_CAT(FC_POOL_EVENS_, LANES)(b0, b1);                                   \
        sum += FC_POOL_CAT(FC_POOL_ODDS_, LANES)(b0, b1);                                    \
        sum = sum / divisor;                                                                 \
        FC_VSTORE(out_row + j, sum);                                                         \
    }

FC_POOL_2X2_VECTORS(FC_PN(max2x2_vectors), FC_PN(avg2x2_vectors), FC_PN(vec), FC_P_LANES)
#ifdef FC_P_HALF_LANES
typedef FC_T FC_PN(half_vec) __attribute__((vector_size(FC_P_VECTOR_BYTES / 2)));
FC_POOL_2X2_VECTORS(FC_PN(max2x2_half_vectors), FC_PN(avg2x2_half_vectors), FC_PN(half_vec),
                    FC_P_HALF_LANES)
#endif
#undef FC_POOL_2X2_VECTORS

/* one output row of 2x2 windows in vectors: the max, or (``average``) the average with
 * ``divisor``; returns 0 (nothing done) for rows shorter than the narrowest vector */
/* the row in vectors of LANES (MAX, AVG: that width's functions), the last one overlapping */
#define FC_ROW2X2_IN(LANES, MAX, AVG)                                                        \
    for (j = 0;; j += LANES) {                                                               \
        ptrdiff_t at = j + LANES <= out_w ? j : out_w - LANES;                               \
        if (!average)                                                                        \
            MAX(out_row, top, bottom, at);                                                   \
        else                                                                                 \
            AVG(out_row, top, bottom, at, divisor);                                          \
        if (j + LANES >= out_w)                                                              \
            break;                                                                           \
    }

FC_LOCAL int FC_PN(row2x2_vectors)(FC_T* out_row, const FC_T* top, const FC_T* bottom,
                                   ptrdiff_t out_w, int average, FC_T divisor)
{
    ptrdiff_t j;
    if (out_w >= FC_P_LANES) {
        FC_ROW2X2_IN(FC_P_LANES, FC_PN(max2x2_vectors), FC_PN(avg2x2_vectors))
        return 1;
    }
#ifdef FC_P_HALF_LANES
    if (out_w >= FC_P_HALF_LANES) {
        FC_ROW2X2_IN(FC_P_HALF_LANES, FC_PN(max2x2_half_vectors), FC_PN(avg2x2_half_vectors))
        return 1;
    }
#endif
    return 0;
}
#undef FC_ROW2X2_IN

/* ---- 2x2 windows, stride 2, no padding, every window inside the input ------------------
 * The commonest pooling, and the one whose rows are shortest (a 12x12 plane has 6-wide output
 * rows): here the rows of all planes are one sequence, r in [r0, r1) of planes * out_h, with
 * no per-row set-up beyond two pointers. Within a window the four taps are combined as
 * (top pair) then (bottom pair): the same result as the scan order, since keeping the first
 * of equal maxima and the last NaN is associative. */

FC_KERNEL void FC_PN(max2x2_rows)(const FC_T* x, FC_T* out, int64_t* indices, ptrdiff_t r0,
                                  ptrdiff_t r1, const fc_pool_geometry* g)
{
    ptrdiff_t r, j, in_w = g->in_w, out_w = g->out_w;
    ptrdiff_t plane = r0 / g->out_h, oh = r0 - plane * g->out_h; /* of row r, kept by steps */
    for (r = r0; r < r1; ++r, ++oh) {
        if (oh == g->out_h) {
            oh = 0;
            plane += 1;
        }
        const FC_T* __restrict__ top = x + (plane * g->in_h + 2 * oh) * in_w;
        const FC_T* __restrict__ bottom = top + in_w;
        FC_T* __restrict__ out_row = out + r * out_w;
        if (indices == NULL) {
            if (FC_PN(row2x2_vectors)(out_row, top, bottom, out_w, 0, (FC_T)1))
                continue;
            for (j = 0; j < out_w; ++j) {
                FC_T a = top[2 * j], b = top[2 * j + 1], c = bottom[2 * j];
                FC_T d = bottom[2 * j + 1];
                FC_T upper = FC_SEL(b, a), lower = FC_SEL(d, c);
                out_row[j] = FC_SEL(lower, upper);
            }
        } else {
            int64_t* __restrict__ indices_row = indices + r * out_w;
            int64_t base = (int64_t)(2 * oh * in_w);
            for (j = 0; j < out_w; ++j) {
                FC_T a = top[2 * j], b = top[2 * j + 1], c = bottom[2 * j];
                FC_T d = bottom[2 * j + 1];
                FC_T upper = FC_SEL(b, a), lower = FC_SEL(d, c);
                int64_t at = base + 2 * j;
                int64_t upper_at = at + FC_TAKE(b, a), lower_at = at + in_w + FC_TAKE(d, c);
                out_row[j] = FC_SEL(lower, upper);
                indices_row[j] = upper_at + (int64_t)FC_TAKE(lower, upper) * (lower_at - upper_at);
            }
        }
    }
}

/* (((0 + a) + b) + c) + d, divided by ``divisor``: PyTorch's sum order and rounding */
FC_KERNEL void FC_PN(avg2x2_rows)(const FC_T* x, FC_T* out, FC_T divisor, ptrdiff_t r0,
                                  ptrdiff_t r1, const fc_pool_geometry* g)
{
    ptrdiff_t r, j, in_w = g->in_w, out_w = g->out_w;
    ptrdiff_t plane = r0 / g->out_h, oh = r0 - plane * g->out_h; /* of row r, kept by steps */
    for (r = r0; r < r1; ++r, ++oh) {
        if (oh == g->out_h) {
            oh = 0;
            plane += 1;
        }
        const FC_T* __restrict__ top = x + (plane * g->in_h + 2 * oh) * in_w;
        const FC_T* __restrict__ bottom = top + in_w;
        FC_T* __restrict__ out_row = out + r * out_w;
        if (FC_PN(row2x2_vectors)(out_row, top, bottom, out_w, 1, divisor))
            continue;
        for (j = 0; j < out_w; ++j) {
            FC_T sum = (FC_T)0;
            sum += top[2 * j];
            sum += top[2 * j + 1];
            sum += bottom[2 * j];
            sum += bottom[2 * j + 1];
            out_row[j] = sum / divisor;
        }
    }
}

/* every input element gets 0 + gy/divisor of its one window (the +0 as the general kernel's
 * zeroed plane gives: -0.0 becomes +0.0), and the rows and columns no window covers get 0 */
FC_KERNEL void FC_PN(avg2x2_backward_rows)(const FC_T* grad_output, FC_T* grad_input,
                                           FC_T divisor, ptrdiff_t r0, ptrdiff_t r1,
                                           const fc_pool_geometry* g)
{
    ptrdiff_t r, j, in_w = g->in_w, out_w = g->out_w;
    ptrdiff_t plane = r0 / g->out_h, oh = r0 - plane * g->out_h; /* of row r, kept by steps */
    for (r = r0; r < r1; ++r, ++oh) {
        if (oh == g->out_h) {
            oh = 0;
            plane += 1;
        }
        FC_T* __restrict__ top = grad_input + (plane * g->in_h + 2 * oh) * in_w;
        FC_T* __restrict__ bottom = top + in_w;
        const FC_T* __restrict__ grad_row = grad_output + r * out_w;
        for (j = 0; j < out_w; ++j) {
            FC_T share = (FC_T)0 + grad_row[j] / divisor;
            top[2 * j] = share;
            top[2 * j + 1] = share;
            bottom[2 * j] = share;
            bottom[2 * j + 1] = share;
        }
        for (j = 2 * out_w; j < in_w; ++j) {
            top[j] = 0;
            bottom[j] = 0;
        }
        if (oh == g->out_h - 1 && 2 * g->out_h < g->in_h)
            memset(bottom + in_w, 0, (size_t)((g->in_h - 2 * g->out_h) * in_w) * sizeof(FC_T));
    }
}

/* max_pool2d_backward of one plane tiled by 2x2 blocks, one per output element (in_h ==
 * 2 out_h, in_w == 2 out_w: the 2x2 stride-2 windows' indices), in one pass writing every
 * element once: 0 + gy at the index its block's output names, +0 at the other three (what
 * zeroing the plane and adding each gy at its index gives where no two indices meet: the
 * same bits, -0.0 made +0.0 as the sum from +0 makes it). Returns nonzero where some index
 * lies outside its own block (other windows' indices, or bad ones): the plane is then
 * partly written, and the caller zeroes it and adds the gradients one by one instead; and,
 * writing nothing, for rows of fewer outputs than a vector (or a big-endian CPU), where the
 * zeroing and adding is faster (12x12 planes: a scalar one-pass loop, even branch-free, took
 * 3x its time). */

/* lane masks of FC_PN(vec) (all ones or zeros): int32 lanes for float, int64 for double */
#if FC_P_LANES * 4 == FC_P_VECTOR_BYTES
#define FC_P_FLOAT 1
typedef int32_t FC_PN(lane_int);
#else
#define FC_P_FLOAT 0
typedef int64_t FC_PN(lane_int);
#endif
typedef FC_PN(lane_int) FC_PN(lane_mask) __attribute__((vector_size(FC_P_VECTOR_BYTES)));

FC_KERNEL int FC_PN(max2x2_backward_plane)(const FC_T* __restrict__ grad_output,
                                          const int64_t* __restrict__ indices,
                                          FC_T* __restrict__ grad_input, ptrdiff_t out_h,
                                          ptrdiff_t out_w)
{
    const ptrdiff_t in_w = 2 * out_w;
    ptrdiff_t i, j;
    int64_t outside = 0;
    int lane;
    FC_PN(lane_mask) ramp, missing = {0};
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    return 1;
#endif
    if (out_w < FC_VL)
        return 1;
    for (lane = 0; lane < FC_P_LANES; ++lane)
        ramp[lane] = 2 * lane;
    for (i = 0; i < out_h; ++i) {
        FC_T* __restrict__ top = grad_input + 2 * i * in_w;
        FC_T* __restrict__ bottom = top + in_w;
        const FC_T* __restrict__ grad_row = grad_output + i * out_w;
        const int64_t* __restrict__ index_row = indices + i * out_w;
        const int64_t first = 2 * i * in_w;
        /* FC_VL outputs at a time, branch-free (the index's place in its block is random:
         * a branch per place mispredicts, 10x slower than zeroing and adding): each place's
         * lanes are v where the index is there, else +0, interleaved into the two rows.
         * float: the indices' low and high 32-bit halves de-interleaved (the caller takes
         * planes below 2**31 elements only, so an index in its block has a zero high half
         * and its low half less the block's first element, wrapping, is its place) */
        for (j = 0; j < out_w; j += FC_VL) {
            FC_PN(vec) g, v, zero = {0}, a0, a1, a2, a3, low, high;
            FC_PN(lane_mask) d, m0, m1, m2, m3, bits_of_v;
            if (j + FC_VL > out_w)  /* the last vector ends at the row's end */
                j = out_w - FC_VL;
#if FC_P_FLOAT
            FC_PN(lane_mask) w0, w1;
            FC_VLOAD(w0, index_row + j);
            FC_VLOAD(w1, index_row + j + FC_VL / 2);
            d = FC_POOL_CAT(FC_POOL_EVENS_, FC_P_LANES)(w0, w1);
            missing |= FC_POOL_CAT(FC_POOL_ODDS_, FC_P_LANES)(w0, w1);
#else
            FC_VLOAD(d, index_row + j);
#endif
            d -= ramp + (FC_PN(lane_int))(first + 2 * j);
            FC_VLOAD(g, grad_row + j);
            v = zero + g;
            m0 = d == 0;
            m1 = d == 1;
            m2 = d == (FC_PN(lane_int))in_w;
            m3 = d == (FC_PN(lane_int))(in_w + 1);
            missing |= ~(m0 | m1 | m2 | m3);
            bits_of_v = (FC_PN(lane_mask))v;
            a0 = (FC_PN(vec))(bits_of_v & m0);
            a1 = (FC_PN(vec))(bits_of_v & m1);
            a2 = (FC_PN(vec))(bits_of_v & m2);
            a3 = (FC_PN(vec))(bits_of_v & m3);
            low = FC_POOL_CAT(FC_POOL_ZIP_LOW_, FC_P_LANES)(a0, a1);
            high = FC_POOL_CAT(FC_POOL_ZIP_HIGH_, FC_P_LANES)(a0, a1);
            FC_VSTORE(top + 2 * j, low);
            FC_VSTORE(top + 2 * j + FC_VL, high);
            low = FC_POOL_CAT(FC_POOL_ZIP_LOW_, FC_P_LANES)(a2, a3);
            high = FC_POOL_CAT(FC_POOL_ZIP_HIGH_, FC_P_LANES)(a2, a3);
            FC_VSTORE(bottom + 2 * j, low);
            FC_VSTORE(bottom + 2 * j + FC_VL, high);
        }

    }
    for (lane = 0; lane < FC_P_LANES; ++lane)
        outside |= missing[lane];
    return outside != 0;
}

#undef FC_P_HALF_LANES
#undef FC_P_FLOAT
#undef FC_VSEL
#undef FC_UNROLLED
#undef FC_VL
#undef FC_VLOAD
#undef FC_VSTORE
#undef FC_TAKE
#undef FC_SEL
#undef FC_LOCAL
#undef FC_KERNEL
#undef FC_T
#undef FC_PN
#undef FC_P_TARGET
#undef FC_P_MAX_STRIDE2
#undef FC_P_VECTOR_BYTES
#undef FC_P_LANES
