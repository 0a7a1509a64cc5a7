cdef extern from "_epilogue.h" nogil:
    void fc_srelu_rows(float* p, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld)
    void fc_drelu_rows(double* p, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld)
    void fc_srelu_backward(const float* output, const float* grad, float* out, Py_ssize_t n)
    void fc_drelu_backward(const double* output, const double* grad, double* out,
                           Py_ssize_t n)


cdef inline void relu_rows(floating* p, Py_ssize_t rows, Py_ssize_t cols,
                           Py_ssize_t ld) noexcept nogil:
    """The fused ReLU (src/_epilogue.h) on rows x cols elements, rows ld apart."""
    if floating is float:
        fc_srelu_rows(p, rows, cols, ld)
    else:
        fc_drelu_rows(p, rows, cols, ld)


def relu_inplace(floating[::1] values, int num_threads):
    """The fused ReLU over a whole array (the paths that do not fuse it run it after their
    kernel): ``values`` is the output viewed flat."""
    cdef Py_ssize_t n = values.shape[0], chunk, first, last
    if n == 0:
        return
    with nogil:
        if num_threads <= 1:
            relu_rows(&values[0], 1, n, n)
        else:
            for chunk in prange(num_threads, num_threads=num_threads, schedule="static"):
                first = chunk_start(chunk, n, num_threads)
                last = chunk_start(chunk + 1, n, num_threads)
                if last > first:
                    relu_rows(&values[first], 1, last - first, n)


cdef inline void relu_backward_run(const floating* output, const floating* grad, floating* out,
                                   Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_srelu_backward(output, grad, out, n)
    else:
        fc_drelu_backward(output, grad, out, n)


def relu_backward(const floating[::1] output, const floating[::1] grad, floating[::1] out,
                  int num_threads):
    """ReLU's backward over whole arrays viewed flat (src/_epilogue.h): ``out = grad`` where
    the ReLU's ``output > 0`` or is NaN, +0 elsewhere; the three of one length."""
    cdef Py_ssize_t n = output.shape[0], chunk, first, last
    if n == 0:
        return
    with nogil:
        if num_threads <= 1:
            relu_backward_run(&output[0], &grad[0], &out[0], n)
        else:
            for chunk in prange(num_threads, num_threads=num_threads, schedule="static"):
                first = chunk_start(chunk, n, num_threads)
                last = chunk_start(chunk + 1, n, num_threads)
                if last > first:
                    relu_backward_run(&output[first], &grad[first], &out[first], last - first)



cdef inline void add_run(floating* out, const floating* other, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = out[i] + other[i]


def add_inplace(floating[::1] out, const floating[::1] other, int num_threads):
    """``out += other`` over whole arrays viewed flat, element by element (NumPy's bits: one
    rounded addition each); the two of one length, not overlapping."""
    cdef Py_ssize_t n = out.shape[0], chunk, first, last
    if n == 0:
        return
    with nogil:
        if num_threads <= 1:
            add_run(&out[0], &other[0], n)
        else:
            for chunk in prange(num_threads, num_threads=num_threads, schedule="static"):
                first = chunk_start(chunk, n, num_threads)
                last = chunk_start(chunk + 1, n, num_threads)
                if last > first:
                    add_run(&out[first], &other[first], last - first)

cdef extern from "_gemm.h" nogil:
    enum:
        FC_SGEMM_NR
        FC_DGEMM_NR
    void fc_gemm_init()
    int fc_gemm_rows()
    const char* fc_gemm_kernel_name()
    void fc_spack_a(Py_ssize_t m, Py_ssize_t k, const float* a, Py_ssize_t rs, Py_ssize_t cs,
                    float* packed)
    void fc_dpack_a(Py_ssize_t m, Py_ssize_t k, const double* a, Py_ssize_t rs, Py_ssize_t cs,
                    double* packed)
    void fc_sgemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* pa,
                         const float* pb, Py_ssize_t panel, Py_ssize_t ldb, const float* bias,
                         float* c, Py_ssize_t ldc, int add_to_c, int relu)
    void fc_dgemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* pa,
                         const double* pb, Py_ssize_t panel, Py_ssize_t ldb, const double* bias,
                         double* c, Py_ssize_t ldc, int add_to_c, int relu)
    void fc_stranspose_panel(const float* src, Py_ssize_t ld, int rows, Py_ssize_t count,
                             float* dst)
    void fc_dtranspose_panel(const double* src, Py_ssize_t ld, int rows, Py_ssize_t count,
                             double* dst)


