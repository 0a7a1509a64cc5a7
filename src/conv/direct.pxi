cdef extern from "_direct.h" nogil:
    int fc_direct_init()
    void fc_direct_tile(const float* stage, const Py_ssize_t* taps, const Py_ssize_t* rows,
                        const float* wpack, Py_ssize_t k, Py_ssize_t channels, int v,
                        Py_ssize_t out_w, Py_ssize_t row_step, Py_ssize_t p0, Py_ssize_t count,
                        const float* bias, float* tbuf)
    int fc_direct_pack(const float* weight, Py_ssize_t k, Py_ssize_t width, float* wpack)
    int fc_direct_pack_transposed(const float* weight, Py_ssize_t outer, Py_ssize_t ld,
                                  Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                                  const Py_ssize_t* slice, Py_ssize_t sub_h, Py_ssize_t sub_w,
                                  Py_ssize_t width, float* wpack)
    void fc_direct_store(const float* tbuf, Py_ssize_t channels, Py_ssize_t count, float* y,
                         Py_ssize_t plane)
    void fc_dgrad_tile(const float* stage, const Py_ssize_t* blocks, Py_ssize_t nblocks,
                       const Py_ssize_t* off, const Py_ssize_t* oo, Py_ssize_t channels, int v,
                       Py_ssize_t out_w, Py_ssize_t row_step, Py_ssize_t p0, Py_ssize_t count,
                       const float* gyt, float* out, int skip, Py_ssize_t cin, Py_ssize_t* pix,
                       int assign)
    void fc_dgrad_stage_t(const float* stage, Py_ssize_t plane, Py_ssize_t cin, float* stage_t)
    void fc_dgrad_sum_chunks(const float* src, Py_ssize_t chunks, Py_ssize_t row, Py_ssize_t ld,
                             Py_ssize_t taps, Py_ssize_t width, float* sums, Py_ssize_t lds,
                             float* out, Py_ssize_t k)
    int fc_direct_any_nonfinite(const float* x, Py_ssize_t n)
    void fc_dgrad_unit(const float* stage, const Py_ssize_t* off, Py_ssize_t taps, int v,
                       Py_ssize_t out_w, Py_ssize_t row_step, Py_ssize_t p0,
                       Py_ssize_t count, const float* gyt, Py_ssize_t ldg, float* out,
                       Py_ssize_t ldo)
    int FC_DIRECT_MR1
    int FC_DIRECT_MR2
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


# weights (floats) from which the forward pass packs them in parallel (a parallel region costs
# microseconds: LeNet-sized weights are packed by the calling thread)
cdef enum:
    DIRECT_PACK_PARALLEL = 1 << 16


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


cdef inline Py_ssize_t direct_tap_classes(const Geometry* geo) noexcept nogil:
    """At most how many different tap lists direct_tap_lists makes: the kernel rows that
    reach the input, p_lo(oy) .. p_hi(oy), only ever fall as oy grows, each at most kH - 1
    times."""
    cdef Py_ssize_t classes = 2 * geo.kernel_h - 1
    return classes if classes < geo.out_h else (geo.out_h if geo.out_h > 0 else 1)


cdef inline Py_ssize_t direct_taps_length(const Geometry* geo) noexcept nogil:
    """Elements (intp) of forward_direct's ``taps``: the stage offsets (stage_taps), the
    rows' (start, count) and their tap lists (direct_tap_lists)."""
    return geo.k + 2 * geo.out_h + 2 * geo.k * direct_tap_classes(geo)


def direct_taps_size(object geometry):
    """direct_taps_length for the wrapper (forward_direct's ``taps``)."""
    cdef Geometry geo = make_geometry(geometry)
    return direct_taps_length(&geo)


