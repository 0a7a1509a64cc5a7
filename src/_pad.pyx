"""Padding kernels: 2-D constant / reflect / replicate / circular padding of NCHW planes, and
its gradient (a crop plus the border contributions folded back onto the input).

The wrappers in ``fastconv/pad.py`` check every argument first (mode, pad >= 0, reflect pad <
size, circular pad <= size, non-empty input where a border copies from it), allocate ``out``
and skip the call when ``out`` is empty; these kernels only compute and never raise.
"""

from cython.parallel cimport prange

from _types cimport floating

# Mode codes; fastconv/pad.py maps the canonical mode names onto them through MODES.
cdef enum:
    MODE_CONSTANT = 0
    MODE_REFLECT = 1
    MODE_REPLICATE = 2
    MODE_CIRCULAR = 3

MODES = {
    "constant": MODE_CONSTANT,
    "reflect": MODE_REFLECT,
    "replicate": MODE_REPLICATE,
    "circular": MODE_CIRCULAR,
}


cdef inline Py_ssize_t source_index(Py_ssize_t index, Py_ssize_t size, int mode) noexcept nogil:
    """src(k) = the input index that padded index k copies (k = 0: first input one); -1 = fill."""
    if 0 <= index < size:
        return index
    if mode == MODE_REFLECT:
        # The edge itself is not repeated (NumPy 'reflect', not 'symmetric'); pad < size means
        # a single bounce always lands inside.
        return -index if index < 0 else 2 * (size - 1) - index
    if mode == MODE_REPLICATE:
        return 0 if index < 0 else size - 1
    if mode == MODE_CIRCULAR:
        # pad <= size (PyTorch's limit) means a single wrap always lands inside.
        return index + size if index < 0 else index - size
    return -1


cdef inline void pad_row(const floating* in_row, floating* out_row, Py_ssize_t in_w,
                         Py_ssize_t left, Py_ssize_t out_w, int mode,
                         floating fill) noexcept nogil:
    """out_row[j] = in_row[src(j - left)], or fill where src is -1."""
    cdef Py_ssize_t j, src_j
    for j in range(left):
        src_j = source_index(j - left, in_w, mode)
        out_row[j] = fill if src_j < 0 else in_row[src_j]
    # The interior is a plain copy; keeping it free of the index mapping lets it vectorise.
    for j in range(in_w):
        out_row[left + j] = in_row[j]
    for j in range(left + in_w, out_w):
        src_j = source_index(j - left, in_w, mode)
        out_row[j] = fill if src_j < 0 else in_row[src_j]


def pad2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                  Py_ssize_t top, Py_ssize_t left, int mode, double value, int num_threads):
    """out[n,c,i,j] = x[n,c,src(i-top,H),src(j-left,W)], or value where src is -1 (constant)."""
    cdef Py_ssize_t channels = x.shape[1]
    cdef Py_ssize_t in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t planes = x.shape[0] * channels
    cdef Py_ssize_t plane, batch_index, channel, i, j, src_i
    # Cast once: the fill is the value rounded to the array's dtype, as PyTorch does.
    cdef floating fill = <floating>value
    with nogil:
        # One (n, c) plane per iteration, flattened so that a batch of one still feeds every
        # thread; planes are disjoint, so the result cannot depend on the thread count.
        for plane in prange(planes, schedule="static", num_threads=num_threads):
            batch_index = plane // channels
            channel = plane % channels
            for i in range(out_h):
                src_i = source_index(i - top, in_h, mode)
                # in_w == 0 (constant mode only) leaves no input row to take a pointer into.
                if src_i < 0 or in_w == 0:
                    for j in range(out_w):
                        out[batch_index, channel, i, j] = fill
                else:
                    pad_row(&x[batch_index, channel, src_i, 0], &out[batch_index, channel, i, 0],
                            in_w, left, out_w, mode, fill)


cdef inline void fold_row(const floating* grad_row, floating* in_row, Py_ssize_t in_w,
                          Py_ssize_t left, Py_ssize_t out_w, int mode,
                          bint with_interior) noexcept nogil:
    """in_row[src(j - left)] += grad_row[j] for the border columns j (and the interior ones too
    when with_interior), left to right."""
    cdef Py_ssize_t j, src_j
    for j in range(left):
        src_j = source_index(j - left, in_w, mode)
        if src_j >= 0:
            in_row[src_j] += grad_row[j]
    if with_interior:
        for j in range(in_w):
            in_row[j] += grad_row[left + j]
    for j in range(left + in_w, out_w):
        src_j = source_index(j - left, in_w, mode)
        if src_j >= 0:
            in_row[src_j] += grad_row[j]


def pad2d_backward(const floating[:, :, :, ::1] grad_output, floating[:, :, :, ::1] grad_input,
                   Py_ssize_t top, Py_ssize_t left, int mode, int num_threads):
    """grad_input[n,c,a,b] = sum of grad_output[n,c,i,j] over src(i-top,H)=a, src(j-left,W)=b."""
    cdef Py_ssize_t channels = grad_input.shape[1]
    cdef Py_ssize_t in_h = grad_input.shape[2], in_w = grad_input.shape[3]
    cdef Py_ssize_t out_h = grad_output.shape[2], out_w = grad_output.shape[3]
    cdef Py_ssize_t planes = grad_input.shape[0] * channels
    cdef Py_ssize_t plane, batch_index, channel, i, j, src_i
    cdef bint border_row
    with nogil:
        # One thread owns each plane and visits its sources in one fixed order (own gradient
        # first, then the border contributions in raster order of grad_output), so every sum
        # is rounded the same way whatever the thread count.
        for plane in prange(planes, schedule="static", num_threads=num_threads):
            batch_index = plane // channels
            channel = plane % channels
            # Assign (not 0 + g) each element's own gradient, so a -0.0 stays -0.0 as in a crop.
            for i in range(in_h):
                for j in range(in_w):
                    grad_input[batch_index, channel, i, j] = \
                        grad_output[batch_index, channel, top + i, left + j]
            # Constant padding is that crop and nothing more.
            if mode != MODE_CONSTANT:
                for i in range(out_h):
                    src_i = source_index(i - top, in_h, mode)
                    # Output rows inside the input's span already gave their interior columns
                    # above; rows in the top/bottom border give their whole width.
                    border_row = i < top or i >= top + in_h
                    fold_row(&grad_output[batch_index, channel, i, 0],
                             &grad_input[batch_index, channel, src_i, 0],
                             in_w, left, out_w, mode, border_row)
