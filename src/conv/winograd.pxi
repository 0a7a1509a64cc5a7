# Winograd F(m x m, 3 x 3) convolution (m = 2, 4, 5 or 6) for 3x3, stride 1, dilation 1, one
# group: the transforms of src/_winograd.h around the packed GEMM of src/_gemm.h.
#
# The tiles of the whole batch (m x m outputs each, numbered sample-major) are cut into blocks
# of ``block`` tiles; a thread takes a contiguous run of blocks and, per block, transforms the
# input patches of every channel (V[xi][c][tile], alpha^2 = (m + 2)^2 planes), multiplies each
# of the alpha^2 planes by the transformed weights (U[xi], K x C, packed once per call) with
# one GEMM of K x block x C, and transforms the products back into the output (with the
# bias). Each output element comes from one tile, computed by the same operations whatever
# the block or the thread, so results never depend on the thread count; the GEMM sums over
# the input channels in K-blocks fixed by C alone.

cdef extern from "_winograd.h" nogil:
    enum:
        FC_WINO_LANES
    ctypedef struct fc_wino_geometry:
        Py_ssize_t channels
        Py_ssize_t in_h, in_w
        Py_ssize_t out_h, out_w
        Py_ssize_t pad_top, pad_left
        Py_ssize_t tiles_h, tiles_w
        Py_ssize_t planes
    int fc_wino_select()
    const char* fc_wino_isa()
    void fc_wino_input_float(int m, const float* x, const fc_wino_geometry* g, Py_ssize_t t0,
                             Py_ssize_t count, float* v, Py_ssize_t ld, Py_ssize_t xi_step)
    void fc_wino_input_double(int m, const double* x, const fc_wino_geometry* g, Py_ssize_t t0,
                              Py_ssize_t count, double* v, Py_ssize_t ld, Py_ssize_t xi_step)
    void fc_wino_output_float(int m, const float* mm, Py_ssize_t ld, Py_ssize_t xi_step,
                              const float* bias, float* out, const fc_wino_geometry* g,
                              Py_ssize_t t0, Py_ssize_t count)
    void fc_wino_output_double(int m, const double* mm, Py_ssize_t ld, Py_ssize_t xi_step,
                               const double* bias, double* out, const fc_wino_geometry* g,
                               Py_ssize_t t0, Py_ssize_t count)
    void fc_wino_weights_float(int m, const float* w, Py_ssize_t c_in, Py_ssize_t k0,
                               Py_ssize_t k1, int mr, Py_ssize_t k_stride, Py_ssize_t c_stride,
                               int flip, float* packed, Py_ssize_t xi_step)
    void fc_wino_weights_double(int m, const double* w, Py_ssize_t c_in, Py_ssize_t k0,
                               Py_ssize_t k1, int mr, Py_ssize_t k_stride, Py_ssize_t c_stride,
                               int flip, double* packed, Py_ssize_t xi_step)


fc_wino_select()


def winograd_isa():
    """The build of the Winograd transforms in use: 'avx512', 'avx2' or 'generic'."""
    return fc_wino_isa().decode("ascii")


def winograd_sizes(Py_ssize_t m, Py_ssize_t in_channels, Py_ssize_t out_channels,
                   Py_ssize_t block, str dtype):
    """(elements of the packed transformed weights, elements of a thread's workspace row),
    64 bytes of alignment slack included in each: what winograd_forward carves."""
    cdef Py_ssize_t mr = fc_gemm_rows()
    cdef Py_ssize_t nr = FC_SGEMM_NR if dtype == "float" else FC_DGEMM_NR
    cdef Py_ssize_t align = 16 if dtype == "float" else 8
    cdef Py_ssize_t a2 = (m + 2) * (m + 2)
    cdef Py_ssize_t k_pad = (out_channels + mr - 1) // mr * mr
    cdef Py_ssize_t ld = panel_ld(block, nr)
    return (a2 * wino_step(k_pad * in_channels, align) + align,
            a2 * (wino_step(in_channels * ld, align) + wino_step(out_channels * ld, align))
            + align)


