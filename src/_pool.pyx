"""Pooling kernels: max and average pooling over NCHW planes, forward and backward.

The general kernels run one (n, c) plane per iteration of a ``prange`` over the N*C planes,
so a batch of one still keeps every thread busy, and each plane is computed by exactly one
thread in a fixed order: results are bit-identical whatever the thread count. The 2x2
stride-2 kernels (``*_2x2``) run the output rows of all planes as one sequence instead, each
thread a contiguous run of rows, since their rows are too short to pay any per-row set-up.

Inside a plane the loops run, for one output row, over the kernel taps (row, then column) and
innermost over the output columns. For one output element the taps are therefore visited in
the same row-major order as PyTorch's per-window loop (which decides ties, NaN and the order
of the average's sum), while the innermost loop is long, branch-light and vectorised. At
stride 1 across the width the average keeps each window's sum in vector registers, and its
backward gathers each input element's quotients in the order the scatter would add them
(src/_pool_impl.h): the same bits, one store per element.

At stride 1 both ways the ``*_box`` kernels (the 'box' path of ``fastconv/pool.py``) read
every window from a per-thread ring of zero-padded rows instead, the borders included: the
zeros they add change no bit, so their results are the general kernels'.

The loops themselves are C (``src/_pool.h``, ``src/_pool_impl.h``), built for plain C and
AVX2 (AVX-512 CPUs run the AVX2 build, which measured faster here); ``ISA`` names the build in
use (FASTCONV_ISA caps it). The wrappers in ``fastconv/pool.py`` validate every argument;
nothing here raises.
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset

from _openmp_helpers cimport omp_get_thread_num
from _types cimport floating


cdef extern from "_pool.h" nogil:
    ctypedef struct fc_pool_geometry:
        Py_ssize_t in_h, in_w, out_h, out_w
        Py_ssize_t k_h, k_w, s_h, s_w, d_h, d_w
        Py_ssize_t pad_t, pad_b, pad_l, pad_r
        int count_include_pad
        Py_ssize_t divisor_override

    ctypedef struct fc_pool_kernels_float:
        void (*max_plane)(const float*, float*, const fc_pool_geometry*) noexcept nogil
        void (*max_indices_plane)(const float*, float*, int64_t*, int32_t*,
                                  const fc_pool_geometry*) noexcept nogil
        void (*avg_plane)(const float*, float*, const float*,
                          const fc_pool_geometry*) noexcept nogil
        void (*avg_backward_plane)(const float*, float*, const float*, float*,
                                   const fc_pool_geometry*) noexcept nogil
        void (*max2x2_rows)(const float*, float*, int64_t*, Py_ssize_t, Py_ssize_t,
                            const fc_pool_geometry*) noexcept nogil
        void (*avg2x2_rows)(const float*, float*, float, Py_ssize_t, Py_ssize_t,
                            const fc_pool_geometry*) noexcept nogil
        void (*avg2x2_backward_rows)(const float*, float*, float, Py_ssize_t, Py_ssize_t,
                                     const fc_pool_geometry*) noexcept nogil
        void (*avg_box_plane)(const float*, float*, const float*, float*, Py_ssize_t,
                              const fc_pool_geometry*) noexcept nogil
        void (*avg_box_backward_plane)(const float*, float*, const float*, float*, Py_ssize_t,
                                       const fc_pool_geometry*) noexcept nogil
        int (*max2x2_backward_plane)(const float*, const int64_t*, float*, Py_ssize_t,
                                     Py_ssize_t) noexcept nogil

    ctypedef struct fc_pool_kernels_double:
        void (*max_plane)(const double*, double*, const fc_pool_geometry*) noexcept nogil
        void (*max_indices_plane)(const double*, double*, int64_t*, int32_t*,
                                  const fc_pool_geometry*) noexcept nogil
        void (*avg_plane)(const double*, double*, const double*,
                          const fc_pool_geometry*) noexcept nogil
        void (*avg_backward_plane)(const double*, double*, const double*, double*,
                                   const fc_pool_geometry*) noexcept nogil
        void (*max2x2_rows)(const double*, double*, int64_t*, Py_ssize_t, Py_ssize_t,
                            const fc_pool_geometry*) noexcept nogil
        void (*avg2x2_rows)(const double*, double*, double, Py_ssize_t, Py_ssize_t,
                            const fc_pool_geometry*) noexcept nogil
        void (*avg2x2_backward_rows)(const double*, double*, double, Py_ssize_t, Py_ssize_t,
                                     const fc_pool_geometry*) noexcept nogil
        void (*avg_box_plane)(const double*, double*, const double*, double*, Py_ssize_t,
                              const fc_pool_geometry*) noexcept nogil
        void (*avg_box_backward_plane)(const double*, double*, const double*, double*, Py_ssize_t,
                                       const fc_pool_geometry*) noexcept nogil
        int (*max2x2_backward_plane)(const double*, const int64_t*, double*, Py_ssize_t,
                                     Py_ssize_t) noexcept nogil

    fc_pool_kernels_float fc_pool_float
    fc_pool_kernels_double fc_pool_double
    int fc_pool_select()
    const char* fc_cpu_isa_name(int level)
    void fc_pool_column_factors_float(float* column_factor, const fc_pool_geometry* g)
    void fc_pool_column_factors_double(double* column_factor, const fc_pool_geometry* g)
    int FC_POOL_BOX_MAX_ROWS


ISA = fc_cpu_isa_name(fc_pool_select()).decode("ascii")  # the build every kernel here runs
BOX_MAX_ROWS = FC_POOL_BOX_MAX_ROWS  # the tallest window the 'box' kernels take


cdef fc_pool_geometry _geometry(Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t out_h,
                                Py_ssize_t out_w, Py_ssize_t k_h, Py_ssize_t k_w,
                                Py_ssize_t s_h, Py_ssize_t s_w, Py_ssize_t pad_t,
                                Py_ssize_t pad_b, Py_ssize_t pad_l, Py_ssize_t pad_r,
                                Py_ssize_t d_h, Py_ssize_t d_w, bint count_include_pad,
                                Py_ssize_t divisor_override) noexcept:
    cdef fc_pool_geometry g
    g.in_h, g.in_w, g.out_h, g.out_w = in_h, in_w, out_h, out_w
    g.k_h, g.k_w, g.s_h, g.s_w, g.d_h, g.d_w = k_h, k_w, s_h, s_w, d_h, d_w
    g.pad_t, g.pad_b, g.pad_l, g.pad_r = pad_t, pad_b, pad_l, pad_r
    g.count_include_pad = count_include_pad
    g.divisor_override = divisor_override
    return g


def max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_top, Py_ssize_t pad_left,
                       Py_ssize_t dilation_h, Py_ssize_t dilation_w, int num_threads):
    """out[n,c,i,j] = max_p,q x[n,c,i*s_h-pad_t+p*d_h, j*s_w-pad_l+q*d_w] (padding is -inf)."""
    cdef Py_ssize_t channels = x.shape[1], planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t plane, n, c
    cdef fc_pool_geometry g = _geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                        kernel_h, kernel_w, stride_h, stride_w, pad_top, 0,
                                        pad_left, 0, dilation_h, dilation_w, True, 0)
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            if floating is float:
                fc_pool_float.max_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &g)
            else:
                fc_pool_double.max_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &g)


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
    cdef fc_pool_geometry g = _geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                        kernel_h, kernel_w, stride_h, stride_w, pad_top, 0,
                                        pad_left, 0, dilation_h, dilation_w, True, 0)
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            if floating is float:
                fc_pool_float.max_indices_plane(&x[n, c, 0, 0], &out[n, c, 0, 0],
                                                &indices[n, c, 0, 0],
                                                &position[omp_get_thread_num(), 0], &g)
            else:
                fc_pool_double.max_indices_plane(&x[n, c, 0, 0], &out[n, c, 0, 0],
                                                 &indices[n, c, 0, 0],
                                                 &position[omp_get_thread_num(), 0], &g)


def max_pool2d_forward_2x2(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                           int64_t[:, :, :, ::1] indices, bint with_indices, int num_threads):
    """max_pool2d_forward(_indices) for 2x2 windows at stride 2, no padding or dilation, every
    window inside x (the wrapper checks); ``indices`` is ignored unless ``with_indices``."""
    cdef Py_ssize_t rows = x.shape[0] * x.shape[1] * out.shape[2]
    cdef Py_ssize_t first, stop, share = rows // num_threads, extra = rows % num_threads
    cdef int thread
    cdef int64_t* indices_start = NULL
    cdef fc_pool_geometry g = _geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                        2, 2, 2, 2, 0, 0, 0, 0, 1, 1, True, 0)
    if rows == 0:
        return
    if with_indices:
        indices_start = &indices[0, 0, 0, 0]
    with nogil:
        for thread in prange(num_threads, schedule='static', num_threads=num_threads):
            # thread's contiguous share of the rows (shares differ by at most one row);
            # assigned here, not through a pointer, so that prange makes them private
            first = thread * share + (thread if thread < extra else extra)
            stop = first + share + (1 if thread < extra else 0)
            if floating is float:
                fc_pool_float.max2x2_rows(&x[0, 0, 0, 0], &out[0, 0, 0, 0], indices_start,
                                          first, stop, &g)
            else:
                fc_pool_double.max2x2_rows(&x[0, 0, 0, 0], &out[0, 0, 0, 0], indices_start,
                                           first, stop, &g)


def max_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                        const int64_t[:, :, :, ::1] indices,
                        floating[:, :, :, ::1] grad_input, int num_threads):
    """grad_input[n,c].flat[indices[n,c,i,j]] += grad_output[n,c,i,j], in (i, j) order.

    Returns how many indices fall outside [0, plane size): those are skipped, and the wrapper
    raises when there are any (checking them here, where they are read anyway, spares it two
    passes over the indices: a quarter of the time of a small pooling backward).

    Planes tiled by 2x2 blocks, one per output (H = 2 H_out, W = 2 W_out), whose indices each
    lie in their own block (2x2 stride-2 windows') are written in one pass instead
    (max2x2_backward_plane: the same bits; 64x16x24x24, one thread, CPU time 0.13 -> 0.10 ms
    a call).
    """
    cdef Py_ssize_t channels = grad_input.shape[1]
    cdef Py_ssize_t planes = grad_input.shape[0] * grad_input.shape[1]
    cdef Py_ssize_t plane_size = grad_input.shape[2] * grad_input.shape[3]
    cdef Py_ssize_t out_h = grad_output.shape[2], out_w = grad_output.shape[3]
    cdef Py_ssize_t out_size = out_h * out_w
    cdef bint blocks = (grad_input.shape[2] == 2 * out_h and grad_input.shape[3] == 2 * out_w
                        and out_size > 0 and plane_size < 2 ** 31)
    cdef Py_ssize_t plane, n, c, o, bad = 0
    cdef int64_t index
    cdef int scattered
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
            if blocks:
                if floating is float:
                    scattered = fc_pool_float.max2x2_backward_plane(
                        grad_output_plane, indices_plane, grad_input_plane, out_h, out_w)
                else:
                    scattered = fc_pool_double.max2x2_backward_plane(
                        grad_output_plane, indices_plane, grad_input_plane, out_h, out_w)
                if not scattered:
                    continue
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
    cdef fc_pool_geometry g = _geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                        kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                        pad_bottom, pad_left, pad_right, 1, 1,
                                        count_include_pad, divisor_override)
    with nogil:
        # The same for every row and plane, so computed once here.
        if floating is float:
            fc_pool_column_factors_float(&column_factor[0], &g)
        else:
            fc_pool_column_factors_double(&column_factor[0], &g)
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            if floating is float:
                fc_pool_float.avg_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &column_factor[0], &g)
            else:
                fc_pool_double.avg_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &column_factor[0],
                                         &g)


def avg_pool2d_forward_2x2(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                           Py_ssize_t divisor_override, int num_threads):
    """avg_pool2d_forward for 2x2 windows at stride 2, no padding, every window inside x:
    out = (((0 + a) + b) + c) + d over the window, divided by 4 (or divisor_override)."""
    cdef Py_ssize_t rows = x.shape[0] * x.shape[1] * out.shape[2]
    cdef Py_ssize_t first, stop, share = rows // num_threads, extra = rows % num_threads
    cdef int thread
    # as the general kernel's row factor (1 with an override) times its column factor
    cdef floating divisor = (<floating>1) * (<floating>divisor_override) if divisor_override \
        else (<floating>2) * (<floating>2)
    cdef fc_pool_geometry g = _geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                        2, 2, 2, 2, 0, 0, 0, 0, 1, 1, True, divisor_override)
    if rows == 0:
        return
    with nogil:
        for thread in prange(num_threads, schedule='static', num_threads=num_threads):
            # thread's contiguous share of the rows (shares differ by at most one row);
            # assigned here, not through a pointer, so that prange makes them private
            first = thread * share + (thread if thread < extra else extra)
            stop = first + share + (1 if thread < extra else 0)
            if floating is float:
                fc_pool_float.avg2x2_rows(&x[0, 0, 0, 0], &out[0, 0, 0, 0], divisor, first,
                                          stop, &g)
            else:
                fc_pool_double.avg2x2_rows(&x[0, 0, 0, 0], &out[0, 0, 0, 0], divisor, first,
                                           stop, &g)


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                        floating[:, :, :, ::1] grad_input, floating[::1] column_factor,
                        floating[:, ::1] delta,
                        Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                        Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_top, Py_ssize_t pad_bottom,
                        Py_ssize_t pad_left, Py_ssize_t pad_right,
                        bint count_include_pad, Py_ssize_t divisor_override, int num_threads):
    """grad_input[n,c,ih,iw] = sum over windows (i,j) holding (ih,iw) of gy[n,c,i,j] / divisor.

    Scratch: ``column_factor`` is (out_width,); ``delta`` is (num_threads, >= kernel_h *
    out_width): kernel_h rows of per-output quotients for each thread.
    """
    cdef Py_ssize_t channels = grad_input.shape[1]
    cdef Py_ssize_t planes = grad_input.shape[0] * grad_input.shape[1]
    cdef Py_ssize_t plane, n, c
    cdef fc_pool_geometry g = _geometry(grad_input.shape[2], grad_input.shape[3],
                                        grad_output.shape[2], grad_output.shape[3],
                                        kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                        pad_bottom, pad_left, pad_right, 1, 1,
                                        count_include_pad, divisor_override)
    with nogil:
        if floating is float:
            fc_pool_column_factors_float(&column_factor[0], &g)
        else:
            fc_pool_column_factors_double(&column_factor[0], &g)
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            if floating is float:
                fc_pool_float.avg_backward_plane(&grad_output[n, c, 0, 0],
                                                 &grad_input[n, c, 0, 0], &column_factor[0],
                                                 &delta[omp_get_thread_num(), 0], &g)
            else:
                fc_pool_double.avg_backward_plane(&grad_output[n, c, 0, 0],
                                                  &grad_input[n, c, 0, 0], &column_factor[0],
                                                  &delta[omp_get_thread_num(), 0], &g)


def avg_pool2d_backward_2x2(const floating[:, :, :, ::1] grad_output,
                            floating[:, :, :, ::1] grad_input, Py_ssize_t divisor_override,
                            int num_threads):
    """avg_pool2d_backward for 2x2 windows at stride 2, no padding, every window inside the
    input: each element gets 0 + gy/divisor of its window; elements no window covers, 0."""
    cdef Py_ssize_t rows = grad_input.shape[0] * grad_input.shape[1] * grad_output.shape[2]
    cdef Py_ssize_t first, stop, share = rows // num_threads, extra = rows % num_threads
    cdef int thread
    cdef floating divisor = (<floating>1) * (<floating>divisor_override) if divisor_override \
        else (<floating>2) * (<floating>2)
    cdef fc_pool_geometry g = _geometry(grad_input.shape[2], grad_input.shape[3],
                                        grad_output.shape[2], grad_output.shape[3],
                                        2, 2, 2, 2, 0, 0, 0, 0, 1, 1, True, divisor_override)
    if rows == 0:
        return
    with nogil:
        for thread in prange(num_threads, schedule='static', num_threads=num_threads):
            # thread's contiguous share of the rows (shares differ by at most one row);
            # assigned here, not through a pointer, so that prange makes them private
            first = thread * share + (thread if thread < extra else extra)
            stop = first + share + (1 if thread < extra else 0)
            if floating is float:
                fc_pool_float.avg2x2_backward_rows(&grad_output[0, 0, 0, 0],
                                                   &grad_input[0, 0, 0, 0], divisor, first,
                                                   stop, &g)
            else:
                fc_pool_double.avg2x2_backward_rows(&grad_output[0, 0, 0, 0],
                                                    &grad_input[0, 0, 0, 0], divisor, first,
                                                    stop, &g)


# ------------------------------------------------------------------------------------------
# average pooling at stride 1: the box filter over zero-padded rows (src/_pool_impl.h)

# elements a box kernel may read past a row's end: the widest vector of any build (AVX2 floats)
cdef Py_ssize_t _BOX_SLACK = 16


cpdef Py_ssize_t box_ring_width(Py_ssize_t in_w, Py_ssize_t out_w, Py_ssize_t kernel_w,
                                Py_ssize_t pad_left, bint backward) noexcept:
    """Elements per row of a box kernel's ring (it holds kernel_h + 1 rows per thread): a
    padded input row (forward) or a row of quotients with kernel_w - 1 zeros before it
    (backward), and room for a whole vector past the last column."""
    if backward:
        return max(in_w, _BOX_SLACK) + pad_left + kernel_w - 1
    return max(out_w, _BOX_SLACK) + kernel_w - 1


def box_column_factors_size(Py_ssize_t out_w) -> int:
    """Elements of a box kernel's column_factor scratch."""
    return max(out_w, _BOX_SLACK)


cdef _check_box_scratch(Py_ssize_t column_factors, Py_ssize_t ring_threads,
                        Py_ssize_t ring_size, Py_ssize_t out_w, Py_ssize_t kernel_h,
                        Py_ssize_t ring_w, int num_threads):
    # the scratch is sized by fastconv/pool.py from the functions above; a mismatch is a bug
    if (column_factors < max(out_w, _BOX_SLACK) or ring_threads < num_threads
            or ring_size < (kernel_h + 1) * ring_w or not 1 <= kernel_h <= FC_POOL_BOX_MAX_ROWS):
        raise ValueError("box pooling scratch sized wrongly")


cdef void _box_column_factors(floating[::1] column_factor, Py_ssize_t out_w,
                              const fc_pool_geometry* g) noexcept nogil:
    """column_factor[:out_w] as the general kernels'; 1 beyond (vectors read them, past the
    row's end, for outputs they never store)."""
    cdef Py_ssize_t j
    if floating is float:
        fc_pool_column_factors_float(&column_factor[0], g)
    else:
        fc_pool_column_factors_double(&column_factor[0], g)
    for j in range(out_w, column_factor.shape[0]):
        column_factor[j] = 1


def avg_pool2d_forward_box(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                           floating[::1] column_factor, floating[:, ::1] ring,
                           Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                           Py_ssize_t pad_top, Py_ssize_t pad_bottom,
                           Py_ssize_t pad_left, Py_ssize_t pad_right,
                           bint count_include_pad, Py_ssize_t divisor_override, int num_threads):
    """avg_pool2d_forward at stride 1 (kernel_h <= BOX_MAX_ROWS): the same bits.

    Scratch: ``column_factor`` is (box_column_factors_size(out_width),); ``ring`` is (num_threads,
    >= (kernel_h + 1) * box_ring_width(..., backward=False)).
    """
    cdef Py_ssize_t channels = x.shape[1], planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t plane, n, c
    cdef Py_ssize_t ring_w = box_ring_width(x.shape[3], out.shape[3], kernel_w, pad_left, False)
    cdef fc_pool_geometry g = _geometry(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                                        kernel_h, kernel_w, 1, 1, pad_top, pad_bottom,
                                        pad_left, pad_right, 1, 1, count_include_pad,
                                        divisor_override)
    _check_box_scratch(column_factor.shape[0], ring.shape[0], ring.shape[1], out.shape[3],
                       kernel_h, ring_w, num_threads)
    with nogil:
        _box_column_factors(column_factor, out.shape[3], &g)
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            if floating is float:
                fc_pool_float.avg_box_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &column_factor[0],
                                            &ring[omp_get_thread_num(), 0], ring_w, &g)
            else:
                fc_pool_double.avg_box_plane(&x[n, c, 0, 0], &out[n, c, 0, 0],
                                             &column_factor[0], &ring[omp_get_thread_num(), 0],
                                             ring_w, &g)


