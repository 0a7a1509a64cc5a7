# The geometry every convolution kernel reads (fastconv/_plan.py builds it as a named tuple,
# Geometry, from the shapes: the sizes, then the tile and whether to stage), and the few
# helpers all the kernel families share: tiles, valid ranges, 64-byte alignment, and the
# per-thread schedule of contiguous chunks of work items.

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


cdef Geometry make_geometry(object g):
    """The C struct of fastconv._plan.Geometry (any sequence of its 16 fields, in order),
    with the sizes derived from them."""
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


cdef Geometry pointwise_rows(const Geometry* geo) noexcept nogil:
    """A 1x1 kernel's geometry as the direct kernels read its compact input (the input itself
    where ``geo`` is pointwise, else stage_points'): a pointwise convolution of one row of all
    out_h * out_w pixels, so a micro-kernel's run of pixels crosses the output rows (a 14-pixel
    row took two runs of 7, half the registers of sums idle). The same sums in the same order
    for every output element; the tile and the channels are ``geo``'s."""
    cdef Geometry flat = geo[0]
    cdef Py_ssize_t plane = geo.out_h * geo.out_w
    flat.in_h = 1
    flat.in_w = plane
    flat.out_h = 1
    flat.out_w = plane
    flat.stride_h = 1
    flat.stride_w = 1
    flat.pad_top = 0
    flat.pad_left = 0
    flat.dil_h = 1
    flat.dil_w = 1
    flat.pointwise = True
    flat.staged = False
    flat.st_rows = 1
    flat.st_w = plane
    flat.st_row = plane
    flat.st_plane = plane
    return flat


cdef inline Py_ssize_t pixels_in_tile(Py_ssize_t p0, const Geometry* geo) noexcept nogil:
    """The output pixels of the tile that starts at pixel p0 (the last of a plane may be
    short). (A return value, not a pointer argument: Cython makes the variables assigned in a
    prange body thread-private, and sees no assignment through a pointer.)"""
    cdef Py_ssize_t rest = geo.out_h * geo.out_w - p0
    return geo.tile if geo.tile < rest else rest


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


cdef inline Py_ssize_t chunk_start(Py_ssize_t chunk, Py_ssize_t n_items,
                                   Py_ssize_t n_chunks) noexcept nogil:
    """The first item of ``chunk`` when ``n_items`` items are cut into ``n_chunks`` contiguous
    chunks of (nearly) equal size; chunk ``c`` holds [chunk_start(c), chunk_start(c + 1)).

    Every kernel that walks (sample, group, tile) items schedules them this way, one chunk
    per thread (``prange(n_chunks, schedule="static")``): a thread's items are contiguous, so
    the tiles of one (sample, group) that fall to it stage its input once. Where the chunks
    are partial sums (the weight gradients) their number is fixed by the shapes, never by the
    thread count, so the sums' order is too."""
    return chunk * n_items // n_chunks
