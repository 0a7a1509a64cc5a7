# ---- depthwise convolutions with 16 channels across the lanes (src/_direct.h, fc_dwd_*) -------
# float32, one output channel per input channel, 16k channels, AVX-512: a thread stages the
# planes of 16 channels of one sample pixel-major (with the zero padding), where each tap of 16
# outputs is one vector load, and multiplies them with FMAs. The wrapper transposes the
# weights to [block][tap][16] and back for the gradient, and sizes the stages
# (depthwise_direct_sizes).

cdef struct DwStage:
    Py_ssize_t rows, pw         # the stage's padded rows and columns
    Py_ssize_t row_step, step   # floats between output rows / neighbouring output pixels
    Py_ssize_t taps


cdef DwStage dw_stage(const Geometry* geo, Py_ssize_t* off) noexcept nogil:
    """The stage of fc_dwd_*: xs[py][px][16], py < rows (the rows the taps reach, as the
    im2col stage's), px < pw (no phase split); off[t] = tap t's offset, unless off is NULL."""
    cdef DwStage st
    cdef Py_ssize_t p, q
    st.rows = geo.st_rows
    st.pw = (geo.out_w - 1) * geo.stride_w + (geo.kernel_w - 1) * geo.dil_w + 1
    st.row_step = geo.stride_h * st.pw * 16
    st.step = geo.stride_w * 16
    st.taps = geo.kernel_h * geo.kernel_w
    if off != NULL:
        for p in range(geo.kernel_h):
            for q in range(geo.kernel_w):
                off[p * geo.kernel_w + q] = (p * geo.dil_h * st.pw + q * geo.dil_w) * 16
    return st


def depthwise_direct_sizes(object geometry):
    """(stage, tile): floats of one stage (padded input of 16 channels, pixel-major) and of one
    pixel-major block of 16 output planes, for the wrapper's workspaces."""
    cdef Geometry geo = make_geometry(geometry)
    cdef DwStage st = dw_stage(&geo, NULL)
    return st.rows * st.pw * 16, geo.out_h * geo.out_w * 16


