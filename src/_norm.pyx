"""Batch normalisation kernels over (N, C, L) arrays (L = H*W), forward and backward.

Every kernel runs one channel per iteration of a ``prange`` over the C channels; a channel's
sums are taken by one thread in a fixed order (four float64 partial sums per quantity, added
in a fixed tree), so results are bit-identical whatever the thread count.

Forward: ``y = (x - mean) * invstd * weight + bias`` with ``invstd = 1/sqrt(var + eps)``; in
training the mean and the biased variance are the channel's over (N, L), from one pass of
sums and squares of ``x - x[0, c, 0]`` (the shift keeps ``E[d^2] - E[d]^2`` from cancelling
when the mean is large against the spread), written out for the running estimates. A
residual can be added and a ReLU applied in the same pass (ResNet's ``relu(bn(x) + skip)``),
and the backward then masks the gradient by the forward's output in its own passes.
Backward: with ``xhat = (x - mean) * invstd``, ``grad_bias = sum(gy)``, ``grad_weight =
sum(gy * xhat)``, and ``gx = weight * invstd * (gy - [sum(gy) + xhat * sum(gy*xhat)] / M)``
in training (the statistics depend on x), ``gx = weight * invstd * gy`` in evaluation. Both
are one multiply-add per element, ``gx = gy*a + x*b + c``, after one summing pass.

The wrappers in ``fastconv/norm.py`` validate every argument; nothing here raises.
"""

from cython.parallel cimport prange
from libc.math cimport sqrt

from _types cimport floating

cdef extern from *:
    """
    /* grad where output > 0, else +0: a bit mask, so branch-free and exact (an inf or NaN
       gradient still becomes 0 where the unit is off, as PyTorch's ReLU backward) */
    static inline float fc_relu_grad_f(float grad, float output) {
        union { float value; unsigned int bits; } g; g.value = grad;
        g.bits &= -(unsigned int)(output > 0); return g.value;
    }
    static inline double fc_relu_grad_d(double grad, double output) {
        union { double value; unsigned long long bits; } g; g.value = grad;
        g.bits &= -(unsigned long long)(output > 0); return g.value;
    }
    """
    float fc_relu_grad_f(float grad, float output) noexcept nogil
    double fc_relu_grad_d(double grad, double output) noexcept nogil


cdef inline floating _relu_grad(floating grad, floating output) noexcept nogil:
    if floating is float:
        return fc_relu_grad_f(grad, output)
    else:
        return fc_relu_grad_d(grad, output)


cdef inline void _shifted_sums(const floating* values, Py_ssize_t count, double shift,
                               double* total, double* squares) noexcept nogil:
    """total += sum(values - shift), squares += sum((values - shift)**2), in float64 with
    four independent partial sums each, added in a fixed tree. Shifted by a value of the
    channel, so that the variance E[d^2] - E[d]^2 does not cancel when the mean is large."""
    cdef double t0 = 0, t1 = 0, t2 = 0, t3 = 0, q0 = 0, q1 = 0, q2 = 0, q3 = 0
    cdef double d0, d1, d2, d3
    cdef Py_ssize_t i = 0
    while i + 4 <= count:
        d0 = values[i] - shift
        d1 = values[i + 1] - shift
        d2 = values[i + 2] - shift
        d3 = values[i + 3] - shift
        t0 += d0
        t1 += d1
        t2 += d2
        t3 += d3
        q0 += d0 * d0
        q1 += d1 * d1
        q2 += d2 * d2
        q3 += d3 * d3
        i += 4
    while i < count:
        d0 = values[i] - shift
        t0 += d0
        q0 += d0 * d0
        i += 1
    total[0] += (t0 + t1) + (t2 + t3)
    squares[0] += (q0 + q1) + (q2 + q3)


cdef inline void _gradient_sums(const floating* grad, const floating* values,
                                const floating* output, floating* grad_residual,
                                Py_ssize_t count, double mean, bint relu,
                                double* total, double* products) noexcept nogil:
    """total += sum(g), products += sum(g * (values - mean)), g = grad, or with ``relu``
    grad where output > 0 and 0 elsewhere (written to grad_residual when it is not NULL);
    float64, four partial sums each, a fixed tree."""
    cdef double t0 = 0, t1 = 0, t2 = 0, t3 = 0, p0 = 0, p1 = 0, p2 = 0, p3 = 0
    cdef floating g0, g1, g2, g3
    cdef Py_ssize_t i = 0
    if relu:
        while i + 4 <= count:
            g0 = _relu_grad(grad[i], output[i])
            g1 = _relu_grad(grad[i + 1], output[i + 1])
            g2 = _relu_grad(grad[i + 2], output[i + 2])
            g3 = _relu_grad(grad[i + 3], output[i + 3])
            if grad_residual != NULL:
                grad_residual[i] = g0
                grad_residual[i + 1] = g1
                grad_residual[i + 2] = g2
                grad_residual[i + 3] = g3
            t0 += g0
            t1 += g1
            t2 += g2
            t3 += g3
            p0 += g0 * (values[i] - mean)
            p1 += g1 * (values[i + 1] - mean)
            p2 += g2 * (values[i + 2] - mean)
            p3 += g3 * (values[i + 3] - mean)
            i += 4
        while i < count:
            g0 = _relu_grad(grad[i], output[i])
            if grad_residual != NULL:
                grad_residual[i] = g0
            t0 += g0
            p0 += g0 * (values[i] - mean)
            i += 1
    else:
        while i + 4 <= count:
            t0 += grad[i]
            t1 += grad[i + 1]
            t2 += grad[i + 2]
            t3 += grad[i + 3]
            p0 += grad[i] * (values[i] - mean)
            p1 += grad[i + 1] * (values[i + 1] - mean)
            p2 += grad[i + 2] * (values[i + 2] - mean)
            p3 += grad[i + 3] * (values[i + 3] - mean)
            i += 4
        while i < count:
            t0 += grad[i]
            p0 += grad[i] * (values[i] - mean)
            i += 1
    total[0] += (t0 + t1) + (t2 + t3)
    products[0] += (p0 + p1) + (p2 + p3)


