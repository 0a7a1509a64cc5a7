"""Pooling kernels: max and average pooling over NCHW planes, forward and backward.

Every kernel runs one (n, c) plane per iteration of a ``prange`` over the N*C planes, so a
batch of one still keeps every thread busy, and each plane is computed by exactly one thread
in a fixed order: results are bit-identical whatever the thread count.

Inside a plane the loops run, for one output row, over the kernel taps (row, then column) and
innermost over the output columns. For one output element the taps are therefore visited in
the same row-major order as PyTorch's per-window loop (which decides ties, NaN and the order
of the average's sum), while the innermost loop is long, branch-light and has its bounds
computed once per tap instead of once per element. That loop lives in small inline row
functions (``_max_row``, ``_max_index_row``, ``_sum_row``, ``_scatter_row``).

The wrappers in ``fastconv/pool.py`` validate every argument; nothing here raises.
"""

from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset

from _openmp_helpers cimport omp_get_thread_num
from _types cimport floating


cdef inline void _column_range(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t in_width,
                               Py_ssize_t out_width, Py_ssize_t* first,
                               Py_ssize_t* stop) noexcept nogil:
    """[first, stop) = the output columns ow with 0 <= ow*stride + offset < in_width."""
    # Stepped in from both ends rather than divided: only the few columns whose window
    # reaches into the padding are skipped, and a 64-bit division per tap and row would
    # cost more than the short loops it feeds.
    cdef Py_ssize_t lo = 0, hi = out_width
    while lo < hi and lo * stride + offset < 0:
        lo += 1
    while hi > lo and (hi - 1) * stride + offset >= in_width:
        hi -= 1
    first[0] = lo
    stop[0] = hi


cdef inline void _tap_range(Py_ssize_t lowest_start, Py_ssize_t highest_start,
                            Py_ssize_t dilation, Py_ssize_t kernel, Py_ssize_t size,
                            Py_ssize_t* first, Py_ssize_t* stop) noexcept nogil:
    """[first, stop) = the taps t in [0, kernel) with start + t*dilation inside [0, size) for
    some window start in [lowest_start, highest_start].

    Only these taps are visited: a window that is mostly padding (a huge kernel over a small
    input) then costs what its in-bounds taps cost, as in PyTorch.
    """
    cdef Py_ssize_t lo = 0, hi = kernel, last
    if highest_start < 0:
        lo = (-highest_start + dilation - 1) // dilation
    last = size - 1 - lowest_start  # the largest t*dilation that still lands inside
    if last < 0:
        hi = 0
    elif last // dilation + 1 < hi:
        hi = last // dilation + 1
    if lo > hi:
        lo = hi
    first[0] = lo
    stop[0] = hi


