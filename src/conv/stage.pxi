cdef extern from "_stage.h" nogil:
    # the staged row copy moves this many bytes at a time, and may read and write up to as
    # many past the end of a run: the buffers it touches carry this much slack
    enum:
        STAGE_CHUNK "FC_STAGE_CHUNK"
    const char* fc_stage_init()
    void fc_copy_runs(char* dst, Py_ssize_t dst_step, const char* src, Py_ssize_t src_step,
                      Py_ssize_t runs, Py_ssize_t run_bytes)
    void fc_copy_rows(char* dst, Py_ssize_t dst_step, const char* src, Py_ssize_t src_step,
                      Py_ssize_t runs, Py_ssize_t bytes)
    void fc_sadd_runs(float* dst, Py_ssize_t dst_step, const float* src, Py_ssize_t src_step,
                      Py_ssize_t runs, Py_ssize_t length)
    void fc_dadd_runs(double* dst, Py_ssize_t dst_step, const double* src,
                      Py_ssize_t src_step, Py_ssize_t runs, Py_ssize_t length)
    void fc_gather_rows(float* dst, Py_ssize_t dst_step, const float* src,
                        Py_ssize_t src_step, Py_ssize_t runs, Py_ssize_t count,
                        Py_ssize_t step)


# the level the staged copies run at (src/_stage.h): the AVX2 moves from avx2, the masked
# AVX-512 row copy and the columns' gather (AVX-512 permutes at stride 2) at avx512
STAGE_COPY = fc_stage_init().decode("ascii")


cdef inline Py_ssize_t stage_length(const Geometry* geo) noexcept nogil:
    """Elements of one thread's staged input, with the copy's slack: 0 where it does not
    apply (pointwise convolutions read the input in place; empty outputs read nothing)."""
    if geo.pointwise or geo.out_h <= 0 or geo.out_w <= 0:
        return 0
    return geo.in_channels_g * geo.st_plane + STAGE_CHUNK // 4


def stage_size(object geometry):
    """stage_length, for the wrapper to size the workspace and decide whether staging pays."""
    cdef Geometry geo = make_geometry(geometry)
    return stage_length(&geo)


cdef inline floating* stage_of(floating* col, const Geometry* geo) noexcept nogil:
    """Where a thread's stage starts in its workspace row: after the im2col block at ``col``
    (k rows of at most panel_ld(tile)) and the STAGE_CHUNK bytes its staged copy may spill."""
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    return col + geo.k * panel_ld(geo.tile, nr) + STAGE_CHUNK // sizeof(floating)


cdef inline void im2col_row(const floating* x_group, floating* row, Py_ssize_t c, Py_ssize_t p,
                            Py_ssize_t q, Py_ssize_t p0, Py_ssize_t count,
                            const Geometry* geo) noexcept nogil:
    """row[i] = x[c, oy*s+p*d-pad, ox*s+q*d-pad] (0 outside) for pixel p0+i = (oy, ox)."""
    cdef Py_ssize_t i, j, seg, oy, ox, iy, ix0, lo, hi, q_lo, q_hi
    cdef Py_ssize_t stride_w = geo.stride_w
    cdef const floating* src
    cdef floating* dst
    # the output columns whose tap q lands inside the input: the same for every output row,
    # so found once per tap instead of once per row segment
    valid_range(q * geo.dil_w - geo.pad_left, stride_w, geo.out_w, geo.in_w, &q_lo, &q_hi)
    oy = p0 // geo.out_w
    ox = p0 - oy * geo.out_w
    i = 0
    while i < count:
        # one run along an output row: the input row is fixed, columns step by stride
        seg = geo.out_w - ox
        if seg > count - i:
            seg = count - i
        dst = row + i
        iy = oy * geo.stride_h - geo.pad_top + p * geo.dil_h
        if iy < 0 or iy >= geo.in_h:
            for j in range(seg):
                dst[j] = 0
        else:
            lo = q_lo - ox if q_lo > ox else 0
            hi = q_hi - ox if q_hi - ox < seg else seg
            if hi < lo:
                hi = lo
            ix0 = ox * stride_w - geo.pad_left + q * geo.dil_w
            src = x_group + c * geo.in_h * geo.in_w + iy * geo.in_w + ix0
            for j in range(lo):
                dst[j] = 0
            if stride_w == 1:
                for j in range(lo, hi):
                    dst[j] = src[j]
            else:
                for j in range(lo, hi):
                    dst[j] = src[j * stride_w]
            for j in range(hi, seg):
                dst[j] = 0
        i = i + seg
        oy = oy + 1
        ox = 0


