"""Convolution kernels: tiled im2col + GEMM, one single-threaded GEMM per tile.

The output pixels of each (sample, group) are cut into tiles of ``tile`` pixels whose im2col
block (K = C_in/groups * kH * kW rows by ``tile`` columns) stays in L2. Each thread packs its
own tile and multiplies it, either with SciPy's OpenBLAS held to one thread by the caller, or
(where the wrapper chooses it, from the shapes) with the packed GEMM of ``_gemm.h``: the
weights are packed once per call and the im2col block is read in place (the forward pass) or
transposed in registers into panels (the weight gradient), where BLAS would re-pack both on
every tile. Where the wrapper stages (geo.staged), a thread first copies the input planes of
the (sample, group) into a zero-padded, column-phase-split stage (stage_input), from which
every im2col row segment is one contiguous run (staged_runs); the per-item input gradient
scatters into such a stage too (col2im_staged, unstage). The tile size and the paths depend
only on the shapes, never on the thread count, and every output element is produced by the
same GEMM call whatever thread runs it, so results are bit-identical for any thread count.

On AVX-512 CPUs, float32 convolutions with a multiple of 16 output channels per group take
the direct kernels of ``_direct.h`` instead (conv2d_forward_direct, grad_weight_direct): no
im2col block, the output channels across the vector lanes, each input value broadcast from
the stage (or, pointwise, from x) in place; and depthwise convolutions with 16k channels
stage 16 channels pixel-major (depthwise_direct_forward/backward).

Row-major arrays are handed to column-major BLAS as their transposes: a row-major (R x C)
block with row stride ``ld`` is a column-major (C x R) matrix with leading dimension ``ld``.

The wrappers in ``fastconv/conv.py`` validate everything and allocate every buffer (outputs,
per-thread workspaces, partial sums); these kernels never raise and never allocate.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

from _types cimport floating


cdef extern from "_cpu.h" nogil:
    int fc_cpu_isa()
    const char* fc_cpu_isa_name(int level)


# The instruction-set level every kernel family below picks its code from, once, at import
# (src/_cpu.h: the CPU's, capped by FASTCONV_ISA=generic|avx2|avx512).
ISA = fc_cpu_isa_name(fc_cpu_isa()).decode("ascii")


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
                         float* c, Py_ssize_t ldc, int add_to_c)
    void fc_dgemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* pa,
                         const double* pb, Py_ssize_t panel, Py_ssize_t ldb, const double* bias,
                         double* c, Py_ssize_t ldc, int add_to_c)
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


cdef struct Geometry:
    Py_ssize_t in_channels_g    # input channels per group
    Py_ssize_t in_h, in_w
    Py_ssize_t out_channels_g   # output channels per group
    Py_ssize_t out_h, out_w
    Py_ssize_t kernel_h, kernel_w
    Py_ssize_t stride_h, stride_w
    Py_ssize_t pad_top, pad_left
    Py_ssize_t dil_h, dil_w
    Py_ssize_t k                # rows of the im2col matrix: in_channels_g * kernel_h * kernel_w
    Py_ssize_t tile             # output pixels per tile
    Py_ssize_t n_tiles
    bint pointwise              # 1x1, stride 1, no padding: the input plane is the im2col matrix
    # staged im2col (see stage_input): the input of one (sample, group) copied once into a
    # zero-padded buffer, each row's columns split by phase modulo stride_w
    bint staged
    Py_ssize_t st_rows          # padded rows the taps reach: (out_h-1)*stride_h + (kH-1)*dil_h + 1
    Py_ssize_t st_w             # columns per phase: out_w + (kW-1)*dil_w // stride_w
    Py_ssize_t st_row           # elements per staged row: stride_w * st_w
    Py_ssize_t st_plane         # elements per staged channel: st_rows * st_row


cdef Geometry make_geometry(tuple g):
    cdef Geometry geo
    (geo.in_channels_g, geo.in_h, geo.in_w, geo.out_channels_g, geo.out_h, geo.out_w,
     geo.kernel_h, geo.kernel_w, geo.stride_h, geo.stride_w, geo.pad_top, geo.pad_left,
     geo.dil_h, geo.dil_w, geo.tile, geo.staged) = g
    geo.k = geo.in_channels_g * geo.kernel_h * geo.kernel_w
    geo.n_tiles = (geo.out_h * geo.out_w + geo.tile - 1) // geo.tile
    geo.pointwise = (geo.kernel_h == 1 and geo.kernel_w == 1 and geo.stride_h == 1
                     and geo.stride_w == 1 and geo.pad_top == 0 and geo.pad_left == 0
                     and geo.out_h == geo.in_h and geo.out_w == geo.in_w)
    geo.st_rows = (geo.out_h - 1) * geo.stride_h + (geo.kernel_h - 1) * geo.dil_h + 1
    geo.st_w = geo.out_w + (geo.kernel_w - 1) * geo.dil_w // geo.stride_w
    geo.st_row = geo.stride_w * geo.st_w
    geo.st_plane = geo.st_rows * geo.st_row
    return geo


cdef inline Py_ssize_t pixels_in_tile(Py_ssize_t p0, const Geometry* geo) noexcept nogil:
    """The output pixels of the tile that starts at pixel p0 (the last of a plane may be
    short). (A return value, not a pointer argument: Cython makes the variables assigned in a
    prange body thread-private, and sees no assignment through a pointer.)"""
    cdef Py_ssize_t rest = geo.out_h * geo.out_w - p0
    return geo.tile if geo.tile < rest else rest


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


# the level the staged copies run at (src/_stage.h): the AVX2 moves from avx2, the masked
# AVX-512 row copy at avx512
STAGE_COPY = fc_stage_init().decode("ascii")


cdef inline Py_ssize_t stage_length(const Geometry* geo) noexcept nogil:
    """Elements of one thread's staged input, with the copy's slack: 0 where it does not
    apply (pointwise convolutions read the input in place; empty outputs read nothing)."""
    if geo.pointwise or geo.out_h <= 0 or geo.out_w <= 0:
        return 0
    return geo.in_channels_g * geo.st_plane + STAGE_CHUNK // 4


def stage_size(tuple geometry):
    """stage_length, for the wrapper to size the workspace and decide whether staging pays."""
    cdef Geometry geo = make_geometry(geometry)
    return stage_length(&geo)


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


cdef inline void valid_range(Py_ssize_t first, Py_ssize_t step, Py_ssize_t count,
                             Py_ssize_t size, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the j in [0, count) with 0 <= first + j*step < size."""
    cdef Py_ssize_t start = 0, stop
    if first < 0:
        start = (-first + step - 1) // step
    if first >= size:
        stop = 0
    else:
        stop = (size - 1 - first) // step + 1
    if stop > count:
        stop = count
    if start > stop:
        start = stop
    lo[0] = start
    hi[0] = stop


