"""Layers and losses with explicit ``forward`` / ``backward``, named and initialised as in PyTorch.

Each layer is thin NumPy glue around the functional API: :class:`Conv2d` calls
:func:`fastconv.conv2d` and :func:`fastconv.conv2d_backward`, the pooling layers call the pooling
kernels, and whatever ``backward`` needs is kept from ``forward`` (the input, max-pool indices,
an activation's output) so that nothing is computed twice. There is no autograd: a model's
``backward(grad_output)`` runs its layers' ``backward`` in reverse order, accumulating parameter
gradients into ``Parameter.grad`` exactly as ``loss.backward()`` does in PyTorch.

Examples
--------
>>> import numpy as np
>>> from fastconv import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3, seed=0), nn.ReLU(), nn.Flatten(),
...                       nn.Linear(4 * 6 * 6, 10, seed=0))
>>> x = np.zeros((2, 1, 8, 8), dtype=np.float32)
>>> loss = nn.CrossEntropyLoss()
>>> value = loss(model(x), np.array([3, 7]))
>>> grad_input = model.backward(loss.backward())
>>> sorted(model.state_dict())
['0.bias', '0.weight', '3.bias', '3.weight']
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

import numpy as np

from . import _args, _fusion, _linear, _paths, _plan, _threads
from ._buffers import Recycler
from . import conv as _conv
from . import pool as _pool
from ._typing import (
    ArrayLike,
    ConvAlgorithm,
    ConvPadding,
    ConvPaddingMode,
    DTypeLike,
    IntPair,
    Padding,
    Seed,
)

__all__ = [
    "Parameter",
    "Module",
    "Sequential",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "Linear",
    "Flatten",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "CrossEntropyLoss",
    "MSELoss",
]

_PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_REDUCTIONS = {"mean": "mean", "sum": "sum"}
_ModuleT = TypeVar("_ModuleT", bound="Module")
_T = TypeVar("_T")


# --------------------------------------------------------------------------- argument checks

def _int_at_least(value: Any, name: str, minimum: int = 1) -> int:
    """An int >= ``minimum`` (bool refused), or TypeError / ValueError naming the argument."""
    return _args.as_int(value, name, minimum)


def _param_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in _PARAM_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _check_bias_flag(bias: object) -> None:
    """A layer's ``bias=`` is True or False (a bool, not any truthy value)."""
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False, got {bias!r}")