cdef void stage_clear(floating* stage, const Geometry* geo) noexcept nogil:
    """Zero a thread's stage: once per call before its first stage_input (every stage of a
    call has the same layout, and stage_input writes only the input's values, so the padding
    around them stays zero from one (sample, group) to the next: the readers never write
    into it), or before each item of the staged scatter (col2im_staged), which sums into it."""
    memset(stage, 0, geo.in_channels_g * geo.st_plane * sizeof(floating))


cdef void stage_input(const floating* x_group, floating* stage,
                      const Geometry* geo) noexcept nogil:
    """stage[c, py, ph, xq] = x[c, py - pad_top, xq*stride_w + ph - pad_left] where that is
    inside x; the stage's other elements (the zero padding) are left as stage_clear made them.

    The zero-padded input of one (sample, group), each row's columns split by phase modulo
    stride_w: the pixels (oy, ox) of one output row read, for tap (p, q), the input columns
    ox*stride_w + q*dil_w - pad_left, which here are one contiguous run (phase q*dil_w %
    stride_w, from xq = ox + q*dil_w // stride_w). Written once per (sample, group), it makes
    every im2col row segment a plain copy (staged_runs), and the direct kernels read it in
    place.
    """
    cdef Py_ssize_t sw = geo.stride_w, plane = geo.in_h * geo.in_w
    cdef Py_ssize_t c, iy, ph, j, lo, hi
    # the input rows the stage holds: py = iy + pad_top < st_rows
    cdef Py_ssize_t rows = geo.st_rows - geo.pad_top
    cdef const floating* src
    cdef floating* dst
    cdef floating* d
    cdef const floating* s
    if rows > geo.in_h:
        rows = geo.in_h
    if rows <= 0:
        return
    for c in range(geo.in_channels_g):
        dst = stage + c * geo.st_plane + geo.pad_top * geo.st_row
        src = x_group + c * plane
        for ph in range(sw):
            valid_range(ph - geo.pad_left, sw, geo.st_w, geo.in_w, &lo, &hi)
            if hi <= lo:
                continue
            if sw == 1:
                fc_copy_rows(<char*>(dst + lo), geo.st_row * sizeof(floating),
                             <const char*>(src + lo - geo.pad_left),
                             geo.in_w * sizeof(floating), rows, (hi - lo) * sizeof(floating))
            elif floating is float:
                # the phase's columns by src/_stage.h's fc_gather_rows (at stride 2 by
                # AVX-512 permutes: the column loop below took a fifth of the direct forward
                # pass of the small ResNet's 32 -> 64 stride-2 layer; bench/direct_stages.c,
                # 16 samples of 32x28x28, 0.253 -> 0.044 ms against 0.95 ms of sums)
                fc_gather_rows(dst + ph * geo.st_w + lo, geo.st_row,
                               src + lo * sw + ph - geo.pad_left, geo.in_w, rows, hi - lo, sw)
            else:
                # four columns a step (a 4-instruction loop of one column ran at half this
                # speed, or less, depending on where it landed in the code)
                for iy in range(rows):
                    d = dst + iy * geo.st_row + ph * geo.st_w
                    s = src + iy * geo.in_w + ph - geo.pad_left
                    j = lo
                    while j + 4 <= hi:
                        d[j] = s[j * sw]
                        d[j + 1] = s[(j + 1) * sw]
                        d[j + 2] = s[(j + 2) * sw]
                        d[j + 3] = s[(j + 3) * sw]
                        j = j + 4
                    while j < hi:
                        d[j] = s[j * sw]
                        j = j + 1