cdef inline Py_ssize_t _first_tap(Py_ssize_t start, Py_ssize_t dilation) noexcept nogil:
    """The first tap start + j*dilation (j >= 0) that is >= 0."""
    if start >= 0:
        return start
    return start + ((dilation - 1 - start) // dilation) * dilation


cdef inline void _max_strided(floating* out_row, const floating* x_row, Py_ssize_t first,
                              Py_ssize_t stop, Py_ssize_t stride,
                              Py_ssize_t offset) noexcept nogil:
    """out[j] = x[j*stride + offset] where that beats out[j] (is greater, or NaN)."""
    cdef Py_ssize_t ow
    cdef floating value, current
    for ow in range(first, stop):
        value = x_row[ow * stride + offset]
        current = out_row[ow]
        # PyTorch's `val > max || isnan(val)`: a NaN wins and then stays. A select on `|`,
        # not a branch, so that the loop vectorises.
        out_row[ow] = value if (value > current) | (value != value) else current


cdef inline void _max_index_strided(floating* out_row, int32_t* position,
                                    const floating* x_row, Py_ssize_t first, Py_ssize_t stop,
                                    Py_ssize_t stride, Py_ssize_t offset,
                                    int32_t row_offset) noexcept nogil:
    """As _max_strided, and position[j] = row_offset + j*stride where x wins."""
    cdef Py_ssize_t ow
    cdef floating value, current
    cdef bint take
    for ow in range(first, stop):
        value = x_row[ow * stride + offset]
        current = out_row[ow]
        # Strictly greater keeps the first of equal maxima in scan order; a NaN always
        # replaces, so the last NaN is the one reported (both as PyTorch).
        take = (value > current) | (value != value)
        out_row[ow] = value if take else current
        position[ow] = row_offset + <int32_t>ow * <int32_t>stride if take else position[ow]


cdef inline void _sum_strided(floating* out_row, const floating* x_row, Py_ssize_t first,
                              Py_ssize_t stop, Py_ssize_t stride,
                              Py_ssize_t offset) noexcept nogil:
    """out[j] += x[j*stride + offset] for j in [first, stop)."""
    cdef Py_ssize_t ow
    for ow in range(first, stop):
        out_row[ow] += x_row[ow * stride + offset]


cdef inline void _scatter_strided(floating* grad_input_row, const floating* delta,
                                  Py_ssize_t first, Py_ssize_t stop, Py_ssize_t stride,
                                  Py_ssize_t offset) noexcept nogil:
    """gx[j*stride + offset] += delta[j] for j in [first, stop)."""
    cdef Py_ssize_t ow
    for ow in range(first, stop):
        grad_input_row[ow * stride + offset] += delta[ow]


# Each *_row function below runs its *_strided loop with a literal stride where that pays:
# the compiler then emits contiguous (stride 1) or de-interleaved (stride 2) vector loads and
# stores instead of element-by-element ones. Measured on (16, 64, 56, 56) float32, k3 p1:
# stride 1 makes the average pool 1.4x and its backward 3x faster, stride 2 the backward
# 1.7x; for the max rows a literal 2 was slower (its vector select costs more than the
# gather it saves), so they take only stride 1 as a constant.

cdef inline void _max_row(floating* out_row, const floating* x_row, Py_ssize_t first,
                          Py_ssize_t stop, Py_ssize_t stride, Py_ssize_t offset) noexcept nogil:
    """_max_strided with stride 1 compiled as a constant."""
    if stride == 1:
        _max_strided(out_row, x_row, first, stop, 1, offset)
    else:
        _max_strided(out_row, x_row, first, stop, stride, offset)


cdef inline void _max_index_row(floating* out_row, int32_t* position, const floating* x_row,
                                Py_ssize_t first, Py_ssize_t stop, Py_ssize_t stride,
                                Py_ssize_t offset, int32_t row_offset) noexcept nogil:
    """_max_index_strided with stride 1 compiled as a constant."""
    if stride == 1:
        _max_index_strided(out_row, position, x_row, first, stop, 1, offset, row_offset)
    else:
        _max_index_strided(out_row, position, x_row, first, stop, stride, offset, row_offset)


cdef inline void _sum_row(floating* out_row, const floating* x_row, Py_ssize_t first,
                          Py_ssize_t stop, Py_ssize_t stride, Py_ssize_t offset) noexcept nogil:
    """_sum_strided with strides 1 and 2 compiled as constants."""
    if stride == 1:
        _sum_strided(out_row, x_row, first, stop, 1, offset)
    elif stride == 2:
        _sum_strided(out_row, x_row, first, stop, 2, offset)
    else:
        _sum_strided(out_row, x_row, first, stop, stride, offset)


cdef inline void _scatter_row(floating* grad_input_row, const floating* delta, Py_ssize_t first,
                              Py_ssize_t stop, Py_ssize_t stride,
                              Py_ssize_t offset) noexcept nogil:
    """_scatter_strided with strides 1 and 2 compiled as constants."""
    if stride == 1:
        _scatter_strided(grad_input_row, delta, first, stop, 1, offset)
    elif stride == 2:
        _scatter_strided(grad_input_row, delta, first, stop, 2, offset)
    else:
        _scatter_strided(grad_input_row, delta, first, stop, stride, offset)


cdef void _avg_column_factors(floating* column_factor, Py_ssize_t in_width,
                              Py_ssize_t out_width, Py_ssize_t kernel_w, Py_ssize_t stride_w,
                              Py_ssize_t pad_left, Py_ssize_t pad_right, bint count_include_pad,
                              Py_ssize_t divisor_override) noexcept nogil:
    """column_factor[j] = the width part of PyTorch's divisor for output column j."""
    cdef Py_ssize_t ow, start_w, end_w
    for ow in range(out_width):
        start_w = ow * stride_w - pad_left
        # The window clipped to the padded input [-pad_left, in_width + pad_right): under
        # ceil_mode the last window can run past it and then counts fewer elements.
        end_w = min(start_w + kernel_w, in_width + pad_right)
        if divisor_override != 0:
            column_factor[ow] = <floating>divisor_override
        elif count_include_pad:
            column_factor[ow] = <floating>(end_w - start_w)
        else:
            column_factor[ow] = <floating>(min(end_w, in_width) - max(start_w, <Py_ssize_t>0))


cdef inline Py_ssize_t _avg_row_factor(Py_ssize_t start_h, Py_ssize_t end_h,
                                       Py_ssize_t first_h, Py_ssize_t stop_h,
                                       bint count_include_pad,
                                       Py_ssize_t divisor_override) noexcept nogil:
    """The height part of PyTorch's divisor for the window rows [start_h, end_h)."""
    if divisor_override != 0:
        return 1  # the whole override sits in the column factor
    if count_include_pad:
        return end_h - start_h
    return stop_h - first_h


# ------------------------------------------------------------------------------------------
# max pooling

cdef void _max_pool_plane(const floating* x_plane, floating* out_plane,
                          Py_ssize_t in_height, Py_ssize_t in_width,
                          Py_ssize_t out_height, Py_ssize_t out_width,
                          Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                          Py_ssize_t stride_h, Py_ssize_t stride_w,
                          Py_ssize_t pad_top, Py_ssize_t pad_left,
                          Py_ssize_t dilation_h, Py_ssize_t dilation_w) noexcept nogil:
    """y[i,j] = max_p,q x[i*s_h - pad_t + p*d_h, j*s_w - pad_l + q*d_w] over in-bounds taps."""
    cdef Py_ssize_t oh, ow, tap_h, tap_w, ih, offset, first, stop
    cdef const floating* x_row
    cdef floating* out_row
    cdef Py_ssize_t tap_h_first, tap_h_stop, tap_w_first, tap_w_stop
    _tap_range(-pad_left, (out_width - 1) * stride_w - pad_left, dilation_w, kernel_w, in_width,
               &tap_w_first, &tap_w_stop)
    for oh in range(out_height):
        out_row = out_plane + oh * out_width
        for ow in range(out_width):
            out_row[ow] = -INFINITY  # the implicit padding
        _tap_range(oh * stride_h - pad_top, oh * stride_h - pad_top, dilation_h, kernel_h,
                   in_height, &tap_h_first, &tap_h_stop)
        for tap_h in range(tap_h_first, tap_h_stop):
            ih = oh * stride_h - pad_top + tap_h * dilation_h
            x_row = x_plane + ih * in_width
            for tap_w in range(tap_w_first, tap_w_stop):
                offset = tap_w * dilation_w - pad_left
                _column_range(offset, stride_w, in_width, out_width, &first, &stop)
                _max_row(out_row, x_row, first, stop, stride_w, offset)


cdef void _max_pool_indices_plane(const floating* x_plane, floating* out_plane,
                                  int64_t* indices_plane, int32_t* position,
                                  Py_ssize_t in_height, Py_ssize_t in_width,
                                  Py_ssize_t out_height, Py_ssize_t out_width,
                                  Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                                  Py_ssize_t stride_h, Py_ssize_t stride_w,
                                  Py_ssize_t pad_top, Py_ssize_t pad_left,
                                  Py_ssize_t dilation_h, Py_ssize_t dilation_w) noexcept nogil:
    """y as _max_pool_plane; idx[i,j] = ih*W + iw of its first max (last NaN) in scan order."""
    cdef Py_ssize_t oh, ow, tap_h, tap_w, ih, offset, first, stop, first_row
    cdef int32_t row_offset
    cdef const floating* x_row
    cdef floating* out_row
    cdef int64_t* indices_row
    cdef Py_ssize_t tap_h_first, tap_h_stop, tap_w_first, tap_w_stop
    _tap_range(-pad_left, (out_width - 1) * stride_w - pad_left, dilation_w, kernel_w, in_width,
               &tap_w_first, &tap_w_stop)
    for oh in range(out_height):
        out_row = out_plane + oh * out_width
        for ow in range(out_width):
            out_row[ow] = -INFINITY
            position[ow] = -1  # nothing has beaten the -inf padding yet
        _tap_range(oh * stride_h - pad_top, oh * stride_h - pad_top, dilation_h, kernel_h,
                   in_height, &tap_h_first, &tap_h_stop)
        for tap_h in range(tap_h_first, tap_h_stop):
            ih = oh * stride_h - pad_top + tap_h * dilation_h
            x_row = x_plane + ih * in_width
            for tap_w in range(tap_w_first, tap_w_stop):
                offset = tap_w * dilation_w - pad_left
                _column_range(offset, stride_w, in_width, out_width, &first, &stop)
                # Positions are tracked in int32 (the wrapper caps a plane at 2**31 - 1
                # elements), so that values and positions vectorise in lanes of the same width.
                row_offset = <int32_t>(ih * in_width + offset)
                _max_index_row(out_row, position, x_row, first, stop, stride_w, offset,
                               row_offset)
        indices_row = indices_plane + oh * out_width
        # PyTorch starts each window at (-inf, its first in-bounds tap), so a window that never
        # beat -inf reports its first tap; when dilation steps over the whole input that tap
        # lies outside it, and PyTorch reports it anyway.
        first_row = _first_tap(oh * stride_h - pad_top, dilation_h)
        for ow in range(out_width):
            if position[ow] >= 0:
                indices_row[ow] = position[ow]
            else:
                indices_row[ow] = first_row * in_width + _first_tap(ow * stride_w - pad_left,
                                                                     dilation_w)


def max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_top, Py_ssize_t pad_left,
                       Py_ssize_t dilation_h, Py_ssize_t dilation_w, int num_threads):
    """out[n,c,i,j] = max_p,q x[n,c,i*s_h-pad_t+p*d_h, j*s_w-pad_l+q*d_w] (padding is -inf)."""
    cdef Py_ssize_t channels = x.shape[1], planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t plane, n, c
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            _max_pool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0],
                            x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                            kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                            dilation_h, dilation_w)


