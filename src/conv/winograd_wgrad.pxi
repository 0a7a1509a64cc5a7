# The weight gradient by Winograd F(m x m, 3 x 3) (m = 2, 4, 5 or 6) for 3x3, stride 1,
# dilation 1, one group: dW[k][c] = G^T [sum over tiles (A gy A^T) . (B^T d B)] G
# (src/_winograd_wgrad.h has the derivation and the two transforms the forward pass lacks).
#
# The tiles of the whole batch (numbered sample-major, as the forward pass's) are cut into
# blocks of ``block`` tiles, a number fixed by the shapes. Per block, the threads first
# transform the input patches (the forward pass's input transform, V[xi][c][tile]) and the
# grad_output tiles (Gy[xi][k][tile]), a run of 16 tiles per unit; then each thread takes
# whole alpha^2 positions xi: it packs Gy[xi] as the GEMM's A panels and V[xi] as its B panels
# (tiles down) in its own rows and adds Gy[xi] V[xi]^T (K x C, the tiles the inner dimension)
# to the accumulator dW_hat[xi]. At the end, dW = G^T dW_hat G per (k, c), output channels
# across the threads. Every sum over the tiles runs block after block, each block's in the
# GEMM's fixed K-blocks (fixed by the block alone), whatever thread holds its xi: the bits
# never depend on the thread count.

cdef extern from "_winograd_wgrad.h" nogil:
    int fc_wgrad_select()
    void fc_wgrad_gy_float(int m, const float* gy, const fc_wino_geometry* g, Py_ssize_t t0,
                           Py_ssize_t count, float* out, Py_ssize_t ld, Py_ssize_t xi_step)
    void fc_wgrad_gy_double(int m, const double* gy, const fc_wino_geometry* g, Py_ssize_t t0,
                            Py_ssize_t count, double* out, Py_ssize_t ld, Py_ssize_t xi_step)
    void fc_wgrad_weights_float(int m, const float* acc, Py_ssize_t ldc, Py_ssize_t xi_step,
                                Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t c_in, float* dw)
    void fc_wgrad_weights_double(int m, const double* acc, Py_ssize_t ldc, Py_ssize_t xi_step,
                                 Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t c_in, double* dw)


fc_wgrad_select()


cdef inline void wgrad_gy(int m, const floating* gy, const fc_wino_geometry* g, Py_ssize_t t0,
                          Py_ssize_t count, floating* out, Py_ssize_t ld,
                          Py_ssize_t xi_step) noexcept nogil:
    if floating is float:
        fc_wgrad_gy_float(m, gy, g, t0, count, out, ld, xi_step)
    else:
        fc_wgrad_gy_double(m, gy, g, t0, count, out, ld, xi_step)


cdef inline void wgrad_weights(int m, const floating* acc, Py_ssize_t ldc, Py_ssize_t xi_step,
                               Py_ssize_t k0, Py_ssize_t k1, Py_ssize_t c_in,
                               floating* dw) noexcept nogil:
    if floating is float:
        fc_wgrad_weights_float(m, acc, ldc, xi_step, k0, k1, c_in, dw)
    else:
        fc_wgrad_weights_double(m, acc, ldc, xi_step, k0, k1, c_in, dw)


cdef inline void wgrad_panel(const floating* src, Py_ssize_t ld, int rows, Py_ssize_t count,
                             floating* dst) noexcept nogil:
    """The packed GEMM's B panel of ``rows`` (<= NR) channel rows, tiles down."""
    if floating is float:
        fc_stranspose_panel(src, ld, rows, count, dst)
    else:
        fc_dtranspose_panel(src, ld, rows, count, dst)


def winograd_wgrad_sizes(Py_ssize_t m, Py_ssize_t in_channels, Py_ssize_t out_channels,
                         Py_ssize_t block, str dtype):
    """(elements of the block's transforms, of the accumulators, of a thread's packing row),
    64 bytes of alignment slack included in each: what winograd_grad_weight carves."""
    cdef Py_ssize_t mr = fc_gemm_rows()
    cdef Py_ssize_t nr = FC_SGEMM_NR if dtype == "float" else FC_DGEMM_NR
    cdef Py_ssize_t align = 16 if dtype == "float" else 8
    cdef Py_ssize_t a2 = (m + 2) * (m + 2)
    cdef Py_ssize_t ld = panel_ld(block, 16)
    cdef Py_ssize_t k_pad = (out_channels + mr - 1) // mr * mr
    cdef Py_ssize_t c_pad = (in_channels + nr - 1) // nr * nr
    return (a2 * (wino_step(in_channels * ld, align) + wino_step(out_channels * ld, align))
            + align,
            a2 * wino_step(out_channels * in_channels, align) + align,
            (k_pad + c_pad) * block + align)