cdef void stage_points(const float* x_group, float* stage, const Geometry* geo) noexcept nogil:
    """stage[c, oy, ox] = x[c, oy*stride_h - pad_top, ox*stride_w - pad_left], 0 outside x:
    the input values a 1x1 kernel reads, one compact plane of out_h * out_w per channel (its
    im2col block; pointwise_rows' input), every element written, the columns gathered by
    src/_stage.h's fc_gather_rows. For a strided shortcut (ResNet's 1x1 stride 2) it is a
    quarter of stage_input's copy, and the kernels' runs of pixels cross the output rows."""
    cdef Py_ssize_t plane = geo.in_h * geo.in_w, out_plane = geo.out_h * geo.out_w
    cdef Py_ssize_t c, oy, lo, hi, row_lo, row_hi
    cdef float* d
    valid_range(-geo.pad_left, geo.stride_w, geo.out_w, geo.in_w, &lo, &hi)
    valid_range(-geo.pad_top, geo.stride_h, geo.out_h, geo.in_h, &row_lo, &row_hi)
    if hi <= lo:
        row_hi = row_lo
    for c in range(geo.in_channels_g):
        d = stage + c * out_plane
        # the rows and columns on the padding: zeros
        memset(d, 0, row_lo * geo.out_w * sizeof(float))
        memset(d + row_hi * geo.out_w, 0, (geo.out_h - row_hi) * geo.out_w * sizeof(float))
        if lo > 0 or hi < geo.out_w:
            for oy in range(row_lo, row_hi):
                memset(d + oy * geo.out_w, 0, lo * sizeof(float))
                memset(d + oy * geo.out_w + hi, 0, (geo.out_w - hi) * sizeof(float))
        if row_hi > row_lo:
            fc_gather_rows(d + row_lo * geo.out_w + lo, geo.out_w,
                           x_group + c * plane + (row_lo * geo.stride_h - geo.pad_top) * geo.in_w
                           + lo * geo.stride_w - geo.pad_left,
                           geo.stride_h * geo.in_w, row_hi - row_lo, hi - lo, geo.stride_w)


cdef inline void move_runs(floating* run, Py_ssize_t run_step, floating* row,
                           Py_ssize_t row_step, Py_ssize_t runs, Py_ssize_t length,
                           bint add) noexcept nogil:
    """For r < runs: row[r*row_step : +length] = run[r*run_step : +length] (src/_stage.h's
    chunked copy), or with ``add``, run[...] += row[...]."""
    if not add:
        fc_copy_runs(<char*>row, row_step * sizeof(floating), <const char*>run,
                     run_step * sizeof(floating), runs, length * sizeof(floating))
    elif floating is float:
        fc_sadd_runs(run, run_step, row, row_step, runs, length)
    else:
        fc_dadd_runs(run, run_step, row, row_step, runs, length)