cdef void direct_tap_lists(const Geometry* geo, const Py_ssize_t* off, Py_ssize_t width,
                           bint skip, Py_ssize_t* rows) noexcept nogil:
    """The forward micro-kernels' tap lists (src/_direct.h) from the stage offsets ``off``
    (stage_taps): rows[2*oy] is where output row oy's list starts in ``rows``, rows[2*oy + 1]
    its length; the lists follow the 2*out_h entries, pairs of (stage offset, kk * width: the
    tap's weights in its packed block, plus its kind) in tap order. Every tap of kind 0, or
    with ``skip`` (the weights all finite) every tap whose kernel row p reads an input row
    for output row oy, of kind 1 where its column is padding for the row's first pixel, + 2
    for its last: the other products are padded zeros times finite weights, exact zeros that
    change no bit of the sums (src/_direct.h). Rows with the same kernel rows share a list
    (they are consecutive: see direct_tap_classes)."""
    cdef Py_ssize_t oy, kk, c, p, q, lo, hi, kind, prev_lo = -1, prev_hi = -1
    cdef Py_ssize_t end = 2 * geo.out_h, start = 0, count = 0
    for oy in range(geo.out_h):
        lo = 0
        hi = geo.kernel_h - 1
        if skip:
            # staged row py = oy*stride_h + p*dil_h holds input row py - pad_top
            while lo <= hi and oy * geo.stride_h + lo * geo.dil_h < geo.pad_top:
                lo = lo + 1
            while hi >= lo and oy * geo.stride_h + hi * geo.dil_h >= geo.pad_top + geo.in_h:
                hi = hi - 1
        if lo != prev_lo or hi != prev_hi:
            start = end
            count = 0
            kk = 0
            for c in range(geo.in_channels_g):
                for p in range(geo.kernel_h):
                    if lo <= p <= hi:
                        for q in range(geo.kernel_w):
                            kind = 0
                            if skip:
                                # input column ox*stride_w + q*dil_w - pad_left, ox = 0 and
                                # out_w - 1
                                if q * geo.dil_w < geo.pad_left:
                                    kind = 1
                                if ((geo.out_w - 1) * geo.stride_w + q * geo.dil_w
                                        - geo.pad_left >= geo.in_w):
                                    kind = kind + 2
                            rows[end] = off[kk + q]
                            rows[end + 1] = (kk + q) * width + kind
                            end = end + 2
                        count = count + geo.kernel_w
                    kk = kk + geo.kernel_w
            prev_lo = lo
            prev_hi = hi
        rows[2 * oy] = start
        rows[2 * oy + 1] = count