cdef inline floating* aligned(floating* p) noexcept nogil:
    """p rounded up to a 64-byte boundary (workspace rows carry 64 bytes of slack for it):
    the micro-kernel's 64-byte rows of B must not straddle two cache lines."""
    return <floating*>((<size_t>p + 63) & ~(<size_t>63))


cdef inline Py_ssize_t panel_ld(Py_ssize_t count, Py_ssize_t nr) noexcept nogil:
    """Row length for a block read in place as the packed GEMM's B: whole panels of nr
    columns (64 bytes), and an odd number of panels, so that the rows of one panel, which the
    micro-kernel reads down the column, fall in different L1 sets."""
    cdef Py_ssize_t padded = (count + nr - 1) // nr * nr
    return padded + nr if (padded // nr) % 2 == 0 else padded


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
            else:
                for iy in range(rows):
                    for j in range(lo, hi):
                        dst[iy * geo.st_row + ph * geo.st_w + j] = \
                            src[iy * geo.in_w + j * sw + ph - geo.pad_left]


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
                             bint add_to_c=False) noexcept nogil:
    if floating is float:
        fc_sgemm_packed(m, n, k, pa, pb, panel, ldb, bias, c, ldc, add_to_c)
    else:
        fc_dgemm_packed(m, n, k, pa, pb, panel, ldb, bias, c, ldc, add_to_c)


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


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   const floating[::1] bias, floating[:, :, :, ::1] out,
                   floating[:, ::1] workspace, floating[::1] packed_weight, tuple geometry,
                   Py_ssize_t groups, int num_threads):
    """y[n,o,i,j] = b[o] + sum_{c,p,q} x[n,c,i*s+p*d-pad,j*s+q*d-pad] * w[o,c,p,q] (per group).

    ``bias`` may have length 0 (no bias). ``workspace`` has one row per thread: 64 bytes of
    slack to align it, the im2col block (k rows of panel_ld(tile), which also holds the BLAS
    path's k * tile), STAGE_CHUNK bytes, and for a staged geometry the stage (stage_size).
    ``packed_weight`` of length 0 selects the BLAS path; otherwise it holds groups *
    (C_out/groups rounded up to whole panels) * k elements and the weights are packed into it
    once, then every tile is im2col'ed straight into panels.
    """
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t n_items = batch * groups * geo.n_tiles
    cdef Py_ssize_t out_plane = geo.out_h * geo.out_w
    cdef Py_ssize_t in_plane = geo.in_h * geo.in_w
    cdef bint has_bias = bias.shape[0] > 0
    cdef bint packed = packed_weight.shape[0] > 0
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
            first = chunk * n_items // num_threads
            last = (chunk + 1) * n_items // num_threads
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
                                c_ptr, out_plane)
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
                        Py_ssize_t plane)
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


