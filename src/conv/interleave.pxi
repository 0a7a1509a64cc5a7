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