def max_pool2d_forward_indices(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                               int64_t[:, :, :, ::1] indices, int32_t[:, ::1] position,
                               Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                               Py_ssize_t stride_h, Py_ssize_t stride_w,
                               Py_ssize_t pad_top, Py_ssize_t pad_left,
                               Py_ssize_t dilation_h, Py_ssize_t dilation_w, int num_threads):
    """As max_pool2d_forward, and indices[n,c,i,j] = ih*W + iw of the chosen element.

    ``position`` is (num_threads, out_width) scratch: one row of int32 positions per thread.
    """
    cdef Py_ssize_t channels = x.shape[1], planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t plane, n, c
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            _max_pool_indices_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &indices[n, c, 0, 0],
                                    &position[omp_get_thread_num(), 0],
                                    x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                    kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                                    dilation_h, dilation_w)


def max_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                        const int64_t[:, :, :, ::1] indices,
                        floating[:, :, :, ::1] grad_input, int num_threads):
    """grad_input[n,c].flat[indices[n,c,i,j]] += grad_output[n,c,i,j], in (i, j) order.

    Returns how many indices fall outside [0, plane size): those are skipped, and the wrapper
    raises when there are any (checking them here, where they are read anyway, spares it two
    passes over the indices: a quarter of the time of a small pooling backward).
    """
    cdef Py_ssize_t channels = grad_input.shape[1]
    cdef Py_ssize_t planes = grad_input.shape[0] * grad_input.shape[1]
    cdef Py_ssize_t plane_size = grad_input.shape[2] * grad_input.shape[3]
    cdef Py_ssize_t out_size = grad_output.shape[2] * grad_output.shape[3]
    cdef Py_ssize_t plane, n, c, o, bad = 0
    cdef int64_t index
    cdef const floating* grad_output_plane
    cdef const int64_t* indices_plane
    cdef floating* grad_input_plane
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            grad_output_plane = &grad_output[n, c, 0, 0]
            indices_plane = &indices[n, c, 0, 0]
            grad_input_plane = &grad_input[n, c, 0, 0]
            # Zeroed here rather than by np.zeros so that each thread first touches its planes.
            memset(grad_input_plane, 0, plane_size * sizeof(floating))
            for o in range(out_size):
                index = indices_plane[o]
                if 0 <= index < plane_size:
                    grad_input_plane[index] += grad_output_plane[o]
                else:
                    bad += 1
    return bad