def avg_pool2d_backward_box(const floating[:, :, :, ::1] grad_output,
                            floating[:, :, :, ::1] grad_input, floating[::1] column_factor,
                            floating[:, ::1] ring,
                            Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                            Py_ssize_t pad_top, Py_ssize_t pad_bottom,
                            Py_ssize_t pad_left, Py_ssize_t pad_right,
                            bint count_include_pad, Py_ssize_t divisor_override,
                            int num_threads):
    """avg_pool2d_backward at stride 1 (kernel_h <= BOX_MAX_ROWS): the same bits.

    Scratch: ``column_factor`` is (box_column_factors_size(out_width),); ``ring`` is (num_threads,
    >= (kernel_h + 1) * box_ring_width(..., backward=True)).
    """
    cdef Py_ssize_t channels = grad_input.shape[1]
    cdef Py_ssize_t planes = grad_input.shape[0] * grad_input.shape[1]
    cdef Py_ssize_t plane, n, c
    cdef Py_ssize_t ring_w = box_ring_width(grad_input.shape[3], grad_output.shape[3], kernel_w,
                                            pad_left, True)
    cdef fc_pool_geometry g = _geometry(grad_input.shape[2], grad_input.shape[3],
                                        grad_output.shape[2], grad_output.shape[3],
                                        kernel_h, kernel_w, 1, 1, pad_top, pad_bottom,
                                        pad_left, pad_right, 1, 1, count_include_pad,
                                        divisor_override)
    _check_box_scratch(column_factor.shape[0], ring.shape[0], ring.shape[1],
                       grad_output.shape[3], kernel_h, ring_w, num_threads)
    with nogil:
        _box_column_factors(column_factor, grad_output.shape[3], &g)
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            if floating is float:
                fc_pool_float.avg_box_backward_plane(&grad_output[n, c, 0, 0],
                                                     &grad_input[n, c, 0, 0], &column_factor[0],
                                                     &ring[omp_get_thread_num(), 0], ring_w, &g)
            else:
                fc_pool_double.avg_box_backward_plane(&grad_output[n, c, 0, 0],
                                                      &grad_input[n, c, 0, 0],
                                                      &column_factor[0],
                                                      &ring[omp_get_thread_num(), 0], ring_w,
                                                      &g)