fc_gemm_init()  # the micro-kernels for ISA, before any kernel runs
# The packed GEMM's panel sizes (rows of weights, columns of pixels) per dtype, for the wrapper
# to size its buffers: the rows depend on the micro-kernel picked for this CPU.
PANELS = {"float": (fc_gemm_rows(), FC_SGEMM_NR), "double": (fc_gemm_rows(), FC_DGEMM_NR)}


def packed_gemm_kernel():
    """The packed GEMM's micro-kernel in use ('avx512 8x16', 'avx2 6x16' or 'generic 6x16'),
    or None on a CPU that has only the plain C one, which the wrappers leave to BLAS there
    (FASTCONV_ISA=generic on a bigger CPU runs it, to test it)."""
    cdef const char* name = fc_gemm_kernel_name()
    return None if name == NULL else name.decode("ascii")


cdef inline void gemm(const char* transa, const char* transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                      floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """Column-major c = a' @ b' + beta * c (the wrapper keeps every size below 2**31)."""
    cdef int m_ = <int>m, n_ = <int>n, k_ = <int>k
    cdef int lda_ = <int>lda, ldb_ = <int>ldb, ldc_ = <int>ldc
    cdef floating one = 1
    if floating is float:
        sgemm(<char*>transa, <char*>transb, &m_, &n_, &k_, &one, <float*>a, &lda_, <float*>b, &ldb_,
              &beta, c, &ldc_)
    else:
        dgemm(<char*>transa, <char*>transb, &m_, &n_, &k_, &one, <double*>a, &lda_, <double*>b, &ldb_,
              &beta, c, &ldc_)


cdef inline void pack_rows(const floating* a, Py_ssize_t m, Py_ssize_t k, Py_ssize_t rs,
                           Py_ssize_t cs, floating* packed) noexcept nogil:
    """The packed GEMM's A panels of the m x k matrix A[i][kk] = a[i*rs + kk*cs]."""
    if floating is float:
        fc_spack_a(m, k, a, rs, cs, packed)
    else:
        fc_dpack_a(m, k, a, rs, cs, packed)


cdef Py_ssize_t copy_rows(const floating* src, Py_ssize_t src_ld, Py_ssize_t rows,
                          Py_ssize_t count, floating* dst) noexcept nogil:
    """dst[r*ld + j] = src[r*src_ld + j] for j < count, 0 up to whole panels; returns ld."""
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    cdef Py_ssize_t padded = (count + nr - 1) // nr * nr
    cdef Py_ssize_t ld = panel_ld(count, nr)
    cdef Py_ssize_t r, j
    for r in range(rows):
        memcpy(dst + r * ld, src + r * src_ld, count * sizeof(floating))
        for j in range(count, padded):
            dst[r * ld + j] = 0
    return ld


cdef inline void gemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* pa,
                             const floating* pb, Py_ssize_t panel, Py_ssize_t ldb,
                             const floating* bias, floating* c, Py_ssize_t ldc,
                             bint add_to_c=False, bint relu=False) noexcept nogil:
    if floating is float:
        fc_sgemm_packed(m, n, k, pa, pb, panel, ldb, bias, c, ldc, add_to_c, relu)
    else:
        fc_dgemm_packed(m, n, k, pa, pb, panel, ldb, bias, c, ldc, add_to_c, relu)