def _make_rng(seed):
    """A Generator from ``seed`` (None, an int, a SeedSequence, or a Generator used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and not (_args.is_int(seed)
                                 or isinstance(seed, np.random.SeedSequence)):
        raise TypeError(f"seed must be None, an int or a numpy.random.Generator, got {seed!r}")
    return np.random.default_rng(seed)


def _pool_padding(padding: tuple[int, int, int, int]
                  ) -> tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]:
    """A normalised (top, bottom, left, right) padding shown as PyTorch shows it (an int pair
    when symmetric)."""
    top, bottom, left, right = padding
    if top == bottom and left == right:
        return (top, left)
    return ((top, bottom), (left, right))


def _pair_or_int(pair: Any) -> Any:
    return pair[0] if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == pair[1] and \
        not isinstance(pair[0], tuple) else pair


def _kept(value: _T | None, layer: Module) -> _T:
    if value is None:
        raise RuntimeError(
            f"{type(layer).__name__}.backward() called before forward(): backward uses what the "
            "last forward kept"
        )
    return value


@functools.lru_cache(maxsize=None)
def _takes_need_input_grad(cls):
    try:
        return "need_input_grad" in inspect.signature(cls.backward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def backward_without_input_grad(module: Module, grad_output: np.ndarray
                                ) -> np.ndarray | None:
    """Run ``module.backward`` telling it, when it can be told, that no input gradient is needed.

    The first layer of a network never needs the gradient with respect to the images; skipping
    it saves a whole transposed convolution per batch. Modules whose ``backward`` has no
    ``need_input_grad`` keyword are simply called as usual.
    """
    if _takes_need_input_grad(type(module)):  # type: ignore[arg-type]  # classes hash
        return module.backward(grad_output, need_input_grad=False)  # type: ignore[call-arg]
    return module.backward(grad_output)




# --------------------------------------------------------------------------- base classes

class Parameter:
    """A trainable array and the gradient accumulated for it.

    Parameters
    ----------
    data : numpy.ndarray or None
        The values (float32 or float64). ``None`` for a layer whose size is inferred at its
        first forward (``Conv2d(in_channels=None, ...)``); the array appears then.

    Attributes
    ----------
    data : numpy.ndarray
        The values; optimisers update it in place.
    grad : numpy.ndarray
        Same shape and dtype as ``data``; ``backward`` adds into it, ``zero_grad`` zeroes it.
    """

    __slots__ = ("data", "grad")
    # ndarrays, as PyTorch types its uninitialised (lazy) parameters Tensor: None only before a
    # lazy layer's first forward (shape and dtype are None then)
    data: np.ndarray
    grad: np.ndarray

    def __init__(self, data: ArrayLike | None) -> None:
        if data is None:
            self.data = self.grad = None  # type: ignore[assignment]  # lazy (see above)
            return
        data = np.ascontiguousarray(data)
        if data.dtype not in _PARAM_DTYPES:
            raise TypeError(f"Parameter data must be float32 or float64, got {data.dtype}")
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def shape(self) -> tuple[int, ...] | None:
        return None if self.data is None else self.data.shape

    @property
    def dtype(self) -> np.dtype[Any] | None:
        return None if self.data is None else self.data.dtype

    def __repr__(self) -> str:
        if self.data is None:
            return "Parameter(<uninitialised>)"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer, loss and model.

    A subclass sets its parameters and sub-modules as attributes after calling
    ``super().__init__()`` (registered in assignment order, which gives the ``state_dict`` key
    names, as in PyTorch) and implements ``forward`` and ``backward``.

    ``forward`` keeps references to what ``backward`` needs (the input of a Conv2d or Linear,
    not a copy): do not modify an input array in place between the two calls.

    Attributes
    ----------
    training : bool
        True after :meth:`train` (the default), False after :meth:`eval`; only
        :class:`Dropout` behaves differently.
    """

    training: bool
    # name -> Parameter / Module, or None where a registered name was set to None
    _parameters: OrderedDict[str, Any]
    _modules: OrderedDict[str, Any]

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            # a hyper-parameter, a parameter or a sub-module: prepared plans made before are
            # stale (fastconv._fusion)
            _fusion.bump_version()
        parameters = self.__dict__.get("_parameters")
        modules = self.__dict__.get("_modules")
        if isinstance(value, (Parameter, Module)) and parameters is None:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called"
            )
        if isinstance(value, Parameter) or (parameters is not None and name in parameters):
            if value is not None and not isinstance(value, Parameter):
                raise TypeError(
                    f"{name!r} is a parameter: assign a fastconv.nn.Parameter or None, got "
                    f"{type(value).__name__}"
                )
            parameters[name] = value
        elif isinstance(value, Module) or (modules is not None and name in modules):
            if value is not None and not isinstance(value, Module):
                raise TypeError(f"{name!r} is a sub-module: assign a Module or None")
            modules[name] = value
        object.__setattr__(self, name, value)

    # -- computing -------------------------------------------------------------------------
    def forward(self, *inputs: Any) -> np.ndarray:
        """Compute the output (and keep what :meth:`backward` needs)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        """Return the gradient with respect to the last forward's input.

        Gradients with respect to parameters are added to their ``.grad``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *inputs: Any) -> np.ndarray:
        return self.forward(*inputs)

    # -- structure -------------------------------------------------------------------------
    def children(self) -> list[Module]:
        """The direct sub-modules, in registration order."""
        return [module for module in self._modules.values() if module is not None]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Yield ``(name, module)`` for this module and every sub-module, depth first."""
        seen = set()

        def walk(module: Module, name: str) -> Iterator[tuple[str, Module]]:
            if id(module) in seen:
                return
            seen.add(id(module))
            yield name, module
            for child_name, child in module._modules.items():
                if child is not None:
                    yield from walk(child, f"{name}.{child_name}" if name else child_name)

        yield from walk(self, prefix)

    def modules(self) -> list[Module]:
        """This module and every sub-module."""
        return [module for _, module in self.named_modules()]

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(name, Parameter)`` with PyTorch's names (``'0.weight'``), each once."""
        for name, parameter in self._named_state(prefix):
            if not isinstance(parameter, Buffer):
                yield name, parameter

    def _named_state(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter and buffer (running statistics), each once, with PyTorch's names."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, parameter in module._parameters.items():
                if parameter is None or id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self) -> list[Parameter]:
        """The list of every :class:`Parameter` of this module and its sub-modules."""
        return [parameter for _, parameter in self.named_parameters()]

    def zero_grad(self) -> None:
        """Set every parameter's ``.grad`` to zeros (in place)."""
        for parameter in self.parameters():
            if parameter.grad is not None:
                parameter.grad.fill(0)

    def train(self: _ModuleT, mode: bool = True) -> _ModuleT:
        """Put this module and its sub-modules in training mode (or evaluation, ``mode=False``).

        Returns
        -------
        Module
            ``self``, so that ``model = build().train()`` works.
        """
        mode = bool(mode)
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        _fusion.bump_version()
        return self

    def eval(self: _ModuleT) -> _ModuleT:
        """Put this module and its sub-modules in evaluation mode; same as ``train(False)``."""
        return self.train(False)

    # -- state -----------------------------------------------------------------------------
    # What a forward keeps for its backward (the layers' inputs, outputs, masks, indices): the
    # last call's scratch, not the module's state. A pickle or a copy leaves it behind, as a
    # PyTorch module's copy leaves its autograd graph: a trained LeNet that has just run a
    # batch of 500 pickles to 0.5 MB, not 18 MB (fastconv.dask sends a model to every worker,
    # and the model stands in every task graph). The copy's backward needs a forward first.
    _KEPT_FOR_BACKWARD = frozenset({"_input", "_input_shape", "_output", "_indices", "_mask",
                                    "_kept", "_grad", "_positive", "_splits",
                                    "_checked_plan"})  # (Conv2d's, made again by a forward)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._KEPT_FOR_BACKWARD.intersection(state):
            state[name] = None
        return state

    def state_dict(self) -> dict[str, np.ndarray]:
        """A dict of copies of every parameter and buffer (a batch norm's running statistics),
        keyed as PyTorch names them (``'0.weight'``, ``'1.running_mean'``).

        Returns
        -------
        collections.OrderedDict
            name -> numpy.ndarray. Loads into the PyTorch model of the same structure with
            ``torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in d.items()})``.

        Raises
        ------
        ValueError
            If a layer whose size is inferred at its first forward has not run yet.
        """
        state = OrderedDict()
        for name, parameter in self._named_state():
            if parameter.data is None:
                raise ValueError(
                    f"parameter {name!r} is not initialised yet (its size is inferred at the "
                    "first forward); run the model once or load a state dict first"
                )
            state[name] = parameter.data.copy()
        return state

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike], strict: bool = True
                        ) -> None:
        """Copy values into the parameters, in place, from a dict like :meth:`state_dict`'s.

        Parameters
        ----------
        state_dict : mapping
            name -> array-like (NumPy arrays, or PyTorch tensors, which convert).
        strict : bool, default True
            Refuse missing and unexpected keys.

        Raises
        ------
        KeyError
            Missing or unexpected keys (with ``strict``), listed in the message.
        ValueError
            A shape that does not match the parameter's (or, for a layer whose size is still
            unknown, a shape it cannot take, such as 0 input channels).

        Every entry is checked before anything is written: after any error the model is
        unchanged.
        """
        owners: dict[str, tuple[Module, str, Parameter]] = {}
        for module_name, module in self.named_modules():
            for name, parameter in module._parameters.items():
                if parameter is not None:
                    key = f"{module_name}.{name}" if module_name else name
                    owners.setdefault(key, (module, name, parameter))
        missing = [key for key in owners if key not in state_dict]
        unexpected = [key for key in state_dict if key not in owners]
        if strict and (missing or unexpected):
            raise KeyError(
                f"state dict does not match the model: missing keys {missing}, unexpected keys "
                f"{unexpected}"
            )
        # Check every shape before writing anything, so that a refused dict changes nothing.
        staged = []
        for key, (module, name, parameter) in owners.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            if value.dtype.kind not in "biuf":
                raise TypeError(f"state dict entry {key!r} has unsupported dtype {value.dtype}")
            if parameter.data is not None and value.shape != parameter.data.shape:
                raise ValueError(
                    f"state dict entry {key!r} has shape {value.shape}, the model's parameter "
                    f"has shape {parameter.data.shape}"
                )
            if parameter.data is None:
                module._check_lazy_parameter(name, value)
            staged.append((module, name, parameter, value))
        for module, name, parameter, value in staged:
            module._load_parameter(name, parameter, value)

    def _load_parameter(self, name: str, parameter: Parameter, value: np.ndarray) -> None:
        """Copy ``value`` into ``parameter`` (layers whose size may be unknown override this)."""
        parameter.data[...] = value

    def _check_lazy_parameter(self, name: str, value: np.ndarray) -> None:
        """Refuse a value for a parameter whose size is still unknown (``data is None``) that
        :meth:`_load_parameter` could not take; called for every entry before any is loaded."""

    # -- display ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [(name, module) for name, module in self._modules.items() if module is not None]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        if self.extra_repr():
            lines.append("  " + self.extra_repr())
        for name, module in children:
            text = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {text}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Module):
    """Layers applied one after the other; ``backward`` runs them in reverse.

    Parameters
    ----------
    *layers : Module
        The layers, named ``'0'``, ``'1'``, ... in the state dict (as in PyTorch). A single
        ``OrderedDict`` of name -> layer names them instead.

    Examples
    --------
    >>> from fastconv import nn
    >>> model = nn.Sequential(nn.Linear(4, 3, seed=0), nn.ReLU(), nn.Linear(3, 2, seed=0))
    >>> len(model), type(model[1]).__name__
    (3, 'ReLU')
    """

    def __init__(self, *layers: Module | OrderedDict[str, Module]) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            items = list(layers[0].items())
        else:
            items = [(str(index), layer) for index, layer in enumerate(layers)]
        for name, layer in items:
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential takes fastconv.nn.Module layers, got {type(layer).__name__} "
                    f"for layer {name}"
                )
            self._modules[str(name)] = layer

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    @overload
    def __getitem__(self, index: int) -> Module: ...
    @overload
    def __getitem__(self, index: slice) -> Sequential: ...
    def __getitem__(self, index: int | slice) -> Module | Sequential:
        layers = list(self._modules.values())
        if isinstance(index, slice):
            names = list(self._modules)[index]
            return Sequential(OrderedDict((name, self._modules[name]) for name in names))
        return layers[index]

    def append(self, layer: Module) -> Sequential:
        """Add a layer at the end; returns ``self``."""
        if not isinstance(layer, Module):
            raise TypeError(
                f"Sequential takes fastconv.nn.Module layers, got {type(layer).__name__}")
        self._modules[str(len(self._modules))] = layer
        _fusion.bump_version()
        return self

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Run the layers in order. A ``Conv2d`` followed by a ``ReLU`` runs as one convolution
        with the ReLU fused into its store (the same bits, the same backward); in evaluation
        mode the whole pass runs from a plan prepared once per input shape (see
        ``fastconv._fusion``), the layers keeping what their ``backward`` needs as usual."""
        layers = tuple(self._modules.values())
        if not self.training and type(x) is np.ndarray:
            output = _fusion.run_prepared(self, layers, x)
            if output is not None:
                return output
        for start, stop in _fusion.fused_groups(layers):
            if stop - start == 2:
                x = layers[start]._forward_relu(x, layers[start + 1])  # type: ignore[attr-defined]
            else:
                x = layers[start](x)
        return x  # type: ignore[return-value]  # (an empty Sequential returns x as it is)

    @overload
    def backward(self, grad_output: np.ndarray, need_input_grad: Literal[True] = True) -> np.ndarray: ...
    @overload
    def backward(self, grad_output: np.ndarray, need_input_grad: bool) -> np.ndarray | None: ...
    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate through every layer, last first.

        Parameters
        ----------
        grad_output : numpy.ndarray
            Gradient of the loss with respect to the last forward's output.
        need_input_grad : bool, default True
            With False the first layer is told that nobody needs its input gradient (saving a
            convolution for a first ``Conv2d``), and the result may be ``None``.
        """
        layers = list(self._modules.values())
        _fusion.settle(self)  # the state a fused eval-mode step left to recompute
        grad = grad_output
        for index in range(len(layers) - 1, -1, -1):
            if index == 0 and not need_input_grad:
                grad = backward_without_input_grad(layers[0], grad)  # type: ignore[arg-type]
            else:
                grad = layers[index].backward(grad)
        return grad


# --------------------------------------------------------------------------- layers with weights

# Conv2d.backward's ``need`` by (need_input_grad, has a bias)
_CONV_NEED = {(need_input, has_bias): frozenset(("input",) * need_input + ("weight",)
                                                + ("bias",) * has_bias)
              for need_input in (False, True) for has_bias in (False, True)}

