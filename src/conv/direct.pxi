cdef extern from "_direct.h" nogil:
    int fc_direct_init()
    void fc_direct_tile(const float* stage, const Py_ssize_t* off, Py_ssize_t k,
                        const float* wpack, Py_ssize_t channels, int v, Py_ssize_t out_w,
                        Py_ssize_t row_step, Py_ssize_t p0, Py_ssize_t count,
                        const float* bias, float* tbuf)
    void fc_direct_store(const float* tbuf, Py_ssize_t channels, Py_ssize_t count, float* y,
                         Py_ssize_t plane)
    void fc_dgrad_tile(const float* stage, const Py_ssize_t* off, Py_ssize_t k,
                       Py_ssize_t channels, int v, Py_ssize_t out_w, Py_ssize_t row_step,
                       Py_ssize_t p0, Py_ssize_t count, const float* gyt, float* out)
    void fc_direct_load(const float* gy, Py_ssize_t plane, Py_ssize_t channels,
                        Py_ssize_t count, float* gyt)
    void fc_dwd_forward(const float* xs, Py_ssize_t row_step, Py_ssize_t step,
                        Py_ssize_t out_h, Py_ssize_t out_w, const Py_ssize_t* off,
                        Py_ssize_t taps, const float* w, const float* bias, float* ys, float* y,
                        Py_ssize_t plane, int relu)
    void fc_dwd_wgrad(const float* xs, Py_ssize_t row_step, Py_ssize_t step, Py_ssize_t out_h,
                      Py_ssize_t out_w, const Py_ssize_t* off, Py_ssize_t taps,
                      const float* gyt, float* sums)
    void fc_dwd_igrad(float* gxs, Py_ssize_t row_step, Py_ssize_t step, Py_ssize_t out_h,
                      Py_ssize_t out_w, const Py_ssize_t* off, Py_ssize_t taps, const float* w,
                      const float* gyt)
    void fc_dwd_stage_in(const float* x, Py_ssize_t plane, Py_ssize_t in_h, Py_ssize_t in_w,
                         Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t rows,
                         Py_ssize_t pw, float* xs)
    void fc_dwd_stage_out(const float* gxs, Py_ssize_t plane, Py_ssize_t in_h, Py_ssize_t in_w,
                          Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t rows,
                          Py_ssize_t pw, float* gx)


DIRECT = bool(fc_direct_init())  # at ISA avx512 only (FASTCONV_ISA=avx2 turns them off)


def direct_block(object geometry):
    """Output channels per block of the direct kernels (src/_direct.h) for this geometry: 32 or
    16, or 0 where they do not apply (neither staged nor pointwise, channels per group not a
    multiple of 16, or no AVX-512 here). A pointwise convolution's input planes are laid out
    as its stage would be: the kernels read them in place."""
    cdef Geometry geo = make_geometry(geometry)
    if (not DIRECT or not (geo.staged or geo.pointwise) or geo.out_channels_g % 16
            or geo.out_channels_g == 0):
        return 0
    return 32 if geo.out_channels_g % 32 == 0 else 16


# the direct kernels' pixel-major sums of a run of a tile's pixels stay in L2: at most this
# many bytes (so their workspace does not grow with the channels either)
cdef enum:
    DIRECT_RUN_BYTES = 256 * 1024


cdef inline Py_ssize_t direct_run(const Geometry* geo) noexcept nogil:
    """Pixels per run of a tile for the direct kernels: whole tiles, unless tile *
    C_out/groups floats pass DIRECT_RUN_BYTES (then a multiple of 8, at least 8)."""
    cdef Py_ssize_t run = DIRECT_RUN_BYTES // (4 * geo.out_channels_g) // 8 * 8
    if run < 8:
        run = 8
    return run if run < geo.tile else geo.tile


def direct_run_pixels(object geometry):
    """direct_run for the wrapper, which sizes the workspace rows (run * C_out/groups)."""
    cdef Geometry geo = make_geometry(geometry)
    return direct_run(&geo)