def depthwise_direct_forward(const float[:, :, :, ::1] x, const float[:, :, ::1] weight_t,
                             const float[::1] bias, float[:, :, :, ::1] out,
                             float[:, ::1] workspace, Py_ssize_t[::1] taps, object geometry,
                             int num_threads, bint relu=False):
    """Depthwise y (multiplier 1, C a multiple of 16) from weight_t[block][tap][16]; one item
    per (sample, block of 16 channels). workspace rows: 64 bytes of slack, a stage, a tile.
    ``relu``: ReLU fused into the store."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t batch = x.shape[0], blocks = x.shape[1] // 16
    cdef Py_ssize_t n_items = batch * blocks
    cdef Py_ssize_t in_plane = geo.in_h * geo.in_w, out_plane = geo.out_h * geo.out_w
    cdef bint has_bias = bias is not None
    cdef Py_ssize_t item, n, b, chunk, first, last
    cdef float* xs = NULL
    cdef DwStage st
    if n_items == 0:
        return
    with nogil:
        st = dw_stage(&geo, &taps[0])
    with nogil, parallel(num_threads=num_threads):
        xs = aligned(&workspace[threadid(), 0])
        memset(xs, 0, st.rows * st.pw * 16 * sizeof(float))
        for chunk in prange(num_threads, schedule="static"):
            first = chunk_start(chunk, n_items, num_threads)
            last = chunk_start(chunk + 1, n_items, num_threads)
            for item in range(first, last):
                n = item // blocks
                b = item % blocks
                fc_dwd_stage_in(&x[n, b * 16, 0, 0], in_plane, geo.in_h, geo.in_w, geo.pad_top,
                                geo.pad_left, st.rows, st.pw, xs)
                fc_dwd_forward(xs, st.row_step, st.step, geo.out_h, geo.out_w, &taps[0],
                               st.taps, &weight_t[b, 0, 0], &bias[b * 16] if has_bias else NULL,
                               xs + st.rows * st.pw * 16, &out[n, b * 16, 0, 0], out_plane,
                               relu)


def depthwise_direct_grad_input(const float[:, :, :, ::1] grad_output,
                                const float[:, :, ::1] weight_t, float[:, :, :, ::1] grad_input,
                                float[:, ::1] workspace, Py_ssize_t[::1] taps, object geometry,
                                int num_threads):
    """Depthwise gx by the scatter (fc_dwd_igrad), overwritten: one item per (sample, block of
    16 channels). workspace rows: 64 bytes of slack, a stage (the input gradient's sums), a
    tile (grad_output's planes, pixel-major)."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t batch = grad_input.shape[0], blocks = grad_input.shape[1] // 16
    cdef Py_ssize_t n_items = batch * blocks
    cdef Py_ssize_t in_plane = geo.in_h * geo.in_w, out_plane = geo.out_h * geo.out_w
    cdef Py_ssize_t item, n, b, chunk, first, last, stage_len
    cdef float* xs = NULL
    cdef float* gyt = NULL
    cdef DwStage st
    if n_items == 0:
        return
    with nogil:
        st = dw_stage(&geo, &taps[0])
        stage_len = st.rows * st.pw * 16
        with parallel(num_threads=num_threads):
            xs = aligned(&workspace[threadid(), 0])
            gyt = xs + stage_len
            for chunk in prange(num_threads, schedule="static"):
                first = chunk_start(chunk, n_items, num_threads)
                last = chunk_start(chunk + 1, n_items, num_threads)
                for item in range(first, last):
                    n = item // blocks
                    b = item % blocks
                    memset(xs, 0, stage_len * sizeof(float))
                    fc_direct_load(&grad_output[n, b * 16, 0, 0], out_plane, 16, out_plane, gyt)
                    fc_dwd_igrad(xs, st.row_step, st.step, geo.out_h, geo.out_w, &taps[0],
                                 st.taps, &weight_t[b, 0, 0], gyt)
                    fc_dwd_stage_out(xs, in_plane, geo.in_h, geo.in_w, geo.pad_top,
                                     geo.pad_left, st.rows, st.pw, &grad_input[n, b * 16, 0, 0])


def depthwise_direct_grad_weight(const float[:, :, :, ::1] grad_output,
                                 const float[:, :, :, ::1] x, float[:, :, ::1] sums,
                                 float[:, ::1] workspace, Py_ssize_t[::1] taps,
                                 object geometry, int num_threads):
    """Depthwise gw: one item per block of 16 channels, the samples in order:
    sums[block][tap][16] += ... (zeroed by the caller). workspace rows as
    depthwise_direct_grad_input's (the stage holds the input)."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t batch = x.shape[0], blocks = x.shape[1] // 16
    cdef Py_ssize_t in_plane = geo.in_h * geo.in_w, out_plane = geo.out_h * geo.out_w
    cdef Py_ssize_t n, b, stage_len
    cdef float* xs = NULL
    cdef float* gyt = NULL
    cdef DwStage st
    if batch * blocks == 0:
        return
    with nogil:
        st = dw_stage(&geo, &taps[0])
        stage_len = st.rows * st.pw * 16
        with parallel(num_threads=num_threads):
            xs = aligned(&workspace[threadid(), 0])
            gyt = xs + stage_len
            memset(xs, 0, stage_len * sizeof(float))
            for b in prange(blocks, schedule="static"):
                for n in range(batch):
                    fc_dwd_stage_in(&x[n, b * 16, 0, 0], in_plane, geo.in_h, geo.in_w,
                                    geo.pad_top, geo.pad_left, st.rows, st.pw, xs)
                    fc_direct_load(&grad_output[n, b * 16, 0, 0], out_plane, 16, out_plane, gyt)
                    fc_dwd_wgrad(xs, st.row_step, st.step, geo.out_h, geo.out_w, &taps[0],
                                 st.taps, gyt, &sums[b, 0, 0])
