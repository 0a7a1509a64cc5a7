# The strided input gradients' last pass (fastconv/_paths.py, StridedPhases and
# StridedPointwise): grad_input assembled whole from its phase planes.


cdef inline void interleave_pair(const floating* even, const floating* odd, floating* row,
                                 Py_ssize_t width) noexcept nogil:
    """A row of stride 2 along the width: ``row[2u] = even[u]``, ``row[2u + 1] = odd[u]``
    (NULL: zeros). One pass of paired stores, which the compiler vectorises with shuffles;
    the strided stores of the general loop took 3.5 times a copy (ResNet's 32 x 32 x 56 x 56
    input gradient, 2 threads: 0.24 ms against a copy's 0.07)."""
    cdef Py_ssize_t u, half = width // 2
    if even != NULL and odd != NULL:
        for u in range(half):
            row[2 * u] = even[u]
            row[2 * u + 1] = odd[u]
    elif even != NULL:
        for u in range(half):
            row[2 * u] = even[u]
            row[2 * u + 1] = 0
    elif odd != NULL:
        for u in range(half):
            row[2 * u] = 0
            row[2 * u + 1] = odd[u]
    else:
        memset(row, 0, 2 * half * sizeof(floating))
    if width % 2:
        row[width - 1] = even[half] if even != NULL else 0


cdef inline const floating* phase_plane(const floating* phases, Py_ssize_t offset,
                                        Py_ssize_t plane, Py_ssize_t rows,
                                        Py_ssize_t cols) noexcept nogil:
    """Plane ``plane`` of the phase at ``offset`` (rows by cols planes), or NULL: zeros."""
    return phases + offset + plane * rows * cols if offset >= 0 else NULL


cdef inline void interleave_plane(const floating* phases, const Py_ssize_t* offsets,
                                  Py_ssize_t plane, floating* out, Py_ssize_t height,
                                  Py_ssize_t width, Py_ssize_t sh, Py_ssize_t sw) noexcept nogil:
    """One (sample, channel) plane of ``out`` from the phases' planes ``plane``: the rows of
    each row phase a in turn (no division per row: with rows of 14 to 56 values, the
    divisions of a row-by-row loop cost as much as its stores)."""
    cdef Py_ssize_t a, t, rows, b, u, cols, cols_odd
    cdef floating* row
    cdef const floating* source
    cdef const floating* odd
    for a in range(sh if sh < height else height):
        rows = (height - a + sh - 1) // sh
        if sw == 2 and width > 1:
            cols, cols_odd = (width + 1) // 2, width // 2
            source = phase_plane(phases, offsets[a * 2], plane, rows, cols)
            odd = phase_plane(phases, offsets[a * 2 + 1], plane, rows, cols_odd)
            for t in range(rows):
                interleave_pair(source + t * cols if source != NULL else NULL,
                                odd + t * cols_odd if odd != NULL else NULL,
                                out + (a + t * sh) * width, width)
            continue
        for b in range(sw if sw < width else width):
            cols = (width - b + sw - 1) // sw
            source = phase_plane(phases, offsets[a * sw + b], plane, rows, cols)
            for t in range(rows):
                row = out + (a + t * sh) * width + b
                if source == NULL:
                    for u in range(cols):
                        row[u * sw] = 0
                else:
                    for u in range(cols):
                        row[u * sw] = source[t * cols + u]


