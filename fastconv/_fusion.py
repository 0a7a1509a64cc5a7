"""nn.Sequential's fused layers and its prepared evaluation-mode forward pass.

Two things make a small model's forward pass cheaper, both invisible in its results:

- **Fusion** (training and evaluation): a ``Conv2d`` followed by a ``ReLU`` runs as one
  convolution with the ReLU applied where the kernels store their sums (``conv2d(...,
  activation='relu')``, bit-identical to ``relu(conv2d(...))``). The ReLU layer keeps that
  output as its own, which is all its backward needs (its mask is ``output > 0``), and the
  convolution keeps its input as before, so ``backward`` is unchanged. A following
  ``MaxPool2d`` then pools the ReLU'd planes as it would have (its own kernel, no indices in
  evaluation mode) -- except in a prepared plan where the convolution runs on the
  few-input-channel path (fastconv._paths.FewChannels) and the pooling takes non-overlapping
  windows: there Conv2d -> ReLU -> MaxPool2d is one step, the max taken in the convolution's
  store (the same bits); the ReLU'd convolution output is never stored, and is recomputed
  for the layers' backward only if one follows (``settle``, called by Sequential.backward).
- **A prepared plan** (evaluation mode only): for one input shape and dtype, every layer's
  arguments are checked once and the kernels' plans made once; the calls after that run
  each layer's kernels straight from the plan (``ForwardPlan``) -- no argument checks, no
  plan look-up, no ``Module.__setattr__`` -- and keep what each layer's ``backward`` would
  need exactly as the layer's own ``forward`` keeps it. A caller may keep any output: each
  step writes into an array it made before only when nothing else references that array any
  more (a ``fastconv._buffers.Recycler`` per step, kept while the plan lives, for outputs
  above 64 KB (``output_maker``; smaller ones are plain ``np.empty``); the layers let go of
  the previous call's arrays as the call starts, so one array per step serves every call
  whose output was let go), else into a new one. That spares the fresh zeroed pages every
  call would otherwise fault in where the allocator returns large arrays to the system at
  once (Dask's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``: LeNet-5 at
  batch 500, one thread, 2180 page faults and 4.4 ms of system time a call before, 59 and
  none after). Linear -> ReLU is one step too (the ReLU over the Linear's new output). A
  plan is dropped when anything it depends on changes: the input's shape or dtype, a
  parameter array replaced (``layer.weight.data = ...``; values changed in place are read at
  each call), a layer added, replaced or set to training, any public attribute of a layer
  reassigned, the thread count or the path override (fastconv._plan.use_paths). Layers it
  does not know (any type but Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Linear, Dropout
  -- subclasses included) leave the Sequential on the layer-by-layer path.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _linear, _paths, _pool, _threads
from . import conv as _conv
from . import pool as _pool_api
from ._buffers import output_maker
from ._plan import current_override, pooling_path

if TYPE_CHECKING:
    from .nn import Module

__all__ = ["fused_groups", "ForwardPlan", "structure_version", "bump_version", "run_prepared",
           "prepared"]

_VERSION = [0]


def structure_version() -> int:
    """A counter bumped whenever a module's structure or hyper-parameters may have changed."""
    return _VERSION[0]


def bump_version() -> None:
    _VERSION[0] += 1


def fused_groups(layers: Sequence[Module]) -> list[tuple[int, int]]:
    """(start, stop) of each step: a Conv2d and the ReLU right after it form one step."""
    from .nn import Conv2d, ReLU

    groups = []
    index, count = 0, len(layers)
    while index < count:
        if (type(layers[index]) is Conv2d and index + 1 < count
                and type(layers[index + 1]) is ReLU and _own_forward(layers[index])
                and _own_forward(layers[index + 1])):
            groups.append((index, index + 2))
            index += 2
        else:
            groups.append((index, index + 1))
            index += 1
    return groups


def _own_forward(layer: Module) -> bool:
    """Whether ``layer`` runs its class's forward (no forward set on the instance)."""
    return "forward" not in layer.__dict__


Step = Callable[[np.ndarray], np.ndarray]

