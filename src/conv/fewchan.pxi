cdef extern from "_fewchan.h" nogil:
    ctypedef struct fc_few_shape:
        Py_ssize_t k
        Py_ssize_t cpad
        Py_ssize_t quads
        Py_ssize_t wp
        Py_ssize_t step
        Py_ssize_t bp
    enum:
        FC_FEW_MR
        FC_FEW_SLACK
        FC_CL_OC
    int fc_few_init()
    Py_ssize_t fc_few_pitch(Py_ssize_t rows, Py_ssize_t wp, Py_ssize_t itemsize)
    void fc_few_phase_s(const float* x, Py_ssize_t channels, Py_ssize_t in_h, Py_ssize_t in_w,
                        Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t hp, Py_ssize_t wp, float* phase)
    void fc_few_phase_d(const double* x, Py_ssize_t channels, Py_ssize_t in_h, Py_ssize_t in_w,
                        Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t hp, Py_ssize_t wp, double* phase)
    void fc_few_block_s(const float* phase, const Py_ssize_t* off, const float* w,
                        const float* bias, const fc_few_shape* shape, Py_ssize_t r0,
                        Py_ssize_t r1, int relu, float* buf)
    void fc_few_block_d(const double* phase, const Py_ssize_t* off, const double* w,
                        const double* bias, const fc_few_shape* shape, Py_ssize_t r0,
                        Py_ssize_t r1, int relu, double* buf)
    void fc_few_store_s(const float* buf, const fc_few_shape* shape, Py_ssize_t channels,
                        Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t width, float* y,
                        Py_ssize_t plane)
    void fc_few_store_d(const double* buf, const fc_few_shape* shape, Py_ssize_t channels,
                        Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t width, double* y,
                        Py_ssize_t plane)
    Py_ssize_t fc_few_cols_len(Py_ssize_t channels, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t kw,
                               Py_ssize_t dil_w, Py_ssize_t hb, Py_ssize_t gw)
    void fc_few_cols_s(const float* x, Py_ssize_t channels, Py_ssize_t in_h, Py_ssize_t in_w,
                       Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t kw, Py_ssize_t dil_w, Py_ssize_t r0, Py_ssize_t rows,
                       Py_ssize_t hb, Py_ssize_t gw, float* cols)
    void fc_few_cols_d(const double* x, Py_ssize_t channels, Py_ssize_t in_h, Py_ssize_t in_w,
                       Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t kw, Py_ssize_t dil_w, Py_ssize_t r0, Py_ssize_t rows,
                       Py_ssize_t hb, Py_ssize_t gw, double* cols)
    void fc_few_dense_s(const float* cols, const Py_ssize_t* off, const float* w,
                        const float* bias, const fc_few_shape* shape, Py_ssize_t count,
                        Py_ssize_t channels, int relu, float* y, Py_ssize_t plane)
    void fc_few_dense_d(const double* cols, const Py_ssize_t* off, const double* w,
                        const double* bias, const fc_few_shape* shape, Py_ssize_t count,
                        Py_ssize_t channels, int relu, double* y, Py_ssize_t plane)
    void fc_cl_block_s(const float* phase, const Py_ssize_t* off, const float* w,
                       const float* bias, const fc_few_shape* shape, Py_ssize_t r0,
                       Py_ssize_t r1, Py_ssize_t grid_w, int relu, int late, float* buf)
    void fc_cl_block_d(const double* phase, const Py_ssize_t* off, const double* w,
                       const double* bias, const fc_few_shape* shape, Py_ssize_t r0,
                       Py_ssize_t r1, Py_ssize_t grid_w, int relu, int late, double* buf)
    void fc_cl_store_s(const float* buf, Py_ssize_t cpad, Py_ssize_t channels,
                       Py_ssize_t count, float* y, Py_ssize_t plane)
    void fc_cl_store_d(const double* buf, Py_ssize_t cpad, Py_ssize_t channels,
                       Py_ssize_t count, double* y, Py_ssize_t plane)


fc_few_init()  # the level's vector width, once at import (src/_cpu.h)


