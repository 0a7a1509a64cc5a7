"""The optimisers' element-wise update kernels: one pass over a parameter in place of a chain
of NumPy operations (each of which reads and writes the whole array again).

``adam_step`` is ``fastconv.optim.Adam``'s update of one parameter, element by element with
the same operations in the same order, each rounded to the parameter's dtype, as the NumPy
expressions they replace (and as PyTorch's single-tensor Adam)::

    g = -grad if maximize else grad
    p = p * decay                               (decoupled weight decay, AdamW; decay != 1)
    g = g + weight_decay * p                    (L2 penalty, Adam; weight_decay != 0)
    m = m + w * (g - m)         if w < 0.5      (torch's lerp(m, g, w), w = 1 - beta1)
    m = g - (g - m) * (1 - w)   otherwise
    v = v * beta2 + (1 - beta2) * (g * g)
    vmax = max(vmax, v)  (NaN wins)             (amsgrad; then vmax in place of v)
    p = p - step_size * (m / (sqrt(v) / bias_correction2_sqrt + eps))

The extension is compiled with ``-ffp-contract=off`` (setup.py): no product and sum fused
into one multiply-add, so every element rounds as the separate NumPy operations did, on every
instruction set. Elements are independent, so the threads (contiguous blocks of elements)
do not change a bit. The wrapper (``fastconv/optim.py``) checks every argument; nothing here
raises.
"""

from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

from _types cimport floating

cdef enum:
    _BLOCK = 4096
BLOCK = _BLOCK  # elements a thread updates at a time: the wrapper's unit of work


cdef inline floating _nan_max(floating a, floating b) noexcept nogil:
    """numpy.maximum: b when it is larger or NaN, else a (a NaN a stays)."""
    if b > a or b != b:
        return b
    return a


cdef inline floating _sqrt(floating value) noexcept nogil:
    if floating is float:
        return sqrtf(value)
    else:
        return sqrt(value)


cdef inline void _adam_block(floating* param, const floating* grad, floating* exp_avg,
                             floating* exp_avg_sq, floating* max_exp_avg_sq, Py_ssize_t start,
                             Py_ssize_t stop, bint maximize, bint decoupled, floating decay,
                             bint l2, floating weight_decay, bint lerp_low, floating weight,
                             floating beta2, floating one_minus_beta2,
                             floating bias_correction2_sqrt, floating eps,
                             floating step_size) noexcept nogil:
    """Elements [start, stop) of adam_step. Inlined twice: with the switches of plain Adam as
    constants (no branch left in the loop, which the compiler then vectorises), and with them
    as given."""
    cdef Py_ssize_t i
    cdef floating g, p, m, v, denominator
    for i in range(start, stop):
        g = grad[i]
        if maximize:
            g = -g
        p = param[i]
        if decoupled:
            p = p * decay
        if l2:
            g = g + weight_decay * p
        m = exp_avg[i]
        if lerp_low:
            m = m + weight * (g - m)
        else:
            m = g - (g - m) * weight
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + one_minus_beta2 * (g * g)
        exp_avg_sq[i] = v
        if max_exp_avg_sq != NULL:
            v = _nan_max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        denominator = _sqrt(v) / bias_correction2_sqrt + eps
        param[i] = p - step_size * (m / denominator)


def adam_step(floating[::1] param, const floating[::1] grad, floating[::1] exp_avg,
              floating[::1] exp_avg_sq, floating[::1] max_exp_avg_sq, bint maximize,
              bint decoupled, floating decay, bint l2, floating weight_decay, bint lerp_low,
              floating weight, floating beta2, floating one_minus_beta2,
              floating bias_correction2_sqrt, floating eps, floating step_size,
              int num_threads):
    """One Adam update of ``param`` in place, as the module docstring writes it. All arrays
    have one length (C-contiguous); ``max_exp_avg_sq`` is empty without amsgrad. ``decoupled``
    multiplies ``p`` by ``decay``, ``l2`` adds ``weight_decay * p`` to the gradient.
    ``lerp_low`` (``w < 0.5``) picks the first form of the ``m`` update, and ``weight`` is
    what that form multiplies by: ``w``, else ``1 - w``. Blocks of ``BLOCK`` elements are
    shared out among ``num_threads`` threads."""
    cdef Py_ssize_t size = param.shape[0], blocks, block, start, stop
    cdef floating* maximum = NULL
    cdef bint plain = not (maximize or decoupled or l2) and lerp_low
    if size == 0:
        return
    if max_exp_avg_sq.shape[0] != 0:
        maximum = &max_exp_avg_sq[0]
        plain = False
    blocks = (size + _BLOCK - 1) // _BLOCK
    with nogil:
        for block in prange(blocks, schedule='static', num_threads=num_threads):
            start = block * _BLOCK
            stop = min(start + _BLOCK, size)
            if plain:
                _adam_block(&param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], NULL, start,
                            stop, False, False, 1, False, 0, True, weight, beta2,
                            one_minus_beta2, bias_correction2_sqrt, eps, step_size)
            else:
                _adam_block(&param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], maximum, start,
                            stop, maximize, decoupled, decay, l2, weight_decay, lerp_low,
                            weight, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
                            step_size)