def same_bytes(const unsigned char[::1] a, const unsigned char[::1] b):
    """Whether two byte buffers hold the same bytes (memcmp: -0.0 and 0.0 differ, a NaN
    equals itself), without the temporary of numpy.array_equal."""
    cdef int differ
    if a.shape[0] != b.shape[0]:
        return False
    if a.shape[0] == 0:
        return True
    with nogil:
        differ = memcmp(&a[0], &b[0], a.shape[0])
    return differ == 0


cdef inline Py_ssize_t wino_step(Py_ssize_t size, Py_ssize_t line) noexcept nogil:
    """The distance between the alpha^2 planes of U, V or M: their size and one cache line
    (``line`` elements). The transforms read or write one row of every plane per step; at a
    multiple of 4 KiB apart (64 channels x 16 tiles, say) those rows share one L1 set and
    evict each other: the input transform ran 1.5x, the weights' 14x slower so."""
    return size + line


cdef inline void wino_input(int m, const floating* x, const fc_wino_geometry* g, Py_ssize_t t0,
                            Py_ssize_t count, floating* v, Py_ssize_t ld,
                            Py_ssize_t xi_step) noexcept nogil:
    if floating is float:
        fc_wino_input_float(m, x, g, t0, count, v, ld, xi_step)
    else:
        fc_wino_input_double(m, x, g, t0, count, v, ld, xi_step)


cdef inline void wino_output(int m, const floating* mm, Py_ssize_t ld, Py_ssize_t xi_step,
                             const floating* bias, floating* out, const fc_wino_geometry* g,
                             Py_ssize_t t0, Py_ssize_t count) noexcept nogil:
    if floating is float:
        fc_wino_output_float(m, mm, ld, xi_step, bias, out, g, t0, count)
    else:
        fc_wino_output_double(m, mm, ld, xi_step, bias, out, g, t0, count)


cdef inline void wino_weights(int m, const floating* w, Py_ssize_t c_in, Py_ssize_t k0,
                              Py_ssize_t k1, int mr, Py_ssize_t k_stride, Py_ssize_t c_stride,
                              int flip, floating* packed, Py_ssize_t xi_step) noexcept nogil:
    if floating is float:
        fc_wino_weights_float(m, w, c_in, k0, k1, mr, k_stride, c_stride, flip, packed, xi_step)
    else:
        fc_wino_weights_double(m, w, c_in, k0, k1, mr, k_stride, c_stride, flip, packed,
                               xi_step)


