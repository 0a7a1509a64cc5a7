# ---- depthwise convolution (groups == C_in, one input channel per group) -------------------
# A GEMM per group would be a matrix-vector product with k = kH*kW: all overhead. The direct
# kernels are C (src/_depthwise.h, bodies in src/_depthwise_impl.h): each output row is built
# one kernel row at a time, the columns whose taps all land inside the input in one branch-free
# loop specialised for the common widths and strides (it vectorises across the row), the few
# border columns one by one. An AVX2 version is chosen at import when the CPU has it; every
# version gives the same bits (no FMA, fixed reduction lanes).

cdef extern from "_depthwise.h" nogil:
    ctypedef struct fc_dw_geometry:
        Py_ssize_t in_h, in_w, out_h, out_w
        Py_ssize_t kernel_h, kernel_w, stride_h, stride_w
        Py_ssize_t pad_top, pad_left, dil_h, dil_w
    void fc_dw_forward_plane_float(const float* x, const float* w, float bias, float* y,
                                   const fc_dw_geometry* g, float* scratch,
                                   Py_ssize_t scratch_len)
    void fc_dw_forward_plane_double(const double* x, const double* w, double bias, double* y,
                                    const fc_dw_geometry* g, double* scratch,
                                    Py_ssize_t scratch_len)
    void fc_dw_grad_input_plane_float(const float* gy, const float* w, Py_ssize_t multiplier,
                                      float* gx, const fc_dw_geometry* g, float* scratch,
                                      Py_ssize_t scratch_len)
    void fc_dw_grad_input_plane_double(const double* gy, const double* w, Py_ssize_t multiplier,
                                       double* gx, const fc_dw_geometry* g, double* scratch,
                                       Py_ssize_t scratch_len)
    void fc_dw_grad_weight_channel_float(const float* gy, Py_ssize_t gy_batch_stride,
                                         const float* x, Py_ssize_t x_batch_stride,
                                         Py_ssize_t batch, float* gw, const fc_dw_geometry* g,
                                         float* scratch, Py_ssize_t scratch_len, double* lanes)
    void fc_dw_grad_weight_channel_double(const double* gy, Py_ssize_t gy_batch_stride,
                                          const double* x, Py_ssize_t x_batch_stride,
                                          Py_ssize_t batch, double* gw, const fc_dw_geometry* g,
                                          double* scratch, Py_ssize_t scratch_len,
                                          double* lanes)
    int fc_dw_best_level()
    int fc_dw_select(int level)
    const char* fc_dw_name()
    Py_ssize_t fc_dw_scratch_size(const fc_dw_geometry* g, Py_ssize_t multiplier)
    Py_ssize_t fc_dw_lanes_size(const fc_dw_geometry* g)


fc_dw_select(fc_dw_best_level())


cdef fc_dw_geometry depthwise_geometry(object geometry):
    cdef Geometry geo = make_geometry(geometry)
    cdef fc_dw_geometry g
    g.in_h = geo.in_h
    g.in_w = geo.in_w
    g.out_h = geo.out_h
    g.out_w = geo.out_w
    g.kernel_h = geo.kernel_h
    g.kernel_w = geo.kernel_w
    g.stride_h = geo.stride_h
    g.stride_w = geo.stride_w
    g.pad_top = geo.pad_top
    g.pad_left = geo.pad_left
    g.dil_h = geo.dil_h
    g.dil_w = geo.dil_w
    return g


def depthwise_versions():
    """Names of the kernel versions ISA allows, baseline first, the import's choice last."""
    cdef int level, best = fc_dw_best_level()
    cdef const char* current = fc_dw_name()
    names = []
    for level in range(best + 1):
        fc_dw_select(level)
        names.append(fc_dw_name().decode())
    fc_dw_select(names.index(current.decode()))  # the version in use stays
    return names


def depthwise_version():
    """Name of the kernel version in use ('generic' or 'avx2')."""
    return fc_dw_name().decode()


def use_depthwise_version(str name):
    """Switch to the named version (tests compare them); returns the previous name.

    Not for use while another thread runs a depthwise kernel."""
    previous = depthwise_version()
    names = depthwise_versions()
    fc_dw_select(names.index(name))
    return previous


def depthwise_workspace_sizes(object geometry, Py_ssize_t multiplier):
    """(scratch, lanes): elements each thread needs, of the array's dtype and of float64."""
    cdef fc_dw_geometry g = depthwise_geometry(geometry)
    return fc_dw_scratch_size(&g, multiplier), fc_dw_lanes_size(&g)