cdef inline void direct_runs(const float* src, const Py_ssize_t* rows, const float* wpack,
                             const Geometry* geo, Py_ssize_t channels, Py_ssize_t width,
                             Py_ssize_t run, Py_ssize_t p0, Py_ssize_t count,
                             const float* bias, bint relu, float* tbuf, float* out,
                             Py_ssize_t out_plane) noexcept nogil:
    """Pixels [p0, p0 + count) of one (sample, group) of a direct forward pass, in runs of
    ``run``: each run's sums (fc_direct_tile, a block's weights read once per run; the bias
    added where not NULL), ReLU'd if ``relu``, stored channel-major into ``out`` (the
    group's first output plane, planes ``out_plane`` apart). forward_direct's and
    strided_phases_direct's tiles."""
    cdef Py_ssize_t sub = p0, sub_count
    while sub < p0 + count:
        sub_count = p0 + count - sub if p0 + count - sub < run else run
        fc_direct_tile(src, rows, rows, wpack, geo.k, channels, <int>(width // 16), geo.out_w,
                       geo.stride_h * geo.st_row, sub, sub_count, bias, tbuf)
        if relu:
            fc_srelu_rows(tbuf, 1, sub_count * channels, sub_count * channels)
        fc_direct_store(tbuf, channels, sub_count, out + sub, out_plane)
        sub = sub + sub_count


def forward_direct(const float[:, :, :, ::1] x, const float[:, :, :, ::1] weight,
                          const float[::1] bias, float[:, :, :, ::1] out,
                          float[:, ::1] workspace, float[::1] packed_weight,
                          Py_ssize_t[::1] taps, object geometry, Py_ssize_t groups,
                          int num_threads, bint relu=False, bint transposed=False):
    """The forward pass by the direct kernels of src/_direct.h (float32, a staged geometry whose
    direct_block is not 0): no im2col block; each tile's sums come out pixel-major and are
    transposed into ``out``. A 1x1 kernel reads compact planes (pointwise_rows: the input in
    place where pointwise, else stage_points' copy in the stage) as one row of pixels.

    ``taps`` (direct_taps_size elements) receives the stage offset of every tap and each
    output row's list of taps (direct_tap_lists: those on the padding rows left out where
    the weights are finite); ``packed_weight`` (groups * C_out/groups * k, and 64 bytes of
    slack) the weights as [group][block][tap][channel of the block]. ``workspace`` has one
    row per thread: 64 bytes of slack, the stage (stage_size), and direct_run_pixels *
    C_out/groups for the sums of a run of a tile's pixels. ``relu``: the run's sums are
    ReLU'd (src/_epilogue.h) before they are transposed into ``out``. ``transposed``:
    ``weight`` is that of the convolution whose input gradient this is (C_in of this
    geometry, C_out/groups, kH, kW), packed transposed and flipped (the Transposed path: no
    transposed copy first).
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
    cdef Py_ssize_t t_end, blk
    cdef Py_ssize_t whole[4]  # the tap slice of all of the flipped kernel (transposed)
    cdef int nonfinite = 0
    # a 1x1 kernel: the kernels read compact planes (the input in place where pointwise, else
    # stage_points') as one row of pixels (pointwise_rows); other kernels: the stage
    cdef bint points = geo.kernel_h == 1 and geo.kernel_w == 1
    cdef Geometry kgeo = pointwise_rows(&geo) if points else geo
    cdef float* wpack = NULL
    cdef float* stage = NULL
    cdef float* tbuf = NULL
    cdef const float* src = NULL
    cdef Py_ssize_t* rows = NULL
    if (n_items == 0 or width == 0
            or taps.shape[0] < direct_taps_length(&geo)):
        return
    wpack = aligned(&packed_weight[0])
    rows = &taps[geo.k]
    cdef Py_ssize_t taps_hw = geo.kernel_h * geo.kernel_w
    cdef Py_ssize_t outer = geo.in_channels_g  # transposed: the convolution's C_out/groups
    cdef Py_ssize_t blocks_g = channels // width
    cdef bint serial = groups * channels * geo.k < DIRECT_PACK_PARALLEL or num_threads == 1
    if transposed and (weight.shape[0] != groups * outer or weight.shape[1] != channels
                       or weight.shape[2] != geo.kernel_h or weight.shape[3] != geo.kernel_w):
        return
    whole[0], whole[1], whole[2], whole[3] = 0, 1, 0, 1
    with nogil:
        stage_taps(&kgeo, &taps[0])
        # the weights packed by register transposes, a block of channels at a time; in
        # parallel where they are large (vgg14's 2.4 MB took 0.3-0.5 ms of its 5 ms packed
        # serially element by element)
        if transposed:  # block blk: group blk // blocks_g, its input channels' block
            for blk in prange(groups * blocks_g, schedule="static",
                              num_threads=1 if serial else num_threads):
                nonfinite |= fc_direct_pack_transposed(
                    &weight[blk // blocks_g * outer, blk % blocks_g * width, 0, 0], outer,
                    channels * taps_hw, geo.kernel_h, geo.kernel_w, whole, geo.kernel_h,
                    geo.kernel_w, width, wpack + blk * width * geo.k)
        elif serial:
            for blk in range(groups * channels // width):
                nonfinite = nonfinite | fc_direct_pack(&weight[blk * width, 0, 0, 0], geo.k,
                                                       width, wpack + blk * width * geo.k)
        else:
            for blk in prange(groups * channels // width, schedule="static",
                              num_threads=num_threads):
                nonfinite |= fc_direct_pack(&weight[blk * width, 0, 0, 0], geo.k, width,
                                            wpack + blk * width * geo.k)
        direct_tap_lists(&kgeo, &taps[0], width, nonfinite == 0, rows)
    with nogil, parallel(num_threads=num_threads):
        stage = aligned(&workspace[threadid(), 0])
        tbuf = stage + stage_elements
        if geo.staged and not points:
            stage_clear(stage, &geo)
        for chunk in prange(num_threads, schedule="static"):
            staged_item = -1
            first = chunk_start(chunk, n_items, num_threads)
            last = chunk_start(chunk + 1, n_items, num_threads)
            # the chunk's tiles of one (sample, group) as one span of pixels, in runs of
            # ``run``: each run reads a block's weights once (fc_direct_tile)
            item = first
            while item < last:
                n = item // (groups * geo.n_tiles)
                g = (item // geo.n_tiles) % groups
                t = item % geo.n_tiles
                t_end = (item // geo.n_tiles + 1) * geo.n_tiles
                if t_end > last:
                    t_end = last
                p0 = t * geo.tile
                count = pixels_in_tile((t_end - 1) % geo.n_tiles * geo.tile, &geo) + (
                    t_end - 1 - item) * geo.tile
                if geo.pointwise:
                    src = &x[n, g * geo.in_channels_g, 0, 0]
                elif item // geo.n_tiles != staged_item:
                    if points:
                        stage_points(&x[n, g * geo.in_channels_g, 0, 0], stage, &geo)
                    else:
                        stage_input(&x[n, g * geo.in_channels_g, 0, 0], stage, &geo)
                    staged_item = item // geo.n_tiles
                    src = stage
                item = t_end
                direct_runs(src, rows, wpack + g * channels * geo.k, &kgeo, channels, width,
                            run, p0, count, &bias[g * channels] if has_bias else NULL, relu,
                            tbuf, &out[n, g * channels, 0, 0], out_plane)


# The weight gradient's chunks group the taps by kernel position (p, q), each group's
# channels in blocks, where the input has at least this many channels per group and the taps
# reach padding: a block's products with padded zeros then fall outside one window of rows and
# columns (fc_dgrad_tile), left out
cdef enum:
    DGRAD_GROUP_MIN_CHANNELS = 8


def direct_wgrad_taps_size(object geometry):
    """Elements (intp) of grad_weight_direct_chunks' ``taps``: the stage offsets
    (stage_taps), then direct_wgrad_blocks' lists."""
    cdef Geometry geo = make_geometry(geometry)
    return 9 * geo.k


cdef bint dgrad_grouped(const Geometry* geo) noexcept nogil:
    """Whether direct_wgrad_blocks groups the taps by kernel position: the input has at least
    DGRAD_GROUP_MIN_CHANNELS channels per group and the taps reach padding."""
    cdef bint reaches = (geo.pad_top > 0 or geo.pad_left > 0
                         or (geo.out_h - 1) * geo.stride_h + (geo.kernel_h - 1) * geo.dil_h
                         >= geo.pad_top + geo.in_h
                         or (geo.out_w - 1) * geo.stride_w + (geo.kernel_w - 1) * geo.dil_w
                         >= geo.pad_left + geo.in_w)
    return reaches and geo.in_channels_g >= DGRAD_GROUP_MIN_CHANNELS and not geo.pointwise


cdef inline Py_ssize_t dgrad_list_floats(const Geometry* geo) noexcept nogil:
    """Floats of a thread's workspace row past the stage and grad_output's run where the taps
    are grouped (dgrad_grouped): the stage transposed channel-minor (fc_dgrad_stage_t; rounded
    up to 64 bytes) and the list of a run's pixels (2 intp a pixel, fc_dgrad_tile)."""
    if not dgrad_grouped(geo):
        return 0
    return ((geo.in_channels_g * geo.st_plane + 15) // 16 * 16
            + 2 * direct_run(geo) * <Py_ssize_t>(sizeof(Py_ssize_t) // sizeof(float)))


cdef inline Py_ssize_t dgrad_row_floats(const Geometry* geo) noexcept nogil:
    """Floats of each thread's row of grad_weight_direct_chunks' workspace: 64 bytes of
    slack, the stage (stage_length) and direct_run * C_out/groups for a run of grad_output
    transposed (rounded up to 64 bytes), then dgrad_list_floats."""
    return (16 + (stage_length(geo) + direct_run(geo) * geo.out_channels_g + 15) // 16 * 16
            + dgrad_list_floats(geo))


def direct_wgrad_workspace_floats(object geometry):
    """dgrad_row_floats for the wrapper (the rows of grad_weight_direct_chunks' workspace)."""
    cdef Geometry geo = make_geometry(geometry)
    return dgrad_row_floats(&geo)


cdef void dgrad_window(Py_ssize_t first, Py_ssize_t step, Py_ssize_t count, Py_ssize_t size,
                       Py_ssize_t* out) noexcept nogil:
    """out[0:2] = [lo, hi): the j < count with 0 <= first + j*step < size (valid_range)."""
    cdef Py_ssize_t lo, hi
    valid_range(first, step, count, size, &lo, &hi)
    out[0] = lo
    out[1] = hi


cdef Py_ssize_t direct_wgrad_blocks(const Geometry* geo, const Py_ssize_t* taps, Py_ssize_t r_max,
                                    Py_ssize_t channels, Py_ssize_t* lists) noexcept nogil:
    """The weight gradient's blocks of taps for fc_dgrad_tile from the stage offsets ``taps``
    (stage_taps): lists[0 : k] the taps' offsets in block order, lists[k : 2k] their rows of
    the sums (kk * channels), then six entries a block (first, count, oy_lo, oy_hi, ox_lo,
    ox_hi: the output rows and columns whose pixels its taps read inside the input). Where
    dgrad_grouped, by kernel position (p, q), the channels of each in near-equal blocks of at
    most r_max, the offsets those in the stage transposed channel-minor (fc_dgrad_stage_t:
    position * C_in/groups + channel); else consecutive taps, in near-equal blocks of at most
    r_max, with whole windows, the offsets the stage's own. Returns the number of blocks. The
    blocking changes no sum: each is over the same pixels in the same order."""
    cdef Py_ssize_t k = geo.k, taps_hw = geo.kernel_h * geo.kernel_w
    cdef Py_ssize_t* off = lists
    cdef Py_ssize_t* oo = lists + k
    cdef Py_ssize_t* blocks = lists + 2 * k
    cdef Py_ssize_t nb = 0, n = 0, pq, c, runs, r, first, last, kk
    cdef Py_ssize_t rows[2]
    cdef Py_ssize_t cols[2]
    if not dgrad_grouped(geo):
        runs = (k + r_max - 1) // r_max
        for kk in range(k):
            off[kk] = taps[kk]
            oo[kk] = kk * channels
        for r in range(runs):
            first = k * r // runs
            last = k * (r + 1) // runs
            blocks[6 * r] = first
            blocks[6 * r + 1] = last - first
            blocks[6 * r + 2] = 0
            blocks[6 * r + 3] = geo.out_h
            blocks[6 * r + 4] = 0
            blocks[6 * r + 5] = geo.out_w
        return runs
    runs = (geo.in_channels_g + r_max - 1) // r_max
    for pq in range(taps_hw):
        dgrad_window(pq // geo.kernel_w * geo.dil_h - geo.pad_top, geo.stride_h, geo.out_h,
                     geo.in_h, rows)
        dgrad_window(pq % geo.kernel_w * geo.dil_w - geo.pad_left, geo.stride_w, geo.out_w,
                     geo.in_w, cols)
        for r in range(runs):
            first = geo.in_channels_g * r // runs
            last = geo.in_channels_g * (r + 1) // runs
            blocks[6 * nb] = n
            blocks[6 * nb + 1] = last - first
            blocks[6 * nb + 2] = rows[0]
            blocks[6 * nb + 3] = rows[1]
            blocks[6 * nb + 4] = cols[0]
            blocks[6 * nb + 5] = cols[1]
            nb = nb + 1
            for c in range(first, last):
                kk = c * taps_hw + pq
                off[n] = (taps[kk] - c * geo.st_plane) * geo.in_channels_g + c
                oo[n] = kk * channels
                n = n + 1
    return nb


cdef void grad_weight_direct_chunks_impl(const float[:, :, :, ::1] grad_output,
                                         const float[:, :, :, ::1] x,
                                         float[:, ::1] partials, float[:, ::1] workspace,
                                         const Py_ssize_t* lists, Py_ssize_t nblocks,
                                         const Geometry* geo,
                                         Py_ssize_t groups, Py_ssize_t width,
                                         int num_threads) noexcept nogil:
    """grad_weight_impl by the direct kernels of src/_direct.h (float32; width = direct_block):
    partials[chunk, (g, kk, o)] += the chunk's sums, tap-major (the caller transposes them
    into the weights' layout), in the blocks of taps of ``lists`` (direct_wgrad_blocks), the
    products with padded zeros left out where a run of grad_output is finite. The same fixed
    chunks and order as grad_weight_impl. Each thread's workspace row: 64 bytes of slack, the
    stage (stage_size), then direct_run_pixels * C_out/groups for a run of grad_output's tile
    transposed (fc_direct_load), and where the taps are grouped by kernel position
    (dgrad_grouped) the stage transposed channel-minor (fc_dgrad_stage_t), which the sums
    read instead, and the list of a run's pixels (dgrad_list_floats). Each chunk's row of
    ``partials`` is written by the thread that sums it: its first tile's sums stored (the
    same bits as added to zeros, fc_dgrad_tile's ``assign``), then the others added; a chunk
    with no pairs zeroed."""
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t n_pairs = batch * geo[0].n_tiles
    cdef Py_ssize_t n_chunks = partials.shape[0]
    cdef Py_ssize_t out_plane = geo[0].out_h * geo[0].out_w
    cdef Py_ssize_t channels = geo[0].out_channels_g
    cdef Py_ssize_t stage_elements = stage_length(geo)
    cdef Py_ssize_t run = direct_run(geo)
    cdef Py_ssize_t k = geo[0].k
    cdef Py_ssize_t chunk, pair, first, last, n, t, g, p0, count, staged_sample, sub, sub_count
    cdef bint grouped = dgrad_grouped(geo)
    cdef Py_ssize_t cin = geo[0].in_channels_g if grouped else 0
    cdef float* stage = NULL
    cdef float* gyt = NULL
    cdef float* stage_t = NULL
    cdef Py_ssize_t* pix = NULL
    cdef const float* src = NULL
    if n_pairs == 0:  # no pixels: the sums are zeros
        memset(&partials[0, 0], 0, n_chunks * partials.shape[1] * sizeof(float))
        return
    with parallel(num_threads=num_threads):
        stage = aligned(&workspace[threadid(), 0])
        gyt = stage + stage_elements
        stage_t = stage + (stage_elements + run * channels + 15) // 16 * 16
        pix = <Py_ssize_t*>(stage_t + (cin * geo[0].st_plane + 15) // 16 * 16)
        if geo[0].staged:
            stage_clear(stage, geo)
        for chunk in prange(n_chunks, schedule="static"):
            first = chunk_start(chunk, n_pairs, n_chunks)
            last = chunk_start(chunk + 1, n_pairs, n_chunks)
            if first == last:
                memset(&partials[chunk, 0], 0, partials.shape[1] * sizeof(float))
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
                        if grouped:
                            fc_dgrad_stage_t(stage, geo[0].st_plane, cin, stage_t)
                            src = stage_t
                    sub = p0
                    while sub < p0 + count:
                        sub_count = p0 + count - sub if p0 + count - sub < run else run
                        fc_direct_load(&grad_output[n, g * channels, 0, 0] + sub, out_plane,
                                       channels, sub_count, gyt)
                        fc_dgrad_tile(src, lists + 2 * k, nblocks, lists, lists + k, channels,
                                      <int>(width // 16), geo[0].out_w,
                                      geo[0].stride_h * geo[0].st_row, sub, sub_count, gyt,
                                      &partials[chunk, g * channels * k],
                                      not fc_direct_any_nonfinite(gyt, sub_count * channels),
                                      cin, pix, pair == first and sub == p0)
                        sub = sub + sub_count


# sum_chunks_transposed's unit of work: a run of at most this many taps of one group by a
# block of at most SUM_CHUNKS_CHANNELS of its output channels, summed in a thread's
# SUM_CHUNKS_TAPS * SUM_CHUNKS_CHANNELS floats (16 KB, in L1) before they are transposed
cdef enum:
    SUM_CHUNKS_TAPS = 16
    SUM_CHUNKS_CHANNELS = 256
    _SUM_CHUNKS_FLOATS = SUM_CHUNKS_TAPS * SUM_CHUNKS_CHANNELS
SUM_CHUNKS_FLOATS = _SUM_CHUNKS_FLOATS  # a row of grad_weight_direct_chunks' ``sums``


cdef void sum_chunks_transposed(const float[:, ::1] partials, float* out, Py_ssize_t groups,
                                Py_ssize_t channels, Py_ssize_t k, float[:, ::1] buffers,
                                int num_threads) noexcept nogil:
    """out[(g, o), kk] = the sum over the chunks of partials[chunk, (g, kk, o)], each added to
    0.0 chunk by chunk in order as np.add.reduce(partials, axis=0) does (so the same bits):
    the chunks' tap-major sums in the weights' layout, in parallel over units of a run of
    taps by a block of channels (contiguous rows of partials, summed across the lanes into a
    thread's row of ``buffers``, SUM_CHUNKS_FLOATS floats, then transposed:
    fc_dgrad_sum_chunks)."""
    cdef Py_ssize_t n_chunks = partials.shape[0]
    cdef Py_ssize_t row = partials.shape[1]
    cdef Py_ssize_t runs = (k + SUM_CHUNKS_TAPS - 1) // SUM_CHUNKS_TAPS
    cdef Py_ssize_t blocks = (channels + SUM_CHUNKS_CHANNELS - 1) // SUM_CHUNKS_CHANNELS
    cdef Py_ssize_t unit, g, first, taps, c0, width
    cdef float* sums = NULL
    cdef const float* base = &partials[0, 0]
    with parallel(num_threads=num_threads):
        sums = &buffers[threadid(), 0]
        for unit in prange(groups * runs * blocks, schedule="static"):
            g = unit // (runs * blocks)
            first = unit // blocks % runs * SUM_CHUNKS_TAPS
            c0 = unit % blocks * SUM_CHUNKS_CHANNELS
            taps = k - first if k - first < SUM_CHUNKS_TAPS else SUM_CHUNKS_TAPS
            width = (channels - c0 if channels - c0 < SUM_CHUNKS_CHANNELS
                     else SUM_CHUNKS_CHANNELS)
            fc_dgrad_sum_chunks(base + (g * k + first) * channels + c0, n_chunks, row,
                                channels, taps, width, sums, SUM_CHUNKS_CHANNELS,
                                out + (g * channels + c0) * k + first, k)


def grad_weight_direct_chunks(const float[:, :, :, ::1] grad_output,
                              const float[:, :, :, ::1] x, float[:, :, :, ::1] grad_weight,
                              float[:, ::1] partials, float[:, ::1] workspace,
                              float[:, ::1] sums, Py_ssize_t[::1] taps, object geometry,
                              Py_ssize_t groups, int num_threads):
    """The weight gradient by the direct kernels for small results (Direct.grad_weight;
    grad_weight_direct for large ones): the chunks' sums, tap-major, into the rows of
    ``partials`` (any contents; grad_weight_direct_chunks_impl), then added in chunk order and
    transposed into ``grad_weight`` (sum_chunks_transposed, in ``sums``: num_threads rows
    of SUM_CHUNKS_FLOATS). ``taps`` (direct_wgrad_taps_size elements) receives the stage
    offset of every tap and the blocks of taps (direct_wgrad_blocks); ``workspace`` has
    num_threads rows of at least direct_wgrad_workspace_floats."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t width = direct_block(geometry)
    cdef Py_ssize_t nblocks
    if (width == 0 or partials.shape[0] == 0 or taps.shape[0] < 9 * geo.k
            or workspace.shape[0] < num_threads
            or workspace.shape[1] < dgrad_row_floats(&geo)):
        return
    with nogil:
        stage_taps(&geo, &taps[0])
        nblocks = direct_wgrad_blocks(&geo, &taps[0],
                                      FC_DIRECT_MR2 if width == 32 else FC_DIRECT_MR1,
                                      geo.out_channels_g, &taps[geo.k])
        grad_weight_direct_chunks_impl(grad_output, x, partials, workspace, &taps[geo.k],
                                       nblocks, &geo, groups, width, num_threads)
        sum_chunks_transposed(partials, &grad_weight[0, 0, 0, 0], groups, geo.out_channels_g,
                              geo.k, sums, num_threads)


# The weight gradient's block of grad_output (one block of channels, pixel-major), read once
# per run of taps, stays in cache over a segment of the samples of at most this many pixels,
# or over a piece of one sample's plane of at most DGRAD_PIECE_PIXELS
cdef enum:
    DGRAD_SEGMENT_PIXELS = 2048
    DGRAD_PIECE_PIXELS = 512


cdef void grad_weight_direct_impl(const float[:, :, :, ::1] grad_output,
                                  const float[:, :, :, ::1] x, float[:, :, :, ::1] grad_weight,
                                  float* out, float* buf, Py_ssize_t chunk_samples,
                                  const Py_ssize_t* taps,
                                  const Geometry* geo, Py_ssize_t groups, Py_ssize_t width,
                                  int num_threads) noexcept nogil:
    """grad_weight_impl by the direct kernels of src/_direct.h (float32; width =
    direct_block): the sums, tap-major, in out[(g, kk, o)] (each unit zeroes its part
    first), then transposed into ``grad_weight``.

    The batch is cut into chunks of ``chunk_samples`` samples (from the shapes). Per chunk,
    every (sample, group) is staged and its grad_output transposed pixel-major into ``buf``
    (chunk_samples * groups stages of stage_length, then as many planes of C_out/groups *
    out_h*out_w), in parallel; then the result is cut into units of one group, one block of
    ``width`` channels and a run of at most the micro-kernel's taps, a contiguous range of
    units per thread. A unit's sums stay in registers over one sample's pixels and are then
    added to ``out``: every element of ``out`` is 0 + the sum over sample 0 + the sum over
    sample 1 ..., each a chain of FMAs over the sample's pixels in order, whichever thread
    computes it. No partial sums per chunk of the batch: where those were re-read and
    re-written once per tile (2.4 MB at vgg14's 256 x 2304, past L2), a unit's 12 x 32 sums
    stay in L1."""
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t plane = geo[0].out_h * geo[0].out_w
    cdef Py_ssize_t channels = geo[0].out_channels_g
    cdef Py_ssize_t k = geo[0].k
    cdef Py_ssize_t sl = stage_length(geo)
    cdef Py_ssize_t row_step = geo[0].stride_h * geo[0].st_row
    cdef int v = <int>(width // 16)
    cdef Py_ssize_t r_max = FC_DIRECT_MR2 if v == 2 else FC_DIRECT_MR1
    cdef Py_ssize_t tap_runs = (k + r_max - 1) // r_max
    cdef Py_ssize_t blocks = channels // width
    cdef Py_ssize_t units = groups * blocks * tap_runs
    cdef Py_ssize_t segment = DGRAD_SEGMENT_PIXELS // plane if plane > 0 else 1
    cdef Py_ssize_t pieces = (plane + DGRAD_PIECE_PIXELS - 1) // DGRAD_PIECE_PIXELS
    cdef Py_ssize_t pc, p0, p1
    cdef float* gyt = buf + chunk_samples * groups * sl
    cdef Py_ssize_t row_blocks = (k + 63) // 64
    cdef Py_ssize_t c0, cn, item, i, g, chunk, u0, u1, unit, blk, r, first, last, s0, s1, rr
    cdef const float* src = NULL
    if batch == 0 or plane == 0 or units == 0:
        return
    if segment < 1:
        segment = 1
    c0 = 0
    while c0 < batch:
        cn = batch - c0 if batch - c0 < chunk_samples else chunk_samples
        for item in prange(cn * groups, schedule="static", num_threads=num_threads):
            if geo[0].staged:
                if c0 == 0:  # the padding stays zero from one chunk to the next
                    stage_clear(buf + item * sl, geo)
                stage_input(&x[c0 + item // groups, item % groups * geo[0].in_channels_g, 0, 0],
                            buf + item * sl, geo)
            fc_direct_load(&grad_output[c0 + item // groups, item % groups * channels, 0, 0],
                           plane, channels, plane, gyt + item * channels * plane)
        with parallel(num_threads=num_threads):
            for chunk in prange(num_threads, schedule="static"):
                u0 = chunk_start(chunk, units, num_threads)
                u1 = chunk_start(chunk + 1, units, num_threads)
                s0 = 0
                while s0 < cn:
                    s1 = cn if cn - s0 < segment else s0 + segment
                    for pc in range(pieces):
                        p0 = plane * pc // pieces
                        p1 = plane * (pc + 1) // pieces
                        for unit in range(u0, u1):
                            g = unit // (blocks * tap_runs)
                            blk = unit // tap_runs % blocks
                            r = unit % tap_runs
                            first = k * r // tap_runs
                            last = k * (r + 1) // tap_runs
                            if c0 == 0 and s0 == 0 and pc == 0:
                                for rr in range(first, last):
                                    memset(out + (g * k + rr) * channels + blk * width, 0,
                                           width * sizeof(float))
                            for i in range(s0, s1):
                                item = i * groups + g
                                if geo[0].pointwise:
                                    src = &x[c0 + i, g * geo[0].in_channels_g, 0, 0]
                                else:
                                    src = buf + item * sl
                                fc_dgrad_unit(src, taps + first, last - first, v,
                                              geo[0].out_w, row_step, p0, p1 - p0,
                                              gyt + (item * plane + p0) * channels
                                              + blk * width, channels,
                                              out + (g * k + first) * channels + blk * width,
                                              channels)
                    s0 = s1
        c0 = c0 + cn
    # the tap-major sums into the weights' layout, 64 taps of a group at a time
    for item in prange(groups * row_blocks, schedule="static", num_threads=num_threads):
        first = item % row_blocks * 64
        last = first + 64 if first + 64 < k else k
        fc_direct_store(out + (item // row_blocks * k + first) * channels, channels,
                        last - first, &grad_weight[item // row_blocks * channels, 0, 0, 0]
                        + first, k)


def grad_weight_direct(const float[:, :, :, ::1] grad_output, const float[:, :, :, ::1] x,
                       float[:, :, :, ::1] grad_weight, float[::1] workspace,
                       Py_ssize_t[::1] taps, object geometry, Py_ssize_t groups,
                       Py_ssize_t chunk_samples, int num_threads):
    """The weight gradient by the direct kernels (grad_weight_direct_impl) into
    ``grad_weight`` (overwritten); ``workspace``: at least direct_weight_workspace_floats(
    geometry, groups, chunk_samples) elements (the tap-major sums, then a chunk's stages and
    grad_output); ``taps`` (k elements) receives the stage offset of every tap."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t width = direct_block(geometry)
    cdef Py_ssize_t sums = groups * geo.k * geo.out_channels_g
    if width == 0 or chunk_samples < 1 or grad_weight.shape[0] != groups * geo.out_channels_g:
        return
    if workspace.shape[0] < direct_weight_workspace_floats(geometry, groups, chunk_samples):
        return
    with nogil:
        stage_taps(&geo, &taps[0])
        grad_weight_direct_impl(grad_output, x, grad_weight, aligned(&workspace[0]),
                                aligned(&workspace[0]) + (sums + 15) // 16 * 16, chunk_samples,
                                &taps[0], &geo, groups, width, num_threads)


def direct_weight_workspace_floats(object geometry, Py_ssize_t groups,
                                   Py_ssize_t chunk_samples):
    """Floats of grad_weight_direct's workspace for chunks of ``chunk_samples`` samples: 64
    bytes of slack, the tap-major sums (rounded up to 64 bytes), then the chunk's stages and
    grad_output transposed."""
    cdef Geometry geo = make_geometry(geometry)
    return (16 + (groups * geo.k * geo.out_channels_g + 15) // 16 * 16
            + chunk_samples * groups * (stage_length(&geo)
                                        + geo.out_channels_g * geo.out_h * geo.out_w))