# Each Sequential's (key, plan or None), beside the module rather than in it: a copy or a
# pickle of a model must not carry closures over the original's layers.
_PREPARED: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], ForwardPlan | None]] = (
    weakref.WeakKeyDictionary())


def run_prepared(owner: Module, layers: Sequence[Module], x: np.ndarray) -> np.ndarray | None:
    """``owner``'s (a Sequential in evaluation mode) forward pass of ``x`` from its prepared
    plan, made or remade as needed; None where there is no plan for it (the caller runs the
    layers)."""
    key = ForwardPlan.key_of(layers, x)
    cached = _PREPARED.get(owner)
    if cached is None or cached[0] != key or (
            cached[1] is not None and not cached[1].current()):
        cached = (key, ForwardPlan.make(layers, x, key))
        _PREPARED[owner] = cached
    plan = cached[1]
    return None if plan is None else plan(x)


def settle(owner: Module) -> None:
    """Before ``owner``'s backward: the state its prepared plan's last call left to recompute
    (ForwardPlan.settle)."""
    cached = _PREPARED.get(owner)
    if cached is not None and cached[1] is not None and cached[1].pending:
        cached[1].settle()


def prepared(owner: Module) -> ForwardPlan | None:
    """The plan ``owner``'s last evaluation-mode forward pass made or used, if any (tests)."""
    cached = _PREPARED.get(owner)
    return None if cached is None else cached[1]


class ForwardPlan:
    """An evaluation-mode forward pass prepared for one input shape and dtype (see the module
    docstring). ``make`` returns None where it cannot prepare one (the caller then runs the
    layers one by one)."""

    __slots__ = ("key", "steps", "checks", "pending", "released")

    def __init__(self, key: tuple[Any, ...], steps: list[Step],
                 checks: list[tuple[Any, Any]],
                 pending: dict[int, Callable[[], None]] | None = None,
                 released: list[tuple[dict[str, Any], str]] | None = None) -> None:
        self.key = key
        self.steps = steps
        self.checks = checks  # (Parameter, the array the plan was made with)
        # (a layer's __dict__, the name of an array it keeps for backward): let go at the start
        # of each call, which replaces them all, so that the previous call's activations are
        # free for the steps' Recyclers and one set of arrays serves every call
        self.released = [] if released is None else released
        # what a backward after the last call still has to recompute (settle): the ReLU output
        # and pooling input of the fused Conv2d -> ReLU -> MaxPool2d steps, by step
        self.pending = {} if pending is None else pending

    def settle(self) -> None:
        """Give the layers of fused Conv2d -> ReLU -> MaxPool2d steps the state their backward
        reads (the ReLU'd convolution output, never stored by the forward pass), recomputed
        from the input and weights that forward pass used: the same bits."""
        for recompute in list(self.pending.values()):
            recompute()
        self.pending.clear()

    @staticmethod
    def key_of(layers: Sequence[Module], x: np.ndarray) -> tuple[Any, ...]:
        # (threads_key: the count in force, or 0 in a forked child; steps keep sizes worked
        # out for it)
        return (x.shape, x.dtype, structure_version(), _threads.threads_key(),
                current_override(), tuple(layers))

    def current(self) -> bool:
        """Whether every parameter still holds the array the plan was made with (the key,
        compared by the caller, covers everything else)."""
        for parameter, array in self.checks:
            if parameter.data is not array:
                return False
        return True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for state, name in self.released:
            state[name] = None
        for step in self.steps:
            x = step(x)
        return x

    @classmethod
    def make(cls, layers: Sequence[Module], x: np.ndarray,
             key: tuple[Any, ...]) -> ForwardPlan | None:
        """The plan of ``layers`` for inputs like ``x`` (a C-contiguous float32/float64 batch),
        under ``key`` (``key_of(layers, x)``, which the caller has made), or None. Making it
        runs nothing."""
        if not (type(x) is np.ndarray and x.ndim == 4 and x.shape[0] > 0
                and x.dtype in (np.float32, np.float64) and x.flags.c_contiguous):
            return None
        if any(layer.training for layer in layers):
            return None
        steps: list[Step] = []
        checks: list[tuple[Any, Any]] = []
        pending: dict[int, Callable[[], None]] = {}
        shape, dtype = x.shape, x.dtype
        groups = fused_groups(layers)
        index = 0
        while index < len(groups):
            start, stop = groups[index]
            made = None
            if stop - start == 2 and index + 1 < len(groups):
                # Conv2d + ReLU, then a MaxPool2d the convolution's store can pool
                after = groups[index + 1]
                made = _conv_relu_pool_step(layers[start:after[1]], shape, dtype, checks,
                                            pending)
                if made is not None:
                    index += 1
            if made is None and stop - start == 1 and index + 1 < len(groups):
                # Linear, then a ReLU applied to its fresh output in the same step
                after = groups[index + 1]
                made = _linear_relu_step(layers[start:after[1]], shape, dtype, checks)
                if made is not None:
                    index += 1
            if made is None:
                made = _step(layers[start:stop], shape, dtype, checks)
            if made is None:
                return None
            step, shape = made
            steps.append(step)
            index += 1
        return cls(key, steps, checks, pending, _released(layers))