cdef void im2col_transposed(const floating* x_group, const floating* stage, floating* panels,
                            floating* scratch, Py_ssize_t p0, Py_ssize_t count,
                            const Geometry* geo) noexcept nogil:
    """im2col_tile's block transposed into the packed GEMM's B panels (pixels down, nr taps
    across): panels[(r // nr)*count*nr + i*nr + r % nr] = col[r, i] for the k rows r
    = (c,p,q), zero past k. nr rows at a time are built in ``scratch`` (nr * count)."""
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    cdef Py_ssize_t taps = geo.kernel_h * geo.kernel_w
    cdef Py_ssize_t r0 = 0, r, rows
    while r0 < geo.k:
        rows = geo.k - r0 if geo.k - r0 < nr else nr
        for r in range(rows):
            col_row(x_group, stage, scratch + r * count, (r0 + r) // taps,
                    (r0 + r) % taps // geo.kernel_w, (r0 + r) % geo.kernel_w, p0, count, geo)
        if floating is float:
            fc_stranspose_panel(scratch, count, <int>rows, count, panels + r0 * count)
        else:
            fc_dtranspose_panel(scratch, count, <int>rows, count, panels + r0 * count)
        r0 = r0 + nr


cdef void forward_gemm(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                       const floating[::1] bias, floating[:, :, :, ::1] out,
                       floating[:, ::1] workspace, floating[::1] packed_weight,
                       const Geometry* geometry, Py_ssize_t groups, bint packed,
                       int num_threads, bint relu=False) noexcept:
    """y[n,o,i,j] = b[o] + sum_{c,p,q} x[n,c,i*s+p*d-pad,j*s+q*d-pad] * w[o,c,p,q] (per group).

    ``bias`` may be None. ``workspace`` has one row per thread: 64 bytes of slack to align it,
    the im2col block (k rows of panel_ld(tile), which also holds the BLAS path's k * tile),
    STAGE_CHUNK bytes, and for a staged geometry the stage (stage_size). ``packed``: the
    weights are packed once into ``packed_weight`` (groups * (C_out/groups rounded up to whole
    panels) * k elements, and 64 bytes of slack), then every tile is im2col'ed straight into
    panels; otherwise each tile is one BLAS call (``packed_weight`` unused). ``relu``: the
    sums (with the bias) are ReLU'd where they are stored (src/_epilogue.h), by the packed
    GEMM per block of C, after BLAS in the bias loop over the tile.
    """
    cdef Geometry geo = geometry[0]
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t n_items = batch * groups * geo.n_tiles
    cdef Py_ssize_t out_plane = geo.out_h * geo.out_w
    cdef Py_ssize_t in_plane = geo.in_h * geo.in_w
    cdef bint has_bias = bias is not None
    cdef Py_ssize_t mr = fc_gemm_rows()
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    cdef Py_ssize_t group_panels = (geo.out_channels_g + mr - 1) // mr * mr * geo.k
    cdef Py_ssize_t item, n, g, t, p0, count, o, i, lda, chunk, first, last, staged_item
    cdef const floating* a
    cdef const floating* x_group
    cdef floating* stage = NULL
    cdef floating* weight_panels = NULL
    cdef floating* c_ptr
    cdef floating* col = NULL
    cdef floating b
    if n_items == 0:
        return
    if packed:
        weight_panels = aligned(&packed_weight[0])
        # a copy of the weights, serial: a fraction 1 / (batch * pixels) of the work
        with nogil:
            for g in range(groups):
                pack_rows(&weight[g * geo.out_channels_g, 0, 0, 0], geo.out_channels_g, geo.k,
                          geo.k, 1, weight_panels + g * group_panels)
    with nogil, parallel(num_threads=num_threads):
        col = aligned(&workspace[threadid(), 0])
        stage = stage_of(col, &geo)
        if geo.staged:
            stage_clear(stage, &geo)
        # one contiguous run of items per thread, so that the tiles of one (sample, group)
        # that fall to a thread stage its input once
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
                c_ptr = &out[n, g * geo.out_channels_g, 0, 0] + p0
                x_group = &x[n, g * geo.in_channels_g, 0, 0]
                if geo.staged and item // geo.n_tiles != staged_item:
                    stage_input(x_group, stage, &geo)
                    staged_item = item // geo.n_tiles
                if packed:
                    lda = im2col_rows(x_group, stage, col, p0, count, &geo)
                    gemm_packed(geo.out_channels_g, count, geo.k,
                                weight_panels + g * group_panels, col, nr, lda,
                                &bias[g * geo.out_channels_g] if has_bias else NULL,
                                c_ptr, out_plane, False, relu)
                else:
                    if geo.pointwise:
                        a = x_group + p0
                        lda = in_plane
                    else:
                        im2col_tile(x_group, stage, col, p0, count, &geo)
                        a = col
                        lda = count
                    gemm(b"N", b"N", count, geo.out_channels_g, geo.k, a, lda,
                         &weight[g * geo.out_channels_g, 0, 0, 0], geo.k, 0, c_ptr, out_plane)
                    if has_bias:
                        for o in range(geo.out_channels_g):
                            b = bias[g * geo.out_channels_g + o]
                            for i in range(count):
                                c_ptr[o * out_plane + i] += b
                    if relu:
                        relu_rows(c_ptr, geo.out_channels_g, count, out_plane)


def forward_packed(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   const floating[::1] bias, floating[:, :, :, ::1] out,
                   floating[:, ::1] workspace, floating[::1] packed_weight, object geometry,
                   Py_ssize_t groups, int num_threads, bint relu=False):
    """The forward pass by im2col + the packed GEMM (forward_gemm); ``bias`` may be None;
    ``relu``: ReLU fused into the store."""
    cdef Geometry geo = make_geometry(geometry)
    forward_gemm(x, weight, bias, out, workspace, packed_weight, &geo, groups, True,
                 num_threads, relu)


def forward_blas(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                 const floating[::1] bias, floating[:, :, :, ::1] out,
                 floating[:, ::1] workspace, object geometry, Py_ssize_t groups,
                 int num_threads, bint relu=False):
    """The forward pass by im2col + BLAS, one GEMM per tile (forward_gemm); the caller holds
    BLAS to one thread; ``bias`` may be None; ``relu``: ReLU fused into the bias loop."""
    cdef Geometry geo = make_geometry(geometry)
    cdef floating[::1] no_panels = None
    forward_gemm(x, weight, bias, out, workspace, no_panels, &geo, groups, False, num_threads,
                 relu)


cdef void grad_weight_impl(const floating[:, :, :, ::1] grad_output,
                           const floating[:, :, :, ::1] x, floating[:, ::1] partials,
                           floating[:, ::1] workspace, const Geometry* geo, Py_ssize_t groups,
                           bint packed, int num_threads) noexcept nogil:
    """partials[chunk, (o,c,p,q)] = sum over the chunk's (n, tile) of gy[n,o,tile] . col[(c,p,q), tile].

    The (sample, tile) pairs are cut into ``partials.shape[0]`` fixed chunks (a number chosen
    from the shapes alone); the caller adds the chunks in order, so the sum's order never
    depends on the thread count. ``partials`` must be zeroed.
    ``packed``: the packed GEMM, gy's tile packed as A and the im2col block transposed into
    B panels; each thread's workspace row holds the gy panels (C_out/groups rounded up to
    whole panels, by tile), the B panels (k rounded up, by tile) and nr rows of scratch;
    then STAGE_CHUNK bytes and, for a staged geometry, the stage (stage_size).
    """
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t n_pairs = batch * geo[0].n_tiles
    cdef Py_ssize_t n_chunks = partials.shape[0]
    cdef Py_ssize_t out_plane = geo[0].out_h * geo[0].out_w
    cdef Py_ssize_t in_plane = geo[0].in_h * geo[0].in_w
    cdef Py_ssize_t chunk, pair, first, last, n, t, g, p0, count, lda, staged_sample
    cdef Py_ssize_t mr = fc_gemm_rows()
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    # the B panels start on a 64-byte boundary too
    cdef Py_ssize_t a_size = ((geo[0].out_channels_g + mr - 1) // mr * mr * geo[0].tile
                              + nr - 1) // nr * nr
    cdef Py_ssize_t b_size = (geo[0].k + nr - 1) // nr * nr * geo[0].tile
    cdef const floating* a
    cdef const floating* x_group
    cdef floating* col = NULL
    cdef floating* stage = NULL
    if n_pairs == 0:
        return
    with parallel(num_threads=num_threads):
        col = aligned(&workspace[threadid(), 0])
        # the stage follows the im2col block, or (packed) the panels and the scratch rows
        stage = (col + a_size + b_size + nr * geo[0].tile + STAGE_CHUNK // sizeof(floating)
                 if packed else stage_of(col, geo))
        if geo[0].staged:
            stage_clear(stage, geo)
        for chunk in prange(n_chunks, schedule="static"):
            first = chunk_start(chunk, n_pairs, n_chunks)
            last = chunk_start(chunk + 1, n_pairs, n_chunks)
            # groups outermost: each group sums into its own slice of partials, so the order
            # of the sums is the same, and a group's tiles of one sample reuse its stage
            for g in range(groups):
                staged_sample = -1
                for pair in range(first, last):
                    n = pair // geo[0].n_tiles
                    t = pair % geo[0].n_tiles
                    p0 = t * geo[0].tile
                    count = pixels_in_tile(p0, geo)
                    x_group = &x[n, g * geo[0].in_channels_g, 0, 0]
                    if geo[0].staged and n != staged_sample:
                        stage_input(x_group, stage, geo)
                        staged_sample = n
                    if packed:
                        pack_rows(&grad_output[n, g * geo[0].out_channels_g, 0, 0] + p0,
                                  geo[0].out_channels_g, count, out_plane, 1, col)
                        im2col_transposed(x_group, stage, col + a_size, col + a_size + b_size,
                                          p0, count, geo)
                        gemm_packed(geo[0].out_channels_g, geo[0].k, count, col, col + a_size,
                                    count * nr, nr, NULL,
                                    &partials[chunk, g * geo[0].out_channels_g * geo[0].k],
                                    geo[0].k, True)
                    else:
                        if geo[0].pointwise:
                            a = x_group + p0
                            lda = in_plane
                        else:
                            im2col_tile(x_group, stage, col, p0, count, geo)
                            a = col
                            lda = count
                        gemm(b"T", b"N", geo[0].k, geo[0].out_channels_g, count, a, lda,
                             &grad_output[n, g * geo[0].out_channels_g, 0, 0] + p0, out_plane,
                             1, &partials[chunk, g * geo[0].out_channels_g * geo[0].k],
                             geo[0].k)


cdef void grad_bias_impl(const floating[:, :, :, ::1] grad_output, floating[::1] grad_bias,
                         int num_threads) noexcept nogil:
    """gb[o] = sum_{n,i,j} gy[n,o,i,j], one channel per thread in a fixed order (float64 sum)."""
    cdef Py_ssize_t batch = grad_output.shape[0], channels = grad_output.shape[1]
    cdef Py_ssize_t plane = grad_output.shape[2] * grad_output.shape[3]
    cdef Py_ssize_t o, n, i
    cdef double sum0, sum1, sum2, sum3
    cdef const floating* row
    for o in prange(channels, schedule="static", num_threads=num_threads):
        # four independent running sums (a fixed order, so still thread-count independent):
        # one long dependency chain would leave the adder waiting on itself
        sum0 = 0
        sum1 = 0
        sum2 = 0
        sum3 = 0
        for n in range(batch):
            row = &grad_output[n, o, 0, 0]
            i = 0
            while i + 4 <= plane:
                sum0 = sum0 + row[i]
                sum1 = sum1 + row[i + 1]
                sum2 = sum2 + row[i + 2]
                sum3 = sum3 + row[i + 3]
                i = i + 4
            while i < plane:
                sum0 = sum0 + row[i]
                i = i + 1
        grad_bias[o] = <floating>((sum0 + sum1) + (sum2 + sum3))


cdef inline void column_gradient(const floating* gy_tile, Py_ssize_t out_plane,
                                 const floating* w_group, const floating* wt_packed,
                                 floating* gy_rows, floating* col, Py_ssize_t count,
                                 const Geometry* geo) noexcept nogil:
    """col[(c,p,q), i] = sum_o w[o,c,p,q] * gy[o, i] for the tile's count pixels (row stride
    count): the packed GEMM with the transposed weights packed once (``wt_packed``, when not
    NULL) and the tile of gy copied into ``gy_rows``; else BLAS."""
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    cdef Py_ssize_t ld
    if wt_packed != NULL:
        ld = copy_rows(gy_tile, out_plane, geo.out_channels_g, count, gy_rows)
        gemm_packed(geo.k, count, geo.out_channels_g, wt_packed, gy_rows, nr, ld, NULL, col,
                    count)
    else:
        gemm(b"N", b"T", count, geo.k, geo.out_channels_g, gy_tile, out_plane, w_group, geo.k,
             0, col, count)


cdef void grad_input_impl(const floating[:, :, :, ::1] grad_output,
                          const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                          floating[:, ::1] workspace, floating[::1] packed_weight,
                          floating[:, ::1] gy_workspace, const Geometry* geo, Py_ssize_t groups,
                          bint packed, bint per_item, int num_threads) noexcept nogil:
    """gx[n,c,i*s+p*d-pad,j*s+q*d-pad] += sum_o w[o,c,p,q] * gy[n,o,i,j] (per group).

    Each tile's column gradient (k x tile) is one GEMM, scattered back by col2im. Two
    schedules give the same sums in the same order:
    - ``per_item`` (many (sample, group) items): one item per thread at a time, its tiles in
      order, one workspace row (as the forward pass's) per thread; a staged geometry
      scatters into the thread's stage (contiguous runs), then copies it to the planes;
    - otherwise (few items): the items in turn; within one, a band of tiles' GEMMs in
      parallel (workspace: one row holding ``band`` tile blocks), then the scatter in parallel
      over input channels, which own disjoint planes.
    ``grad_input`` must be zeroed (pointwise convolutions write it directly).
    ``packed``: the packed GEMM (column_gradient), the transposed weights packed into
    ``packed_weight`` (groups * (k rounded up to whole panels) * C_out/groups), with one row
    of ``gy_workspace`` (C_out/groups * panel_ld(tile)) per thread; else BLAS (both None).
    Pointwise convolutions keep BLAS.
    """
    cdef Py_ssize_t batch = grad_output.shape[0]
    cdef Py_ssize_t n_items = batch * groups
    cdef Py_ssize_t out_plane = geo[0].out_h * geo[0].out_w
    cdef Py_ssize_t in_plane = geo[0].in_h * geo[0].in_w
    cdef Py_ssize_t block = geo[0].k * geo[0].tile
    cdef Py_ssize_t band = workspace.shape[1] // block if block > 0 else 1
    cdef Py_ssize_t item, n, g, t, p0, count, band_start, band_stop, c
    cdef Py_ssize_t tile_index, tile_start, tile_count
    cdef Py_ssize_t mr = fc_gemm_rows()
    cdef Py_ssize_t group_panels = (geo[0].k + mr - 1) // mr * mr * geo[0].out_channels_g
    cdef floating* col = NULL
    cdef floating* stage = NULL
    cdef floating* gy_rows = NULL
    cdef floating* weight_panels = NULL
    cdef const floating* wt_packed = NULL
    cdef floating* gx_group
    cdef const floating* gy_group
    cdef const floating* w_group
    if n_items == 0 or geo[0].k == 0:
        return
    if geo[0].pointwise:
        # the column gradient of a tile is the input gradient itself: write it in place
        for item in prange(n_items * geo[0].n_tiles, schedule="static",
                           num_threads=num_threads):
            n = item // (groups * geo[0].n_tiles)
            g = (item // geo[0].n_tiles) % groups
            t = item % geo[0].n_tiles
            p0 = t * geo[0].tile
            count = pixels_in_tile(p0, geo)
            gemm(b"N", b"T", count, geo[0].k, geo[0].out_channels_g,
                 &grad_output[n, g * geo[0].out_channels_g, 0, 0] + p0, out_plane,
                 &weight[g * geo[0].out_channels_g, 0, 0, 0], geo[0].k, 0,
                 &grad_input[n, g * geo[0].in_channels_g, 0, 0] + p0, in_plane)
        return
    if packed:
        weight_panels = aligned(&packed_weight[0])
        # the transposed weights (k rows by C_out/groups), packed once, serially: a fraction
        # 1 / (batch * pixels) of the work
        for g in range(groups):
            pack_rows(&weight[g * geo[0].out_channels_g, 0, 0, 0], geo[0].k,
                      geo[0].out_channels_g, 1, geo[0].k, weight_panels + g * group_panels)
    if per_item:
        with parallel(num_threads=num_threads):
            col = aligned(&workspace[threadid(), 0])
            # (the BLAS path has no rows of gy: it reads grad_output in place)
            gy_rows = aligned(&gy_workspace[threadid(), 0]) if packed else NULL
            stage = stage_of(col, geo)
            for item in prange(n_items, schedule="static"):
                n = item // groups
                g = item % groups
                gy_group = &grad_output[n, g * geo[0].out_channels_g, 0, 0]
                w_group = &weight[g * geo[0].out_channels_g, 0, 0, 0]
                gx_group = &grad_input[n, g * geo[0].in_channels_g, 0, 0]
                wt_packed = weight_panels + g * group_panels if packed else NULL
                if geo[0].staged:
                    # the item's sums gather in its stage, then go to the planes at once
                    stage_clear(stage, geo)
                for t in range(geo[0].n_tiles):
                    p0 = t * geo[0].tile
                    count = pixels_in_tile(p0, geo)
                    column_gradient(gy_group + p0, out_plane, w_group, wt_packed, gy_rows, col,
                                    count, geo)
                    if geo[0].staged:
                        col2im_staged(col, stage, p0, count, geo)
                    else:
                        col2im_tile(col, gx_group, 0, geo[0].in_channels_g, p0, count, geo)
                if geo[0].staged:
                    unstage(stage, gx_group, geo)
        return
    for item in range(n_items):
        n = item // groups
        g = item % groups
        gy_group = &grad_output[n, g * geo[0].out_channels_g, 0, 0]
        w_group = &weight[g * geo[0].out_channels_g, 0, 0, 0]
        gx_group = &grad_input[n, g * geo[0].in_channels_g, 0, 0]
        wt_packed = weight_panels + g * group_panels if packed else NULL
        band_start = 0
        while band_start < geo[0].n_tiles:
            band_stop = band_start + band
            if band_stop > geo[0].n_tiles:
                band_stop = geo[0].n_tiles
            with parallel(num_threads=num_threads):
                gy_rows = aligned(&gy_workspace[threadid(), 0]) if packed else NULL
                for t in prange(band_start, band_stop, schedule="static"):
                    p0 = t * geo[0].tile
                    count = pixels_in_tile(p0, geo)
                    column_gradient(gy_group + p0, out_plane, w_group, wt_packed, gy_rows,
                                    &workspace[0, (t - band_start) * block], count, geo)
            for c in prange(geo[0].in_channels_g, schedule="static", num_threads=num_threads):
                for tile_index in range(band_start, band_stop):
                    tile_start = tile_index * geo[0].tile
                    tile_count = pixels_in_tile(tile_start, geo)
                    col2im_tile(&workspace[0, (tile_index - band_start) * block], gx_group,
                                c, c + 1, tile_start, tile_count, geo)
            band_start = band_stop


def grad_bias(const floating[:, :, :, ::1] grad_output, floating[::1] grad_bias,
              int num_threads):
    """gb[o] = sum_{n,i,j} gy[n,o,i,j] (grad_bias_impl): every path's bias gradient."""
    with nogil:
        grad_bias_impl(grad_output, grad_bias, num_threads)


def grad_weight_packed(const floating[:, :, :, ::1] grad_output,
                       const floating[:, :, :, ::1] x, floating[:, ::1] partials,
                       floating[:, ::1] workspace, object geometry, Py_ssize_t groups,
                       int num_threads):
    """The weight gradient's chunk sums by the packed GEMM (grad_weight_impl)."""
    cdef Geometry geo = make_geometry(geometry)
    with nogil:
        grad_weight_impl(grad_output, x, partials, workspace, &geo, groups, True, num_threads)


def grad_weight_blas(const floating[:, :, :, ::1] grad_output,
                     const floating[:, :, :, ::1] x, floating[:, ::1] partials,
                     floating[:, ::1] workspace, object geometry, Py_ssize_t groups,
                     int num_threads):
    """The weight gradient's chunk sums by BLAS (grad_weight_impl; BLAS held to one thread
    by the caller)."""
    cdef Geometry geo = make_geometry(geometry)
    with nogil:
        grad_weight_impl(grad_output, x, partials, workspace, &geo, groups, False, num_threads)


def grad_input_packed(const floating[:, :, :, ::1] grad_output,
                      const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                      floating[:, ::1] workspace, floating[::1] packed_weight,
                      floating[:, ::1] gy_workspace, object geometry, Py_ssize_t groups,
                      bint per_item, int num_threads):
    """The input gradient by column gradients of the packed GEMM, scattered (grad_input_impl)."""
    cdef Geometry geo = make_geometry(geometry)
    with nogil:
        grad_input_impl(grad_output, weight, grad_input, workspace, packed_weight, gy_workspace,
                        &geo, groups, True, per_item, num_threads)


def grad_input_blas(const floating[:, :, :, ::1] grad_output,
                    const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                    floating[:, ::1] workspace, object geometry, Py_ssize_t groups,
                    bint per_item, int num_threads):
    """The input gradient by column gradients of BLAS, scattered (grad_input_impl; BLAS held
    to one thread by the caller)."""
    cdef Geometry geo = make_geometry(geometry)
    cdef floating[::1] no_panels = None
    cdef floating[:, ::1] no_rows = None
    with nogil:
        grad_input_impl(grad_output, weight, grad_input, workspace, no_panels, no_rows, &geo,
                        groups, False, per_item, num_threads)
