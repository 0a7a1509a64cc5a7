"""Ready-made networks for 28x28 single-channel images (Fashion-MNIST, MNIST).

Examples
--------
>>> import numpy as np
>>> from fastconv import models
>>> model = models.tutorial_net(seed=0)
>>> model(np.zeros((2, 1, 28, 28), dtype=np.float32)).shape
(2, 10)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import nn
from ._typing import DTypeLike, Seed

__all__ = ["tutorial_net", "lenet5", "build", "MODELS"]


def tutorial_net(seed: Seed = 0, dtype: DTypeLike = np.float32) -> nn.Sequential:
    """The tutorial network: one strided convolution, max pooling and two linear layers.

    ``Conv2d(1, 16, 5, stride=2)``, ReLU, ``MaxPool2d(2, 2)``, Flatten, ``Linear(576, 20)``,
    ReLU, ``Linear(20, 10)``: 28x28 -> 16x12x12 -> 16x6x6 = 576 -> 20 -> 10 logits.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None, default 0
        Source of the initial weights (PyTorch's default initialisation rule).
    dtype : float32 or float64, default float32

    Returns
    -------
    fastconv.nn.Sequential
    """
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(576, 20, dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.Linear(20, 10, dtype=dtype, seed=rng),
    )


def lenet5(seed: Seed = 0, dtype: DTypeLike = np.float32) -> nn.Sequential:
    """LeNet-5 with ReLU and average pooling, for 28x28 inputs (padding 2 on the first layer).

    ``Conv2d(1, 6, 5, padding=2)``, ReLU, ``AvgPool2d(2)``, ``Conv2d(6, 16, 5)``, ReLU,
    ``AvgPool2d(2)``, Flatten, ``Linear(400, 120)``, ReLU, ``Linear(120, 84)``, ReLU,
    ``Linear(84, 10)``.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None, default 0
    dtype : float32 or float64, default float32

    Returns
    -------
    fastconv.nn.Sequential
    """
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2, dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5, dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120, dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.Linear(120, 84, dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.Linear(84, 10, dtype=dtype, seed=rng),
    )


MODELS: dict[str, Callable[..., nn.Sequential]] = {"seed": tutorial_net, "tutorial": tutorial_net, "lenet": lenet5, "lenet5": lenet5}


def build(name: str, seed: Seed = 0, dtype: DTypeLike = np.float32) -> nn.Sequential:
    """A model by name: ``'seed'`` (or ``'tutorial'``) or ``'lenet'`` (or ``'lenet5'``)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](seed=seed, dtype=dtype)