def direct_block(tuple geometry):
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


def direct_run_pixels(tuple geometry):
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


def conv2d_forward_direct(const float[:, :, :, ::1] x, const float[:, :, :, ::1] weight,
                          const float[::1] bias, float[:, :, :, ::1] out,
                          float[:, ::1] workspace, float[::1] packed_weight,
                          Py_ssize_t[::1] taps, tuple geometry, Py_ssize_t groups,
                          int num_threads):
    """conv2d_forward by the direct kernels of src/_direct.h (float32, a staged geometry whose
    direct_block is not 0): no im2col block; each tile's sums come out pixel-major and are
    transposed into ``out``.

    ``taps`` (k elements) receives the stage offset of every tap; ``packed_weight`` (groups *
    C_out/groups * k, and 64 bytes of slack) the weights as [group][block][tap][channel of the
    block]. ``workspace`` has one row per thread: 64 bytes of slack, the stage (stage_size),
    and direct_run_pixels * C_out/groups for the sums of a run of a tile's pixels.
    """
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t batch = x.shape[0]
    cdef Py_ssize_t n_items = batch * groups * geo.n_tiles
    cdef Py_ssize_t out_plane = geo.out_h * geo.out_w
    cdef Py_ssize_t channels = geo.out_channels_g
    cdef Py_ssize_t width = direct_block(geometry)
    cdef Py_ssize_t stage_elements = stage_length(&geo)
    cdef bint has_bias = bias.shape[0] > 0
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
            first = chunk * n_items // num_threads
            last = (chunk + 1) * n_items // num_threads
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
                    fc_direct_store(tbuf, channels, sub_count,
                                    &out[n, g * channels, 0, 0] + sub, out_plane)
                    sub = sub + sub_count

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
            first = chunk * n_pairs // n_chunks
            last = (chunk + 1) * n_pairs // n_chunks
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


