"""Type aliases for the public API's annotations (no run-time rules: those live in fastconv._args).

Importable at run time (``typing.get_type_hints`` on a public function resolves them), and
cheap: nothing but ``typing`` and ``numpy.typing``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal, Protocol, TypeAlias, Union

import numpy as np
import numpy.typing as npt

__all__ = [
    "ArrayLike",
    "DTypeLike",
    "IntPair",
    "Padding",
    "ConvPadding",
    "ConvPaddingMode",
    "Activation",
    "ConvAlgorithm",
    "PadMode",
    "Shape",
    "Seed",
    "StrPath",
    "HasLR",
    "OptimizerLike",
    "SchedulerLike",
    "LossLike",
]

ArrayLike: TypeAlias = npt.ArrayLike
DTypeLike: TypeAlias = npt.DTypeLike

# kernel_size, stride, dilation: an int or an (h, w) pair
IntPair: TypeAlias = Union[int, tuple[int, int]]
# padding: an int, an (ph, pw) pair, or ((top, bottom), (left, right)) as numpy.pad
Padding: TypeAlias = Union[int, tuple[int, int], tuple[tuple[int, int], tuple[int, int]]]
# conv2d's padding also takes 'valid' and 'same'
ConvPadding: TypeAlias = Union[Padding, Literal["valid", "same"]]
# conv2d / Conv2d padding_mode (torch.nn.Conv2d's names)
ConvPaddingMode: TypeAlias = Literal["zeros", "reflect", "replicate", "circular"]
Activation: TypeAlias = Literal["relu"]
ConvAlgorithm: TypeAlias = Literal["auto", "direct", "winograd"]
# pad2d mode: PyTorch's names and NumPy's aliases 'edge' and 'wrap'
PadMode: TypeAlias = Literal["constant", "reflect", "replicate", "edge", "circular", "wrap"]
# input_shape of the pooling gradients: x.shape, 3-D or 4-D
Shape: TypeAlias = Sequence[int]
# layers' seed=: None, an int, a SeedSequence, or a Generator used as is
Seed: TypeAlias = Union[int, np.random.SeedSequence, np.random.Generator, None]
# file names: datasets, io.save / io.load, plot
StrPath: TypeAlias = Union[str, os.PathLike[str]]


class HasLR(Protocol):
    """What a learning-rate schedule drives: an optimiser with a float ``lr``."""

    lr: float


class OptimizerLike(Protocol):
    """What :func:`fastconv.train.fit` calls on its ``optimizer`` every batch."""

    def zero_grad(self) -> object: ...
    def step(self) -> object: ...


class SchedulerLike(Protocol):
    """What :func:`fastconv.train.fit` calls on its ``scheduler`` after every step."""

    def step(self) -> object: ...


class LossLike(Protocol):
    """A loss as :func:`fastconv.train.fit` uses it: ``loss(pred, target)`` then
    ``loss.backward()``, as :class:`fastconv.nn.CrossEntropyLoss`."""

    def __call__(self, pred: np.ndarray, target: np.ndarray, /) -> float: ...
    def backward(self) -> np.ndarray: ...