def interleave_phases(const floating[::1] phases, const Py_ssize_t[::1] offsets,
                      floating[:, :, :, ::1] out, Py_ssize_t stride_h, Py_ssize_t stride_w,
                      int num_threads):
    """``out[n, c, a + stride_h*t, b + stride_w*u] = phase_ab[n, c, t, u]``: every element of
    ``out`` (N, C, H, W) written, from the phase planes of ``phases``. Phase (a, b), for a <
    min(stride_h, H) and b < min(stride_w, W), is an (N, C, ceil((H - a) / stride_h),
    ceil((W - b) / stride_w)) array starting at ``offsets[a * stride_w + b]`` in ``phases``,
    or, where that offset is negative, all zeros (a phase no tap reaches). The (sample,
    channel) planes in contiguous chunks across the threads; a copy, so the same bits for any
    thread count. The caller checks the sizes (offsets has stride_h * stride_w entries)."""
    cdef Py_ssize_t planes = out.shape[0] * out.shape[1], height = out.shape[2]
    cdef Py_ssize_t width = out.shape[3], chunk, first, last, plane
    cdef const floating* source = &phases[0] if phases.shape[0] > 0 else NULL
    if planes == 0 or height == 0 or width == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for chunk in prange(num_threads, schedule="static"):
            first = chunk_start(chunk, planes, num_threads)
            last = chunk_start(chunk + 1, planes, num_threads)
            for plane in range(first, last):
                interleave_plane(source, &offsets[0], plane,
                                 &out[0, 0, 0, 0] + plane * height * width, height, width,
                                 stride_h, stride_w)


# StridedPhases' phases in one call: at most this many (stride_h * stride_w)
cdef enum:
    PHASES_MAX = 16
STRIDED_PHASES_MAX = PHASES_MAX  # for the caller (StridedPhases)


