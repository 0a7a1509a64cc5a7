"""Optimisers that update :class:`fastconv.nn.Parameter` values in place from their ``.grad``,
and a learning-rate schedule for them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import _optim
from ._args import as_int, as_real
from ._buffers import scratch
from ._threads import OPTIM_ELEMENTS_PER_THREAD, threads_for, threads_key
from ._typing import HasLR
from .nn import Module, Parameter

__all__ = ["SGD", "CosineAnnealingLR"]


def _non_negative(value: Any, name: str, label: str) -> float:
    """A float >= 0 (NaN refused), with torch.optim's message ``Invalid {label}: {value}``."""
    number = as_real(value, name)
    if not number >= 0.0:
        raise ValueError(f"Invalid {label}: {value}")
    return number


def _schedule_of(optimizer: HasLR, count: Any, name: str) -> int:
    """A learning-rate schedule's checks: ``optimizer`` has an ``lr``, and ``count`` (its
    period, ``name``) is an int >= 1; returns the count."""
    if not hasattr(optimizer, "lr"):
        raise TypeError(f"optimizer must have an 'lr' attribute, got "
                        f"{type(optimizer).__name__}")
    return as_int(count, name, 1)


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
            # data -= lr * grad, the product in a scratch array (no new pages every step)
            step = scratch(data.shape, data.dtype)
            np.multiply(data.dtype.type(self.lr), grad, out=step)
            data -= step

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
        self.T_max = _schedule_of(optimizer, T_max, "T_max")
        self.optimizer = optimizer
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


# --------------------------------------------------------------------------- Adam (issue 16)

__all__ += ["Adam", "AdamW", "StepLR"]


def _parameter_list(params: Iterable[Parameter] | Module) -> list[Parameter]:
    if isinstance(params, Module):
        params = params.parameters()
    if isinstance(params, Parameter):
        raise TypeError("params must be an iterable of Parameters (e.g. model.parameters()), "
                        "got a single Parameter")
    parameters = list(params)
    if not parameters:
        raise ValueError("optimizer got an empty parameter list")
    for index, parameter in enumerate(parameters):
        if not isinstance(parameter, Parameter):
            raise TypeError(f"params[{index}] is a {type(parameter).__name__}, expected a "
                            "fastconv.nn.Parameter")
    return parameters


def _flat_update(kernel: Any, updated: list[np.ndarray], grad: np.ndarray,
                 *scalars: Any) -> None:
    """``kernel(updated[0], grad, *updated[1:], *scalars)`` on 1-D views. An array that is not
    C-contiguous (a user's own ``Parameter.data`` view, a loaded moment) goes through a
    contiguous copy, written back after."""
    # (the optimisers' own arrays are contiguous: one flags test each, no copies, every step)
    copied = False
    flat = []
    for array in updated:
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
            copied = True
        flat.append(array.reshape(-1))
    kernel(flat[0], np.ascontiguousarray(grad).reshape(-1), *flat[1:], *scalars)
    if copied:
        for array, copy in zip(updated, flat):
            if not array.flags.c_contiguous:
                array[...] = copy.reshape(array.shape)


# the kernel's float and double specialisations (the stub declares it as one function)
_ADAM_STEP: dict[np.dtype[Any], Any] = {np.dtype(np.float32): _optim.adam_step["float"],
                                        np.dtype(np.float64): _optim.adam_step["double"]}
# the kernel's running maximum without amsgrad: an empty array it never touches
_NO_MAXIMUM = {dtype: np.empty(0, dtype) for dtype in _ADAM_STEP}


def _adam_scalars(*, maximize: bool, decoupled: bool, lr: float, weight_decay: float,
                  beta1: float, beta2: float, bias_correction2_sqrt: float, eps: float,
                  step_size: float) -> tuple[Any, ...]:
    """The scalar arguments of ``fastconv._optim.adam_step`` after its arrays (its thread
    count aside): worked out here in float64, as torch does, and rounded to the dtype by the
    kernel's call."""
    # torch's lerp(m, g, w) for w < 0.5 is m + w * (g - m); else g - (g - m) * (1 - w)
    weight = 1 - beta1
    lerp_low = weight < 0.5
    return (maximize, decoupled and weight_decay != 0, 1 - lr * weight_decay,
            not decoupled and weight_decay != 0, weight_decay, lerp_low,
            weight if lerp_low else 1 - weight, beta2, 1 - beta2, bias_correction2_sqrt, eps,
            step_size)