cdef void grad_weight_direct(const float[:, :, :, ::1] grad_output, const float[:, :, :, ::1] x,
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
            first = chunk * n_pairs // n_chunks
            last = (chunk + 1) * n_pairs // n_chunks
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
                          bint per_item, int num_threads) noexcept nogil:
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
    A non-empty ``packed_weight`` (groups * (k rounded up to whole panels) * C_out/groups)
    selects the packed GEMM (column_gradient), with one row of ``gy_workspace`` (C_out/groups
    * panel_ld(tile)) per thread; pointwise convolutions keep BLAS.
    """
    cdef Py_ssize_t batch = grad_output.shape[0]
    cdef Py_ssize_t n_items = batch * groups
    cdef Py_ssize_t out_plane = geo[0].out_h * geo[0].out_w
    cdef Py_ssize_t in_plane = geo[0].in_h * geo[0].in_w
    cdef Py_ssize_t block = geo[0].k * geo[0].tile
    cdef Py_ssize_t band = workspace.shape[1] // block if block > 0 else 1
    cdef Py_ssize_t item, n, g, t, p0, count, band_start, band_stop, c
    cdef Py_ssize_t tile_index, tile_start, tile_count
    cdef bint packed = packed_weight.shape[0] > 0
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
            # (the BLAS path passes a one-element placeholder: no row per thread)
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


def conv2d_backward(const floating[:, :, :, ::1] grad_output, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] weight, floating[:, :, :, ::1] grad_input,
                    floating[:, ::1] partials, floating[::1] grad_bias,
                    floating[:, ::1] weight_workspace, floating[:, ::1] input_workspace,
                    floating[::1] packed_weight, floating[:, ::1] gy_workspace,
                    bint packed_grad_weight, Py_ssize_t[::1] taps, tuple geometry,
                    Py_ssize_t groups, bint per_item, int input_threads, int weight_threads,
                    int bias_threads):
    """All the requested gradients in one call (one GIL release, arrays unpacked once).

    A gradient that is not wanted is passed as None and skipped; the others are the
    grad_bias_impl, grad_weight_impl (or, given k ``taps`` to fill, float32 only,
    grad_weight_direct) and grad_input_impl above, in that order. ``packed_weight`` and
    ``gy_workspace`` go to grad_input_impl (an empty packed_weight: BLAS),
    ``packed_grad_weight`` to grad_weight_impl.
    """
    cdef Geometry geo = make_geometry(geometry)
    cdef bint want_input = grad_input is not None
    cdef bint want_weight = partials is not None
    cdef bint want_bias = grad_bias is not None
    cdef Py_ssize_t width = direct_block(geometry) if taps.shape[0] > 0 else 0
    cdef bint direct = width > 0
    with nogil:
        if want_bias:
            grad_bias_impl(grad_output, grad_bias, bias_threads)
        if want_weight and direct:
            if floating is float:
                stage_taps(&geo, &taps[0])
                grad_weight_direct(grad_output, x, partials, weight_workspace, &taps[0], &geo,
                                   groups, width, weight_threads)
        elif want_weight:
            grad_weight_impl(grad_output, x, partials, weight_workspace, &geo, groups,
                             packed_grad_weight, weight_threads)
        if want_input:
            grad_input_impl(grad_output, weight, grad_input, input_workspace, packed_weight,
                            gy_workspace, &geo, groups, per_item, input_threads)


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


cdef fc_dw_geometry depthwise_geometry(tuple geometry):
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


def depthwise_workspace_sizes(tuple geometry, Py_ssize_t multiplier):
    """(scratch, lanes): elements each thread needs, of the array's dtype and of float64."""
    cdef fc_dw_geometry g = depthwise_geometry(geometry)
    return fc_dw_scratch_size(&g, multiplier), fc_dw_lanes_size(&g)


def depthwise_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                      const floating[::1] bias, floating[:, :, :, ::1] out,
                      floating[:, ::1] workspace, tuple geometry, int num_threads):
    """y[n,o,i,j] = b[o] + sum_{p,q} x[n, o // m, i*s+p*d-pad, j*s+q*d-pad] * w[o,0,p,q],
    m = C_out / C_in; taps in (p, q) order, the bias last. One output plane per work item."""
    cdef fc_dw_geometry g = depthwise_geometry(geometry)
    cdef Py_ssize_t batch = out.shape[0], out_channels = out.shape[1]
    cdef Py_ssize_t multiplier = out_channels // x.shape[1]
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t scratch_len = workspace.shape[1]
    cdef Py_ssize_t plane, n, o
    cdef floating* scratch
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