def _released(layers: Sequence[Module]) -> list[tuple[dict[str, Any], str]]:
    """The arrays the layers keep for their backward that a plan's steps replace each call
    (ForwardPlan.released)."""
    from .nn import Conv2d, Linear, MaxPool2d, ReLU

    kept = {Conv2d: "_input", Linear: "_input", MaxPool2d: "_input", ReLU: "_output"}
    return [(layer.__dict__, kept[type(layer)]) for layer in layers if type(layer) in kept]


def _step(group: Sequence[Any], shape: tuple[int, ...], dtype: np.dtype,
          checks: list[tuple[Any, Any]]) -> tuple[Step, tuple[int, ...]] | None:
    """One step of a plan (a layer, or a fused Conv2d + ReLU) for inputs of ``shape`` and
    ``dtype``, and the shape it returns; None where it cannot be prepared."""
    from .nn import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU

    layer = group[0]
    kind = type(layer)
    if not _own_forward(layer):
        return None
    if kind is Conv2d:
        return _conv_step(layer, group[1] if len(group) > 1 else None, shape, dtype, checks)
    if kind is ReLU:
        new = output_maker(shape, dtype)

        def relu(x: np.ndarray, layer: Any = layer) -> np.ndarray:
            output = np.maximum(x, 0, out=new())
            layer.__dict__["_output"] = output
            return output
        return relu, shape
    if kind is MaxPool2d and not layer.return_indices and len(shape) == 4:
        return _max_pool_step(layer, shape, dtype)
    if kind is AvgPool2d and len(shape) == 4:
        return _avg_pool_step(layer, shape, dtype)
    if kind is Flatten:
        probe = np.empty(shape, dtype=dtype)
        try:
            out_shape = layer.forward(probe).shape
        except ValueError:
            return None

        def flatten(x: np.ndarray, layer: Any = layer, out_shape: Any = out_shape) -> np.ndarray:
            layer.__dict__["_input_shape"] = x.shape
            return x.reshape(out_shape)
        return flatten, out_shape
    if kind is Linear:
        return _linear_step(layer, shape, dtype, checks)
    if kind is Dropout:  # the identity in evaluation mode
        def identity(x: np.ndarray, layer: Any = layer) -> np.ndarray:
            layer.__dict__["_mask"] = None
            return x
        return identity, shape
    return None