cdef inline void _affine(floating* out, const floating* values, const floating* residual,
                         Py_ssize_t count, floating scale, floating shift,
                         bint relu) noexcept nogil:
    """out = values * scale + shift (+ residual when not NULL) (then max(., 0) with relu)."""
    cdef Py_ssize_t i
    cdef floating value
    if residual != NULL:
        if relu:
            for i in range(count):
                value = values[i] * scale + shift + residual[i]
                out[i] = value if value > 0 else 0
        else:
            for i in range(count):
                out[i] = values[i] * scale + shift + residual[i]
    elif relu:
        for i in range(count):
            value = values[i] * scale + shift
            out[i] = value if value > 0 else 0
    else:
        for i in range(count):
            out[i] = values[i] * scale + shift


def batch_norm_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                       const floating[::1] weight, const floating[::1] bias,
                       double[::1] mean, double[::1] var, double eps, bint training,
                       bint relu, const floating[:, :, ::1] residual, int num_threads):
    """y[n,c,l] = (x[n,c,l] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]
    (+ residual[n,c,l] when ``residual`` is not empty; then max(y, 0) with ``relu``).

    With ``training`` the mean and biased variance over (n, l) are computed (one pass,
    shifted by the channel's first value) and written to ``mean`` and ``var``; otherwise they
    are read from there.
    """
    cdef Py_ssize_t batch = x.shape[0], channels = x.shape[1], length = x.shape[2]
    cdef Py_ssize_t c, n
    cdef double total, squares, shift, count, channel_mean, invstd, scale
    cdef bint add = residual.shape[0] != 0
    with nogil:
        for c in prange(channels, schedule='static', num_threads=num_threads):
            if training:
                total = 0
                squares = 0
                shift = x[0, c, 0]
                for n in range(batch):
                    _shifted_sums(&x[n, c, 0], length, shift, &total, &squares)
                count = <double>(batch * length)
                channel_mean = total / count
                mean[c] = shift + channel_mean
                var[c] = max(squares / count - channel_mean * channel_mean, 0.0)
            invstd = 1.0 / sqrt(var[c] + eps)
            scale = weight[c] * invstd
            for n in range(batch):
                _affine(&out[n, c, 0], &x[n, c, 0], &residual[n, c, 0] if add else NULL,
                        length, <floating>scale, <floating>(bias[c] - mean[c] * scale), relu)


def batch_norm_backward(const floating[:, :, ::1] grad_output, const floating[:, :, ::1] x,
                        const floating[::1] weight, const double[::1] mean,
                        const double[::1] var, double eps, bint training,
                        const floating[:, :, ::1] output, bint relu,
                        floating[:, :, ::1] grad_residual,
                        floating[:, :, ::1] grad_input, bint need_input,
                        double[::1] grad_weight, double[::1] grad_bias, int num_threads):
    """grad_bias[c] = sum g, grad_weight[c] = sum g * xhat; grad_input (when ``need_input``)
    as the module docstring says, for the statistics ``mean``, ``var`` the forward used (the
    batch's with ``training``, the running ones otherwise). g is grad_output, or with
    ``relu`` grad_output where the forward's ``output`` > 0 and 0 elsewhere; when
    ``grad_residual`` is not empty, g is also written there (the gradient of a residual the
    forward added)."""
    cdef Py_ssize_t batch = grad_output.shape[0], channels = grad_output.shape[1]
    cdef Py_ssize_t length = grad_output.shape[2]
    cdef Py_ssize_t c, n, i
    cdef double sum_gy, sum_gy_dev, invstd, count, a, b, shift
    cdef floating fa, fb, fshift, g
    cdef const floating* gy_row
    cdef const floating* x_row
    cdef const floating* out_row
    cdef floating* gx_row
    cdef bint write_residual = grad_residual.shape[0] != 0
    with nogil:
        for c in prange(channels, schedule='static', num_threads=num_threads):
            invstd = 1.0 / sqrt(var[c] + eps)
            sum_gy = 0
            sum_gy_dev = 0
            for n in range(batch):
                _gradient_sums(&grad_output[n, c, 0], &x[n, c, 0],
                               &output[n, c, 0] if relu else NULL,
                               &grad_residual[n, c, 0] if write_residual else NULL,
                               length, mean[c], relu, &sum_gy, &sum_gy_dev)
            grad_bias[c] = sum_gy
            grad_weight[c] = sum_gy_dev * invstd
            if not need_input:
                continue
            a = weight[c] * invstd
            b = 0
            shift = 0
            if training:
                count = <double>(batch * length)
                # gx = a * (g - sum_gy/M - (x - mean) * invstd^2 * sum_gy_dev/M)
                b = -a * invstd * invstd * sum_gy_dev / count
                shift = -a * sum_gy / count - b * mean[c]
            fa = <floating>a
            fb = <floating>b
            fshift = <floating>shift
            for n in range(batch):
                gy_row = &grad_output[n, c, 0]
                x_row = &x[n, c, 0]
                gx_row = &grad_input[n, c, 0]
                if relu:
                    out_row = &output[n, c, 0]
                    for i in range(length):
                        g = _relu_grad(gy_row[i], out_row[i])
                        gx_row[i] = g * fa + x_row[i] * fb + fshift
                else:
                    for i in range(length):
                        gx_row[i] = gy_row[i] * fa + x_row[i] * fb + fshift
