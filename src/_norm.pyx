"""Batch normalisation kernels over (N, C, L) arrays (L = H*W), forward and backward.

Every kernel runs one channel per iteration of a ``prange`` over the C channels; a channel's
sums are taken by one thread in a fixed order (eight float64 partial sums, added in a fixed
tree), so results are bit-identical whatever the thread count.

Forward: ``y = (x - mean) * invstd * weight + bias`` with ``invstd = 1/sqrt(var + eps)``; in
training the mean and the biased variance are the channel's over (N, L) (two passes: the
mean, then the squared deviations from it), and are written out for the running estimates.
Backward: with ``xhat = (x - mean) * invstd``, ``grad_bias = sum(gy)``, ``grad_weight =
sum(gy * xhat)``, and ``gx = weight * invstd * (gy - [sum(gy) + xhat * sum(gy*xhat)] / M)``
in training (the statistics depend on x), ``gx = weight * invstd * gy`` in evaluation. Both
are one multiply-add per element, ``gx = gy*a + x*b + c``, after one summing pass.

The wrappers in ``fastconv/norm.py`` validate every argument; nothing here raises.
"""

from cython.parallel cimport prange
from libc.math cimport sqrt

from _types cimport floating


cdef inline double _sum(const floating* values, Py_ssize_t count) noexcept nogil:
    """sum(values) in float64: eight independent partial sums (so the loop pipelines), added
    in a fixed tree."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= count:
        s0 += values[i]
        s1 += values[i + 1]
        s2 += values[i + 2]
        s3 += values[i + 3]
        s4 += values[i + 4]
        s5 += values[i + 5]
        s6 += values[i + 6]
        s7 += values[i + 7]
        i += 8
    while i < count:
        s0 += values[i]
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef inline double _sum_squared_deviation(const floating* values, Py_ssize_t count,
                                          double mean) noexcept nogil:
    """sum((values - mean)**2) in float64, summed as _sum."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, d
    cdef Py_ssize_t i = 0
    while i + 8 <= count:
        d = values[i] - mean
        s0 += d * d
        d = values[i + 1] - mean
        s1 += d * d
        d = values[i + 2] - mean
        s2 += d * d
        d = values[i + 3] - mean
        s3 += d * d
        d = values[i + 4] - mean
        s4 += d * d
        d = values[i + 5] - mean
        s5 += d * d
        d = values[i + 6] - mean
        s6 += d * d
        d = values[i + 7] - mean
        s7 += d * d
        i += 8
    while i < count:
        d = values[i] - mean
        s0 += d * d
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef inline double _sum_product_deviation(const floating* grad, const floating* values,
                                          Py_ssize_t count, double mean) noexcept nogil:
    """sum(grad * (values - mean)) in float64, summed as _sum."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= count:
        s0 += grad[i] * (values[i] - mean)
        s1 += grad[i + 1] * (values[i + 1] - mean)
        s2 += grad[i + 2] * (values[i + 2] - mean)
        s3 += grad[i + 3] * (values[i + 3] - mean)
        s4 += grad[i + 4] * (values[i + 4] - mean)
        s5 += grad[i + 5] * (values[i + 5] - mean)
        s6 += grad[i + 6] * (values[i + 6] - mean)
        s7 += grad[i + 7] * (values[i + 7] - mean)
        i += 8
    while i < count:
        s0 += grad[i] * (values[i] - mean)
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef inline void _affine(floating* out, const floating* values, Py_ssize_t count,
                         floating scale, floating shift, bint relu) noexcept nogil:
    """out = values * scale + shift (then max(., 0) when ``relu``)."""
    cdef Py_ssize_t i
    cdef floating value
    if relu:
        for i in range(count):
            value = values[i] * scale + shift
            out[i] = value if value > 0 else 0
    else:
        for i in range(count):
            out[i] = values[i] * scale + shift


def batch_norm_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                       const floating[::1] weight, const floating[::1] bias,
                       double[::1] mean, double[::1] var, double eps, bint training,
                       bint relu, int num_threads):
    """y[n,c,l] = (x[n,c,l] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c].

    With ``training`` the mean and biased variance over (n, l) are computed and written to
    ``mean`` and ``var``; otherwise they are read from there. ``relu`` fuses max(y, 0).
    """
    cdef Py_ssize_t batch = x.shape[0], channels = x.shape[1], length = x.shape[2]
    cdef Py_ssize_t c, n
    cdef double total, channel_mean, invstd, scale
    with nogil:
        for c in prange(channels, schedule='static', num_threads=num_threads):
            if training:
                total = 0
                for n in range(batch):
                    total = total + _sum(&x[n, c, 0], length)
                channel_mean = total / (batch * length)
                total = 0
                for n in range(batch):
                    total = total + _sum_squared_deviation(&x[n, c, 0], length, channel_mean)
                mean[c] = channel_mean
                var[c] = total / (batch * length)
            invstd = 1.0 / sqrt(var[c] + eps)
            scale = weight[c] * invstd
            for n in range(batch):
                _affine(&out[n, c, 0], &x[n, c, 0], length, <floating>scale,
                        <floating>(bias[c] - mean[c] * scale), relu)


def batch_norm_backward(const floating[:, :, ::1] grad_output, const floating[:, :, ::1] x,
                        const floating[::1] weight, const double[::1] mean,
                        const double[::1] var, double eps, bint training,
                        floating[:, :, ::1] grad_input, bint need_input,
                        double[::1] grad_weight, double[::1] grad_bias, int num_threads):
    """grad_bias[c] = sum gy, grad_weight[c] = sum gy * xhat; grad_input (when
    ``need_input``) as the module docstring says, for the statistics ``mean``, ``var`` the
    forward used (the batch's with ``training``, the running ones otherwise)."""
    cdef Py_ssize_t batch = grad_output.shape[0], channels = grad_output.shape[1]
    cdef Py_ssize_t length = grad_output.shape[2]
    cdef Py_ssize_t c, n, i
    cdef double sum_gy, sum_gy_dev, invstd, count, a, b, shift
    cdef floating fa, fb, fshift
    cdef const floating* gy_row
    cdef const floating* x_row
    cdef floating* gx_row
    with nogil:
        for c in prange(channels, schedule='static', num_threads=num_threads):
            invstd = 1.0 / sqrt(var[c] + eps)
            sum_gy = 0
            sum_gy_dev = 0
            for n in range(batch):
                sum_gy = sum_gy + _sum(&grad_output[n, c, 0], length)
                sum_gy_dev = sum_gy_dev + _sum_product_deviation(
                    &grad_output[n, c, 0], &x[n, c, 0], length, mean[c])
            grad_bias[c] = sum_gy
            grad_weight[c] = sum_gy_dev * invstd
            if not need_input:
                continue
            a = weight[c] * invstd
            b = 0
            shift = 0
            if training:
                count = <double>(batch * length)
                # gx = a * (gy - sum_gy/M - (x - mean) * invstd^2 * sum_gy_dev/M)
                b = -a * invstd * invstd * sum_gy_dev / count
                shift = -a * sum_gy / count - b * mean[c]
            fa = <floating>a
            fb = <floating>b
            fshift = <floating>shift
            for n in range(batch):
                gy_row = &grad_output[n, c, 0]
                x_row = &x[n, c, 0]
                gx_row = &grad_input[n, c, 0]
                if training:
                    for i in range(length):
                        gx_row[i] = gy_row[i] * fa + x_row[i] * fb + fshift
                else:
                    for i in range(length):
                        gx_row[i] = gy_row[i] * fa
