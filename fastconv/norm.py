"""Batch normalisation (forward and backward) with PyTorch's semantics.

:func:`batch_norm` is ``torch.nn.functional.batch_norm``: in training it normalises each
channel with the batch's mean and biased variance and (when running estimates are given)
updates them in place, the variance with Bessel's correction; in evaluation it normalises with
the running estimates. :func:`batch_norm_backward` returns the input, weight and bias
gradients. Both call one kernel of ``fastconv._norm`` (one channel per thread, float64 sums).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _norm
from ._args import as_float_array, as_real, result_dtype
from ._threads import NORM_ELEMENTS_PER_THREAD, threads_for

__all__ = ["batch_norm", "batch_norm_backward"]

_NEED = ("input", "weight", "bias")


def _specialised(kernel: Any) -> dict[np.dtype[np.floating], Callable[..., None]]:
    # the fused kernel, indexed by its float and double specialisations (the stub _norm.pyi
    # declares each kernel as one function: Any here, as the compiled object is indexable)
    return {np.dtype(np.float32): kernel["float"], np.dtype(np.float64): kernel["double"]}


_FORWARD = _specialised(_norm.batch_norm_forward)
_BACKWARD = _specialised(_norm.batch_norm_backward)
# the kernels' stand-in for an array they are not given (no residual, no ReLU output, a
# gradient not asked for, no running estimate to update): empty, so never read nor written
_NOTHING = {dtype: np.empty((0, 0, 0), dtype) for dtype in _FORWARD}
_NO_VECTOR = {dtype: np.empty(0, dtype) for dtype in _FORWARD}


def _num_threads(channels: int, elements: int) -> int:
    return threads_for(channels, elements, NORM_ELEMENTS_PER_THREAD)


def _as_channels(x: np.ndarray, name: str) -> np.ndarray:
    """The (N, C, L) view of an (N, C, ...) array."""
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (N, C, ...), got shape "
                         f"{x.shape}")
    return x.reshape(x.shape[0], x.shape[1], -1)


def _channel_vector(value: ArrayLike | None, channels: int, name: str,
                    dtype: np.dtype[np.floating]) -> np.ndarray | None:
    if value is None:
        return None
    vector = as_float_array(value, name, dtype)
    if vector.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (one per channel), got "
                         f"{vector.shape}")
    return vector


def _statistics(value: ArrayLike, channels: int, name: str) -> np.ndarray:
    vector = np.ascontiguousarray(value, dtype=np.float64)
    if vector.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), got {vector.shape}")
    return vector


def batch_norm(x: ArrayLike, running_mean: np.ndarray | None, running_var: np.ndarray | None,
               weight: ArrayLike | None = None, bias: ArrayLike | None = None,
               training: bool = False, momentum: float | None = 0.1, eps: float = 1e-5, *,
               return_stats: bool = False, relu: bool = False,
               residual: ArrayLike | None = None, _out: np.ndarray | None = None,
               ) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalisation over the channel axis (axis 1), as ``torch.nn.functional.batch_norm``.

    Parameters
    ----------
    x : array_like, shape (N, C, ...)
        Input; float32 and float64 are kept, integers convert to float64.
    running_mean, running_var : numpy.ndarray of shape (C,) or None
        Running estimates. In training they are updated in place (when given):
        ``r = (1 - momentum) * r + momentum * batch_value``, the variance unbiased
        (``* M / (M - 1)``, ``M = N * H * W``). In evaluation they normalise the input.
        ``momentum=None`` takes the cumulative average instead, as PyTorch; the caller then
        passes the factor ``1 / num_batches_tracked`` as ``momentum`` itself (the layer does).
    weight, bias : array_like of shape (C,), optional
        The affine scale and shift (1 and 0 when None).
    training : bool, default False
        Use the batch's statistics (True) or the running ones (False).
    momentum : float, default 0.1
    eps : float, default 1e-5
        Added to the variance under the square root.
    return_stats : bool, default False
        Also return the float64 mean and (biased) variance the input was normalised with,
        which :func:`batch_norm_backward` takes.
    relu : bool, default False
        Apply ``max(y, 0)`` in the same pass (a fused BatchNorm2d + ReLU).
    residual : array_like of ``x``'s shape, optional
        Added to the normalised values before the ReLU, in the same pass (ResNet's
        ``relu(bn(x) + shortcut)``).

    Returns
    -------
    out : numpy.ndarray
        Same shape as ``x``.
    mean, var : numpy.ndarray of float64, shape (C,)
        Only with ``return_stats``.

    Raises
    ------
    ValueError
        ``x`` with fewer than 2 dimensions, vectors of the wrong length, training on one value
        per channel (as PyTorch), evaluation without running estimates, negative ``eps``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[1.0]], [[2.0]]], [[[3.0]], [[6.0]]]])
    >>> fastconv.batch_norm(x, None, None, training=True, eps=0.0)[:, :, 0, 0]
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    dtype = result_dtype(("x", x), ("weight", weight), ("bias", bias))
    x = as_float_array(x, "x", dtype)
    x3 = _as_channels(x, "x")
    batch, channels, length = x3.shape
    weight = _channel_vector(weight, channels, "weight", dtype)
    bias = _channel_vector(bias, channels, "bias", dtype)
    eps = as_real(eps, "eps", 0.0)
    training = bool(training)
    for name, value in (("running_mean", running_mean), ("running_var", running_var)):
        if value is not None and (not isinstance(value, np.ndarray) or value.shape != (channels,)
                                  or value.dtype.kind != "f"):
            raise ValueError(f"{name} must be a float numpy.ndarray of shape ({channels},), got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
    count = batch * length
    if training:
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {x.shape}")
        factor = 0.1 if momentum is None else as_real(momentum, "momentum")
        mean = np.empty(channels)
        var = np.empty(channels)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var must be given in evaluation "
                             "(training=False)")
        mean = np.ascontiguousarray(running_mean, dtype=np.float64)
        var = np.ascontiguousarray(running_var, dtype=np.float64)
    if residual is not None:
        residual = as_float_array(residual, "residual", dtype)
        if residual.shape != x.shape:
            raise ValueError(f"residual has shape {residual.shape}, x has {x.shape}: they "
                             "must agree")
        residual3 = residual.reshape(x3.shape)
    else:
        residual3 = _NOTHING[dtype]
    # _out: an array of x's shape that nothing else holds (the layers' recycled buffers,
    # fastconv._buffers), written in place of a new one when it has the result's dtype (a
    # float32 layer whose weight the user made float64 computes in float64)
    out = _out if _out is not None and _out.dtype == dtype else np.empty_like(x)
    forward_checked(x3, out.reshape(x3.shape), weight, bias, mean, var, eps, training,
                    bool(relu), residual3, running_mean if training else None,
                    running_var if training else None, factor if training else 0.0)
    if return_stats:
        if not training:  # (the running estimates themselves, in float64): the caller's copy
            mean, var = mean.copy(), var.copy()
        return out, mean, var  # (in training: made above for this call alone)
    return out


def forward_checked(x3: np.ndarray, out3: np.ndarray, weight: np.ndarray | None,
                    bias: np.ndarray | None, mean: np.ndarray, var: np.ndarray, eps: float,
                    training: bool, relu: bool, residual3: np.ndarray,
                    running_mean: np.ndarray | None, running_var: np.ndarray | None,
                    factor: float) -> None:
    """:func:`batch_norm`'s work once its arguments are checked (it checks them; so does a
    layer that passes its own, already checked arrays): ``x3`` and ``out3`` (N, C, L) and
    ``residual3`` (or ``_NOTHING``) C-contiguous in one float dtype, ``weight`` and ``bias``
    (or None) C-contiguous (C,) vectors of it, ``mean`` and ``var`` float64 (C,) vectors
    (written in training), the running estimates (updated in training; None for none) float
    ndarrays of shape (C,), and training on more than one value per channel.

    The running estimates move as ``r *= 1 - factor; r += (factor * batch_value).astype(r)``
    (the variance's batch value times M / (M - 1)): in the forward kernel's channel loop
    where they are C-contiguous in x's dtype, else by those NumPy statements (the same
    operations, rounded alike; tests/test_norm.py compares the two bit for bit)."""
    dtype = x3.dtype
    batch, channels, length = x3.shape
    count = batch * length
    ratio = count / (count - 1) if training else 0.0
    in_kernel = [running is not None and running.dtype == dtype and running.flags.c_contiguous
                 for running in (running_mean, running_var)]
    if channels and x3.size:
        empty = _NO_VECTOR[dtype]
        _FORWARD[dtype](x3, out3, np.ones(channels, dtype=dtype) if weight is None else weight,
                        np.zeros(channels, dtype=dtype) if bias is None else bias, mean, var,
                        eps, training, relu, residual3,
                        running_mean if in_kernel[0] else empty,
                        running_var if in_kernel[1] else empty, factor, ratio,
                        _num_threads(channels, x3.size))
    if training:
        if running_mean is not None and not in_kernel[0]:
            running_mean *= 1 - factor
            running_mean += (factor * mean).astype(running_mean.dtype)
        if running_var is not None and not in_kernel[1]:
            running_var *= 1 - factor
            running_var += (factor * var * ratio).astype(running_var.dtype)


def batch_norm_backward(grad_output: ArrayLike, x: ArrayLike, mean: ArrayLike, var: ArrayLike,
                        weight: ArrayLike | None = None, eps: float = 1e-5,
                        training: bool = True, *, need: Sequence[str] = _NEED,
                        output: ArrayLike | None = None,
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`batch_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like, shape of ``x``
    x : array_like, shape (N, C, ...)
        The forward pass's input.
    mean, var : array_like of shape (C,)
        The statistics the forward pass normalised with: the batch's (``return_stats=True``
        in training) or the running estimates (evaluation).
    weight : array_like of shape (C,), optional
        The forward pass's weight (1 when None).
    eps : float, default 1e-5
    training : bool, default True
        Whether the forward pass used the batch statistics (which then depend on ``x``).
    need : sequence of {'input', 'weight', 'bias'}, default all three
        Gradients to compute; the others are returned as None.
    output : array_like, optional
        The forward result of a ``relu=True`` forward: the gradient is taken as 0 where it is
        not positive (the ReLU's backward, in the same passes). The gradient of a
        ``residual`` is ``grad_output`` there too (``np.where(output > 0, grad_output, 0)``).

    Returns
    -------
    grad_input, grad_weight, grad_bias : numpy.ndarray or None
        ``grad_weight`` is None when ``weight`` is None.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[1.0]]], [[[3.0]]]])
    >>> out, mean, var = fastconv.batch_norm(x, None, None, training=True, eps=0.0,
    ...                                      return_stats=True)
    >>> gx, gw, gb = fastconv.batch_norm_backward(np.ones_like(x), x, mean, var, eps=0.0)
    >>> gx.ravel(), gb
    (array([0., 0.]), array([2.]))
    """
    grad_input, grad_weight, grad_bias, _ = batch_norm_backward_fused(
        grad_output, x, mean, var, weight, eps, training, need=need, output=output)
    return grad_input, grad_weight, grad_bias