def depthwise_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                      const floating[::1] bias, floating[:, :, :, ::1] out,
                      floating[:, ::1] workspace, object geometry, int num_threads,
                      bint relu=False):
    """y[n,o,i,j] = b[o] + sum_{p,q} x[n, o // m, i*s+p*d-pad, j*s+q*d-pad] * w[o,0,p,q],
    m = C_out / C_in; taps in (p, q) order, the bias last. One output plane per work item;
    ``relu``: each plane ReLU'd (src/_epilogue.h) as soon as it is computed, still in cache."""
    cdef fc_dw_geometry g = depthwise_geometry(geometry)
    cdef Py_ssize_t batch = out.shape[0], out_channels = out.shape[1]
    cdef Py_ssize_t multiplier = out_channels // x.shape[1]
    cdef bint has_bias = bias is not None
    cdef Py_ssize_t scratch_len = workspace.shape[1]
    cdef Py_ssize_t plane, n, o
    cdef floating* scratch = NULL
    with nogil, parallel(num_threads=num_threads):
        scratch = &workspace[threadid(), 0]
        for plane in prange(batch * out_channels, schedule="static"):
            n = plane // out_channels
            o = plane % out_channels
            if floating is float:
                fc_dw_forward_plane_float(&x[n, o // multiplier, 0, 0], &weight[o, 0, 0, 0],
                                          bias[o] if has_bias else 0, &out[n, o, 0, 0], &g,
                                          scratch, scratch_len)
            else:
                fc_dw_forward_plane_double(&x[n, o // multiplier, 0, 0], &weight[o, 0, 0, 0],
                                           bias[o] if has_bias else 0, &out[n, o, 0, 0], &g,
                                           scratch, scratch_len)
            if relu:
                relu_rows(&out[n, o, 0, 0], 1, out.shape[2] * out.shape[3],
                          out.shape[2] * out.shape[3])


def depthwise_grad_input(const floating[:, :, :, ::1] grad_output,
                         const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                         floating[:, ::1] workspace, object geometry, int num_threads):
    """Depthwise gx, overwritten: one input plane per work item (its m output channels in
    order, m = C_out / C_in), in the thread's workspace row."""
    cdef fc_dw_geometry g = depthwise_geometry(geometry)
    cdef Py_ssize_t batch = grad_output.shape[0], in_channels = grad_input.shape[1]
    cdef Py_ssize_t multiplier = grad_output.shape[1] // in_channels
    cdef Py_ssize_t scratch_len = workspace.shape[1]
    cdef Py_ssize_t plane, n, c
    cdef floating* scratch = NULL
    with nogil, parallel(num_threads=num_threads):
        scratch = &workspace[threadid(), 0]
        for plane in prange(batch * in_channels, schedule="static"):
            n = plane // in_channels
            c = plane % in_channels
            if floating is float:
                fc_dw_grad_input_plane_float(
                    &grad_output[n, c * multiplier, 0, 0], &weight[c * multiplier, 0, 0, 0],
                    multiplier, &grad_input[n, c, 0, 0], &g, scratch, scratch_len)
            else:
                fc_dw_grad_input_plane_double(
                    &grad_output[n, c * multiplier, 0, 0], &weight[c * multiplier, 0, 0, 0],
                    multiplier, &grad_input[n, c, 0, 0], &g, scratch, scratch_len)


def depthwise_grad_weight(const floating[:, :, :, ::1] grad_output,
                          const floating[:, :, :, ::1] x, floating[:, :, :, ::1] grad_weight,
                          floating[:, ::1] workspace, double[:, ::1] lane_workspace,
                          object geometry, int num_threads):
    """Depthwise gw: one output channel per work item, the batch in order, in the thread's
    workspace rows (float64 lanes): sums whose order never depends on the thread count. N >= 1.
    """
    cdef fc_dw_geometry g = depthwise_geometry(geometry)
    cdef Py_ssize_t batch = grad_output.shape[0], out_channels = grad_output.shape[1]
    cdef Py_ssize_t in_channels = x.shape[1]
    cdef Py_ssize_t multiplier = out_channels // in_channels
    cdef Py_ssize_t gy_batch = out_channels * g.out_h * g.out_w
    cdef Py_ssize_t x_batch = in_channels * x.shape[2] * x.shape[3]
    cdef Py_ssize_t o
    cdef Py_ssize_t scratch_len = workspace.shape[1]
    cdef floating* scratch = NULL
    cdef double* lanes = NULL
    with nogil, parallel(num_threads=num_threads):
        scratch = &workspace[threadid(), 0]
        lanes = &lane_workspace[threadid(), 0]
        for o in prange(out_channels, schedule="static"):
            if floating is float:
                fc_dw_grad_weight_channel_float(
                    &grad_output[0, o, 0, 0], gy_batch, &x[0, o // multiplier, 0, 0], x_batch,
                    batch, &grad_weight[o, 0, 0, 0], &g, scratch, scratch_len, lanes)
            else:
                fc_dw_grad_weight_channel_double(
                    &grad_output[0, o, 0, 0], gy_batch, &x[0, o // multiplier, 0, 0], x_batch,
                    batch, &grad_weight[o, 0, 0, 0], &g, scratch, scratch_len, lanes)