def _conv_step(layer: Any, relu_layer: Any, shape: tuple[int, ...], dtype: np.dtype,
               checks: list[tuple[Any, Any]]) -> tuple[Step, tuple[int, ...]] | None:
    if layer.in_channels is None or layer.weight.data is None:
        return None
    weight = layer.weight.data
    bias = None if layer.bias is None else layer.bias.data
    probe = np.empty(shape, dtype=dtype)
    algorithm = getattr(layer, "algorithm", "auto")
    key = _conv._plan_key(probe, weight, bias, layer.stride, layer.padding, layer.dilation,
                          layer.groups, layer.padding_mode, (), algorithm)
    if key is None:  # arrays or arguments that need converting: the layer's own path
        return None
    try:
        conv, _ = _conv._prepare(probe, weight, bias, layer.stride, layer.padding,
                                 layer.dilation, layer.groups, layer.padding_mode,
                                 algorithm=algorithm)
    except (ValueError, TypeError):
        return None
    plan = conv.plan
    if plan.unbatched or plan.geometry.in_channels_g == 0:
        return None
    checks.append((layer.weight, weight))
    if bias is not None:
        checks.append((layer.bias, bias))
    out_shape = (plan.batch, plan.out_channels, plan.out_h, plan.out_w)
    padded = plan.mode != "zeros" and any(plan.pads)
    relu = relu_layer is not None
    weight_parameter, bias_parameter = layer.weight, layer.bias
    run = plan.forward.forward_runner(plan, relu)  # (_paths.run_forward's, set up once)
    pad = _conv.pad2d_impl
    new = output_maker(out_shape, dtype)

    def convolve(x: np.ndarray) -> np.ndarray:
        out = new()
        run(pad(x, plan.pads, plan.mode) if padded else x, weight_parameter.data,
            None if bias_parameter is None else bias_parameter.data, out)
        layer.__dict__["_input"] = x
        if relu:
            relu_layer.__dict__["_output"] = out
        return out
    convolve.plan = plan  # type: ignore[attr-defined]  # (the fused pooling step reads it)
    return convolve, out_shape