class Conv2d(Module):
    """2-D convolution layer (cross-correlation, as ``torch.nn.Conv2d``).

    Parameters
    ----------
    in_channels : int or None
        Input channels; ``None`` infers them from the first input (PyTorch's ``LazyConv2d``).
    out_channels : int
        Output channels.
    kernel_size, stride, dilation : int or (int, int)
        As :func:`fastconv.conv2d`; ``stride`` and ``dilation`` default to 1.
    padding : int, pair, ((top, bottom), (left, right)), 'same' or 'valid', default 0
    groups : int, default 1
        ``in_channels`` and ``out_channels`` must both be divisible by it.
    bias : bool, default True
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, default 'zeros'
    dtype : float32 or float64, default float32
        dtype of the parameters.
    algorithm : {'auto', 'direct', 'winograd'}, default 'auto'
        As :func:`fastconv.conv2d`: ``'winograd'`` runs 3x3 stride-1 layers (and their input
        gradient) by Winograd, within 1e-4 of max|y| in float32.
    seed : None, int or numpy.random.Generator
        Source of the initial weights: PyTorch's default rule, weight and bias uniform in
        ``(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in_channels/groups * kH * kW``
        (``kaiming_uniform_`` with ``a=sqrt(5)``).

    Attributes
    ----------
    weight : Parameter
        Shape (out_channels, in_channels/groups, kH, kW).
    bias : Parameter or None
        Shape (out_channels,).

    Raises
    ------
    ValueError, TypeError
        Bad sizes, channel/group mismatch, unknown ``padding`` or ``padding_mode``, bad dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> layer = nn.Conv2d(None, 16, 5, stride=2, seed=0)
    >>> layer(np.zeros((8, 1, 28, 28), dtype=np.float32)).shape
    (8, 16, 12, 12)
    >>> layer.weight.shape
    (16, 1, 5, 5)
    """

    weight: Parameter
    bias: Parameter | None
    in_channels: int | None
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: Literal["valid", "same"] | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int
    padding_mode: ConvPaddingMode
    algorithm: ConvAlgorithm
    dtype: np.dtype[Any]
    _input: np.ndarray | None

    def __init__(self, in_channels: int | None, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: ConvPadding = 0, dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True, padding_mode: ConvPaddingMode = "zeros",
                 dtype: DTypeLike = np.float32, seed: Seed = None, *,
                 algorithm: ConvAlgorithm = "auto") -> None:
        super().__init__()
        self.algorithm = _args.check_mode(algorithm, _args.CONV_ALGORITHMS, "algorithm")
        in_channels = None if in_channels is None else _int_at_least(in_channels, "in_channels")
        self.out_channels = _int_at_least(out_channels, "out_channels")
        self.groups = _args.check_groups(groups, in_channels, self.out_channels)
        self.in_channels = in_channels
        self.kernel_size = _args.pair(kernel_size, "kernel_size")
        self.stride = _args.pair(stride, "stride")
        self.dilation = _args.pair(dilation, "dilation")
        pads = _args.conv_padding(padding)
        self.padding = pads if isinstance(pads, str) else _pool_padding(pads)
        self.padding_mode = _args.check_mode(padding_mode, _args.CONV_PADDING_MODES,
                                             "padding_mode")
        self.dtype = _param_dtype(dtype)
        _check_bias_flag(bias)
        self._rng = _make_rng(seed)
        self._input = None
        self.weight = Parameter(None)
        self.bias = Parameter(None) if bias else None
        # the output, and the gradients backward makes (the input gradient it returns, the
        # weight and bias gradients it adds to .grad), reused once nothing else holds them
        self._outputs = Recycler()
        self._gradients = Recycler(4)
        # x's shape and dtype, the weight, the bias, the override, the structure version and
        # the plan that conv2d's checks made for them (see _checked)
        self._checked_plan: tuple[Any, ...] | None = None
        if self.in_channels is not None:
            self._initialize()

    def _check_in_channels(self, in_channels: int) -> int:
        _int_at_least(in_channels, "in_channels")
        _args.check_groups(self.groups, in_channels=in_channels)
        return in_channels

    def _initialize(self):
        kernel_h, kernel_w = self.kernel_size
        fan_in = self.in_channels // self.groups * kernel_h * kernel_w
        bound = 1.0 / math.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups, kernel_h, kernel_w)
        weight = self._rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        self.weight.data, self.weight.grad = weight, np.zeros_like(weight)
        if self.bias is not None:
            bias = self._rng.uniform(-bound, bound, size=self.out_channels).astype(self.dtype)
            self.bias.data, self.bias.grad = bias, np.zeros_like(bias)

    def _load_parameter(self, name: str, parameter: Parameter, value: np.ndarray) -> None:
        if parameter.data is not None:
            return super()._load_parameter(name, parameter, value)
        # Size still unknown (checked by _check_lazy_parameter): take it from the loaded
        # weight (the bias follows the weight).
        if name == "weight":
            self.in_channels = value.shape[1] * self.groups
            self._initialize()
            self.weight.data[...] = value
        else:
            bias = np.array(value, dtype=self.dtype)
            parameter.data, parameter.grad = bias, np.zeros_like(bias)

    def _check_lazy_parameter(self, name: str, value: np.ndarray) -> None:
        if name == "weight":
            expected = (self.out_channels, None) + self.kernel_size
            if value.ndim != 4 or value.shape[0] != self.out_channels or \
                    value.shape[2:] != self.kernel_size or value.shape[1] < 1:
                raise ValueError(
                    f"state dict weight has shape {value.shape}, expected {expected} with "
                    "in_channels/groups (>= 1) in place of None"
                )
            self._check_in_channels(value.shape[1] * self.groups)
        elif value.shape != (self.out_channels,):
            raise ValueError(
                f"state dict bias has shape {value.shape}, expected ({self.out_channels},)"
            )

    def _uninitialize(self, rng_state: dict[str, Any]) -> None:
        """Undo the first forward's inference of the size (it failed): the layer as built."""
        self.in_channels = None
        # Back to "not sized yet": the one state where data is None (typed as an array, as
        # torch types a lazy parameter, so that every other use needs no None check).
        self.weight.data = self.weight.grad = None  # type: ignore[assignment]
        if self.bias is not None:
            self.bias.data = self.bias.grad = None  # type: ignore[assignment]
        self._rng.bit_generator.state = rng_state

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Convolve; keeps the input for :meth:`backward`."""
        return self._forward_relu(x, None)

    def _forward_relu(self, x: ArrayLike, relu: ReLU | None) -> np.ndarray:
        """forward, then ``relu`` (a ReLU layer, or None) on the result, fused into the
        convolution's store (nn.Sequential's fusion): the ReLU keeps the output as its own."""
        x = _args.as_float_array(x, "input")
        if self.in_channels is None:
            if x.ndim not in (3, 4):
                raise ValueError(
                    f"input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {x.shape}"
                )
            in_channels = self._check_in_channels(x.shape[-3])
            rng_state = self._rng.bit_generator.state
            self.in_channels = in_channels
            self._initialize()
            try:
                return self._forward(x, relu)
            except BaseException:  # the model must be unchanged after any error
                self._uninitialize(rng_state)
                raise
        return self._forward(x, relu)

    def _checked(self, x: np.ndarray) -> Any:
        """The conv._Conv of ``x`` and the layer's arrays that conv2d's checks made for an
        earlier call (conv.layer_plan), while everything it depends on is the same: x's
        shape and dtype, the weight and bias objects, the use_paths override, and the
        layer's settings (any public attribute set on any module bumps the structure
        version); else None."""
        kept = self._checked_plan
        if (kept is not None and kept[0] == x.shape and kept[1] == x.dtype
                and kept[2] is self.weight.data
                and kept[3] is (None if self.bias is None else self.bias.data)
                and kept[4] is _plan.current_override()
                and kept[5] == _fusion.structure_version()):
            return _conv._Conv(x, kept[2], kept[3], kept[6])
        return None

    def _forward(self, x, relu=None):
        conv = self._checked(x)
        if conv is None:
            weight = self.weight.data
            bias = None if self.bias is None else self.bias.data
            conv = _conv.layer_plan(x, weight, bias, self.stride, self.padding, self.dilation,
                                    self.groups, self.padding_mode, self.algorithm)
            # kept where nothing was converted (else checked, and converted, every call; an
            # unbatched x is viewed with a batch axis, so it is never kept)
            self._checked_plan = (
                (x.shape, x.dtype, weight, bias, _plan.current_override(),
                 _fusion.structure_version(), conv.plan)
                if conv.x is x and conv.weight is weight and conv.bias is bias else None)
        output = _conv.layer_forward(conv, relu is not None, self._outputs.empty)
        self._input = x
        if relu is not None:
            relu._output = output
        return output

    @overload
    def backward(self, grad_output: ArrayLike, need_input_grad: Literal[True] = True) -> np.ndarray: ...
    @overload
    def backward(self, grad_output: ArrayLike, need_input_grad: bool) -> np.ndarray | None: ...
    def backward(self, grad_output: ArrayLike, need_input_grad: bool = True) -> np.ndarray | None:
        """Add the weight (and bias) gradient to ``.grad``; return the input gradient.

        With ``need_input_grad=False`` the input gradient is not computed and None is returned.
        """
        x = _kept(self._input, self)
        need = _CONV_NEED[need_input_grad, self.bias is not None]
        conv = self._checked(x)
        grads = None if conv is None else _conv.layer_backward(conv, grad_output, need,
                                                               self._gradients.empty)
        if grads is None:
            grads = _conv.conv2d_backward(
                grad_output, x, self.weight.data, self.stride, self.padding, self.dilation,
                self.groups, self.padding_mode, need=need, algorithm=self.algorithm,
                _buffers=self._gradients.empty)
        grad_input, grad_weight, grad_bias = grads
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_input

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        if self.algorithm != "auto":
            text += f", algorithm={self.algorithm!r}"
        return text


class Linear(Module):
    """Fully connected layer: ``y = x @ weight.T + bias`` (as ``torch.nn.Linear``).

    Parameters
    ----------
    in_features : int or None
        Size of the last input axis; ``None`` infers it at the first forward.
    out_features : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    seed : None, int or numpy.random.Generator
        Weight and bias uniform in ``(-1/sqrt(in_features), 1/sqrt(in_features))``, PyTorch's
        default.

    Attributes
    ----------
    weight : Parameter
        Shape (out_features, in_features).
    bias : Parameter or None
        Shape (out_features,).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.Linear(576, 20, seed=0)(np.ones((64, 576), dtype=np.float32)).shape
    (64, 20)
    """

    weight: Parameter
    bias: Parameter | None
    in_features: int | None
    out_features: int
    dtype: np.dtype[Any]
    _input: np.ndarray | None

    def __init__(self, in_features: int | None, out_features: int, bias: bool = True,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__()
        self.in_features = None if in_features is None else _int_at_least(in_features,
                                                                           "in_features")
        self.out_features = _int_at_least(out_features, "out_features")
        self.dtype = _param_dtype(dtype)
        _check_bias_flag(bias)
        self._rng = _make_rng(seed)
        self._input = None
        self.weight = Parameter(None)
        self.bias = Parameter(None) if bias else None
        if self.in_features is not None:
            self._initialize()

    def _initialize(self):
        bound = 1.0 / math.sqrt(self.in_features)
        weight = self._rng.uniform(-bound, bound, size=(self.out_features, self.in_features))
        weight = weight.astype(self.dtype)
        self.weight.data, self.weight.grad = weight, np.zeros_like(weight)
        if self.bias is not None:
            bias = self._rng.uniform(-bound, bound, size=self.out_features).astype(self.dtype)
            self.bias.data, self.bias.grad = bias, np.zeros_like(bias)

    def _load_parameter(self, name: str, parameter: Parameter, value: np.ndarray) -> None:
        if parameter.data is not None:
            return super()._load_parameter(name, parameter, value)
        if name == "weight":  # (checked by _check_lazy_parameter)
            self.in_features = value.shape[1]
            self._initialize()
            self.weight.data[...] = value
        else:
            bias = np.array(value, dtype=self.dtype)
            parameter.data, parameter.grad = bias, np.zeros_like(bias)

    def _check_lazy_parameter(self, name: str, value: np.ndarray) -> None:
        if name == "weight":
            if value.ndim != 2 or value.shape[0] != self.out_features or value.shape[1] < 1:
                raise ValueError(
                    f"state dict weight has shape {value.shape}, expected "
                    f"({self.out_features}, in_features) with in_features >= 1"
                )
        elif value.shape != (self.out_features,):
            raise ValueError(
                f"state dict bias has shape {value.shape}, expected ({self.out_features},)"
            )

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Apply the affine map to the last axis; keeps the input for :meth:`backward`."""
        x = _args.as_float_array(x, "input")
        if x.ndim == 0:
            raise ValueError("input must have at least one axis (the features)")
        if self.in_features is None:
            self.in_features = _int_at_least(x.shape[-1], "input features")
            self._initialize()
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has {x.shape[-1]} features on its last axis (shape {x.shape}), Linear "
                f"expects in_features={self.in_features}"
            )
        weight = self.weight.data
        bias = None if self.bias is None else self.bias.data
        output = _linear.linear(x, weight, bias)
        self._input = x
        return output

    @overload
    def backward(self, grad_output: ArrayLike, need_input_grad: Literal[True] = True) -> np.ndarray: ...
    @overload
    def backward(self, grad_output: ArrayLike, need_input_grad: bool) -> np.ndarray | None: ...
    def backward(self, grad_output: ArrayLike, need_input_grad: bool = True) -> np.ndarray | None:
        """Add the weight (and bias) gradient to ``.grad``; return the input gradient."""
        x = _kept(self._input, self)
        grad_output = np.asarray(grad_output)
        grad_rows = grad_output.reshape(-1, self.out_features)
        with _threads.numpy_blas_single_thread():
            self.weight.grad += grad_rows.T @ x.reshape(-1, self.in_features)  # type: ignore[arg-type]
            grad_input = grad_output @ self.weight.data if need_input_grad else None
        if self.bias is not None:
            self.bias.grad += grad_rows.sum(axis=0)
        return grad_input

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# --------------------------------------------------------------------------- pooling

