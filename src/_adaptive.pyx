"""Adaptive pooling and max unpooling kernels over NCHW planes, forward and backward.

Adaptive pooling: output cell (i, j) of an (out_h, out_w) grid pools the input rows
``floor(i*H/out_h) .. ceil((i+1)*H/out_h)`` (exclusive end) and likewise the columns, as
PyTorch. Max unpooling writes each input value at the flat position its index names in an
output plane of zeros.

Every kernel runs one (n, c) plane per iteration of a ``prange`` over the N*C planes, and each
plane is computed by one thread in a fixed order: results are bit-identical whatever the
thread count. The wrappers in ``fastconv/adaptive.py`` validate every argument; nothing here
raises (kernels that read indices return how many fell outside the plane instead).
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

from _types cimport floating


cdef inline Py_ssize_t _start(Py_ssize_t index, Py_ssize_t in_size,
                              Py_ssize_t out_size) noexcept nogil:
    return (index * in_size) // out_size


cdef inline Py_ssize_t _end(Py_ssize_t index, Py_ssize_t in_size,
                            Py_ssize_t out_size) noexcept nogil:
    return ((index + 1) * in_size + out_size - 1) // out_size


def adaptive_avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                                int num_threads):
    """out[n,c,i,j] = mean of x[n,c,h0(i):h1(i),w0(j):w1(j)] (summed in float64)."""
    cdef Py_ssize_t channels = x.shape[1], planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow, h, w, h0, h1, w0, w1
    cdef double total
    cdef const floating* x_plane
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            x_plane = &x[n, c, 0, 0]
            for oh in range(out_h):
                h0 = _start(oh, in_h, out_h)
                h1 = _end(oh, in_h, out_h)
                for ow in range(out_w):
                    w0 = _start(ow, in_w, out_w)
                    w1 = _end(ow, in_w, out_w)
                    total = 0
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            total = total + x_plane[h * in_w + w]
                    out[n, c, oh, ow] = <floating>(total / ((h1 - h0) * (w1 - w0)))


def adaptive_avg_pool2d_backward(const floating[:, :, :, ::1] grad_output,
                                 floating[:, :, :, ::1] grad_input, int num_threads):
    """grad_input[n,c,h,w] = sum over the cells whose window holds (h, w) of
    grad_output / window area, added in cell row-major order."""
    cdef Py_ssize_t channels = grad_input.shape[1]
    cdef Py_ssize_t planes = grad_input.shape[0] * grad_input.shape[1]
    cdef Py_ssize_t in_h = grad_input.shape[2], in_w = grad_input.shape[3]
    cdef Py_ssize_t out_h = grad_output.shape[2], out_w = grad_output.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow, h, w, h0, h1, w0, w1
    cdef floating share
    cdef floating* gx_plane
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            gx_plane = &grad_input[n, c, 0, 0]
            memset(gx_plane, 0, in_h * in_w * sizeof(floating))
            for oh in range(out_h):
                h0 = _start(oh, in_h, out_h)
                h1 = _end(oh, in_h, out_h)
                for ow in range(out_w):
                    w0 = _start(ow, in_w, out_w)
                    w1 = _end(ow, in_w, out_w)
                    share = grad_output[n, c, oh, ow] / <floating>((h1 - h0) * (w1 - w0))
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            gx_plane[h * in_w + w] += share


def adaptive_max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                                int64_t[:, :, :, ::1] indices, int num_threads):
    """out[n,c,i,j] = max of the cell's window, indices its flat position in the plane (the
    first maximum in row-major order; a NaN replaces, so the last NaN is reported, as
    PyTorch)."""
    cdef Py_ssize_t channels = x.shape[1], planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_h = x.shape[2], in_w = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t plane, n, c, oh, ow, h, w, h0, h1, w0, w1, best_index
    cdef floating best, value
    cdef const floating* x_plane
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            x_plane = &x[n, c, 0, 0]
            for oh in range(out_h):
                h0 = _start(oh, in_h, out_h)
                h1 = _end(oh, in_h, out_h)
                for ow in range(out_w):
                    w0 = _start(ow, in_w, out_w)
                    w1 = _end(ow, in_w, out_w)
                    best_index = h0 * in_w + w0
                    best = x_plane[best_index]
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            value = x_plane[h * in_w + w]
                            if value > best or value != value:
                                best = value
                                best_index = h * in_w + w
                    out[n, c, oh, ow] = best
                    indices[n, c, oh, ow] = best_index


def max_unpool2d_forward(const floating[:, :, :, ::1] x, const int64_t[:, :, :, ::1] indices,
                         floating[:, :, :, ::1] out, int num_threads):
    """out[n,c].flat[indices[n,c,i,j]] = x[n,c,i,j] (in (i, j) order, so a repeated index
    keeps the last value), zeros elsewhere. Returns how many indices fell outside the
    output plane (skipped; the wrapper raises)."""
    cdef Py_ssize_t channels = x.shape[1], planes = x.shape[0] * x.shape[1]
    cdef Py_ssize_t in_size = x.shape[2] * x.shape[3]
    cdef Py_ssize_t plane_size = out.shape[2] * out.shape[3]
    cdef Py_ssize_t plane, n, c, i, bad = 0
    cdef int64_t index
    cdef const floating* x_plane
    cdef const int64_t* index_plane
    cdef floating* out_plane
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            x_plane = &x[n, c, 0, 0]
            index_plane = &indices[n, c, 0, 0]
            out_plane = &out[n, c, 0, 0]
            memset(out_plane, 0, plane_size * sizeof(floating))
            for i in range(in_size):
                index = index_plane[i]
                if 0 <= index < plane_size:
                    out_plane[index] = x_plane[i]
                else:
                    bad += 1
    return bad


def max_unpool2d_backward(const floating[:, :, :, ::1] grad_output,
                          const int64_t[:, :, :, ::1] indices,
                          floating[:, :, :, ::1] grad_input, int num_threads):
    """grad_input[n,c,i,j] = grad_output[n,c].flat[indices[n,c,i,j]] (0 for an index outside
    the plane, counted and returned)."""
    cdef Py_ssize_t channels = grad_input.shape[1]
    cdef Py_ssize_t planes = grad_input.shape[0] * grad_input.shape[1]
    cdef Py_ssize_t in_size = grad_input.shape[2] * grad_input.shape[3]
    cdef Py_ssize_t plane_size = grad_output.shape[2] * grad_output.shape[3]
    cdef Py_ssize_t plane, n, c, i, bad = 0
    cdef int64_t index
    cdef const floating* gy_plane
    cdef const int64_t* index_plane
    cdef floating* gx_plane
    with nogil:
        for plane in prange(planes, schedule='static', num_threads=num_threads):
            n = plane // channels
            c = plane % channels
            gy_plane = &grad_output[n, c, 0, 0]
            index_plane = &indices[n, c, 0, 0]
            gx_plane = &grad_input[n, c, 0, 0]
            for i in range(in_size):
                index = index_plane[i]
                if 0 <= index < plane_size:
                    gx_plane[i] = gy_plane[index]
                else:
                    gx_plane[i] = 0
                    bad += 1
    return bad