def _conv_relu_pool_step(group: Sequence[Any], shape: tuple[int, ...], dtype: np.dtype,
                         checks: list[tuple[Any, Any]], pending: dict[int, Callable[[], None]]
                         ) -> tuple[Step, tuple[int, ...]] | None:
    """Conv2d, ReLU, MaxPool2d as one step where the convolution's path pools in its store
    (fastconv._paths.FewChannels.forward_pooled): non-overlapping windows (stride = kernel), no
    padding or dilation, floor mode, no indices. The result is bit for bit the unfused layers'
    (the same convolution sums, ReLU'd; their max by the pooling kernel's rule). The ReLU'd
    convolution output is never stored: the layers' backward state is recomputed on demand
    (ForwardPlan.settle, before Sequential.backward), from the input and a copy of the weights
    this call used."""
    from .nn import Conv2d, MaxPool2d, ReLU

    if len(group) != 3:
        return None
    conv_layer, relu_layer, pool_layer = group
    if not (type(conv_layer) is Conv2d and type(relu_layer) is ReLU
            and type(pool_layer) is MaxPool2d and _own_forward(pool_layer)
            and not pool_layer.return_indices and not pool_layer.ceil_mode):
        return None
    made = _conv_step(conv_layer, relu_layer, shape, dtype, [])
    if made is None:
        return None
    convolve, conv_shape = made
    conv = convolve.plan  # type: ignore[attr-defined]
    try:
        _pool_api._check_planes(conv_shape, "x")
        kernel, stride, pads, dilation, _ = _pool_api._geometry(
            conv_shape[2:], pool_layer.kernel_size, pool_layer.stride, pool_layer.padding,
            pool_layer.dilation, pool_layer.ceil_mode)
    except (ValueError, TypeError):
        return None
    window = (int(kernel[0]), int(kernel[1]))
    if tuple(stride) != window or any(pads) or tuple(dilation) != (1, 1):
        return None
    path = pooling_path(conv, window)
    if path is None:
        return None
    pool_made = _max_pool_step(pool_layer, conv_shape, dtype)
    if pool_made is None:
        return None
    out_shape = pool_made[1]
    if out_shape != (conv_shape[0], conv_shape[1], conv_shape[2] // window[0],
                     conv_shape[3] // window[1]):
        return None
    _conv_step(conv_layer, relu_layer, shape, dtype, checks)  # the parameter checks
    weight_parameter, bias_parameter = conv_layer.weight, conv_layer.bias
    run = _paths.run_forward
    key = id(conv_layer)
    new = output_maker(out_shape, dtype)
    pooled = path.pooled_runner(conv, window, relu=True)

    def convolve_pool(x: np.ndarray) -> np.ndarray:
        weight = weight_parameter.data
        bias = None if bias_parameter is None else bias_parameter.data
        out = new()
        pooled(x, weight, bias, out)
        conv_layer.__dict__["_input"] = x
        relu_layer.__dict__["_output"] = None
        _keep_pool_input(pool_layer, None)
        kept = (weight.copy(), None if bias is None else bias.copy())

        def recompute() -> None:
            # only while the layers still hold what this call left (a later forward pass,
            # training or layer by layer, has kept its own state since)
            if (conv_layer.__dict__.get("_input") is not x
                    or relu_layer.__dict__.get("_output") is not None
                    or pool_layer.__dict__.get("_input") is not None
                    or pool_layer.__dict__.get("_indices") is not None):
                return
            full = np.empty(conv_shape, dtype=dtype)
            run(conv, x, kept[0], kept[1], full, True)
            relu_layer.__dict__["_output"] = full
            _keep_pool_input(pool_layer, full)
        pending[key] = recompute
        return out
    convolve_pool.path = path  # type: ignore[attr-defined]  # (tests read which path pools)
    return convolve_pool, out_shape


def _max_pool_step(layer: Any, shape: tuple[int, ...], dtype: np.dtype
                   ) -> tuple[Step, tuple[int, ...]] | None:
    batch, channels = shape[0], shape[1]
    try:
        _pool_api._check_planes(shape, "x")
        kernel, stride, pads, dilation, out_size = _pool_api._geometry(
            shape[2:], layer.kernel_size, layer.stride, layer.padding, layer.dilation,
            layer.ceil_mode)
    except (ValueError, TypeError):
        return None
    path = _pool_api._pool_path(kernel, stride, pads, dilation, shape[2:], out_size, None)
    out_shape = (batch, channels) + tuple(out_size)
    size = batch * channels * out_size[0] * out_size[1]
    no_indices = np.empty((1, 1, 1, 1), dtype=np.int64)
    new = output_maker(out_shape, dtype)
    if path == "window2x2":
        threads = _pool_api._num_threads(batch * channels * out_size[0], size * 4)

        def pool(x: np.ndarray) -> np.ndarray:
            out = new()
            _pool.max_pool2d_forward_2x2(x, out, no_indices, False, threads)
            _keep_pool_input(layer, x)
            return out
    else:
        threads = _pool_api._num_threads(batch * channels, size * kernel[0] * kernel[1])
        params = (*kernel, *stride, pads[0], pads[2], *dilation, threads)

        def pool(x: np.ndarray) -> np.ndarray:
            out = new()
            _pool.max_pool2d_forward(x, out, *params)
            _keep_pool_input(layer, x)
            return out
    return pool, out_shape


def _keep_pool_input(layer: Any, x: np.ndarray | None) -> None:
    """What MaxPool2d.forward keeps in evaluation mode (a backward recomputes the indices);
    None: nothing yet (a fused step's, until ForwardPlan.settle)."""
    state = layer.__dict__
    state["_indices"] = None
    state["_input"] = x
    state["_input_shape"] = None if x is None else x.shape


def _avg_pool_step(layer: Any, shape: tuple[int, ...], dtype: np.dtype
                   ) -> tuple[Step, tuple[int, ...]] | None:
    batch, channels = shape[0], shape[1]
    try:
        _pool_api._check_planes(shape, "x")
        kernel, stride, pads, _, out_size = _pool_api._geometry(
            shape[2:], layer.kernel_size, layer.stride, layer.padding, 1, layer.ceil_mode)
        divisor = _pool_api._divisor(layer.divisor_override)
    except (ValueError, TypeError):
        return None
    path = _pool_api._pool_path(kernel, stride, pads, (1, 1), shape[2:], out_size, None,
                                average=True)
    out_shape = (batch, channels) + tuple(out_size)
    size = batch * channels * out_size[0] * out_size[1]
    new = output_maker(out_shape, dtype)
    include_pad = bool(layer.count_include_pad)
    if path == "window2x2":
        threads = _pool_api._num_threads(batch * channels * out_size[0], size * 4)

        def pool(x: np.ndarray) -> np.ndarray:
            out = new()
            _pool.avg_pool2d_forward_2x2(x, out, divisor, threads)
            layer.__dict__["_input_shape"] = x.shape
            return out
    elif path == "box":
        threads = _pool_api._num_threads(batch * channels, size * kernel[0] * kernel[1])
        box_args = (*kernel, *pads, include_pad, divisor, threads)

        def pool(x: np.ndarray) -> np.ndarray:
            out = new()
            # (new scratch each call: two Python threads may run one plan at once)
            column_factor, ring = _pool_api._box_scratch(threads, kernel, pads[2], shape[3],
                                                         out_size[1], False, dtype)
            _pool.avg_pool2d_forward_box(x, out, column_factor, ring, *box_args)
            layer.__dict__["_input_shape"] = x.shape
            return out
    else:
        threads = _pool_api._num_threads(batch * channels, size * kernel[0] * kernel[1])

        def pool(x: np.ndarray) -> np.ndarray:
            out = new()
            _pool.avg_pool2d_forward(x, out, np.empty(out_size[1], dtype=dtype), *kernel,
                                     *stride, *pads, include_pad, divisor, threads)
            layer.__dict__["_input_shape"] = x.shape
            return out
    pool.path = path  # type: ignore[attr-defined]  # (tests read which kernel pools)
    return pool, out_shape


def _linear_relu_step(group: Sequence[Any], shape: tuple[int, ...], dtype: np.dtype,
                      checks: list[tuple[Any, Any]]) -> tuple[Step, tuple[int, ...]] | None:
    """Linear and the ReLU after it as one step: the ReLU (``np.maximum(output, 0)``, the
    ReLU step's own rule, so the same bits) written over the Linear's new output, which
    nothing else holds; the ReLU layer keeps that output, as its forward would. Spares a
    step and an array: 1-2 us of LeNet-5's batch-1 forward pass per pair."""
    from .nn import Linear, ReLU

    if len(group) != 2:
        return None
    linear_layer, relu_layer = group
    if not (type(linear_layer) is Linear and type(relu_layer) is ReLU
            and _own_forward(linear_layer) and _own_forward(relu_layer)):
        return None
    made = _linear_step(linear_layer, shape, dtype, checks)
    if made is None:
        return None
    linear, out_shape = made
    maximum = np.maximum

    def linear_relu(x: np.ndarray) -> np.ndarray:
        output = linear(x)
        maximum(output, 0, out=output)
        relu_layer.__dict__["_output"] = output
        return output
    return linear_relu, out_shape


def _linear_step(layer: Any, shape: tuple[int, ...], dtype: np.dtype,
                 checks: list[tuple[Any, Any]]) -> tuple[Step, tuple[int, ...]] | None:
    weight = layer.weight.data
    if (weight is None or len(shape) < 1 or shape[-1] != layer.in_features
            or weight.dtype != dtype or not weight.flags.c_contiguous):
        return None
    bias = None if layer.bias is None else layer.bias.data
    if bias is not None and bias.dtype != dtype:
        return None
    checks.append((layer.weight, weight))
    if bias is not None:
        checks.append((layer.bias, bias))
    weight_parameter, bias_parameter = layer.weight, layer.bias
    # the choice Linear.forward's _linear.linear makes, made once for the plan's shapes (and
    # the kernels' thread count, for the count in force: part of the plan's key)
    run = (_linear.forward_for(shape, weight)
           if _linear.chooses_kernels(np.empty(shape, dtype=dtype), weight, bias)
           else _linear.numpy_forward)

    def linear(x: np.ndarray) -> np.ndarray:
        # the weight array is the plan's (checks)
        output = run(x, weight_parameter.data,
                     None if bias_parameter is None else bias_parameter.data)
        layer.__dict__["_input"] = x
        return output
    return linear, shape[:-1] + (layer.out_features,)