def _adam_threads(data: np.ndarray) -> int:
    return threads_for(-(-data.size // _optim.BLOCK), data.size, OPTIM_ELEMENTS_PER_THREAD)


def _adam_update(data: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
                 exp_avg_sq: np.ndarray, max_exp_avg_sq: np.ndarray | None,
                 scalars: tuple[Any, ...]) -> None:
    """One Adam update of ``data`` and its moments in place, in one compiled pass
    (``fastconv._optim.adam_step``: :class:`Adam`'s operations in PyTorch's order, each
    rounded to ``data``'s dtype as the NumPy operations it replaced), with the scalars of
    :func:`_adam_scalars`."""
    dtype = data.dtype
    maximum = _NO_MAXIMUM[dtype] if max_exp_avg_sq is None else max_exp_avg_sq
    _flat_update(_ADAM_STEP[dtype], [data, exp_avg, exp_avg_sq, maximum],
                 np.asarray(grad, dtype), *scalars, _adam_threads(data))


def _adam_flat(data: np.ndarray, grad: Any, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
               max_exp_avg_sq: np.ndarray | None, key: int) -> tuple[Any, ...] | None:
    """What :func:`_adam_update` passes the kernel for these arrays besides the scalars
    (the kernel, the 1-D views, the thread count for the count ``key``), for
    :meth:`Adam.step` to keep while the arrays are the same objects; None where
    _adam_update would copy (an array not C-contiguous, a gradient of another dtype or
    shape)."""
    dtype = data.dtype
    maximum = _NO_MAXIMUM[dtype] if max_exp_avg_sq is None else max_exp_avg_sq
    arrays = (data, grad, exp_avg, exp_avg_sq, maximum)
    if (dtype not in _ADAM_STEP or type(grad) is not np.ndarray or grad.dtype != dtype
            or grad.shape != data.shape
            or not all(array.flags.c_contiguous for array in arrays)):
        return None
    return (data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, key, _ADAM_STEP[dtype],
            tuple(array.reshape(-1) for array in arrays), _adam_threads(data))


class Adam:
    """Adam (``torch.optim.Adam``), step for step: for each parameter ``p`` with gradient
    ``g`` at step ``t``::

        g = g + weight_decay * p                  (Adam's L2 penalty; AdamW decays p instead)
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                     (amsgrad; then v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    in the parameter's dtype, in PyTorch's order of operations (one compiled pass over each
    parameter, ``fastconv._optim``).

    Parameters
    ----------
    params : iterable of Parameter, or a Module
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
    amsgrad : bool, default False
    maximize : bool, default False (keyword only)

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> layer = nn.Linear(2, 1, bias=False, seed=0)
    >>> layer.weight.data[...] = 1.0
    >>> layer.weight.grad[...] = 0.5
    >>> opt = optim.Adam(layer.parameters(), lr=0.1)
    >>> opt.step()
    >>> layer.weight.data  # 1 - 0.1 in float32 arithmetic, as PyTorch's
    array([[0.90000004, 0.90000004]], dtype=float32)
    """

    _decoupled = False
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    amsgrad: bool
    maximize: bool
    params: list[Parameter]
    # per parameter: step count, first and second moments (and their running maximum)
    _steps: list[int]
    _exp_avg: list[np.ndarray | None]
    _exp_avg_sq: list[np.ndarray | None]
    _max_exp_avg_sq: list[np.ndarray | None]

    def __init__(self, params: Iterable[Parameter] | Module, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        self.lr = _non_negative(lr, "lr", "learning rate")
        self.eps = _non_negative(eps, "eps", "epsilon value")
        self.weight_decay = _non_negative(weight_decay, "weight_decay", "weight_decay value")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        for index, beta in enumerate(betas):
            value = _non_negative(beta, "betas", f"beta parameter at index {index}")
            if not value < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.amsgrad = bool(amsgrad)
        self.maximize = bool(maximize)
        self.params = _parameter_list(params)
        # per parameter: step count, first and second moments (and their running maximum)
        self._steps = [0] * len(self.params)
        self._exp_avg = [None] * len(self.params)
        self._exp_avg_sq = [None] * len(self.params)
        self._max_exp_avg_sq = [None] * len(self.params)
        # per parameter: its arrays and what the kernel takes for them (_adam_flat), kept
        # while they are the same objects and the thread count the same
        self._flat: list[tuple[Any, ...] | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to zeros (in place)."""
        for parameter in self.params:
            if parameter.grad is not None:
                parameter.grad.fill(0)

    def step(self) -> None:
        """Update every parameter once from its current ``.grad``."""
        beta1, beta2 = self.betas
        by_step: dict[int, tuple[Any, ...]] = {}
        key = threads_key()
        for index, parameter in enumerate(self.params):
            data = parameter.data
            if data is None:  # not initialised yet (size inferred at the first forward)
                continue
            exp_avg = self._exp_avg[index]
            if exp_avg is None or exp_avg.shape != data.shape:
                self._steps[index] = 0
                # C-contiguous whatever data's layout: the kernel's own (fastconv._optim)
                exp_avg = self._exp_avg[index] = np.zeros(data.shape, data.dtype)
                self._exp_avg_sq[index] = np.zeros(data.shape, data.dtype)
                if self.amsgrad:
                    self._max_exp_avg_sq[index] = np.zeros(data.shape, data.dtype)
            exp_avg_sq = self._exp_avg_sq[index]
            assert exp_avg_sq is not None  # made with exp_avg, above or by load_state_dict
            max_exp_avg_sq = None
            if self.amsgrad:
                max_exp_avg_sq = self._max_exp_avg_sq[index]
                assert max_exp_avg_sq is not None  # made with the moments when amsgrad
            self._steps[index] += 1
            step = self._steps[index]
            scalars = by_step.get(step)
            if scalars is None:  # (the same for every parameter at this step count)
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                scalars = by_step[step] = _adam_scalars(
                    maximize=self.maximize, decoupled=self._decoupled, lr=self.lr,
                    weight_decay=self.weight_decay, beta1=beta1, beta2=beta2,
                    bias_correction2_sqrt=math.sqrt(bias_correction2), eps=self.eps,
                    step_size=self.lr / bias_correction1)
            grad = parameter.grad
            flat = self._flat[index]
            if (flat is None or flat[0] is not data or flat[1] is not grad
                    or flat[2] is not exp_avg or flat[3] is not exp_avg_sq
                    or flat[4] is not max_exp_avg_sq or flat[5] != key):
                flat = self._flat[index] = _adam_flat(data, grad, exp_avg, exp_avg_sq,
                                                      max_exp_avg_sq, key)
            if flat is None:
                _adam_update(data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars)
            else:
                flat[6](*flat[7], *scalars, flat[8])

    def state_dict(self) -> dict[str, object]:
        """Hyper-parameters, step counts and moments (a plain dict), for checkpointing."""
        def copies(arrays: list[np.ndarray | None]) -> list[np.ndarray | None]:
            return [None if a is None else a.copy() for a in arrays]

        return {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay, "amsgrad": self.amsgrad,
                "maximize": self.maximize, "steps": list(self._steps),
                "exp_avg": copies(self._exp_avg), "exp_avg_sq": copies(self._exp_avg_sq),
                "max_exp_avg_sq": copies(self._max_exp_avg_sq)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""
        steps = list(state["steps"])  # type: ignore[call-overload]
        if len(steps) != len(self.params):
            raise ValueError(f"state has {len(steps)} parameters, the optimiser has "
                             f"{len(self.params)}")
        for key in ("lr", "eps", "weight_decay", "amsgrad", "maximize"):
            setattr(self, key, state[key])
        self.betas = tuple(state["betas"])  # type: ignore[assignment, arg-type]
        self._steps = [int(step) for step in steps]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            setattr(self, f"_{key}", [None if a is None else np.array(a)
                                      for a in state[key]])  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay}, amsgrad={self.amsgrad})")


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``): each step first shrinks the
    parameter, ``p = p * (1 - lr * weight_decay)``, instead of adding ``weight_decay * p`` to
    the gradient; otherwise :class:`Adam`'s update. ``weight_decay`` defaults to 0.01.

    Examples
    --------
    >>> from fastconv import nn, optim
    >>> optim.AdamW(nn.Linear(2, 1, seed=0).parameters(), lr=0.01)
    AdamW(lr=0.01, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01, amsgrad=False)
    """

    _decoupled = True

    def __init__(self, params: Iterable[Parameter] | Module, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


class StepLR:
    """Multiply an optimiser's learning rate by ``gamma`` every ``step_size`` steps
    (``torch.optim.lr_scheduler.StepLR``, with its recursive update, so the rates agree with
    PyTorch's bit for bit).

    Parameters
    ----------
    optimizer : SGD, Adam or AdamW
        Any object with a float attribute ``lr``.
    step_size : int
        Steps between decays (>= 1).
    gamma : float, default 0.1

    Examples
    --------
    >>> from fastconv import nn, optim
    >>> opt = optim.SGD(nn.Linear(2, 1, seed=0).parameters(), lr=1.0)
    >>> schedule = optim.StepLR(opt, step_size=2, gamma=0.5)
    >>> rates = []
    >>> for _ in range(5):
    ...     schedule.step()
    ...     rates.append(opt.lr)
    >>> rates
    [1.0, 0.5, 0.5, 0.25, 0.25]
    """

    optimizer: HasLR
    step_size: int
    gamma: float
    base_lr: float
    last_epoch: int

    def __init__(self, optimizer: HasLR, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _schedule_of(optimizer, step_size, "step_size")
        self.optimizer = optimizer
        self.gamma = _non_negative(gamma, "gamma", "gamma value")
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def step(self) -> None:
        """Advance one step; every ``step_size``-th multiplies the rate by ``gamma``."""
        self.last_epoch += 1
        if self.last_epoch % self.step_size == 0:
            self.optimizer.lr = float(self.optimizer.lr) * self.gamma

    def get_last_lr(self) -> list[float]:
        """The current learning rate, in a one-element list (as PyTorch's)."""
        return [float(self.optimizer.lr)]

    def state_dict(self) -> dict[str, object]:
        return {"step_size": self.step_size, "gamma": self.gamma, "base_lr": self.base_lr,
                "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.step_size = int(state["step_size"])  # type: ignore[call-overload]
        self.gamma = float(state["gamma"])  # type: ignore[arg-type]
        self.base_lr = float(state["base_lr"])  # type: ignore[arg-type]
        self.last_epoch = int(state["last_epoch"])  # type: ignore[call-overload]

    def __repr__(self) -> str:
        return (f"StepLR(step_size={self.step_size}, gamma={self.gamma}, "
                f"last_epoch={self.last_epoch})")