class MaxPool2d(Module):
    """2-D max pooling (``torch.nn.MaxPool2d``); keeps the argmax indices for :meth:`backward`.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        Defaults to ``kernel_size``.
    padding : int, pair or ((top, bottom), (left, right)), default 0
        Implicit -inf padding, at most half the kernel size (as PyTorch).
    dilation : int or (int, int), default 1
    ceil_mode : bool, default False
    return_indices : bool, default False
        ``forward`` returns ``(output, indices)``: the int64 flat index of each maximum in
        its input plane.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.MaxPool2d(2)(np.zeros((1, 16, 12, 12))).shape
    (1, 16, 6, 6)
    """

    _indices: np.ndarray | None
    _input: np.ndarray | None
    _input_shape: tuple[int, ...] | None

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0,
                 dilation: IntPair = 1, ceil_mode: bool = False,
                 return_indices: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride, pads, self.dilation = _args.pool_window(
            kernel_size, stride, padding, dilation)
        self.padding = _pool_padding(pads)
        self.ceil_mode = bool(ceil_mode)
        self.return_indices = bool(return_indices)
        self._indices = None
        self._input = None
        self._input_shape = None
        # outputs and indices (forward), input gradients (backward), reused once nothing
        # else holds them
        self._outputs = Recycler(4)
        self._gradients = Recycler()

    def forward(self, x: ArrayLike) -> Any:
        """Pool. In training mode keeps the indices of the maxima for :meth:`backward`; in
        evaluation mode computes none (the kernel's cheaper path) and keeps a reference to the
        input instead, from which a backward in eval mode (a saliency map, say) recomputes them.

        With ``return_indices=True`` returns ``(output, indices)``, as PyTorch (the indices
        are what :class:`MaxUnpool2d` takes).
        """
        if not self.training and not self.return_indices:
            x = _args.as_float_array(x, "x")
            output = _pool.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                      self.dilation, self.ceil_mode,
                                      _buffers=self._outputs.empty)
            self._indices, self._input, self._input_shape = None, x, x.shape
            return output
        output, indices = _pool.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                           self.dilation, self.ceil_mode, return_indices=True,
                                           _buffers=self._outputs.empty)
        self._indices, self._input = indices, None
        self._input_shape = np.shape(x)
        if self.return_indices:
            return output, indices
        return output

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        """Route each output gradient to the input element that was the maximum."""
        indices = self._indices
        if indices is None and self._input is not None:  # an evaluation-mode forward
            _, indices = _pool.max_pool2d(self._input, self.kernel_size, self.stride,
                                          self.padding, self.dilation, self.ceil_mode,
                                          return_indices=True)
        indices = _kept(indices, self)
        return _pool.max_pool2d_backward(grad_output, indices, self._input_shape,  # type: ignore[arg-type]
                                         _buffers=self._gradients.empty)

    def extra_repr(self) -> str:
        return (f"kernel_size={_pair_or_int(self.kernel_size)}, "
                f"stride={_pair_or_int(self.stride)}, padding={_pair_or_int(self.padding)}, "
                f"dilation={_pair_or_int(self.dilation)}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling (``torch.nn.AvgPool2d``).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        Defaults to ``kernel_size``.
    padding : int, pair or ((top, bottom), (left, right)), default 0
        Zero padding, at most half the kernel size.
    ceil_mode : bool, default False
    count_include_pad : bool, default True
    divisor_override : int or None
        Divide every window's sum by this instead.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.AvgPool2d(2)(np.ones((1, 6, 28, 28))).shape
    (1, 6, 14, 14)
    """

    _input_shape: tuple[int, ...] | None

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, pads, _ = _args.pool_window(kernel_size, stride, padding)
        self.padding = _pool_padding(pads)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        # any nonzero int64, negative ones included (as PyTorch); None: the window's size
        self.divisor_override = None if divisor_override is None else _args.divisor_override(
            divisor_override)
        self._input_shape = None
        # outputs and input gradients, reused once nothing else holds them
        self._outputs = Recycler()
        self._gradients = Recycler()

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Average each window; keeps only the input shape."""
        output = _pool.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                                  self.ceil_mode, self.count_include_pad, self.divisor_override,
                                  _buffers=self._outputs.empty)
        self._input_shape = np.shape(x)
        return output

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        """Spread each output gradient evenly over its window (divided as in forward)."""
        input_shape = _kept(self._input_shape, self)
        return _pool.avg_pool2d_backward(grad_output, input_shape, self.kernel_size,
                                         self.stride, self.padding, self.ceil_mode,
                                         self.count_include_pad, self.divisor_override,
                                         _buffers=self._gradients.empty)

    def extra_repr(self) -> str:
        return (f"kernel_size={_pair_or_int(self.kernel_size)}, "
                f"stride={_pair_or_int(self.stride)}, padding={_pair_or_int(self.padding)}")


