cdef extern from "_linear.h" nogil:
    int fc_lin_init()
    void fc_lin_rows_s(const float* x, const float* w, const float* bias, Py_ssize_t features,
                       Py_ssize_t outs, Py_ssize_t r0, Py_ssize_t r1, float* out)
    void fc_lin_rows_d(const double* x, const double* w, const double* bias,
                       Py_ssize_t features, Py_ssize_t outs, Py_ssize_t r0, Py_ssize_t r1,
                       double* out)


fc_lin_init()  # the level's micro-kernels, once at import (src/_cpu.h)

cdef enum:
    # rows per unit of the thread schedule: a multiple of every level's rows per micro-kernel
    LINEAR_UNIT = 8


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight,
                   const floating[::1] bias, floating[:, ::1] out, int num_threads):
    """fastconv.nn.Linear's forward pass by the kernels of src/_linear.h:
    out[r, o] = sum_i x[r, i] * weight[o, i] (+ bias[o]), the rows in contiguous chunks across
    ``num_threads`` threads (units of 8 rows; each output is the same chain whichever thread
    computes it)."""
    cdef Py_ssize_t rows = x.shape[0], features = x.shape[1], outs = weight.shape[0]
    cdef Py_ssize_t units = (rows + LINEAR_UNIT - 1) // LINEAR_UNIT
    cdef const floating* b = &bias[0] if bias is not None else NULL
    cdef Py_ssize_t chunk, r0, r1
    if rows == 0 or outs == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        for chunk in prange(num_threads, schedule="static"):
            r0 = chunk_start(chunk, units, num_threads) * LINEAR_UNIT
            r1 = chunk_start(chunk + 1, units, num_threads) * LINEAR_UNIT
            if r1 > rows:
                r1 = rows
            if r0 < r1:
                if floating is float:
                    fc_lin_rows_s(&x[0, 0], &weight[0, 0], b, features, outs, r0, r1,
                                  &out[0, 0])
                else:
                    fc_lin_rows_d(&x[0, 0], &weight[0, 0], b, features, outs, r0, r1,
                                  &out[0, 0])