def depthwise_backward(const floating[:, :, :, ::1] grad_output,
                       const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                       floating[:, :, :, ::1] grad_input, floating[:, :, :, ::1] grad_weight,
                       floating[::1] grad_bias, floating[:, ::1] workspace,
                       double[:, ::1] lane_workspace, tuple geometry, int num_threads):
    """Depthwise gradients; a None output is skipped; grad_input is overwritten. N >= 1.

    gx: one input plane per work item (its m output channels in order); gw: one output
    channel per work item, the batch in order, in the thread's workspace rows; gb as the GEMM
    path. No races, and sums whose order never depends on the thread count.
    """
    cdef fc_dw_geometry g = depthwise_geometry(geometry)
    cdef Py_ssize_t batch = grad_output.shape[0], out_channels = grad_output.shape[1]
    cdef Py_ssize_t in_channels = x.shape[1]
    cdef Py_ssize_t multiplier = out_channels // in_channels
    cdef Py_ssize_t gy_batch = out_channels * g.out_h * g.out_w
    cdef Py_ssize_t x_batch = in_channels * x.shape[2] * x.shape[3]
    cdef bint want_input = grad_input is not None
    cdef bint want_weight = grad_weight is not None
    cdef bint want_bias = grad_bias is not None
    cdef Py_ssize_t plane, n, c, o
    cdef Py_ssize_t scratch_len = workspace.shape[1]
    cdef floating* scratch
    cdef double* lanes
    with nogil:
        if want_bias:
            grad_bias_impl(grad_output, grad_bias, num_threads)
        if want_input:
            with parallel(num_threads=num_threads):
                scratch = &workspace[threadid(), 0]
                for plane in prange(batch * in_channels, schedule="static"):
                    n = plane // in_channels
                    c = plane % in_channels
                    if floating is float:
                        fc_dw_grad_input_plane_float(
                            &grad_output[n, c * multiplier, 0, 0],
                            &weight[c * multiplier, 0, 0, 0], multiplier,
                            &grad_input[n, c, 0, 0], &g, scratch, scratch_len)
                    else:
                        fc_dw_grad_input_plane_double(
                            &grad_output[n, c * multiplier, 0, 0],
                            &weight[c * multiplier, 0, 0, 0], multiplier,
                            &grad_input[n, c, 0, 0], &g, scratch, scratch_len)
        if want_weight:
            with parallel(num_threads=num_threads):
                scratch = &workspace[threadid(), 0]
                lanes = &lane_workspace[threadid(), 0]
                for o in prange(out_channels, schedule="static"):
                    if floating is float:
                        fc_dw_grad_weight_channel_float(
                            &grad_output[0, o, 0, 0], gy_batch, &x[0, o // multiplier, 0, 0],
                            x_batch, batch, &grad_weight[o, 0, 0, 0], &g, scratch, scratch_len,
                            lanes)
                    else:
                        fc_dw_grad_weight_channel_double(
                            &grad_output[0, o, 0, 0], gy_batch, &x[0, o // multiplier, 0, 0],
                            x_batch, batch, &grad_weight[o, 0, 0, 0], &g, scratch, scratch_len,
                            lanes)


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


def depthwise_direct_sizes(tuple geometry):
    """(stage, tile): floats of one stage (padded input of 16 channels, pixel-major) and of one
    pixel-major block of 16 output planes, for the wrapper's workspaces."""
    cdef Geometry geo = make_geometry(geometry)
    cdef DwStage st = dw_stage(&geo, NULL)
    return st.rows * st.pw * 16, geo.out_h * geo.out_w * 16


def depthwise_direct_forward(const float[:, :, :, ::1] x, const float[:, :, ::1] weight_t,
                             const float[::1] bias, float[:, :, :, ::1] out,
                             float[:, ::1] workspace, Py_ssize_t[::1] taps, tuple geometry,
                             int num_threads):
    """Depthwise y (multiplier 1, C a multiple of 16) from weight_t[block][tap][16]; one item
    per (sample, block of 16 channels). workspace rows: 64 bytes of slack, a stage, a tile."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t batch = x.shape[0], blocks = x.shape[1] // 16
    cdef Py_ssize_t n_items = batch * blocks
    cdef Py_ssize_t in_plane = geo.in_h * geo.in_w, out_plane = geo.out_h * geo.out_w
    cdef bint has_bias = bias.shape[0] > 0
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
            first = chunk * n_items // num_threads
            last = (chunk + 1) * n_items // num_threads
            for item in range(first, last):
                n = item // blocks
                b = item % blocks
                fc_dwd_stage_in(&x[n, b * 16, 0, 0], in_plane, geo.in_h, geo.in_w, geo.pad_top,
                                geo.pad_left, st.rows, st.pw, xs)
                fc_dwd_forward(xs, st.row_step, st.step, geo.out_h, geo.out_w, &taps[0],
                               st.taps, &weight_t[b, 0, 0], &bias[b * 16] if has_bias else NULL,
                               xs + st.rows * st.pw * 16, &out[n, b * 16, 0, 0], out_plane)


def depthwise_direct_backward(const float[:, :, :, ::1] grad_output,
                              const float[:, :, :, ::1] x, const float[:, :, ::1] weight_t,
                              float[:, :, :, ::1] grad_input, float[:, :, ::1] sums,
                              float[::1] grad_bias, float[:, ::1] workspace,
                              Py_ssize_t[::1] taps, tuple geometry, int num_threads):
    """Depthwise gx (one item per (sample, block of 16 channels); overwritten) and gw (one item
    per block, the samples in order: sums[block][tap][16] += ..., zeroed by the caller); a
    None output is skipped; gb as the GEMM path. workspace rows: 64 bytes of slack, a stage
    (the input's, or the input gradient's sums), a tile (grad_output's planes, pixel-major)."""
    cdef Geometry geo = make_geometry(geometry)
    cdef Py_ssize_t batch = x.shape[0], blocks = x.shape[1] // 16
    cdef Py_ssize_t n_items = batch * blocks
    cdef Py_ssize_t in_plane = geo.in_h * geo.in_w, out_plane = geo.out_h * geo.out_w
    cdef bint want_input = grad_input is not None
    cdef bint want_weight = sums is not None
    cdef bint want_bias = grad_bias is not None
    cdef Py_ssize_t item, n, b, chunk, first, last, stage_len
    cdef float* xs = NULL
    cdef float* gyt = NULL
    cdef DwStage st
    if n_items == 0:
        return
    with nogil:
        st = dw_stage(&geo, &taps[0])
        stage_len = st.rows * st.pw * 16
        if want_bias:
            grad_bias_impl(grad_output, grad_bias, num_threads)
        if want_input:
            with parallel(num_threads=num_threads):
                xs = aligned(&workspace[threadid(), 0])
                gyt = xs + stage_len
                for chunk in prange(num_threads, schedule="static"):
                    first = chunk * n_items // num_threads
                    last = (chunk + 1) * n_items // num_threads
                    for item in range(first, last):
                        n = item // blocks
                        b = item % blocks
                        memset(xs, 0, stage_len * sizeof(float))
                        fc_direct_load(&grad_output[n, b * 16, 0, 0], out_plane, 16, out_plane,
                                       gyt)
                        fc_dwd_igrad(xs, st.row_step, st.step, geo.out_h, geo.out_w, &taps[0],
                                     st.taps, &weight_t[b, 0, 0], gyt)
                        fc_dwd_stage_out(xs, in_plane, geo.in_h, geo.in_w, geo.pad_top,
                                         geo.pad_left, st.rows, st.pw,
                                         &grad_input[n, b * 16, 0, 0])
        if want_weight:
            with parallel(num_threads=num_threads):
                xs = aligned(&workspace[threadid(), 0])
                gyt = xs + stage_len
                memset(xs, 0, stage_len * sizeof(float))
                for b in prange(blocks, schedule="static"):
                    for n in range(batch):
                        fc_dwd_stage_in(&x[n, b * 16, 0, 0], in_plane, geo.in_h, geo.in_w,
                                        geo.pad_top, geo.pad_left, st.rows, st.pw, xs)
                        fc_direct_load(&grad_output[n, b * 16, 0, 0], out_plane, 16, out_plane,
                                       gyt)
                        fc_dwd_wgrad(xs, st.row_step, st.step, geo.out_h, geo.out_w, &taps[0],
                                     st.taps, gyt, &sums[b, 0, 0])