def winograd_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                     const floating[::1] bias, floating[:, :, :, ::1] out,
                     floating[::1] packed_weight, floating[:, ::1] workspace, int m,
                     Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t block,
                     int num_threads, bint transposed=False, bint weights_ready=False):
    """out = conv2d(x, weight, bias, padding=(pad_top, pad_left) and whatever out's size
    implies on the far sides), for a (K, C, 3, 3) weight, by Winograd F(m x m, 3 x 3).
    With ``transposed``, ``weight`` is (C, K, 3, 3) and the kernel of output channel k and
    input channel c is weight[c, k] flipped both ways (the input gradient of a convolution
    by ``weight``), read in place.

    ``bias`` may be None. ``packed_weight`` and each of ``workspace``'s rows (one per thread)
    are sized by winograd_sizes(m, C, K, block, ...); ``block`` is a multiple of
    FC_WINO_LANES. With ``weights_ready``, ``packed_weight`` already holds this ``weight``'s
    transform (same m, same ``transposed``; fastconv._paths keeps them), read, not written.
    The caller checks every shape (fastconv._paths.Winograd).
    """
    cdef Py_ssize_t batch = x.shape[0], c_in = x.shape[1], k_out = out.shape[1]
    cdef Py_ssize_t k_stride = 9 if transposed else c_in * 9
    cdef Py_ssize_t c_stride = k_out * 9 if transposed else 9
    cdef Py_ssize_t a2 = (m + 2) * (m + 2)
    cdef int mr = fc_gemm_rows()
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    cdef Py_ssize_t k_pad = (k_out + mr - 1) // mr * mr
    cdef Py_ssize_t line = 16 if floating is float else 8
    cdef Py_ssize_t u_step = wino_step(k_pad * c_in, line)
    cdef Py_ssize_t ld = panel_ld(block, nr)
    cdef Py_ssize_t v_step = wino_step(c_in * ld, line), m_step = wino_step(k_out * ld, line)
    cdef fc_wino_geometry gin, gout
    cdef Py_ssize_t n_tiles, n_blocks, n_panels, panel, chunk, first, last, b, t0, count, xi
    cdef Py_ssize_t parts, unit, part, done, k0, k1
    cdef const floating* part_bias
    cdef fc_wino_geometry part_geometry
    cdef floating* u = aligned(&packed_weight[0])
    cdef floating* v
    cdef floating* mm
    cdef const floating* bias_ptr = &bias[0] if bias is not None else NULL
    gin.channels = c_in
    gin.in_h = x.shape[2]
    gin.in_w = x.shape[3]
    gin.out_h = out.shape[2]
    gin.out_w = out.shape[3]
    gin.pad_top = pad_top
    gin.pad_left = pad_left
    gin.tiles_h = (gin.out_h + m - 1) // m
    gin.tiles_w = (gin.out_w + m - 1) // m
    gin.planes = c_in
    gout = gin
    gout.channels = k_out
    gout.planes = k_out
    n_tiles = batch * gin.tiles_h * gin.tiles_w
    n_blocks = (n_tiles + block - 1) // block
    n_panels = k_pad // mr
    if n_tiles == 0 or k_out == 0:
        return
    # The units of work: each block's output channels in `parts` ranges of whole GEMM panels.
    # One part per block where the blocks share out evenly among the threads; else one per
    # thread, so that the threads' shares differ by a part, not by a block (vgg14 at m = 5:
    # 5 blocks of 16 tiles, 3 against 2 on two threads). A thread transforms a block's input
    # once for its consecutive parts of it. Each output row comes from the same GEMM panel
    # and the same transform whatever the parts: the bits never depend on them.
    parts = 1
    if n_blocks % num_threads != 0:
        parts = num_threads if num_threads < n_panels else n_panels
    if not weights_ready:
        with nogil, parallel(num_threads=num_threads):
            # U[xi] = G w G^T as the GEMM's A panels, a panel of mr output channels per step (the
            # padding rows of the last one zeros: the GEMM computes and drops them)
            for panel in prange(n_panels, schedule="static"):
                wino_weights(m, &weight[0, 0, 0, 0], c_in, panel * mr,
                             (panel + 1) * mr if (panel + 1) * mr < k_out else k_out, mr,
                             k_stride, c_stride, transposed, u, u_step)
    with nogil, parallel(num_threads=num_threads):
        v = aligned(&workspace[threadid(), 0])
        mm = v + a2 * v_step
        for chunk in prange(num_threads, schedule="static"):
            first = chunk_start(chunk, n_blocks * parts, num_threads)
            last = chunk_start(chunk + 1, n_blocks * parts, num_threads)
            done = -1
            for unit in range(first, last):
                b = unit // parts
                part = unit % parts
                t0 = b * block
                count = n_tiles - t0 if n_tiles - t0 < block else block
                if b != done:
                    wino_input(m, &x[0, 0, 0, 0], &gin, t0, count, v, ld, v_step)
                    done = b
                k0 = chunk_start(part, n_panels, parts) * mr
                k1 = chunk_start(part + 1, n_panels, parts) * mr
                if k1 > k_out:
                    k1 = k_out
                if k0 >= k1:
                    continue
                for xi in range(a2):
                    gemm_packed(k1 - k0, count, c_in, u + xi * u_step + k0 * c_in,
                                v + xi * v_step, nr, ld, NULL, mm + xi * m_step + k0 * ld, ld)
                part_geometry = gout
                part_geometry.channels = k1 - k0
                part_bias = bias_ptr + k0 if bias_ptr != NULL else NULL
                wino_output(m, mm + k0 * ld, ld, m_step, part_bias,
                            &out[0, 0, 0, 0] + gout.out_h * gout.out_w * k0, &part_geometry,
                            t0, count)
