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

/* y[i,j] = (sum of x over window (i,j), clipped to the input) / (row factor * col factor) */
FC_KERNEL void FC_PN(avg_plane)(const FC_T* x, FC_T* out, const FC_T* column_factor,
                                const fc_pool_geometry* g)
{
    fc_pool_columns columns;
    ptrdiff_t oh, j, ih, tap_w;
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

/* gx[ih,iw] = sum over windows (i,j) holding (ih,iw) of gy[i,j] / divisor[i,j]; ``delta`` is
 * an out_w-long scratch row */
FC_KERNEL void FC_PN(avg_backward_plane)(const FC_T* grad_output, FC_T* grad_input,
                                         const FC_T* column_factor, FC_T* delta,
                                         const fc_pool_geometry* g)
{
    fc_pool_columns columns;
    ptrdiff_t oh, j, ih, tap_w;
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
    for (r = r0; r < r1; ++r) {
        ptrdiff_t plane = r / g->out_h, oh = r - plane * g->out_h;
        const FC_T* __restrict__ top = x + (plane * g->in_h + 2 * oh) * in_w;
        const FC_T* __restrict__ bottom = top + in_w;
        FC_T* __restrict__ out_row = out + r * out_w;
        if (indices == NULL) {
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
    for (r = r0; r < r1; ++r) {
        ptrdiff_t plane = r / g->out_h, oh = r - plane * g->out_h;
        const FC_T* __restrict__ top = x + (plane * g->in_h + 2 * oh) * in_w;
        const FC_T* __restrict__ bottom = top + in_w;
        FC_T* __restrict__ out_row = out + r * out_w;
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
    for (r = r0; r < r1; ++r) {
        ptrdiff_t plane = r / g->out_h, oh = r - plane * g->out_h;
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

#undef FC_TAKE
#undef FC_SEL
#undef FC_LOCAL
#undef FC_KERNEL
#undef FC_T
#undef FC_PN
#undef FC_P_TARGET
#undef FC_P_MAX_STRIDE2