cdef inline void staged_runs(floating* stage, floating* row, Py_ssize_t c, Py_ssize_t p,
                             Py_ssize_t q, Py_ssize_t p0, Py_ssize_t count, bint add,
                             const Geometry* geo) noexcept nogil:
    """The im2col row (c, p, q) of pixels p0 .. p0+count against the staged input, one
    contiguous run of the stage per output-row segment: copied into ``row`` (col_row), or,
    with ``add``, ``row`` added into the stage (col2im_staged). The copy moves STAGE_CHUNK
    bytes at a time (src/_stage.h): the last copy of a segment runs past it, up to
    STAGE_CHUNK bytes past ``row + count`` at the end of the row, so the segments are written
    in order and the caller writes what follows the row after it. The sums are exact."""
    cdef Py_ssize_t tap = q * geo.dil_w
    cdef Py_ssize_t step = geo.stride_h * geo.st_row
    cdef floating* run = (stage + c * geo.st_plane + p * geo.dil_h * geo.st_row
                          + (tap % geo.stride_w) * geo.st_w + tap // geo.stride_w)
    cdef Py_ssize_t oy = p0 // geo.out_w
    cdef Py_ssize_t ox = p0 - oy * geo.out_w
    cdef Py_ssize_t seg, rows
    run = run + oy * step
    if ox > 0:
        # the tile starts inside an output row
        seg = geo.out_w - ox if geo.out_w - ox < count else count
        move_runs(run + ox, 0, row, 0, 1, seg, add)
        row = row + seg
        count = count - seg
        run = run + step
    # whole output rows, then the part of the last one the tile holds
    rows = count // geo.out_w
    move_runs(run, step, row, geo.out_w, rows, geo.out_w, add)
    count = count - rows * geo.out_w
    if count > 0:
        move_runs(run + rows * step, 0, row + rows * geo.out_w, 0, 1, count, add)


cdef inline void col_row(const floating* x_group, const floating* stage, floating* row,
                         Py_ssize_t c, Py_ssize_t p, Py_ssize_t q, Py_ssize_t p0,
                         Py_ssize_t count, const Geometry* geo) noexcept nogil:
    """One im2col row, from the staged input where the geometry says so (``stage`` then holds
    this (sample, group)'s stage_input), else from x."""
    if geo.staged:
        staged_runs(<floating*>stage, row, c, p, q, p0, count, False, geo)
    else:
        im2col_row(x_group, row, c, p, q, p0, count, geo)


cdef void im2col_tile(const floating* x_group, const floating* stage, floating* col,
                      Py_ssize_t p0, Py_ssize_t count, const Geometry* geo) noexcept nogil:
    """col[(c,p,q), i] = x[c, oy*s+p*d-pad, ox*s+q*d-pad] (0 outside) for pixel p0+i = (oy, ox).

    (Staged, the last row may be followed by STAGE_CHUNK bytes of scratch.)"""
    cdef Py_ssize_t c, p, q
    cdef floating* row = col
    for c in range(geo.in_channels_g):
        for p in range(geo.kernel_h):
            for q in range(geo.kernel_w):
                col_row(x_group, stage, row, c, p, q, p0, count, geo)
                row = row + count


cdef Py_ssize_t im2col_rows(const floating* x_group, const floating* stage, floating* col,
                            Py_ssize_t p0, Py_ssize_t count, const Geometry* geo) noexcept nogil:
    """im2col_tile's block for the packed GEMM, which reads it in place as panels of nr
    columns: rows ld = panel_ld(count, nr) apart, zeroed from count up to whole panels.
    Returns ld."""
    cdef Py_ssize_t nr = FC_SGEMM_NR if floating is float else FC_DGEMM_NR
    cdef Py_ssize_t padded = (count + nr - 1) // nr * nr
    cdef Py_ssize_t ld = panel_ld(count, nr)
    cdef Py_ssize_t c, p, q, j
    cdef floating* row = col
    for c in range(geo.in_channels_g):
        for p in range(geo.kernel_h):
            for q in range(geo.kernel_w):
                col_row(x_group, stage, row, c, p, q, p0, count, geo)
                for j in range(count, padded):
                    row[j] = 0
                row = row + ld
    return ld


cdef void col2im_tile(const floating* col, floating* grad_group, Py_ssize_t c_start,
                      Py_ssize_t c_stop, Py_ssize_t p0, Py_ssize_t count,
                      const Geometry* geo) noexcept nogil:
    """grad[c, oy*s+p*d-pad, ox*s+q*d-pad] += col[(c,p,q), i] for channels [c_start, c_stop)."""
    cdef Py_ssize_t c, p, q, i, j, seg, oy, ox, iy, ix0, lo, hi, q_lo, q_hi
    cdef Py_ssize_t plane = geo.in_h * geo.in_w
    cdef Py_ssize_t taps = geo.kernel_h * geo.kernel_w
    cdef Py_ssize_t stride_w = geo.stride_w
    cdef floating* dst
    cdef const floating* src
    cdef const floating* row
    for c in range(c_start, c_stop):
        row = col + c * taps * count
        for p in range(geo.kernel_h):
            for q in range(geo.kernel_w):
                valid_range(q * geo.dil_w - geo.pad_left, stride_w, geo.out_w, geo.in_w,
                            &q_lo, &q_hi)
                oy = p0 // geo.out_w
                ox = p0 - oy * geo.out_w
                i = 0
                while i < count:
                    seg = geo.out_w - ox
                    if seg > count - i:
                        seg = count - i
                    iy = oy * geo.stride_h - geo.pad_top + p * geo.dil_h
                    if iy >= 0 and iy < geo.in_h:
                        lo = q_lo - ox if q_lo > ox else 0
                        hi = q_hi - ox if q_hi - ox < seg else seg
                        ix0 = ox * stride_w - geo.pad_left + q * geo.dil_w
                        dst = grad_group + c * plane + iy * geo.in_w + ix0
                        src = row + i
                        if stride_w == 1:
                            for j in range(lo, hi):
                                dst[j] += src[j]
                        else:
                            for j in range(lo, hi):
                                dst[j * stride_w] += src[j]
                    i = i + seg
                    oy = oy + 1
                    ox = 0
                row = row + count


cdef void col2im_staged(const floating* col, floating* stage, Py_ssize_t p0, Py_ssize_t count,
                        const Geometry* geo) noexcept nogil:
    """col2im_tile into the staged layout (stage_input's): stage[...] += col[(c,p,q), i], each
    row segment added to one contiguous run (staged_runs, as col_row reads them); unstage
    then moves the sums to the input planes."""
    cdef Py_ssize_t c, p, q
    cdef floating* row = <floating*>col
    for c in range(geo.in_channels_g):
        for p in range(geo.kernel_h):
            for q in range(geo.kernel_w):
                staged_runs(stage, row, c, p, q, p0, count, True, geo)
                row = row + count


cdef void unstage(const floating* stage, floating* gx_group, const Geometry* geo) noexcept nogil:
    """gx[c, iy, ix] = stage[c, iy + pad_top, px % stride_w, px // stride_w], px = ix + pad_left:
    the inverse of stage_input's copy; input pixels no window reaches get 0."""
    cdef Py_ssize_t plane = geo.in_h * geo.in_w
    cdef Py_ssize_t c, iy, ix, py, px, ph, lo, hi
    cdef const floating* src
    cdef floating* dst
    for c in range(geo.in_channels_g):
        for iy in range(geo.in_h):
            py = iy + geo.pad_top
            dst = gx_group + c * plane + iy * geo.in_w
            if py >= geo.st_rows:
                for ix in range(geo.in_w):
                    dst[ix] = 0
                continue
            src = stage + c * geo.st_plane + py * geo.st_row
            if geo.stride_w == 1:
                # the columns the stage holds: pad_left + ix < st_w
                hi = geo.st_w - geo.pad_left
                if hi > geo.in_w:
                    hi = geo.in_w
                if hi < 0:
                    hi = 0
                for ix in range(hi):
                    dst[ix] = src[ix + geo.pad_left]
                for ix in range(hi, geo.in_w):
                    dst[ix] = 0
            else:
                # phase by phase: a contiguous run of the stage to every stride_w-th pixel
                for ph in range(geo.stride_w):
                    valid_range(ph - geo.pad_left, geo.stride_w, geo.st_w, geo.in_w, &lo, &hi)
                    for px in range(lo, hi):
                        dst[px * geo.stride_w + ph - geo.pad_left] = src[ph * geo.st_w + px]
                # the pixels past the stage's columns: (ix + pad_left) // stride_w >= st_w
                lo = geo.stride_w * geo.st_w - geo.pad_left
                if lo < 0:
                    lo = 0
                for ix in range(lo, geo.in_w):
                    dst[ix] = 0


def gather_points(const float[:, :, :, ::1] x, float[:, :, :, ::1] out, object geometry,
                  Py_ssize_t groups, int num_threads):
    """out[n, c] = stage_points of x's (sample, group): the input values of a 1x1 kernel
    (``geometry``), compact planes of (out_h, out_w), so that its weight gradient is a
    pointwise one (fastconv/_paths.py, PointsWeight). ``out`` is (N, C_in, out_h, out_w);
    every element written, (sample, group) items in parallel."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t items = x.shape[0] * groups, item, n, g
    cdef Py_ssize_t cin = geo.in_channels_g
    if (items == 0 or geo.kernel_h != 1 or geo.kernel_w != 1 or x.shape[1] != groups * cin
            or out.shape[0] != x.shape[0] or out.shape[1] != x.shape[1]
            or out.shape[2] != geo.out_h or out.shape[3] != geo.out_w
            or x.shape[2] != geo.in_h or x.shape[3] != geo.in_w
            or geo.out_h == 0 or geo.out_w == 0):
        return
    for item in prange(items, nogil=True, schedule="static", num_threads=num_threads):
        n = item // groups
        g = item % groups
        stage_points(&x[n, g * cin, 0, 0], &out[n, g * cin, 0, 0], &geo)