def winograd_grad_weight(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] gy,
                         floating[:, :, :, ::1] grad_weight, floating[::1] transformed,
                         floating[::1] accumulators, floating[:, ::1] packs, int m,
                         Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t block,
                         int num_threads):
    """grad_weight = the weight gradient of conv2d(x, w, padding=(pad_top, pad_left) and
    whatever gy's size implies on the far sides) for grad_output ``gy``, a (K, C, 3, 3)
    weight, by Winograd F(m x m, 3 x 3); every element written.

    ``transformed``, ``accumulators`` and each of ``packs``' rows (one per thread) are sized
    by winograd_wgrad_sizes(m, C, K, block, ...); ``block`` is a multiple of 16 and decides
    the order of the sums (keep it a function of the shapes). The caller checks every shape
    (fastconv._paths.WinogradWeight).
    """
    cdef Py_ssize_t batch = x.shape[0], c_in = x.shape[1], k_out = gy.shape[1]
    cdef Py_ssize_t a2 = (m + 2) * (m + 2)
    cdef int mr = fc_gemm_rows()
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    cdef Py_ssize_t line = 16 if floating is float else 8
    cdef Py_ssize_t ld = panel_ld(block, 16)
    cdef Py_ssize_t k_pad = (k_out + mr - 1) // mr * mr
    cdef Py_ssize_t v_step = wino_step(c_in * ld, line), g_step = wino_step(k_out * ld, line)
    cdef Py_ssize_t acc_step = wino_step(k_out * c_in, line)
    cdef fc_wino_geometry gin, gout
    cdef Py_ssize_t n_tiles, n_blocks, b, t0, count, groups, grp, first, cnt, xi, c0, chunk
    cdef Py_ssize_t k0, k1
    cdef floating* v = aligned(&transformed[0])
    cdef floating* gv = v + a2 * v_step
    cdef floating* acc = aligned(&accumulators[0])
    cdef floating* pa
    cdef floating* pb
    gin.channels = c_in
    gin.in_h = x.shape[2]
    gin.in_w = x.shape[3]
    gin.out_h = gy.shape[2]
    gin.out_w = gy.shape[3]
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
    if n_tiles == 0 or k_out == 0 or c_in == 0:
        return
    with nogil:
        for b in range(n_blocks):
            t0 = b * block
            count = n_tiles - t0 if n_tiles - t0 < block else block
            groups = (count + FC_WINO_LANES - 1) // FC_WINO_LANES
            # the block's transforms, 16 tiles per unit (each column computed alone)
            for grp in prange(groups, num_threads=num_threads, schedule="static"):
                first = grp * FC_WINO_LANES
                cnt = count - first if count - first < FC_WINO_LANES else FC_WINO_LANES
                wino_input(m, &x[0, 0, 0, 0], &gin, t0 + first, cnt, v + first, ld, v_step)
                wgrad_gy(m, &gy[0, 0, 0, 0], &gout, t0 + first, cnt, gv + first, ld, g_step)
            # the GEMMs, whole xi per unit: dW_hat[xi] (+)= Gy[xi] V[xi]^T
            for xi in prange(a2, num_threads=num_threads, schedule="static"):
                pa = aligned(&packs[threadid(), 0])
                pb = pa + k_pad * block
                pack_rows(gv + xi * g_step, k_out, count, ld, 1, pa)
                for c0 in range((c_in + nr - 1) // nr):
                    wgrad_panel(v + xi * v_step + c0 * nr * ld, ld,
                                <int>(c_in - c0 * nr if c_in - c0 * nr < nr else nr), count,
                                pb + c0 * count * nr)
                gemm_packed(k_out, c_in, count, pa, pb, count * nr, nr, NULL,
                            acc + xi * acc_step, c_in, b > 0)
        # dW = G^T dW_hat G, a run of output channels per thread
        for chunk in prange(num_threads, num_threads=num_threads, schedule="static"):
            k0 = chunk_start(chunk, k_out, num_threads)
            k1 = chunk_start(chunk + 1, k_out, num_threads)
            if k1 > k0:
                wgrad_weights(m, acc, c_in, acc_step, k0, k1, c_in, &grad_weight[0, 0, 0, 0])
