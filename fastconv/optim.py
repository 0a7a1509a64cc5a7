"""Optimisers that update :class:`fastconv.nn.Parameter` values in place from their ``.grad``,
and a learning-rate schedule for them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np

from ._typing import HasLR
from .nn import Module, Parameter

__all__ = ["SGD", "CosineAnnealingLR"]


def _non_negative(value, name, label):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float, got {value!r}")
    if not value >= 0.0:  # also refuses NaN
        raise ValueError(f"Invalid {label}: {value}")
    return float(value)


class SGD:
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    The update is ``torch.optim.SGD``'s, step for step: for each parameter ``p`` with
    gradient ``g``::

        g = g + weight_decay * p
        buf = g                                   (first step)
        buf = momentum * buf + (1 - dampening) * g  (later steps)
        g = g + momentum * buf   if nesterov   else   g = buf     (when momentum != 0)
        p = p - lr * g

    Parameters
    ----------
    params : iterable of Parameter, or a Module
        What to optimise (a Module stands for ``module.parameters()``).
    lr : float
        Learning rate, >= 0.
    momentum : float, default 0
        Momentum factor, >= 0.
    weight_decay : float, default 0
        L2 penalty, >= 0.
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    dampening : float, default 0
        Dampening for momentum (keyword only).
    maximize : bool, default False
        Ascend instead of descend (keyword only).

    Raises
    ------
    ValueError
        Negative ``lr``, ``momentum`` or ``weight_decay``, ``nesterov`` without momentum, or
        an empty parameter list (the messages are PyTorch's).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> layer = nn.Linear(2, 1, bias=False, seed=0)
    >>> layer.weight.data[...] = 1.0
    >>> layer.weight.grad[...] = 0.5
    >>> opt = optim.SGD(layer.parameters(), lr=0.1)
    >>> opt.step()
    >>> layer.weight.data
    array([[0.95, 0.95]], dtype=float32)
    """

    lr: float
    momentum: float
    weight_decay: float
    dampening: float
    nesterov: bool
    maximize: bool
    params: list[Parameter]
    _buffers: list[np.ndarray | None]

    def __init__(self, params: Iterable[Parameter] | Module, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, dampening: float = 0.0,
                 maximize: bool = False) -> None:
        self.lr = _non_negative(lr, "lr", "learning rate")
        self.momentum = _non_negative(momentum, "momentum", "momentum value")
        self.weight_decay = _non_negative(weight_decay, "weight_decay", "weight_decay value")
        self.dampening = _non_negative(dampening, "dampening", "dampening value")
        self.nesterov = bool(nesterov)
        self.maximize = bool(maximize)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if isinstance(params, Module):
            params = params.parameters()
        if isinstance(params, Parameter):
            raise TypeError("params must be an iterable of Parameters (e.g. model.parameters()), "
                            "got a single Parameter")
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for index, parameter in enumerate(self.params):
            if not isinstance(parameter, Parameter):
                raise TypeError(
                    f"params[{index}] is a {type(parameter).__name__}, expected a "
                    "fastconv.nn.Parameter"
                )
        # Momentum buffers, keyed by the position of the parameter; created at the first step
        # (a layer whose size is inferred has no array before its first forward).
        self._buffers = [None] * len(self.params)

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to zeros (in place)."""
        for parameter in self.params:
            if parameter.grad is not None:
                parameter.grad.fill(0)

    def step(self) -> None:
        """Update every parameter once from its current ``.grad``."""
        for index, parameter in enumerate(self.params):
            if parameter.data is None:  # not initialised yet: nothing to update
                continue
            data = parameter.data
            grad = parameter.grad
            if self.maximize:
                grad = -grad
            if self.weight_decay != 0:
                grad = grad + data.dtype.type(self.weight_decay) * data
            if self.momentum != 0:
                buffer = self._buffers[index]
                if buffer is None or buffer.shape != data.shape:
                    buffer = self._buffers[index] = np.array(grad, dtype=data.dtype)
                else:
                    buffer *= data.dtype.type(self.momentum)
                    if self.dampening == 0:
                        buffer += grad
                    else:
                        buffer += data.dtype.type(1 - self.dampening) * grad
                if self.nesterov:
                    grad = grad + data.dtype.type(self.momentum) * buffer
                else:
                    grad = buffer
            data -= data.dtype.type(self.lr) * grad

    def state_dict(self) -> dict[str, Any]:
        """The momentum buffers and hyper-parameters (a plain dict), for checkpointing."""
        return {
            "lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
            "dampening": self.dampening, "nesterov": self.nesterov, "maximize": self.maximize,
            "momentum_buffers": [None if b is None else b.copy() for b in self._buffers],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        buffers = state["momentum_buffers"]
        if len(buffers) != len(self.params):
            raise ValueError(f"state has {len(buffers)} momentum buffers, the optimiser has "
                             f"{len(self.params)} parameters")
        for key in ("lr", "momentum", "weight_decay", "dampening", "nesterov", "maximize"):
            setattr(self, key, state[key])
        self._buffers = [None if b is None else np.array(b) for b in buffers]

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"nesterov={self.nesterov})")


class CosineAnnealingLR:
    """Cosine decay of an optimiser's learning rate, as ``torch.optim.lr_scheduler``'s.

    After ``t`` calls of :meth:`step` the learning rate is
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``: ``base_lr`` (the
    optimiser's ``lr`` when the schedule is made) at ``t = 0``, ``eta_min`` at ``t = T_max``,
    and back up again after that (SGDR without restarts, as PyTorch). The value is computed with
    PyTorch's own recursive update, so the rates agree with PyTorch's bit for bit.

    Whether a step is an epoch or a batch is up to the caller: :func:`fastconv.train.fit`
    steps its ``scheduler`` once per batch, so there ``T_max`` counts batches.

    Parameters
    ----------
    optimizer : SGD
        Any object with a float attribute ``lr``.
    T_max : int
        Steps in half a cosine period (>= 1).
    eta_min : float, default 0
        The lowest learning rate, >= 0.

    Examples
    --------
    >>> from fastconv import nn, optim
    >>> opt = optim.SGD(nn.Linear(2, 1, seed=0).parameters(), lr=0.1)
    >>> schedule = optim.CosineAnnealingLR(opt, T_max=4)
    >>> for _ in range(4):
    ...     opt.step()
    ...     schedule.step()
    >>> opt.lr
    0.0
    """

    optimizer: HasLR
    T_max: int
    eta_min: float
    base_lr: float
    last_epoch: int

    def __init__(self, optimizer: HasLR, T_max: int, eta_min: float = 0.0) -> None:
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"optimizer must have an 'lr' attribute, got "
                            f"{type(optimizer).__name__}")
        if isinstance(T_max, (bool, np.bool_)) or not isinstance(T_max, Integral):
            raise TypeError(f"T_max must be an int, got {T_max!r}")
        if T_max < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        self.optimizer = optimizer
        self.T_max = int(T_max)
        self.eta_min = _non_negative(eta_min, "eta_min", "eta_min value")
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def step(self) -> None:
        """Advance one step and set the optimiser's ``lr`` to the new rate."""
        self.last_epoch += 1
        t, T, lr, eta_min = self.last_epoch, self.T_max, float(self.optimizer.lr), self.eta_min
        if (t - 1 - T) % (2 * T) == 0:  # the turn at the bottom (PyTorch's branch)
            lr = lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        else:
            lr = ((1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                  * (lr - eta_min) + eta_min)
        self.optimizer.lr = lr

    def get_last_lr(self) -> list[float]:
        """The current learning rate, in a one-element list (as PyTorch's)."""
        return [float(self.optimizer.lr)]

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`load_state_dict` needs to resume the schedule (a plain dict)."""
        return {"T_max": self.T_max, "eta_min": self.eta_min, "base_lr": self.base_lr,
                "last_epoch": self.last_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the optimiser's ``lr`` is its own)."""
        self.T_max = int(state["T_max"])
        self.eta_min = float(state["eta_min"])
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])

    def __repr__(self) -> str:
        return (f"CosineAnnealingLR(T_max={self.T_max}, eta_min={self.eta_min}, "
                f"base_lr={self.base_lr}, last_epoch={self.last_epoch})")