def batch_norm_backward_fused(grad_output: ArrayLike, x: ArrayLike, mean: ArrayLike,
                              var: ArrayLike, weight: ArrayLike | None = None,
                              eps: float = 1e-5, training: bool = True, *,
                              need: Sequence[str] = _NEED, output: ArrayLike | None = None,
                              need_residual: bool = False,
                              _buffers: Callable[[tuple[int, ...], np.dtype[Any]], np.ndarray]
                              | None = None,
                              ) -> tuple[np.ndarray | None, np.ndarray | None,
                                         np.ndarray | None, np.ndarray | None]:
    """:func:`batch_norm_backward`, and with ``need_residual`` (and ``output``) also the
    gradient of the forward's ``residual``: ``grad_output`` masked by ``output > 0``, written
    in the kernel's first pass (the layers use this; ``None`` otherwise). ``_buffers(shape,
    dtype)``, when given, makes the two gradient arrays in place of ``np.empty`` (the layers'
    recycled buffers, fastconv._buffers)."""
    if isinstance(need, str):
        need = (need,)
    need_set = set(need)
    unknown = need_set - set(_NEED)
    if unknown:
        raise ValueError(f"need may only name {_NEED}, got {sorted(unknown)!r}")
    dtype = result_dtype(("grad_output", grad_output), ("x", x), ("weight", weight))
    x = as_float_array(x, "x", dtype)
    grad_output = as_float_array(grad_output, "grad_output", dtype)
    if grad_output.shape != x.shape:
        raise ValueError(f"grad_output has shape {grad_output.shape}, x has {x.shape}: they "
                         "must agree")
    x3 = _as_channels(x, "x")
    channels = x3.shape[1]
    weight_vector = _channel_vector(weight, channels, "weight", dtype)
    mean = _statistics(mean, channels, "mean")
    var = _statistics(var, channels, "var")
    eps = as_real(eps, "eps", 0.0)
    empty = _NOTHING[dtype]
    relu = output is not None
    output3 = empty
    if output is not None:
        output = as_float_array(output, "output", dtype)
        if output.shape != x.shape:
            raise ValueError(f"output has shape {output.shape}, x has {x.shape}: they must "
                             "agree")
        output3 = output.reshape(x3.shape)
    elif need_residual:
        raise ValueError("need_residual takes the output of a relu=True forward")
    need_input = "input" in need_set
    make = (lambda shape, dtype: np.empty(shape, dtype)) if _buffers is None else _buffers
    grad_input = make(x.shape, x.dtype) if need_input else None
    grad_residual = make(x.shape, x.dtype) if need_residual else None
    grad_weight = (np.zeros(channels, dtype) if "weight" in need_set
                   and weight_vector is not None else None)
    grad_bias = np.zeros(channels, dtype) if "bias" in need_set else None
    backward_checked(grad_output.reshape(x3.shape), x3, weight_vector, mean, var, eps,
                     bool(training), output3, relu,
                     empty if grad_residual is None else grad_residual.reshape(x3.shape),
                     None if grad_input is None else grad_input.reshape(x3.shape),
                     grad_weight, grad_bias, False)
    return grad_input, grad_weight, grad_bias, grad_residual


