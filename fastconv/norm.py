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
# gradient not asked for): empty, so never read nor written
_NOTHING = {dtype: np.empty((0, 0, 0), dtype) for dtype in _FORWARD}


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
    # _out: an array of x's shape and dtype that nothing else holds (the layers' recycled
    # buffers, fastconv._buffers), written in place of a new one
    out = np.empty_like(x) if _out is None else _out
    if channels and x3.size:
        ones = np.ones(channels, dtype=dtype) if weight is None else weight
        zeros = np.zeros(channels, dtype=dtype) if bias is None else bias
        _FORWARD[dtype](x3, out.reshape(x3.shape), ones, zeros, mean, var, eps, training,
                        bool(relu), residual3, _num_threads(channels, x3.size))
    if training:
        if running_mean is not None:
            running_mean *= 1 - factor
            running_mean += (factor * mean).astype(running_mean.dtype)
        if running_var is not None:
            running_var *= 1 - factor
            running_var += (factor * var * (count / (count - 1))).astype(running_var.dtype)
    if return_stats:
        if not training:  # (the running estimates themselves, in float64): the caller's copy
            mean, var = mean.copy(), var.copy()
        return out, mean, var  # (in training: made above for this call alone)
    return out


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
    grad_weight_sums = np.zeros(channels)
    grad_bias_sums = np.zeros(channels)
    if channels and x3.size:
        ones = np.ones(channels, dtype=dtype) if weight_vector is None else weight_vector
        _BACKWARD[dtype](grad_output.reshape(x3.shape), x3, ones, mean, var, eps,
                         bool(training), output3, relu,
                         empty if grad_residual is None else grad_residual.reshape(x3.shape),
                         empty if grad_input is None else grad_input.reshape(x3.shape),
                         need_input, grad_weight_sums, grad_bias_sums,
                         _num_threads(channels, x3.size))
    grad_weight = (grad_weight_sums.astype(dtype) if "weight" in need_set
                   and weight_vector is not None else None)
    grad_bias = grad_bias_sums.astype(dtype) if "bias" in need_set else None
    return grad_input, grad_weight, grad_bias, grad_residual