# --------------------------------------------------------------------------- shape and activations

class Flatten(Module):
    """Flatten axes ``start_dim`` .. ``end_dim`` into one (``torch.nn.Flatten``; default 1..-1).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.Flatten()(np.zeros((64, 16, 6, 6))).shape
    (64, 576)
    """

    _input_shape: tuple[int, ...] | None

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = _args.as_int(start_dim, "start_dim")
        self.end_dim = _args.as_int(end_dim, "end_dim")
        self._input_shape = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x)
        ndim = max(x.ndim, 1)
        start, end = self.start_dim, self.end_dim
        start, end = start + ndim if start < 0 else start, end + ndim if end < 0 else end
        if not (0 <= start < ndim and 0 <= end < ndim) or start > end:
            raise ValueError(
                f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) does not fit an "
                f"input of shape {x.shape}"
            )
        self._input_shape = x.shape
        shape = x.shape[:start] + (-1,) + x.shape[end + 1:]
        if 0 in x.shape:  # reshape cannot infer -1 next to a zero-sized axis
            shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
        return x.reshape(shape)

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        return np.reshape(grad_output, _kept(self._input_shape, self))

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class ReLU(Module):
    """``max(x, 0)``, element-wise; keeps its output for :meth:`backward`."""

    _output: np.ndarray | None

    def __init__(self) -> None:
        super().__init__()
        self._output = None
        # outputs and input gradients, reused once nothing else holds them
        self._outputs = Recycler()
        self._gradients = Recycler()

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = _args.as_float_array(x, "input")
        output = np.maximum(x, 0, out=self._outputs.empty(x.shape, x.dtype))
        self._output = output
        return output

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        """Pass the gradient except where the output is <= 0 (zero there, as PyTorch)."""
        output = _kept(self._output, self)
        grad_output = np.ascontiguousarray(grad_output, dtype=output.dtype)
        if grad_output.shape != output.shape:
            raise ValueError(f"grad_output has shape {grad_output.shape}, the last output had "
                             f"{output.shape}")
        # np.where(output <= 0, 0, grad) -- an inf or NaN gradient still becomes 0 where the
        # unit is off, a NaN output passes the gradient, as in PyTorch -- in one branch-free
        # pass on the kernels' threads (four passes over the planes with NumPy's bit mask)
        grad_input = self._gradients.empty(output.shape, output.dtype)
        _paths.relu_backward(np.ascontiguousarray(output), grad_output, grad_input)
        return grad_input


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``, element-wise and overflow-free; keeps its output."""

    _output: np.ndarray | None

    def __init__(self) -> None:
        super().__init__()
        self._output = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = _args.as_float_array(x, "input")
        # exp of -|x| only, so nothing overflows and both tails keep their relative accuracy.
        decay = np.exp(-np.abs(x))
        output = np.where(x >= 0, 1 / (1 + decay), decay / (1 + decay))
        self._output = output
        return output

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        output = _kept(self._output, self)
        return (grad_output * (output * (1 - output))).astype(output.dtype, copy=False)


class Tanh(Module):
    """``tanh(x)``, element-wise; keeps its output."""

    _output: np.ndarray | None

    def __init__(self) -> None:
        super().__init__()
        self._output = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        output = np.tanh(_args.as_float_array(x, "input"))
        self._output = output
        return output

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        output = _kept(self._output, self)
        return (grad_output * (1 - output * output)).astype(output.dtype, copy=False)


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the
    rest by ``1/(1-p)``; the identity in evaluation mode (``torch.nn.Dropout``).

    Parameters
    ----------
    p : float, default 0.5
        Probability of an element being zeroed, in [0, 1].
    seed : None, int or numpy.random.Generator
        Source of the masks.
    """

    _mask: np.ndarray | None

    p: float
    _rng: np.random.Generator

    def __init__(self, p: float = 0.5, seed: Seed = None) -> None:
        super().__init__()
        p = _args.as_real(p, "p")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p must be between 0 and 1, got {p}")
        self.p = p
        self._rng = _make_rng(seed)
        self._mask = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = _args.as_float_array(x, "input")
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        if self.p == 1.0:
            self._mask = np.zeros_like(x)
        else:
            keep = self._rng.random(x.shape, dtype=x.dtype) >= self.p
            self._mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return np.asarray(grad_output)
        return grad_output * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --------------------------------------------------------------------------- losses

