"""The exact static type of every public result, pinned with ``assert_type`` (never run).

``mypy --strict`` fails on this file (tests/test_typing.py) if a result's type changes, in
particular if it degrades to ``Any``: mypy lets an ``Any`` into an annotated assignment even
with --disallow-any-expr, so the annotations of tests/typing/user_script.py alone cannot tell.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from typing_extensions import assert_type

import fastconv
from fastconv import datasets, io, models, nn, optim, plot, train


def functional(x: npt.NDArray[np.float32], w: npt.NDArray[np.float32], flag: bool) -> None:
    assert_type(fastconv.conv2d(x, w, None, stride=(1, 2), padding="same"), np.ndarray)
    assert_type(fastconv.conv2d(x, w, padding=((1, 0), (0, 1)), padding_mode="circular"),
                np.ndarray)
    assert_type(fastconv.conv2d_backward(x, x, w, need=("weight",)),
                tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None])
    assert_type(fastconv.corr2d([[1, 2], [3, 4]], [[1]]), np.ndarray)
    assert_type(fastconv.convolve2d(np.eye(3), np.eye(2)), np.ndarray)
    assert_type(fastconv.pad2d(x, (1, 2), mode="wrap"), np.ndarray)
    assert_type(fastconv.pad2d_backward(x, 1, "reflect"), np.ndarray)
    assert_type(fastconv.max_pool2d(x, 2), np.ndarray)
    assert_type(fastconv.max_pool2d(x, 2, return_indices=False), np.ndarray)
    assert_type(fastconv.max_pool2d(x, 2, return_indices=True),
                tuple[np.ndarray, npt.NDArray[np.int64]])
    assert_type(fastconv.max_pool2d(x, 2, 2, 0, 1, False, True),
                tuple[np.ndarray, npt.NDArray[np.int64]])
    assert_type(fastconv.max_pool2d(x, 2, return_indices=flag),
                np.ndarray | tuple[np.ndarray, npt.NDArray[np.int64]])
    pooled, indices = fastconv.max_pool2d(x, (2, 2), return_indices=True)
    assert_type(fastconv.max_pool2d_backward(pooled, indices, x.shape), np.ndarray)
    assert_type(fastconv.avg_pool2d(x, 2, divisor_override=3), np.ndarray)
    assert_type(fastconv.avg_pool2d_backward(pooled, x.shape, 2), np.ndarray)
    assert_type(fastconv.get_num_threads(), int)
    assert_type(fastconv.set_num_threads(2), None)
    with fastconv.threads(2) as count:
        assert_type(count, int)
    assert_type(fastconv.show_config(), None)
    assert_type(fastconv.__version__, str)


def layers(x: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], index: int) -> None:
    model = models.tutorial_net(seed=0)
    assert_type(model, nn.Sequential)
    assert_type(models.lenet5(), nn.Sequential)
    assert_type(models.build("lenet", seed=np.random.default_rng(1)), nn.Module)
    assert_type(model(x), np.ndarray)
    assert_type(model.forward(x), np.ndarray)
    assert_type(model[index], nn.Module)
    assert_type(model[1:], nn.Sequential)
    assert_type(len(model), int)
    assert_type(model.append(nn.ReLU()), nn.Sequential)
    assert_type(model.train(), nn.Sequential)
    assert_type(model.eval(), nn.Sequential)
    assert_type(model.backward(x), np.ndarray)
    assert_type(model.backward(x, need_input_grad=False), np.ndarray | None)
    conv = nn.Conv2d(None, 4, 3, padding="same", padding_mode="reflect", dtype=np.float64)
    assert_type(conv(x), np.ndarray)
    assert_type(conv.backward(x), np.ndarray)
    assert_type(conv.backward(x, need_input_grad=False), np.ndarray | None)
    assert_type(conv.weight, nn.Parameter)
    assert_type(conv.bias, nn.Parameter | None)
    assert_type(conv.weight.data, np.ndarray)
    assert_type(conv.weight.grad, np.ndarray)
    assert_type(conv.weight.shape, tuple[int, ...] | None)
    assert_type(nn.Linear(4, 2)(x), np.ndarray)
    assert_type(nn.MaxPool2d(2).backward(x), np.ndarray)
    assert_type(nn.AvgPool2d(2, ceil_mode=True)(x), np.ndarray)
    assert_type(nn.Flatten()(x), np.ndarray)
    assert_type(nn.Sigmoid()(x), np.ndarray)
    assert_type(nn.Tanh().backward(x), np.ndarray)
    assert_type(nn.Dropout(0.2, seed=3)(x), np.ndarray)
    loss = nn.CrossEntropyLoss()
    assert_type(loss(model(x), labels), float)
    assert_type(loss.backward(), np.ndarray)
    assert_type(nn.MSELoss(reduction="sum")(x, x), float)
    assert_type(model.parameters(), list[nn.Parameter])
    assert_type(list(model.named_parameters()), list[tuple[str, nn.Parameter]])
    assert_type(model.modules(), list[nn.Module])
    assert_type(model.state_dict(), dict[str, np.ndarray])
    assert_type(model.load_state_dict(model.state_dict(), strict=False), None)
    assert_type(model.zero_grad(), None)
    for layer in model:
        assert_type(layer, nn.Module)


def training(images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64]) -> None:
    model = models.tutorial_net()
    optimizer = optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True)
    schedule = optim.CosineAnnealingLR(optimizer, T_max=3)
    assert_type(optimizer.step(), None)
    assert_type(optimizer.lr, float)
    assert_type(schedule.get_last_lr(), list[float])
    history = train.fit(model, images, labels, loss=nn.CrossEntropyLoss(), optimizer=optimizer,
                        scheduler=schedule, validation=(images, labels),
                        callback=lambda record: print(record["loss"]))
    assert_type(history, list[train.EpochRecord])
    assert_type(history[0]["loss"], float)
    assert_type(history[0]["accuracy"], float | None)
    assert_type(train.evaluate(model, images, labels), float)
    assert_type(train.predict(model, images), np.ndarray)
    assert_type(train.standardize(images), tuple[np.ndarray, float, float])
    assert_type(train.prepare_images(images, np.float64), np.ndarray)


def files(model: nn.Sequential) -> None:
    assert_type(datasets.cache_dir(), str)
    assert_type(datasets.find_data("mnist"), tuple[str, dict[str, str]] | None)
    (train_images, train_labels), _ = datasets.load_fashion_mnist(download=False)
    assert_type(train_images, npt.NDArray[np.uint8])
    assert_type(train_labels, npt.NDArray[np.int64])
    assert_type(datasets.read_idx("labels.gz"), np.ndarray)
    assert_type(io.save(model, "model.npz"), str)
    assert_type(io.load(model, "model.npz"), nn.Sequential)
    assert_type(fastconv.load(nn.Conv2d(1, 2, 3), "conv.npz"), nn.Conv2d)
    assert_type(plot.feature_maps(np.zeros((2, 4, 4)), "maps.png"), str)
    assert_type(plot.layer_feature_maps(model[:1], np.zeros((28, 28)), "layer.png"), str)