# ------------------------------------------------------------------------------------------
# average pooling

cdef void _avg_pool_plane(const floating* x_plane, floating* out_plane,
                          const floating* column_factor,
                          Py_ssize_t in_height, Py_ssize_t in_width,
                          Py_ssize_t out_height, Py_ssize_t out_width,
                          Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                          Py_ssize_t stride_h, Py_ssize_t stride_w,
                          Py_ssize_t pad_top, Py_ssize_t pad_bottom, Py_ssize_t pad_left,
                          bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    """y[i,j] = (sum of x over window (i,j), clipped to the input) / (row factor * col factor)."""
    cdef Py_ssize_t oh, ow, tap_w, ih, start_h, end_h, first_h, stop_h, offset, first, stop
    cdef floating row_factor
    cdef const floating* x_row
    cdef floating* out_row
    cdef Py_ssize_t tap_w_first, tap_w_stop
    _tap_range(-pad_left, (out_width - 1) * stride_w - pad_left, 1, kernel_w, in_width,
               &tap_w_first, &tap_w_stop)
    for oh in range(out_height):
        out_row = out_plane + oh * out_width
        start_h = oh * stride_h - pad_top
        end_h = min(start_h + kernel_h, in_height + pad_bottom)
        first_h = max(start_h, <Py_ssize_t>0)
        stop_h = min(end_h, in_height)
        for ow in range(out_width):
            out_row[ow] = 0
        # Summed from 0 in row-major tap order in the input's own type, as PyTorch does.
        for ih in range(first_h, stop_h):
            x_row = x_plane + ih * in_width
            for tap_w in range(tap_w_first, tap_w_stop):
                offset = tap_w - pad_left
                _column_range(offset, stride_w, in_width, out_width, &first, &stop)
                _sum_row(out_row, x_row, first, stop, stride_w, offset)
        row_factor = <floating>_avg_row_factor(start_h, end_h, first_h, stop_h,
                                               count_include_pad, divisor_override)
        # Both factors are exact small integers, so their product rounds exactly as PyTorch's
        # integer divisor converted to floating point; dividing (not multiplying by a
        # reciprocal) then rounds the result as PyTorch does. The wrapper's limits (padding
        # <= kernel/2, last window starting inside the input) keep every divisor nonzero.
        for ow in range(out_width):
            out_row[ow] = out_row[ow] / (row_factor * column_factor[ow])


cdef void _avg_pool_backward_plane(const floating* grad_output_plane,
                                   floating* grad_input_plane, const floating* column_factor,
                                   floating* delta,
                                   Py_ssize_t in_height, Py_ssize_t in_width,
                                   Py_ssize_t out_height, Py_ssize_t out_width,
                                   Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                                   Py_ssize_t stride_h, Py_ssize_t stride_w,
                                   Py_ssize_t pad_top, Py_ssize_t pad_bottom,
                                   Py_ssize_t pad_left, bint count_include_pad,
                                   Py_ssize_t divisor_override) noexcept nogil:
    """gx[ih,iw] = sum over windows (i,j) holding (ih,iw) of gy[i,j] / divisor[i,j]."""
    cdef Py_ssize_t oh, ow, tap_w, ih, start_h, end_h, first_h, stop_h, offset, first, stop
    cdef floating row_factor
    cdef const floating* grad_output_row
    cdef floating* grad_input_row
    cdef Py_ssize_t tap_w_first, tap_w_stop
    _tap_range(-pad_left, (out_width - 1) * stride_w - pad_left, 1, kernel_w, in_width,
               &tap_w_first, &tap_w_stop)
    memset(grad_input_plane, 0, in_height * in_width * sizeof(floating))
    for oh in range(out_height):
        grad_output_row = grad_output_plane + oh * out_width
        start_h = oh * stride_h - pad_top
        end_h = min(start_h + kernel_h, in_height + pad_bottom)
        first_h = max(start_h, <Py_ssize_t>0)
        stop_h = min(end_h, in_height)
        row_factor = <floating>_avg_row_factor(start_h, end_h, first_h, stop_h,
                                               count_include_pad, divisor_override)
        # One division per output element, then only additions in the scatter below.
        for ow in range(out_width):
            delta[ow] = grad_output_row[ow] / (row_factor * column_factor[ow])
        for ih in range(first_h, stop_h):
            grad_input_row = grad_input_plane + ih * in_width
            for tap_w in range(tap_w_first, tap_w_stop):
                offset = tap_w - pad_left
                _column_range(offset, stride_w, in_width, out_width, &first, &stop)
                _scatter_row(grad_input_row, delta, first, stop, stride_w, offset)


def avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       floating[::1] column_factor,
                       Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_top, Py_ssize_t pad_bottom,
                       Py_ssize_t pad_left, Py_ssize_t pad_right,
                       bint count_include_pad, Py_ssize_t divisor_override, int num_threads):
    """out[n,c,i,j] = sum_p,q x[n,c,i*s_h-pad_t+p, j*s_w-pad_l+q] (in bounds) / divisor[i,j].

    ``divisor_override`` 0 means none: the divisor is then the window clipped to the padded
    input (count_include_pad) or to the input. ``column_factor`` is (out_width,) scratch.
    """
    cdef Py_ssize_t channels = x.shape[1], planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t plane, n, c
    with nogil:
        # The same for every row and plane, so computed once here.
        _avg_column_factors(&column_factor[0], x.shape[3], out.shape[3], kernel_w, stride_w,
                            pad_left, pad_right, count_include_pad, divisor_override)
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            _avg_pool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &column_factor[0],
                            x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                            kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_bottom,
                            pad_left, count_include_pad, divisor_override)


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                        floating[:, :, :, ::1] grad_input, floating[::1] column_factor,
                        floating[:, ::1] delta,
                        Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                        Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_top, Py_ssize_t pad_bottom,
                        Py_ssize_t pad_left, Py_ssize_t pad_right,
                        bint count_include_pad, Py_ssize_t divisor_override, int num_threads):
    """grad_input[n,c,ih,iw] = sum over windows (i,j) holding (ih,iw) of gy[n,c,i,j] / divisor.

    Scratch: ``column_factor`` is (out_width,); ``delta`` is (num_threads, out_width), one row
    of per-output quotients for each thread.
    """
    cdef Py_ssize_t channels = grad_input.shape[1]
    cdef Py_ssize_t planes = grad_input.shape[0] * grad_input.shape[1]
    cdef Py_ssize_t plane, n, c
    with nogil:
        _avg_column_factors(&column_factor[0], grad_input.shape[3], grad_output.shape[3],
                            kernel_w, stride_w, pad_left, pad_right, count_include_pad,
                            divisor_override)
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            _avg_pool_backward_plane(&grad_output[n, c, 0, 0], &grad_input[n, c, 0, 0],
                                     &column_factor[0], &delta[omp_get_thread_num(), 0],
                                     grad_input.shape[2], grad_input.shape[3],
                                     grad_output.shape[2], grad_output.shape[3],
                                     kernel_h, kernel_w, stride_h, stride_w,
                                     pad_top, pad_bottom, pad_left, count_include_pad,
                                     divisor_override)
