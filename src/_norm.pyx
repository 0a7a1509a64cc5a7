"""Batch normalisation kernels over (N, C, L) arrays (L = H*W), forward and backward.

Every kernel runs one channel per iteration of a ``prange`` over the C channels; a channel's
sums are taken by one thread in a fixed order (16 float64 partial sums per quantity, added
in a fixed tree; src/_norm.h), so results are bit-identical whatever the thread count, and
whatever the instruction set (``ISA``: the generic, AVX2 and AVX-512 builds of the loops
run the same operations).

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

cdef extern from "_norm.h" nogil:
    # one channel's rows (row r at base + r * stride); the build for the CPU's instruction
    # set (generic, avx2, avx512: the same bits), chosen once by fc_norm_select()
    int fc_norm_select()
    const char* fc_cpu_isa_name(int level)
    void fc_norm_shifted_sums_f(const float* values, Py_ssize_t rows, Py_ssize_t stride,
                                Py_ssize_t length, double shift, double* total,
                                double* squares)
    void fc_norm_shifted_sums_d(const double* values, Py_ssize_t rows, Py_ssize_t stride,
                                Py_ssize_t length, double shift, double* total,
                                double* squares)
    void fc_norm_gradient_sums_f(const float* grad, const float* values, const float* output,
                                 float* grad_residual, Py_ssize_t rows, Py_ssize_t stride,
                                 Py_ssize_t length, double mean, double* total,
                                 double* products)
    void fc_norm_gradient_sums_d(const double* grad, const double* values,
                                 const double* output, double* grad_residual, Py_ssize_t rows,
                                 Py_ssize_t stride, Py_ssize_t length, double mean,
                                 double* total, double* products)
    void fc_norm_affine_f(float* out, const float* values, const float* residual,
                          Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t length, float scale,
                          float shift, int relu)
    void fc_norm_affine_d(double* out, const double* values, const double* residual,
                          Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t length, double scale,
                          double shift, int relu)
    void fc_norm_grad_input_f(float* grad_input, const float* grad, const float* values,
                              const float* output, Py_ssize_t rows, Py_ssize_t stride,
                              Py_ssize_t length, float a, float b, float c)
    void fc_norm_grad_input_d(double* grad_input, const double* grad, const double* values,
                              const double* output, Py_ssize_t rows, Py_ssize_t stride,
                              Py_ssize_t length, double a, double b, double c)


cdef extern from *:
    """
    /* r * keep + add, the product rounded before the sum (never one fused multiply-add,
     * whatever the target and -ffp-contract): NumPy's ``r *= keep; r += add`` */
    static inline float fc_norm_momentum_f(float r, float keep, float add) {
        volatile float scaled = r * keep;
        return scaled + add;
    }
    static inline double fc_norm_momentum_d(double r, double keep, double add) {
        volatile double scaled = r * keep;
        return scaled + add;
    }
    """
    float fc_norm_momentum_f(float r, float keep, float add) nogil
    double fc_norm_momentum_d(double r, double keep, double add) nogil


ISA = fc_cpu_isa_name(fc_norm_select()).decode("ascii")  # the build every kernel here runs


cdef inline floating _momentum(floating r, floating keep, floating add) noexcept nogil:
    """``r * keep + add`` in ``floating``, rounded after each operation."""
    if floating is float:
        return fc_norm_momentum_f(r, keep, add)
    else:
        return fc_norm_momentum_d(r, keep, add)


cdef inline void _shifted_sums(const floating* values, Py_ssize_t rows, Py_ssize_t stride,
                               Py_ssize_t length, double shift, double* total,
                               double* squares) noexcept nogil:
    """total = sum(values - shift), squares = sum((values - shift)**2) over a channel's rows,
    in float64 with 16 partial sums each, added in a fixed tree (src/_norm.h). Shifted by a
    value of the channel, so that the variance E[d^2] - E[d]^2 does not cancel when the mean
    is large."""
    if floating is float:
        fc_norm_shifted_sums_f(values, rows, stride, length, shift, total, squares)
    else:
        fc_norm_shifted_sums_d(values, rows, stride, length, shift, total, squares)


cdef inline void _gradient_sums(const floating* grad, const floating* values,
                                const floating* output, floating* grad_residual,
                                Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t length,
                                double mean, double* total, double* products) noexcept nogil:
    """total = sum(g), products = sum(g * (values - mean)) over a channel's rows, g = grad,
    or grad where output > 0 and 0 elsewhere when ``output`` is not NULL (written to
    grad_residual when that is not NULL); float64, 16 partial sums each, a fixed tree."""
    if floating is float:
        fc_norm_gradient_sums_f(grad, values, output, grad_residual, rows, stride, length, mean,
                                total, products)
    else:
        fc_norm_gradient_sums_d(grad, values, output, grad_residual, rows, stride, length, mean,
                                total, products)


cdef inline void _affine(floating* out, const floating* values, const floating* residual,
                         Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t length, floating scale,
                         floating shift, bint relu) noexcept nogil:
    """out = values * scale + shift (+ residual when not NULL) (then max(., 0) with relu)."""
    if floating is float:
        fc_norm_affine_f(out, values, residual, rows, stride, length, scale, shift, relu)
    else:
        fc_norm_affine_d(out, values, residual, rows, stride, length, scale, shift, relu)


cdef inline void _grad_input(floating* grad_input, const floating* grad,
                             const floating* values, const floating* output, Py_ssize_t rows,
                             Py_ssize_t stride, Py_ssize_t length, floating a, floating b,
                             floating c) noexcept nogil:
    """grad_input = g * a + values * b + c, g = grad masked by output > 0 (when not NULL)."""
    if floating is float:
        fc_norm_grad_input_f(grad_input, grad, values, output, rows, stride, length, a, b, c)
    else:
        fc_norm_grad_input_d(grad_input, grad, values, output, rows, stride, length, a, b, c)


def batch_norm_forward(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                       const floating[::1] weight, const floating[::1] bias,
                       double[::1] mean, double[::1] var, double eps, bint training,
                       bint relu, const floating[:, :, ::1] residual,
                       floating[::1] running_mean, floating[::1] running_var, double factor,
                       double ratio, int num_threads):
    """y[n,c,l] = (x[n,c,l] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]
    (+ residual[n,c,l] when ``residual`` is not empty; then max(y, 0) with ``relu``).

    With ``training`` the mean and biased variance over (n, l) are computed (one pass,
    shifted by the channel's first value) and written to ``mean`` and ``var``; otherwise they
    are read from there. In training, running estimates that are not empty move towards
    them as fastconv.norm's NumPy statements move them (in ``floating``, each operation
    rounded): ``running_mean = running_mean * (1 - factor) + (factor * mean)``,
    ``running_var = running_var * (1 - factor) + (factor * var * ratio)``, the bracketed
    terms in float64 rounded to ``floating`` (``ratio``: Bessel's M / (M - 1)).
    """
    cdef Py_ssize_t batch = x.shape[0], channels = x.shape[1], length = x.shape[2]
    cdef Py_ssize_t c, stride = channels * length
    cdef double total, squares, shift, count, channel_mean, invstd, scale
    cdef bint add = residual.shape[0] != 0
    cdef bint update_mean = training and running_mean.shape[0] != 0
    cdef bint update_var = training and running_var.shape[0] != 0
    cdef floating keep = <floating>(1.0 - factor)
    with nogil:
        for c in prange(channels, schedule='static', num_threads=num_threads):
            if training:
                total = 0
                squares = 0
                shift = x[0, c, 0]
                _shifted_sums(&x[0, c, 0], batch, stride, length, shift, &total, &squares)
                count = <double>(batch * length)
                channel_mean = total / count
                mean[c] = shift + channel_mean
                var[c] = max(squares / count - channel_mean * channel_mean, 0.0)
                if update_mean:
                    running_mean[c] = _momentum(running_mean[c], keep,
                                                <floating>(factor * mean[c]))
                if update_var:
                    running_var[c] = _momentum(running_var[c], keep,
                                               <floating>(factor * var[c] * ratio))
            invstd = 1.0 / sqrt(var[c] + eps)
            scale = weight[c] * invstd
            _affine(&out[0, c, 0], &x[0, c, 0], &residual[0, c, 0] if add else NULL, batch,
                    stride, length, <floating>scale, <floating>(bias[c] - mean[c] * scale),
                    relu)


def batch_norm_backward(const floating[:, :, ::1] grad_output, const floating[:, :, ::1] x,
                        const floating[::1] weight, const double[::1] mean,
                        const double[::1] var, double eps, bint training,
                        const floating[:, :, ::1] output, bint relu,
                        floating[:, :, ::1] grad_residual,
                        floating[:, :, ::1] grad_input, bint need_input,
                        floating[::1] grad_weight, floating[::1] grad_bias, bint accumulate,
                        int num_threads):
    """grad_bias[c] = sum g, grad_weight[c] = sum g * xhat (float64 sums rounded to
    ``floating``; with ``accumulate`` added to what the arrays hold, one rounded addition;
    either not written when empty); grad_input (when ``need_input``)
    as the module docstring says, for the statistics ``mean``, ``var`` the forward used (the
    batch's with ``training``, the running ones otherwise). g is grad_output, or with
    ``relu`` grad_output where the forward's ``output`` > 0 and 0 elsewhere; when
    ``grad_residual`` is not empty, g is also written there (the gradient of a residual the
    forward added)."""
    cdef Py_ssize_t batch = grad_output.shape[0], channels = grad_output.shape[1]
    cdef Py_ssize_t length = grad_output.shape[2]
    cdef Py_ssize_t c, stride = channels * length
    cdef double sum_gy, sum_gy_dev, invstd, count, a, b, shift
    cdef floating fa, fb, fshift
    cdef bint write_residual = grad_residual.shape[0] != 0
    cdef bint write_weight = grad_weight.shape[0] != 0, write_bias = grad_bias.shape[0] != 0
    # with a ReLU, the first pass writes the masked gradient where the second pass takes it
    # from: grad_residual, or grad_input itself (then overwritten in place), so that the
    # second pass reads two streams (it and x), not three (grad_output, output and x)
    cdef bint stage_in_input = relu and need_input and not write_residual
    cdef floating* masked
    with nogil:
        for c in prange(channels, schedule='static', num_threads=num_threads):
            invstd = 1.0 / sqrt(var[c] + eps)
            sum_gy = 0
            sum_gy_dev = 0
            masked = NULL
            if write_residual:
                masked = &grad_residual[0, c, 0]
            elif stage_in_input:
                masked = &grad_input[0, c, 0]
            _gradient_sums(&grad_output[0, c, 0], &x[0, c, 0], &output[0, c, 0] if relu else NULL,
                           masked, batch, stride, length, mean[c], &sum_gy, &sum_gy_dev)
            if write_bias:
                if accumulate:
                    grad_bias[c] = grad_bias[c] + <floating>sum_gy
                else:
                    grad_bias[c] = <floating>sum_gy
            if write_weight:
                if accumulate:
                    grad_weight[c] = grad_weight[c] + <floating>(sum_gy_dev * invstd)
                else:
                    grad_weight[c] = <floating>(sum_gy_dev * invstd)
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
            if masked != NULL:
                # the masked gradient, written by the first pass (in place when it is
                # grad_input: each element is read before it is written)
                _grad_input(&grad_input[0, c, 0], masked, &x[0, c, 0], NULL, batch, stride,
                            length, fa, fb, fshift)
            else:
                _grad_input(&grad_input[0, c, 0], &grad_output[0, c, 0], &x[0, c, 0], NULL,
                            batch, stride, length, fa, fb, fshift)
