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
from typing import Literal, overload

import numpy as np

from . import nn
from ._paths import add_inplace
from ._typing import ConvAlgorithm, DTypeLike, Seed

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


MODELS: dict[str, Callable[..., nn.Module]] = {"seed": tutorial_net, "tutorial": tutorial_net,
                                               "lenet": lenet5, "lenet5": lenet5}


def build(name: str, seed: Seed = 0, dtype: DTypeLike = np.float32,
          algorithm: ConvAlgorithm = "auto") -> nn.Module:
    """A model by name: ``'seed'`` (or ``'tutorial'``), ``'lenet'`` (or ``'lenet5'``), or
    ``'resnet'`` (:func:`small_resnet`); each for 28x28 single-channel images, 10 classes.

    ``algorithm`` is the convolutions' (:class:`fastconv.nn.Conv2d`); only ``'resnet'``
    takes a value other than ``'auto'`` (:func:`small_resnet`: its blocks' 3x3 stride-1
    layers are the ones ``'winograd'`` changes).

    Examples
    --------
    >>> from fastconv import models
    >>> models.build("resnet", algorithm="winograd").layer1[0].conv2.algorithm
    'winograd'
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    if algorithm == "auto":
        return MODELS[name](seed=seed, dtype=dtype)
    if name != "resnet":
        raise ValueError(f"algorithm={algorithm!r} is for model 'resnet' only, got {name!r}")
    return small_resnet(seed=seed, dtype=dtype, algorithm=algorithm)


# --------------------------------------------------------------------------- issue 16: NiN, ResNet

__all__ += ["nin", "resnet18", "small_resnet", "BasicBlock", "ResNet", "SMALL_RESNET_WIDTHS"]


def _kaiming_normal_fan_out(layer: nn.Conv2d, rng: np.random.Generator) -> None:
    """torchvision's ResNet initialisation of a convolution: normal with std
    ``sqrt(2 / fan_out)``, ``fan_out = out_channels * kH * kW`` (kaiming_normal_, fan_out,
    relu)."""
    fan_out = layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
    weight = rng.normal(0.0, np.sqrt(2.0 / fan_out), size=layer.weight.shape)
    layer.weight.data[...] = weight.astype(layer.weight.dtype)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut)``,
    the shortcut ``downsample(x)`` (a strided 1x1 convolution and batch norm) where the shape
    changes, else ``x``. State dict keys as torchvision's: ``conv1.weight``, ``bn1.*``,
    ``conv2.weight``, ``bn2.*``, ``downsample.0.weight``, ``downsample.1.*``.

    It is also an example of a user's own :class:`fastconv.nn.Module` with ``forward`` and
    ``backward`` (see docs/custom_modules.md): the first ReLU is fused into ``bn1``, the sum
    and the second ReLU into ``bn2`` (:meth:`fastconv.nn.BatchNorm2d.forward_residual`), and
    the gradient of the sum goes both ways.

    Parameters
    ----------
    in_channels, channels : int
    stride : int, default 1
    dtype : float32 or float64
    seed : int, Generator or None
    algorithm : {'auto', 'direct', 'winograd'}, default 'auto'
        The 3x3 convolutions' (:class:`fastconv.nn.Conv2d`).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 dtype: DTypeLike = np.float32, seed: Seed = None,
                 algorithm: ConvAlgorithm = "auto") -> None:
        super().__init__()
        rng = nn._make_rng(seed)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False,
                               dtype=dtype, seed=rng, algorithm=algorithm)
        self.bn1 = nn.BatchNorm2d(channels, dtype=dtype)
        self.bn1.fused_relu = True
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, dtype=dtype,
                               seed=rng, algorithm=algorithm)
        self.bn2 = nn.BatchNorm2d(channels, dtype=dtype)
        self.downsample = None
        convolutions = [self.conv1, self.conv2]
        if stride != 1 or in_channels != channels:
            projection = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False,
                                   dtype=dtype, seed=rng)
            self.downsample = nn.Sequential(projection, nn.BatchNorm2d(channels, dtype=dtype))
            convolutions.append(projection)
        for layer in convolutions:
            _kaiming_normal_fan_out(layer, rng)

    def forward(self, x: np.ndarray) -> np.ndarray:
        shortcut = x if self.downsample is None else self.downsample(x)
        # bn2, the sum and the ReLU in one pass
        return self.bn2.forward_residual(self.conv2(self.bn1(self.conv1(x))), shortcut)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True) -> np.ndarray:
        grad_main, grad_shortcut = self.bn2.backward_residual(grad_output)
        grad_x = self.conv1.backward(self.bn1.backward(self.conv2.backward(grad_main)))
        if self.downsample is not None:
            grad_shortcut = self.downsample.backward(grad_shortcut)
        add_inplace(grad_x, grad_shortcut)  # grad_x += grad_shortcut, on the threads
        return grad_x


class ResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` stages with torchvision's names (``conv1``, ``bn1``,
    ``layer1`` .. ``layerK``, ``fc``).

    Parameters
    ----------
    blocks : sequence of int
        Blocks per stage; the first stage keeps the resolution, each later one halves it.
    widths : sequence of int
        Channels per stage.
    in_channels, num_classes : int
    stem : {'imagenet', 'small'}
        'imagenet': torchvision's 7x7 stride-2 convolution and 3x3 stride-2 max pooling;
        'small': a 3x3 convolution at full resolution (for 28x28 or 32x32 images).
    stem_width : int or None
        Channels of the stem (defaults to ``widths[0]``).
    pool_size : int, default 1
        The head averages each channel over a ``pool_size`` x ``pool_size`` grid (1: global
        average pooling, torchvision's) before ``fc``.
    dtype, seed
    algorithm : {'auto', 'direct', 'winograd'}, default 'auto'
        The blocks' 3x3 convolutions' (:class:`fastconv.nn.Conv2d`): ``'winograd'`` runs the
        stride-1 ones (and their input gradients) by Winograd. The stem keeps ``'auto'`` (with
        one input channel, Winograd's transforms cost more than they save).
    """

    def __init__(self, blocks: list[int], widths: list[int], in_channels: int = 3,
                 num_classes: int = 1000, stem: str = "imagenet", stem_width: int | None = None,
                 dtype: DTypeLike = np.float32, seed: Seed = 0, pool_size: int = 1,
                 algorithm: ConvAlgorithm = "auto") -> None:
        super().__init__()
        rng = nn._make_rng(seed)
        width = widths[0] if stem_width is None else stem_width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False,
                                   dtype=dtype, seed=rng)
        elif stem == "small":
            self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False, dtype=dtype,
                                   seed=rng)
        else:
            raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}")
        _kaiming_normal_fan_out(self.conv1, rng)
        self.bn1 = nn.BatchNorm2d(width, dtype=dtype)
        self.bn1.fused_relu = True
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else None
        in_width = width
        self.stages = []
        for index, (count, out_width) in enumerate(zip(blocks, widths)):
            layers = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(BasicBlock(in_width, out_width, stride, dtype=dtype, seed=rng,
                                         algorithm=algorithm))
                in_width = out_width
            stage = nn.Sequential(*layers)
            setattr(self, f"layer{index + 1}", stage)
            self.stages.append(stage)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_width * pool_size * pool_size, num_classes, dtype=dtype,
                            seed=rng)

    def _layers(self) -> list[nn.Module]:
        stem = [self.conv1, self.bn1] + ([self.maxpool] if self.maxpool is not None else [])
        return stem + self.stages + [self.avgpool, self.flatten, self.fc]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self._layers():
            x = layer(x)
        return x

    @overload
    def backward(self, grad_output: np.ndarray,
                 need_input_grad: Literal[True] = True) -> np.ndarray: ...
    @overload
    def backward(self, grad_output: np.ndarray, need_input_grad: bool) -> np.ndarray | None: ...
    def backward(self, grad_output: np.ndarray,
                 need_input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate; with ``need_input_grad=False`` the stem skips the image gradient."""
        layers = self._layers()
        grad = grad_output
        for layer in reversed(layers[1:]):
            grad = layer.backward(grad)
        return self.conv1.backward(grad, need_input_grad=need_input_grad)


def resnet18(num_classes: int = 1000, in_channels: int = 3, seed: Seed = 0,
             dtype: DTypeLike = np.float32) -> ResNet:
    """ResNet-18 with torchvision's layout and ``state_dict`` keys and shapes (``conv1.weight``,
    ``bn1.running_mean``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ...,
    ``fc.bias``), so weights move both ways with ``torchvision.models.resnet18``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import models
    >>> model = models.resnet18(num_classes=10)
    >>> model(np.zeros((1, 3, 64, 64), dtype=np.float32)).shape
    (1, 10)
    >>> len(model.state_dict())
    122
    """
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], in_channels, num_classes, "imagenet",
                  dtype=dtype, seed=seed)


def small_resnet(seed: Seed = 0, dtype: DTypeLike = np.float32, num_classes: int = 10,
                 in_channels: int = 1, algorithm: ConvAlgorithm = "auto") -> ResNet:
    """A small ResNet for 28x28 images: a 3x3 stem of 32 channels, three stages of one basic
    block each (32 channels at 28x28, 64 at 14x14, 128 at 7x7), average pooling to 2x2 and a
    linear layer; ``build('resnet')``.

    Measured after one epoch of Fashion-MNIST (Adam, lr 2e-3 decayed by a cosine, batch 64,
    standardised inputs): widths 16/32/64 with global pooling reached 87.7% test accuracy,
    24/48/96 88.7%, 32/64/128 89.5%, and 32/64/128 with the 2x2 pooling 90.1%. The recipe
    of ``bench/bench_resnet.py`` (the same with batch 32 and label smoothing 0.1) reached
    90.69%, 90.52% and 90.40% (seeds 0, 1, 2).

    ``algorithm`` is the blocks' 3x3 convolutions' (see :class:`ResNet`).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import models
    >>> models.build("resnet", seed=0)(np.zeros((2, 1, 28, 28), dtype=np.float32)).shape
    (2, 10)
    """
    return ResNet([1, 1, 1], list(SMALL_RESNET_WIDTHS), in_channels, num_classes, "small",
                  dtype=dtype, seed=seed, pool_size=2, algorithm=algorithm)


SMALL_RESNET_WIDTHS = (32, 64, 128)


def nin(num_classes: int = 10, in_channels: int = 1, seed: Seed = 0,
        dtype: DTypeLike = np.float32) -> nn.Sequential:
    """Network in Network as in d2l (for 224x224 images): four NiN blocks (a convolution and
    two 1x1 convolutions, each with ReLU) of 96, 256, 384 and ``num_classes`` channels, 3x3
    stride-2 max pooling between them, dropout before the last, global average pooling.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import models
    >>> models.nin()(np.zeros((1, 1, 224, 224), dtype=np.float32)).shape
    (1, 10)
    """
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed

    def block(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dtype=dtype,
                      seed=rng), nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, 1, dtype=dtype, seed=rng), nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, 1, dtype=dtype, seed=rng), nn.ReLU())

    return nn.Sequential(
        block(in_channels, 96, 11, 4, 0), nn.MaxPool2d(3, stride=2),
        block(96, 256, 5, 1, 2), nn.MaxPool2d(3, stride=2),
        block(256, 384, 3, 1, 1), nn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5, seed=rng),
        block(384, num_classes, 3, 1, 1),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())


MODELS["resnet"] = small_resnet