cdef struct FewLayout:
    # the phase planes of one sample (src/_fewchan.h, fc_few_phase) and the grid they feed
    Py_ssize_t sh, sw          # stride * pool window
    Py_ssize_t grid_h, grid_w  # the grid: the output, or the pooled output
    Py_ssize_t hp, wp          # a phase plane's rows and row pitch (the grid's pitch too)
    Py_ssize_t phase_len       # elements of the planes, their slack and the row being split
                               # (whole 64-byte lines); 0 in place
    bint in_place              # the channels-across-lanes kernels read x itself (no phase
                               # planes): every tap of every grid position inside x
    bint dense                 # unpooled, pixels across the lanes: per band, column planes
                               # of the grid's width instead of phase planes (fc_few_cols)
    Py_ssize_t hb              # (dense) the planes' rows: a band and the rows its taps reach
    Py_ssize_t planes_len      # elements of one sample's phase planes (what the wrapper
                               # bounds, whichever staging runs)
    fc_few_shape shape


cdef FewLayout few_layout(const Geometry* geo, Py_ssize_t pool_h, Py_ssize_t pool_w,
                          Py_ssize_t band, Py_ssize_t itemsize, bint across) noexcept nogil:
    """The phase planes and the block of a band of ``band`` grid rows, for a convolution
    pooled by non-overlapping pool_h x pool_w windows (1 x 1: not pooled; the windows that
    pass the output's edge are dropped, as max pooling's floor mode). ``across``: the
    channels-across-lanes variant's block (pixel-major, channels padded to FC_CL_OC; its bp
    is the band's positions; without padding, it reads the input in place: its scalar loads
    need no phase planes, only each grid position's column step). Unpooled, without
    ``across``: ``dense``, the band's column planes in place of the phase planes and no
    block."""
    cdef FewLayout lay
    cdef Py_ssize_t reach_h = geo.stride_h * (pool_h - 1) + geo.dil_h * (geo.kernel_h - 1)
    cdef Py_ssize_t reach_w = geo.stride_w * (pool_w - 1) + geo.dil_w * (geo.kernel_w - 1)
    cdef Py_ssize_t line = 64 // itemsize
    lay.sh = geo.stride_h * pool_h
    lay.sw = geo.stride_w * pool_w
    lay.grid_h = geo.out_h // pool_h
    lay.grid_w = geo.out_w // pool_w
    lay.hp = lay.grid_h + reach_h // lay.sh
    lay.wp = lay.grid_w + reach_w // lay.sw
    lay.phase_len = ((geo.in_channels_g * lay.sh * lay.sw * lay.hp * lay.wp + lay.wp
                      + FC_FEW_SLACK + lay.sw * lay.wp + 16 + line - 1) // line * line)
    lay.planes_len = lay.phase_len
    lay.dense = not across and pool_h == 1 and pool_w == 1
    lay.hb = band + reach_h // lay.sh
    lay.shape.k = geo.k
    lay.shape.quads = pool_h * pool_w
    lay.shape.wp = lay.wp
    lay.shape.step = 1
    # the last grid row's and column's farthest taps, in x's rows and columns
    lay.in_place = (across and geo.pad_top == 0 and geo.pad_left == 0
                    and (lay.grid_h - 1) * lay.sh + reach_h < geo.in_h
                    and (lay.grid_w - 1) * lay.sw + reach_w < geo.in_w)
    if lay.in_place:
        lay.phase_len = 0
        lay.shape.wp = lay.sh * geo.in_w
        lay.shape.step = lay.sw
    if across:
        lay.shape.cpad = (geo.out_channels_g + FC_CL_OC - 1) // FC_CL_OC * FC_CL_OC
        lay.shape.bp = band * lay.grid_w
    else:
        lay.shape.cpad = (geo.out_channels_g + FC_FEW_MR - 1) // FC_FEW_MR * FC_FEW_MR
        lay.shape.bp = fc_few_pitch(band, lay.wp, itemsize)
    if lay.dense:
        lay.phase_len = (fc_few_cols_len(geo.in_channels_g, lay.sh, lay.sw, geo.kernel_w,
                                         geo.dil_w, lay.hb, lay.grid_w) + line - 1) // line * line
        lay.shape.bp = 0
    return lay


def few_sizes(object geometry, Py_ssize_t pool_h, Py_ssize_t pool_w, Py_ssize_t band,
              Py_ssize_t itemsize, bint across=False):
    """(grid_h, grid_w, wp, staging elements, block elements, padded channels, phase planes'
    elements) of few_forward's layout, for the wrapper that sizes its buffers and bands: a
    thread stages the phase planes of a sample (their elements then the last figure), or
    unpooled a band's column planes (no block), or nothing (in place)."""
    cdef Geometry geo = make_geometry(geometry)
    cdef FewLayout lay = few_layout(&geo, pool_h, pool_w, band, itemsize, across)
    return (lay.grid_h, lay.grid_w, lay.wp, lay.phase_len,
            lay.shape.cpad * lay.shape.bp, lay.shape.cpad, lay.planes_len)


def few_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                const floating[::1] bias, floating[:, :, :, ::1] out,
                floating[:, ::1] workspace, floating[::1] packed, Py_ssize_t[::1] offsets,
                object geometry, Py_ssize_t pool_h, Py_ssize_t pool_w, Py_ssize_t band,
                int num_threads, bint relu=False, bint across=False):
    """The forward pass of a convolution with few input channels (one group) by the kernels
    of src/_fewchan.h: y[n,o,i,j] = sum_c,p,q x[n,c,i*s+p*d,j*s+q*d] * w[o,c,p,q] (+ b[o]),
    ReLU'd if ``relu``, and with pool_h x pool_w > 1 max-pooled by non-overlapping windows
    (stride = window, no padding, floor mode) before it is stored: ``out`` is then the pooled
    output.

    Items are (sample, band of ``band`` grid rows); a thread splits a sample's input into its
    phase planes once for its items of that sample, or unpooled fills the column planes of
    each of its bands. ``workspace`` has one row per thread: 64 bytes of slack, the staging,
    the block (few_sizes). ``packed`` (k * cpad + cpad)
    receives the weights as [tap][channel] and the bias, zero-padded to cpad channels;
    ``offsets`` (pool_h * pool_w * k) each window position's tap offsets. ``across``: the
    variant with the output channels across the lanes (a multiple of FC_CL_OC of them;
    fc_cl_block), with ``packed`` and the block sized for it (few_sizes(..., across=True))."""
    cdef Geometry geo = make_geometry(geometry)
    cdef FewLayout lay = few_layout(&geo, pool_h, pool_w, band, sizeof(floating), across)
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t channels = geo.out_channels_g
    cdef Py_ssize_t cpad = lay.shape.cpad, k = geo.k
    cdef Py_ssize_t n_bands = (lay.grid_h + band - 1) // band if band > 0 else 0
    cdef Py_ssize_t n_items = batch * n_bands
    cdef Py_ssize_t out_plane = lay.grid_h * lay.grid_w
    cdef Py_ssize_t taps_hw = geo.kernel_h * geo.kernel_w
    cdef bint has_bias = bias is not None
    cdef bint late = True
    cdef Py_ssize_t item, n, first, last, chunk, staged, r0, r1, o, kk, qd, ry, rx, c, p, q
    cdef floating* phase = NULL
    cdef const floating* source = NULL  # what the block reads: the phase planes, or x
    cdef floating* block = NULL
    cdef const floating* bias_ptr = NULL
    if n_items == 0 or lay.grid_w == 0:
        return
    with nogil:
        # serial: the weights as [tap][channel] (channels padded with zeros), the bias, and the
        # tap offsets of each window position (dy, dx) in the phase planes
        for kk in range(k):
            for o in range(cpad):
                packed[kk * cpad + o] = (&weight[o, 0, 0, 0])[kk] if o < channels else 0
        for o in range(cpad):
            packed[k * cpad + o] = bias[o] if has_bias and o < channels else 0
            # the channels-across-lanes kernels add a finite bias after the pool max
            if has_bias and o < channels and not (bias[o] - bias[o] == 0):
                late = False
        if has_bias:
            bias_ptr = &packed[k * cpad]
        for qd in range(pool_h * pool_w):
            for kk in range(k):
                c = kk // taps_hw
                p = kk % taps_hw // geo.kernel_w
                q = kk % geo.kernel_w
                ry = geo.stride_h * (qd // pool_w) + p * geo.dil_h
                rx = geo.stride_w * (qd % pool_w) + q * geo.dil_w
                if lay.in_place:
                    offsets[qd * k + kk] = (c * geo.in_h + ry) * geo.in_w + rx
                elif lay.dense:
                    offsets[qd * k + kk] = (((c * lay.sh + ry % lay.sh) * geo.kernel_w + q)
                                            * lay.hb * lay.grid_w + ry // lay.sh * lay.grid_w)
                else:
                    offsets[qd * k + kk] = (((c * lay.sh + ry % lay.sh) * lay.sw
                                             + rx % lay.sw) * lay.hp * lay.wp
                                            + ry // lay.sh * lay.wp + rx // lay.sw)
    with nogil, parallel(num_threads=num_threads):
        block = aligned(&workspace[threadid(), 0]) + lay.phase_len
        phase = block - lay.phase_len
        for chunk in prange(num_threads, schedule="static"):
            staged = -1
            first = chunk_start(chunk, n_items, num_threads)
            last = chunk_start(chunk + 1, n_items, num_threads)
            for item in range(first, last):
                n = item // n_bands
                r0 = item % n_bands * band
                r1 = r0 + band if r0 + band < lay.grid_h else lay.grid_h
                source = phase
                if lay.dense:
                    if floating is float:
                        fc_few_cols_s(&x[n, 0, 0, 0], geo.in_channels_g, geo.in_h, geo.in_w,
                                      geo.pad_top, geo.pad_left, lay.sh, lay.sw, geo.kernel_w,
                                      geo.dil_w, r0, r1 - r0 + lay.hb - band, lay.hb,
                                      lay.grid_w, phase)
                        fc_few_dense_s(phase, &offsets[0], &packed[0], bias_ptr, &lay.shape,
                                       (r1 - r0) * lay.grid_w, channels, relu,
                                       &out[n, 0, r0, 0], out_plane)
                    else:
                        fc_few_cols_d(&x[n, 0, 0, 0], geo.in_channels_g, geo.in_h, geo.in_w,
                                      geo.pad_top, geo.pad_left, lay.sh, lay.sw, geo.kernel_w,
                                      geo.dil_w, r0, r1 - r0 + lay.hb - band, lay.hb,
                                      lay.grid_w, phase)
                        fc_few_dense_d(phase, &offsets[0], &packed[0], bias_ptr, &lay.shape,
                                       (r1 - r0) * lay.grid_w, channels, relu,
                                       &out[n, 0, r0, 0], out_plane)
                    continue
                if lay.in_place:
                    source = &x[n, 0, 0, 0]
                elif n != staged:
                    if floating is float:
                        fc_few_phase_s(&x[n, 0, 0, 0], geo.in_channels_g, geo.in_h, geo.in_w,
                                       geo.pad_top, geo.pad_left, lay.sh, lay.sw, lay.hp,
                                       lay.wp, phase)
                    else:
                        fc_few_phase_d(&x[n, 0, 0, 0], geo.in_channels_g, geo.in_h, geo.in_w,
                                       geo.pad_top, geo.pad_left, lay.sh, lay.sw, lay.hp,
                                       lay.wp, phase)
                    staged = n
                if across:
                    if floating is float:
                        fc_cl_block_s(source, &offsets[0], &packed[0], bias_ptr, &lay.shape,
                                      r0, r1, lay.grid_w, relu, late, block)
                        fc_cl_store_s(block, cpad, channels, (r1 - r0) * lay.grid_w,
                                      &out[n, 0, r0, 0], out_plane)
                    else:
                        fc_cl_block_d(source, &offsets[0], &packed[0], bias_ptr, &lay.shape,
                                      r0, r1, lay.grid_w, relu, late, block)
                        fc_cl_store_d(block, cpad, channels, (r1 - r0) * lay.grid_w,
                                      &out[n, 0, r0, 0], out_plane)
                elif floating is float:
                    fc_few_block_s(phase, &offsets[0], &packed[0], bias_ptr, &lay.shape, r0,
                                   r1, relu, block)
                    fc_few_store_s(block, &lay.shape, channels, r0, r1, lay.grid_w,
                                   &out[n, 0, 0, 0], out_plane)
                else:
                    fc_few_block_d(phase, &offsets[0], &packed[0], bias_ptr, &lay.shape, r0,
                                   r1, relu, block)
                    fc_few_store_d(block, &lay.shape, channels, r0, r1, lay.grid_w,
                                   &out[n, 0, 0, 0], out_plane)