def backward_checked(grad_output3: np.ndarray, x3: np.ndarray, weight: np.ndarray | None,
                     mean: np.ndarray, var: np.ndarray, eps: float, training: bool,
                     output3: np.ndarray, relu: bool, grad_residual3: np.ndarray,
                     grad_input3: np.ndarray | None, grad_weight: np.ndarray | None,
                     grad_bias: np.ndarray | None, accumulate: bool) -> None:
    """:func:`batch_norm_backward_fused`'s work once its arguments are checked (it checks
    them; so does a layer that passes its own): (N, C, L) arrays C-contiguous in one float
    dtype (``output3`` and ``grad_residual3`` ``_NOTHING`` for none), ``weight`` a (C,)
    vector of it or None, ``mean`` and ``var`` float64 (C,) vectors. ``grad_weight`` and
    ``grad_bias`` (None: not wanted) are C-contiguous (C,) vectors of the dtype, written with
    the float64 sums rounded to it, or with ``accumulate`` added to (``g += sums.astype``, in
    the kernel: a layer's ``.grad``)."""
    dtype = x3.dtype
    channels = x3.shape[1]
    if channels and x3.size:
        empty = _NO_VECTOR[dtype]
        _BACKWARD[dtype](grad_output3, x3,
                         np.ones(channels, dtype=dtype) if weight is None else weight,
                         mean, var, eps, training, output3, relu, grad_residual3,
                         _NOTHING[dtype] if grad_input3 is None else grad_input3,
                         grad_input3 is not None,
                         empty if grad_weight is None else grad_weight,
                         empty if grad_bias is None else grad_bias, accumulate,
                         _num_threads(channels, x3.size))