def strided_phases_direct(const float[:, :, :, ::1] grad_output,
                          const float[:, :, :, ::1] weight, float[:, :, :, ::1] grad_input,
                          float[::1] phases, const Py_ssize_t[::1] offsets,
                          tuple geometries, const Py_ssize_t[:, ::1] slices,
                          float[:, ::1] workspace, float[::1] packed_weight,
                          Py_ssize_t[::1] taps, Py_ssize_t groups, Py_ssize_t stride_h,
                          Py_ssize_t stride_w, int num_threads):
    """StridedPhases' input gradient in one call, as its composition computes it (the same
    bits): each phase a stride-1 forward pass of grad_output by the direct kernels
    (forward_direct) into its planes of ``phases`` (at ``offsets``, as interleave_phases),
    then interleaved into ``grad_input``, in one parallel region. ``geometries``: each
    phase's forward geometry or None (zeros), in the order a * stride_w + b; ``slices``
    (one row a phase: start and step of its taps of the flipped kernel along the height,
    then the width) its sub-kernel, packed from ``weight`` here ([group][block][tap][channel
    of the block], phase after phase: packed_weight holds the sum of their groups *
    C_in/groups * k, and 64 bytes of slack) with no transposed copy. ``workspace``: a row a
    thread, each at least direct_workspace's for every phase; ``taps``: the sum of the
    phases' direct_taps_size. The (phase, sample, group) items go to the threads in
    contiguous runs of near-equal multiply-adds; the interleave's planes in contiguous
    chunks. The caller checks the shapes."""
    cdef Geometry geos[PHASES_MAX]
    cdef Py_ssize_t slot[PHASES_MAX]
    cdef Py_ssize_t wstart[PHASES_MAX]
    cdef Py_ssize_t tstart[PHASES_MAX]
    cdef Py_ssize_t cost[PHASES_MAX]
    cdef Py_ssize_t run[PHASES_MAX]
    cdef Py_ssize_t n_slots = len(geometries), n_phases = 0, i, s
    cdef Py_ssize_t batch = grad_output.shape[0], channels = 0, width = 0, total = 0
    cdef Py_ssize_t wsize = 0, tsize = 0, kernel_h = weight.shape[2], kernel_w = weight.shape[3]
    cdef Py_ssize_t outer, blocks_g, blk, g, n, item, chunk, acc, owner
    cdef Py_ssize_t plane, staged, first, last, part, planes, pl
    cdef Py_ssize_t height = grad_input.shape[2], in_w = grad_input.shape[3]
    cdef Py_ssize_t in_channels = grad_input.shape[1]
    cdef int nonfinite = 0
    cdef float* wpack = NULL
    cdef float* stage = NULL
    cdef float* tbuf = NULL
    cdef float* out = &phases[0] if phases.shape[0] > 0 else NULL
    cdef const float* src = NULL
    cdef const Py_ssize_t* rows = NULL
    if n_slots > PHASES_MAX or n_slots != offsets.shape[0]:
        return
    for s in range(n_slots):
        if geometries[s] is None:
            continue
        geos[n_phases] = make_geometry(geometries[s])
        width = direct_block(geometries[s])
        if width == 0:
            return
        slot[n_phases] = s
        wstart[n_phases] = wsize
        tstart[n_phases] = tsize
        cost[n_phases] = geos[n_phases].k * geos[n_phases].out_h * geos[n_phases].out_w
        run[n_phases] = direct_run(&geos[n_phases])
        wsize += groups * geos[n_phases].out_channels_g * geos[n_phases].k
        tsize += direct_taps_length(&geos[n_phases])
        total += batch * groups * cost[n_phases]
        n_phases += 1
    planes = grad_input.shape[0] * in_channels
    if n_phases > 0:
        channels = geos[0].out_channels_g
        outer = geos[0].in_channels_g
        if (packed_weight.shape[0] < wsize + 16 or taps.shape[0] < tsize
                or weight.shape[0] != groups * outer or weight.shape[1] != channels):
            return
        wpack = aligned(&packed_weight[0])
        blocks_g = channels // width
        with nogil:
            for i in range(n_phases):
                for blk in range(groups * blocks_g):
                    nonfinite |= fc_direct_pack_transposed(
                        &weight[blk // blocks_g * outer, blk % blocks_g * width, 0, 0], outer,
                        channels * kernel_h * kernel_w, kernel_h, kernel_w,
                        &slices[slot[i], 0], geos[i].kernel_h, geos[i].kernel_w, width,
                        wpack + wstart[i] + blk * geos[i].k * width)
            for i in range(n_phases):
                stage_taps(&geos[i], &taps[tstart[i]])
                direct_tap_lists(&geos[i], &taps[tstart[i]], width, nonfinite == 0,
                                 &taps[tstart[i] + geos[i].k])
    if planes == 0 or height == 0 or in_w == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        stage = aligned(&workspace[threadid(), 0])
        for chunk in prange(num_threads, schedule="static"):
            staged = -1
            acc = 0
            for i in range(n_phases):
                tbuf = stage + stage_length(&geos[i])
                rows = &taps[tstart[i] + geos[i].k]
                plane = geos[i].out_h * geos[i].out_w
                for item in range(batch * groups):
                    # the item's owner: the chunk its middle multiply-add falls in
                    owner = (2 * acc + cost[i]) * num_threads // (2 * total)
                    acc = acc + cost[i]
                    if owner != chunk:
                        continue
                    n = item // groups
                    g = item % groups
                    if geos[i].pointwise:
                        src = &grad_output[n, g * geos[i].in_channels_g, 0, 0]
                    else:
                        if staged != i:
                            stage_clear(stage, &geos[i])
                            staged = i
                        stage_input(&grad_output[n, g * geos[i].in_channels_g, 0, 0], stage,
                                    &geos[i])
                        src = stage
                    direct_runs(src, rows, wpack + wstart[i] + g * channels * geos[i].k,
                                &geos[i], channels, width, run[i], 0, plane, NULL, False, tbuf,
                                out + offsets[slot[i]] + (n * in_channels + g * channels)
                                * plane, plane)
        for part in prange(num_threads, schedule="static"):
            first = chunk_start(part, planes, num_threads)
            last = chunk_start(part + 1, planes, num_threads)
            for pl in range(first, last):
                interleave_plane(<const float*>out, &offsets[0], pl,
                                 &grad_input[0, 0, 0, 0] + pl * height * in_w, height, in_w,
                                 stride_h, stride_w)