class _Loss(Module):
    """A loss: ``loss(pred, target)`` returns a float, ``loss.backward()`` the gradient."""

    _grad: np.ndarray | None

    def __init__(self, reduction: Literal["mean", "sum"] = "mean") -> None:
        super().__init__()
        self.reduction = _args.check_mode(reduction, _REDUCTIONS, "reduction")
        self._grad = None

    # A loss returns a float where a layer returns an array (PyTorch's return 0-d tensors), and
    # its backward starts the chain from a scalar: hence the overrides' different signatures.
    def __call__(self, pred: ArrayLike, target: ArrayLike) -> float:  # type: ignore[override]
        return self.forward(pred, target)  # type: ignore[return-value]  # the subclasses' float

    def backward(self, grad_output: float = 1.0) -> np.ndarray:  # type: ignore[override]
        """Gradient of the last loss value with respect to ``pred`` (times ``grad_output``)."""
        grad = _kept(self._grad, self)
        if grad_output == 1.0:
            return grad.copy()
        return grad * grad.dtype.type(grad_output)

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Softmax and negative log-likelihood on logits (``torch.nn.CrossEntropyLoss``).

    ``pred`` holds logits of shape (N, C) (or (C,), or (N, C, d1, ...) with the classes on
    axis 1); ``target`` holds int class indices of shape (N,) (or (), (N, d1, ...)), or class
    probabilities of ``pred``'s shape. Computed with a shifted log-sum-exp, so large logits do
    not overflow. The softmax is kept from the forward pass for :meth:`backward`.

    Parameters
    ----------
    reduction : {'mean', 'sum'}, default 'mean'
        Mean over the batch (and extra axes), or sum.

    Raises
    ------
    ValueError
        Mismatched shapes, or a class index outside [0, C).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> loss = nn.CrossEntropyLoss()
    >>> round(loss(np.zeros((2, 4)), np.array([0, 3])), 6)
    1.386294
    >>> loss.backward()
    array([[-0.375,  0.125,  0.125,  0.125],
           [ 0.125,  0.125,  0.125, -0.375]])
    """

    def forward(self, pred: ArrayLike, target: ArrayLike) -> float:  # type: ignore[override]
        logits = _args.as_float_array(pred, "pred")
        if logits.ndim == 0:
            raise ValueError("pred must hold logits with the classes on axis 1 (or axis 0 "
                             "for one unbatched sample), got a scalar")
        unbatched = logits.ndim == 1
        batched = logits[np.newaxis] if unbatched else logits
        classes = batched.shape[1]
        # Rows of logits, one per (sample, position), classes last (2-D logits are rows
        # already: the moves are no-ops, skipped).
        plain = batched.ndim == 2
        rows = batched if plain else np.moveaxis(batched, 1, -1).reshape(-1, classes)
        target = np.asarray(target)
        shifted = rows - rows.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        log_sum_exp = np.log(sum_exp)
        probabilities = exp / sum_exp
        count = rows.shape[0]
        if target.dtype.kind == "b":
            raise TypeError("target is bool; class indices must be integers (0 .. C-1)")
        if target.dtype.kind in "iu":
            expected = logits.shape[:1] + logits.shape[2:] if not unbatched else ()
            if target.shape != expected:
                raise ValueError(
                    f"target has shape {target.shape}; for pred of shape {logits.shape} class "
                    f"indices must have shape {expected}"
                )
            labels = target.reshape(-1).astype(np.intp, copy=False)
            if labels.size and (labels.min() < 0 or labels.max() >= classes):
                bad = labels[(labels < 0) | (labels >= classes)][0]
                raise ValueError(f"target holds class index {bad}, outside [0, {classes})")
            samples = np.arange(count)
            picked = shifted[samples, labels] - log_sum_exp[:, 0]
            total = -picked.sum()
            grad_rows = probabilities
            grad_rows[samples, labels] -= 1
        elif target.dtype.kind == "f":
            if target.shape != logits.shape:
                raise ValueError(
                    f"class-probability target has shape {target.shape}, expected pred's shape "
                    f"{logits.shape}"
                )
            soft = target[np.newaxis] if unbatched else target
            if not plain:  # (2-D: rows already; np.moveaxis alone costs 3 us)
                soft = np.moveaxis(soft, 1, -1)
            soft = soft.reshape(-1, classes).astype(rows.dtype, copy=False)
            total = -(soft * (shifted - log_sum_exp)).sum()
            grad_rows = probabilities * soft.sum(axis=1, keepdims=True) - soft
        else:
            raise TypeError(f"target must hold int class indices or float probabilities, got "
                            f"dtype {target.dtype}")
        scale = 1.0 / count if self.reduction == "mean" and count else 1.0
        grad_rows *= rows.dtype.type(scale)
        if plain:  # (a new C-contiguous array, of the logits' shape)
            self._grad = grad_rows[0] if unbatched else grad_rows
        else:
            moved_shape = (batched.shape[0],) + batched.shape[2:] + (classes,)
            grad = np.moveaxis(grad_rows.reshape(moved_shape), -1, 1)
            self._grad = np.ascontiguousarray(grad[0] if unbatched else grad)
        if self.reduction == "mean":
            return float(total / count) if count else float("nan")
        return float(total)


class MSELoss(_Loss):
    """Mean squared error ``mean((pred - target)**2)`` (``torch.nn.MSELoss``).

    Parameters
    ----------
    reduction : {'mean', 'sum'}, default 'mean'

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> loss = nn.MSELoss()
    >>> loss(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    2.5
    >>> loss.backward()
    array([1., 2.])
    """

    def forward(self, pred: ArrayLike, target: ArrayLike) -> float:  # type: ignore[override]
        pred = _args.as_float_array(pred, "pred")
        target = _args.as_float_array(target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"pred has shape {pred.shape} but target has shape {target.shape}")
        diff = pred - target
        total = float(np.vdot(diff, diff))
        scale = 2.0 / diff.size if self.reduction == "mean" and diff.size else 2.0
        diff *= diff.dtype.type(scale)
        self._grad = diff.astype(pred.dtype, copy=False)  # the gradient has pred's dtype
        if self.reduction == "mean":
            return total / pred.size if pred.size else float("nan")
        return total


# --------------------------------------------------------------------------- networks (issue 16)
# Batch normalisation, transposed convolution, adaptive pooling, unpooling, and the composition
# blocks that d2l's chapter-5 networks (NiN, GoogLeNet, ResNet, DenseNet) are built from.

from . import adaptive as _adaptive  # noqa: E402  (kept with the layers that use them)
from . import norm as _norm  # noqa: E402
from . import transposed as _transposed  # noqa: E402

__all__ += [
    "Buffer",
    "BatchNorm2d",
    "ConvTranspose2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "MaxUnpool2d",
    "Identity",
    "LeakyReLU",
    "Residual",
    "Concat",
]


class Buffer(Parameter):
    """A module's state that is saved but not trained (PyTorch's buffers): a batch norm's
    ``running_mean``, ``running_var`` and ``num_batches_tracked``.

    Buffers appear in :meth:`Module.state_dict` and are loaded by
    :meth:`Module.load_state_dict` under their PyTorch names, but not in
    :meth:`Module.parameters`, so no optimiser touches them. ``grad`` is always None.

    Parameters
    ----------
    data : numpy.ndarray
        Any real dtype (``num_batches_tracked`` is int64, as PyTorch's).
    """

    __slots__ = ()

    def __init__(self, data: np.ndarray) -> None:
        data = np.array(data, order="C")  # (ascontiguousarray would make a scalar 1-D)
        if data.dtype.kind not in "iuf":
            raise TypeError(f"Buffer data must be real numbers, got {data.dtype}")
        self.data = data
        self.grad = None  # type: ignore[assignment]  # never trained: no gradient (see above)

    def __repr__(self) -> str:
        return f"Buffer(shape={self.data.shape}, dtype={self.data.dtype})"


class BatchNorm2d(Module):
    """Batch normalisation over the channels of (N, C, H, W) input (``torch.nn.BatchNorm2d``).

    In training the batch's mean and biased variance normalise each channel and the running
    estimates move towards them (``r = (1 - momentum) * r + momentum * batch``, the variance
    unbiased); in evaluation (:meth:`Module.eval`) the running estimates normalise.

    Parameters
    ----------
    num_features : int
        Channels C.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        None: the cumulative average (factor ``1 / num_batches_tracked``), as PyTorch.
    affine : bool, default True
        Learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool, default True
        Keep running estimates (buffers ``running_mean``, ``running_var``,
        ``num_batches_tracked``); without them the batch's statistics are used in
        evaluation too.
    dtype : float32 or float64, default float32
    seed : ignored
        Accepted as by every layer with parameters (the initial values are constants).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> bn = nn.BatchNorm2d(3)
    >>> out = bn(np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32))
    >>> sorted(bn.state_dict())
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """

    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool
    dtype: np.dtype[Any]
    # None without affine / track_running_stats
    weight: Parameter | None
    bias: Parameter | None
    running_mean: Buffer | None
    running_var: Buffer | None
    num_batches_tracked: Buffer | None
    fused_relu: bool
    # input, mean, var, whether they were the batch's, output of a forward with the ReLU
    _kept: tuple[np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray | None] | None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__()
        self.num_features = _int_at_least(num_features, "num_features")
        self.eps = _args.as_real(eps, "eps", 0.0)
        self.momentum = None if momentum is None else _args.as_real(momentum, "momentum")
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.dtype = _param_dtype(dtype)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=self.dtype))
            self.bias = Parameter(np.zeros(self.num_features, dtype=self.dtype))
        else:
            self.weight = None
            self.bias = None
        if self.track_running_stats:
            self.running_mean = Buffer(np.zeros(self.num_features, dtype=self.dtype))
            self.running_var = Buffer(np.ones(self.num_features, dtype=self.dtype))
            self.num_batches_tracked = Buffer(np.zeros((), dtype=np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self.fused_relu = False
        self._kept = None
        self._checked: tuple[Any, ...] | None = None  # (see _remember_checked)
        # the output and the gradients, reused from step to step once nothing holds them
        self._outputs = Recycler()
        self._gradients = Recycler(4)

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d expects 4-D input (N, C, H, W), got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d({self.num_features}) got input with {x.shape[1]} "
                             f"channels (shape {x.shape})")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalise; keeps the input and the statistics used for :meth:`backward`.

        With ``fused_relu = True`` the layer is BatchNorm2d followed by ReLU, in one pass.
        """
        return self._run(x, None, self.fused_relu)

    def forward_residual(self, x: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """``relu(self(x) + residual)`` in one pass (the end of a ResNet block); its backward
        is :meth:`backward_residual`."""
        return self._run(x, _args.as_float_array(residual, "residual"), True)

    def _run(self, x: np.ndarray, residual: np.ndarray | None, relu: bool) -> np.ndarray:
        x = _args.as_float_array(x, "input")
        self._check_input(x)
        use_batch = self.training or not self.track_running_stats
        momentum = self.momentum
        running_mean = running_var = None
        if self.track_running_stats:
            # made in __init__ with track_running_stats
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            running_mean, running_var = self.running_mean.data, self.running_var.data
            if self.training:
                self.num_batches_tracked.data += 1
                if momentum is None:
                    momentum = 1.0 / float(self.num_batches_tracked.data)
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        factor = 0.0 if momentum is None else momentum
        same = x.dtype == self.dtype and (residual is None or (residual.dtype == self.dtype
                                                               and residual.shape == x.shape))
        checked = self._checked
        if (same and use_batch and checked is not None and checked[0] == x.shape
                and checked[1] is weight and checked[2] is bias and checked[3] is running_mean
                and checked[4] is running_var and checked[5] is self.eps
                and type(factor) is float):
            # the arguments batch_norm checked for this input shape, in the dtype its
            # kernels take (see _remember_checked): its work without its checks
            output = self._outputs.empty(x.shape, x.dtype)
            x3 = x.reshape(x.shape[0], x.shape[1], -1)
            mean = np.empty(x.shape[1])
            var = np.empty(x.shape[1])
            _norm.forward_checked(
                x3, output.reshape(x3.shape), weight, bias, mean, var, self.eps, True, relu,
                _norm._NOTHING[x.dtype] if residual is None else residual.reshape(x3.shape),
                running_mean, running_var, factor)
        else:
            out = self._outputs.empty(x.shape, x.dtype) if same else None
            output, mean, var = _norm.batch_norm(
                x, running_mean, running_var, weight, bias, training=use_batch,
                momentum=factor, eps=self.eps, return_stats=True, relu=relu,
                residual=residual, _out=out)
            if same and use_batch:
                self._remember_checked(x, weight, bias, running_mean, running_var)
        self._kept = (x, mean, var, use_batch, output if relu else None)
        return output

    def _remember_checked(self, x: np.ndarray, weight: np.ndarray | None,
                          bias: np.ndarray | None, running_mean: np.ndarray | None,
                          running_var: np.ndarray | None) -> None:
        """After batch_norm accepted these arrays for an input of x's shape and dtype (the
        layer's): the next calls with the same ones (the same objects, ``eps`` too) run its
        work without its checks (norm.forward_checked, norm.backward_checked), where the
        vectors are C-contiguous in x's dtype as its kernels take them, and so are the
        gradients backward adds to (kept with them: the same objects are checked again)."""
        vectors = [weight, bias]
        if self.affine:
            assert self.weight is not None and self.bias is not None  # made with affine
            vectors += [self.weight.grad, self.bias.grad]
        if all(vector is None or (type(vector) is np.ndarray and vector.dtype == x.dtype
                                  and vector.flags.c_contiguous and vector.flags.writeable
                                  and vector.shape == (x.shape[1],)) for vector in vectors):
            self._checked = (x.shape, weight, bias, running_mean, running_var, self.eps,
                             *vectors[2:])
        else:
            self._checked = None

    def _backward(self, grad_output: np.ndarray, need_input_grad: bool,
                  need_residual: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        x, mean, var, use_batch, output = _kept(self._kept, self)
        checked = self._checked
        weight = None if self.weight is None else self.weight.data
        if (checked is not None and type(grad_output) is np.ndarray
                and grad_output.dtype == x.dtype and x.dtype == self.dtype
                and grad_output.flags.c_contiguous and grad_output.shape == x.shape
                and checked[0] == x.shape and checked[1] is weight and checked[5] is self.eps
                and (self.weight is None or self.bias is None
                     or (checked[6] is self.weight.grad and checked[7] is self.bias.grad))):
            # batch_norm_backward_fused's work without its checks (see _remember_checked),
            # the parameter gradients added to .grad by the kernel
            x3 = x.reshape(x.shape[0], x.shape[1], -1)
            nothing = _norm._NOTHING[x.dtype]
            grad_input = self._gradients.empty(x.shape, x.dtype) if need_input_grad else None
            grad_residual = self._gradients.empty(x.shape, x.dtype) if need_residual else None
            _norm.backward_checked(
                grad_output.reshape(x3.shape), x3, weight, mean, var, self.eps, use_batch,
                nothing if output is None else output.reshape(x3.shape), output is not None,
                nothing if grad_residual is None else grad_residual.reshape(x3.shape),
                None if grad_input is None else grad_input.reshape(x3.shape),
                None if self.weight is None else self.weight.grad,
                None if self.bias is None else self.bias.grad, True)
            return grad_input, grad_residual
        need = ("input",) if need_input_grad else ()
        if self.affine:
            need += ("weight", "bias")
        grad_input, grad_weight, grad_bias, grad_residual = _norm.batch_norm_backward_fused(
            grad_output, x, mean, var, None if self.weight is None else self.weight.data,
            eps=self.eps, training=use_batch, need=need, output=output,
            need_residual=need_residual,
            _buffers=self._gradients.empty)
        if self.affine:
            # made in __init__ with affine; both gradients asked for in need
            assert self.weight is not None and self.bias is not None
            self.weight.grad += grad_weight
            self.bias.grad += grad_bias
        return grad_input, grad_residual

    @overload
    def backward(self, grad_output: np.ndarray,
                 need_input_grad: Literal[True] = True) -> np.ndarray: ...
    @overload
    def backward(self, grad_output: np.ndarray, need_input_grad: bool) -> np.ndarray | None: ...
    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Add the weight and bias gradients to ``.grad``; return the input gradient."""
        return self._backward(grad_output, need_input_grad, False)[0]

    def backward_residual(self, grad_output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """After :meth:`forward_residual`: ``(grad_input, grad_residual)``."""
        if _kept(self._kept, self)[4] is None:
            raise RuntimeError("backward_residual() follows forward_residual()")
        grad_input, grad_residual = self._backward(grad_output, True, True)
        assert grad_input is not None and grad_residual is not None  # both asked for
        return grad_input, grad_residual

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class ConvTranspose2d(Module):
    """2-D transposed convolution layer (``torch.nn.ConvTranspose2d``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, output_padding, dilation : int or (int, int)
    groups : int, default 1
    bias : bool, default True
    dtype : float32 or float64, default float32
    seed : None, int or numpy.random.Generator
        PyTorch's default rule: uniform in ``(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
        ``fan_in = out_channels/groups * kH * kW`` (PyTorch computes it from the weight's
        second axis).

    Attributes
    ----------
    weight : Parameter
        Shape (in_channels, out_channels/groups, kH, kW).
    bias : Parameter or None

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, seed=0)
    >>> up(np.zeros((1, 4, 7, 7), dtype=np.float32)).shape
    (1, 2, 14, 14)
    """

    weight: Parameter
    bias: Parameter | None
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    dtype: np.dtype[Any]
    # the input and the output_padding of the last forward
    _kept: tuple[np.ndarray, tuple[int, int]] | None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: IntPair = 0, output_padding: IntPair = 0,
                 groups: int = 1, bias: bool = True, dilation: IntPair = 1,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__()
        self.in_channels = _int_at_least(in_channels, "in_channels")
        self.out_channels = _int_at_least(out_channels, "out_channels")
        self.groups = _args.check_groups(groups, self.in_channels, self.out_channels)
        self.kernel_size = _args.pair(kernel_size, "kernel_size")
        self.stride = _args.pair(stride, "stride")
        self.padding = _args.pair(padding, "padding", 0)
        self.output_padding = _args.pair(output_padding, "output_padding", 0)
        self.dilation = _args.pair(dilation, "dilation")
        _args.check_output_padding(self.output_padding, self.stride, self.dilation)
        self.dtype = _param_dtype(dtype)
        _check_bias_flag(bias)
        rng = _make_rng(seed)
        fan_in = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        self.weight = Parameter(rng.uniform(-bound, bound, size=shape).astype(self.dtype))
        self.bias = (Parameter(rng.uniform(-bound, bound, size=self.out_channels)
                               .astype(self.dtype)) if bias else None)
        self._kept = None

    def _output_padding(self, x: np.ndarray, output_size: Sequence[int] | None
                        ) -> tuple[int, int]:
        """PyTorch's ``output_size=`` argument: the output_padding that gives that size."""
        if output_size is None:
            return self.output_padding
        size = tuple(int(value) for value in output_size)[-2:]
        base = _transposed.conv_transpose2d_output_size(
            x.shape[-2:], self.kernel_size, self.stride, self.padding, 0, self.dilation)
        extra = (size[0] - base[0], size[1] - base[1])
        if min(extra) < 0 or any(extra[axis] >= max(self.stride[axis], self.dilation[axis])
                                 for axis in range(2)):
            raise ValueError(f"requested output size {size} is not reachable: sizes from "
                             f"{base} up to a stride more are")
        return extra

    def __call__(self, x: np.ndarray, output_size: Sequence[int] | None = None) -> np.ndarray:
        return self.forward(x, output_size)

    def forward(self, x: np.ndarray, output_size: Sequence[int] | None = None) -> np.ndarray:
        """Transposed convolution; keeps the input for :meth:`backward`.

        ``output_size`` (PyTorch's argument) picks the output_padding that gives that size.
        """
        x = _args.as_float_array(x, "input")
        output_padding = self._output_padding(x, output_size)
        output = _transposed.conv_transpose2d(
            x, self.weight.data, None if self.bias is None else self.bias.data, self.stride,
            self.padding, output_padding, self.groups, self.dilation)
        self._kept = (x, output_padding)
        return output

    @overload
    def backward(self, grad_output: np.ndarray,
                 need_input_grad: Literal[True] = True) -> np.ndarray: ...
    @overload
    def backward(self, grad_output: np.ndarray, need_input_grad: bool) -> np.ndarray | None: ...
    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Add the weight (and bias) gradient to ``.grad``; return the input gradient."""
        x, output_padding = _kept(self._kept, self)
        need = ("input",) if need_input_grad else ()
        need += ("weight", "bias") if self.bias is not None else ("weight",)
        grad_input, grad_weight, grad_bias = _transposed.conv_transpose2d_backward(
            grad_output, x, self.weight.data, self.stride, self.padding, output_padding,
            self.groups, self.dilation, need=need)
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_input

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}")


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to a fixed output size (``torch.nn.AdaptiveAvgPool2d``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.AdaptiveAvgPool2d(1)(np.ones((2, 8, 7, 7))).shape
    (2, 8, 1, 1)
    """

    output_size: int | Sequence[int | None]
    _input_shape: tuple[int, ...] | None

    def __init__(self, output_size: int | Sequence[int | None]) -> None:
        super().__init__()
        _args.adaptive_output_size(output_size)  # refused here as adaptive_avg_pool2d would
        self.output_size = output_size
        self._input_shape = None
        # outputs and input gradients, reused once nothing else holds them
        self._outputs = Recycler()
        self._gradients = Recycler()

    def forward(self, x: np.ndarray) -> np.ndarray:
        output = _adaptive.adaptive_avg_pool2d(x, self.output_size, _buffers=self._outputs.empty)
        self._input_shape = np.shape(x)
        return output

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return _adaptive.adaptive_avg_pool2d_backward(grad_output, _kept(self._input_shape, self),
                                                      _buffers=self._gradients.empty)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Adaptive max pooling to a fixed output size (``torch.nn.AdaptiveMaxPool2d``);
    ``return_indices=True`` makes ``forward`` return ``(output, indices)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.AdaptiveMaxPool2d((2, 3))(np.ones((2, 8, 7, 7))).shape
    (2, 8, 2, 3)
    """

    output_size: int | Sequence[int | None]
    return_indices: bool
    # the indices of the maxima and the input's shape
    _kept: tuple[np.ndarray, tuple[int, ...]] | None

    def __init__(self, output_size: int | Sequence[int | None],
                 return_indices: bool = False) -> None:
        super().__init__()
        _args.adaptive_output_size(output_size)  # refused here as adaptive_max_pool2d would
        self.output_size = output_size
        self.return_indices = bool(return_indices)
        self._kept = None

    def forward(self, x: np.ndarray) -> Any:
        """Pool; ``(output, indices)`` with ``return_indices=True``, else the output (Any, as
        :meth:`MaxPool2d.forward`: the type depends on an attribute)."""
        output, indices = _adaptive.adaptive_max_pool2d(x, self.output_size,
                                                        return_indices=True)
        self._kept = (indices, np.shape(x))
        return (output, indices) if self.return_indices else output

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        indices, input_shape = _kept(self._kept, self)
        return _adaptive.adaptive_max_pool2d_backward(grad_output, indices, input_shape)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class MaxUnpool2d(Module):
    """Partial inverse of :class:`MaxPool2d` (``torch.nn.MaxUnpool2d``): ``layer(x, indices,
    output_size=None)`` puts each value back where the pooling found it, zeros elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool, unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
    >>> out, indices = pool(np.arange(16.0).reshape(1, 1, 4, 4))
    >>> unpool(out, indices)[0, 0]
    array([[ 0.,  0.,  0.,  0.],
           [ 0.,  5.,  0.,  7.],
           [ 0.,  0.,  0.,  0.],
           [ 0., 13.,  0., 15.]])
    """

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    _indices: np.ndarray | None

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None,
                 padding: IntPair = 0) -> None:
        super().__init__()
        self.kernel_size = _args.pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _args.pair(stride, "stride")
        self.padding = _args.symmetric_padding(padding, "max_unpool2d")
        self._indices = None

    def __call__(self, x: np.ndarray, indices: np.ndarray,
                 output_size: Sequence[int] | None = None) -> np.ndarray:
        return self.forward(x, indices, output_size)

    def forward(self, x: np.ndarray, indices: np.ndarray,
                output_size: Sequence[int] | None = None) -> np.ndarray:
        output = _adaptive.max_unpool2d(x, indices, self.kernel_size, self.stride,
                                        self.padding, output_size)
        self._indices = np.asarray(indices)
        return output

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        """The gradient with respect to ``x`` (the indices have none)."""
        return _adaptive.max_unpool2d_backward(grad_output, _kept(self._indices, self))

    def extra_repr(self) -> str:
        return (f"kernel_size={_pair_or_int(self.kernel_size)}, "
                f"stride={_pair_or_int(self.stride)}, padding={_pair_or_int(self.padding)}")


class Identity(Module):
    """Returns its input unchanged (``torch.nn.Identity``); any arguments are ignored."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return grad_output


class LeakyReLU(Module):
    """``x`` where positive, ``negative_slope * x`` elsewhere (``torch.nn.LeakyReLU``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.LeakyReLU(0.1)(np.array([-2.0, 3.0]))
    array([-0.2,  3. ])
    """

    negative_slope: float
    _positive: np.ndarray | None

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = _args.as_real(negative_slope, "negative_slope")
        self._positive = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _args.as_float_array(x, "input")
        positive = x > 0
        self._positive = positive
        return np.where(positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        """The gradient where the input was > 0, ``negative_slope`` times it elsewhere."""
        positive = _kept(self._positive, self)
        grad_output = np.asarray(grad_output)
        dtype = grad_output.dtype if grad_output.dtype.kind == "f" else np.dtype(np.float64)
        return np.where(positive, grad_output,
                        grad_output * dtype.type(self.negative_slope)).astype(dtype, copy=False)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Residual(Module):
    """``body(x) + shortcut(x)``, the shortcut the identity when None (ResNet's block).

    ``backward`` sends the output gradient through both paths and adds the two input
    gradients. State dict keys are ``body.*`` and ``shortcut.*``.

    Parameters
    ----------
    body : Module
    shortcut : Module or None
        E.g. a 1x1 strided convolution where the body changes the shape.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> block = nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, seed=0), nn.ReLU()))
    >>> x = np.ones((1, 4, 5, 5), dtype=np.float32)
    >>> block(x).shape, block.backward(np.ones((1, 4, 5, 5), dtype=np.float32)).shape
    ((1, 4, 5, 5), (1, 4, 5, 5))
    """

    def __init__(self, body: Module, shortcut: Module | None = None) -> None:
        super().__init__()
        for name, value in (("body", body), ("shortcut", shortcut)):
            if value is not None and not isinstance(value, Module):
                raise TypeError(f"{name} must be a fastconv.nn.Module, got "
                                f"{type(value).__name__}")
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: np.ndarray) -> np.ndarray:
        main = self.body(x)
        side = x if self.shortcut is None else self.shortcut(x)
        if np.shape(main) != np.shape(side):
            raise ValueError(f"Residual: the body's output {np.shape(main)} and the shortcut's "
                             f"{np.shape(side)} differ; give a shortcut that matches")
        return main + side

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        grad_input = self.body.backward(grad_output)
        side = grad_output if self.shortcut is None else self.shortcut.backward(grad_output)
        return grad_input + side


class Concat(Module):
    """Branches applied to the same input, their outputs joined on the channel axis (axis 1),
    as GoogLeNet's Inception block and DenseNet's dense block do.

    ``backward`` splits the output gradient by the branches' channel counts, runs each
    branch's ``backward`` and adds the input gradients. State dict keys are ``0.*``, ``1.*``...

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> block = nn.Concat(nn.Conv2d(3, 4, 1, seed=0), nn.Identity())
    >>> block(np.ones((2, 3, 5, 5), dtype=np.float32)).shape
    (2, 7, 5, 5)
    """

    # where backward splits the output gradient (the branches' cumulative channel counts)
    _splits: np.ndarray | None

    def __init__(self, *branches: Module) -> None:
        super().__init__()
        if not branches:
            raise ValueError("Concat needs at least one branch")
        for index, branch in enumerate(branches):
            if not isinstance(branch, Module):
                raise TypeError(f"Concat takes fastconv.nn.Module branches, got "
                                f"{type(branch).__name__} for branch {index}")
            self._modules[str(index)] = branch
        self._splits = None

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def forward(self, x: np.ndarray) -> np.ndarray:
        outputs = [branch(x) for branch in self._modules.values()]
        self._splits = np.cumsum([np.shape(output)[1] for output in outputs])[:-1]
        return np.concatenate(outputs, axis=1)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        splits = _kept(self._splits, self)
        parts = np.split(np.asarray(grad_output), splits, axis=1)
        grad_input: np.ndarray | None = None
        for branch, part in zip(self._modules.values(), parts):
            grad = branch.backward(np.ascontiguousarray(part))
            grad_input = grad if grad_input is None else grad_input + grad
        assert grad_input is not None  # at least one branch (checked in __init__)
        return grad_input