cdef void stage_taps(const Geometry* geo, Py_ssize_t* taps) noexcept nogil:
    """taps[kk] = the stage offset (stage_input's layout) of tap kk = (c, p, q) from an output
    pixel's first tap: the direct kernels read input value kk of pixel (oy, ox) at
    oy*stride_h*st_row + ox + taps[kk]."""
    cdef Py_ssize_t kk, c, p, q, tap
    cdef Py_ssize_t taps_hw = geo.kernel_h * geo.kernel_w
    for kk in range(geo.k):
        c = kk // taps_hw
        p = kk % taps_hw // geo.kernel_w
        q = kk % geo.kernel_w
        tap = q * geo.dil_w
        taps[kk] = (c * geo.st_plane + p * geo.dil_h * geo.st_row
                    + (tap % geo.stride_w) * geo.st_w + tap // geo.stride_w)


def forward_direct(const float[:, :, :, ::1] x, const float[:, :, :, ::1] weight,
                          const float[::1] bias, float[:, :, :, ::1] out,
                          float[:, ::1] workspace, float[::1] packed_weight,
                          Py_ssize_t[::1] taps, object geometry, Py_ssize_t groups,
                          int num_threads, bint relu=False):
    """The forward pass by the direct kernels of src/_direct.h (float32, a staged geometry whose
    direct_block is not 0): no im2col block; each tile's sums come out pixel-major and are
    transposed into ``out``.

    ``taps`` (k elements) receives the stage offset of every tap; ``packed_weight`` (groups *
    C_out/groups * k, and 64 bytes of slack) the weights as [group][block][tap][channel of the
    block]. ``workspace`` has one row per thread: 64 bytes of slack, the stage (stage_size),
    and direct_run_pixels * C_out/groups for the sums of a run of a tile's pixels. ``relu``:
    the run's sums are ReLU'd (src/_epilogue.h) before they are transposed into ``out``.
    """
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t n_items = batch * groups * geo.n_tiles
    cdef Py_ssize_t out_plane = geo.out_h * geo.out_w
    cdef Py_ssize_t channels = geo.out_channels_g
    cdef Py_ssize_t width = direct_block(geometry)
    cdef Py_ssize_t stage_elements = stage_length(&geo)
    cdef bint has_bias = bias is not None
    cdef Py_ssize_t run = direct_run(&geo)
    cdef Py_ssize_t item, n, g, t, p0, count, chunk, first, last, staged_item, kk, o
    cdef Py_ssize_t sub, sub_count
    cdef float* wpack = NULL
    cdef float* stage = NULL
    cdef float* tbuf = NULL
    cdef const float* src = NULL
    if n_items == 0 or width == 0:
        return
    wpack = aligned(&packed_weight[0])
    # serial: a fraction 1 / (batch * pixels) of the work
    with nogil:
        stage_taps(&geo, &taps[0])
        for g in range(groups):
            for o in range(channels):
                for kk in range(geo.k):
                    wpack[(g * channels + o // width * width) * geo.k + kk * width
                          + o % width] = (&weight[g * channels + o, 0, 0, 0])[kk]
    with nogil, parallel(num_threads=num_threads):
        stage = aligned(&workspace[threadid(), 0])
        tbuf = stage + stage_elements
        if geo.staged:
            stage_clear(stage, &geo)
        for chunk in prange(num_threads, schedule="static"):
            staged_item = -1
            first = chunk_start(chunk, n_items, num_threads)
            last = chunk_start(chunk + 1, n_items, num_threads)
            for item in range(first, last):
                n = item // (groups * geo.n_tiles)
                g = (item // geo.n_tiles) % groups
                t = item % geo.n_tiles
                p0 = t * geo.tile
                count = pixels_in_tile(p0, &geo)
                if geo.pointwise:
                    src = &x[n, g * geo.in_channels_g, 0, 0]
                elif item // geo.n_tiles != staged_item:
                    stage_input(&x[n, g * geo.in_channels_g, 0, 0], stage, &geo)
                    staged_item = item // geo.n_tiles
                    src = stage
                sub = p0
                while sub < p0 + count:
                    sub_count = p0 + count - sub if p0 + count - sub < run else run
                    fc_direct_tile(src, &taps[0], geo.k, wpack + g * channels * geo.k, channels,
                                   <int>(width // 16), geo.out_w, geo.stride_h * geo.st_row,
                                   sub, sub_count, &bias[g * channels] if has_bias else NULL,
                                   tbuf)
                    if relu:
                        fc_srelu_rows(tbuf, 1, sub_count * channels, sub_count * channels)
                    fc_direct_store(tbuf, channels, sub_count,
                                    &out[n, g * channels, 0, 0] + sub, out_plane)
                    sub = sub + sub_count


cdef void grad_weight_direct_impl(const float[:, :, :, ::1] grad_output, const float[:, :, :, ::1] x,
                             float[:, ::1] partials, float[:, ::1] workspace,
                             const Py_ssize_t* taps, const Geometry* geo, Py_ssize_t groups,
                             Py_ssize_t width, int num_threads) noexcept nogil:
    """grad_weight_impl by the direct kernels of src/_direct.h (float32; width = direct_block):
    partials[chunk, (g, kk, o)] += the chunk's sums, tap-major (the caller transposes them
    into the weights' layout). The same fixed chunks and order as grad_weight_impl. Each
    thread's workspace row: 64 bytes of slack, the stage (stage_size), then
    direct_run_pixels * C_out/groups for a run of grad_output's tile transposed
    (fc_direct_load). ``partials`` must be zeroed."""
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t n_pairs = batch * geo[0].n_tiles
    cdef Py_ssize_t n_chunks = partials.shape[0]
    cdef Py_ssize_t out_plane = geo[0].out_h * geo[0].out_w
    cdef Py_ssize_t channels = geo[0].out_channels_g
    cdef Py_ssize_t stage_elements = stage_length(geo)
    cdef Py_ssize_t run = direct_run(geo)
    cdef Py_ssize_t chunk, pair, first, last, n, t, g, p0, count, staged_sample, sub, sub_count
    cdef float* stage = NULL
    cdef float* gyt = NULL
    cdef const float* src = NULL
    if n_pairs == 0:
        return
    with parallel(num_threads=num_threads):
        stage = aligned(&workspace[threadid(), 0])
        gyt = stage + stage_elements
        if geo[0].staged:
            stage_clear(stage, geo)
        for chunk in prange(n_chunks, schedule="static"):
            first = chunk_start(chunk, n_pairs, n_chunks)
            last = chunk_start(chunk + 1, n_pairs, n_chunks)
            for g in range(groups):
                staged_sample = -1
                for pair in range(first, last):
                    n = pair // geo[0].n_tiles
                    t = pair % geo[0].n_tiles
                    p0 = t * geo[0].tile
                    count = pixels_in_tile(p0, geo)
                    if geo[0].pointwise:
                        src = &x[n, g * geo[0].in_channels_g, 0, 0]
                    elif n != staged_sample:
                        stage_input(&x[n, g * geo[0].in_channels_g, 0, 0], stage, geo)
                        staged_sample = n
                        src = stage
                    sub = p0
                    while sub < p0 + count:
                        sub_count = p0 + count - sub if p0 + count - sub < run else run
                        fc_direct_load(&grad_output[n, g * channels, 0, 0] + sub, out_plane,
                                       channels, sub_count, gyt)
                        fc_dgrad_tile(src, taps, geo[0].k, channels, <int>(width // 16),
                                      geo[0].out_w, geo[0].stride_h * geo[0].st_row, sub,
                                      sub_count, gyt, &partials[chunk, g * channels * geo[0].k])
                        sub = sub + sub_count


def grad_weight_direct(const float[:, :, :, ::1] grad_output, const float[:, :, :, ::1] x,
                       float[:, ::1] partials, float[:, ::1] workspace, Py_ssize_t[::1] taps,
                       object geometry, Py_ssize_t groups, int num_threads):
    """The weight gradient's chunk sums by the direct kernels (grad_weight_direct_impl),
    tap-major; ``taps`` (k elements) receives the stage offset of every tap."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t width = direct_block(geometry)
    if width == 0:
        return
    with nogil:
        stage_taps(&geo, &taps[0])
        grad_weight_direct_impl(grad_output, x, partials, workspace, &taps[0], &geo, groups,
                                width, num_threads)
