"""A user's script, type-checked by `mypy --strict` in CI (tests/test_typing.py).

It touches every public module the way a user would; `reveal_type` is avoided so that the file
also runs. With mypy's --disallow-any-expr (the test runs it on this file too), a result that
is unpacked or assigned without an annotation fails if it is typed `Any`; mypy lets an `Any`
into an annotated assignment even then, so tests/typing/assert_types.py pins each result's
exact type with `assert_type`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import fastconv
from fastconv import datasets, io, models, nn, optim, plot, train

x: npt.NDArray[np.float32] = np.ones((2, 1, 28, 28), np.float32)
w = np.ones((4, 1, 3, 3), np.float32)

y: np.ndarray = fastconv.conv2d(x, w, None, stride=1, padding=1)
gx, gw, gb = fastconv.conv2d_backward(y, x, w, padding=1)
edges: np.ndarray = fastconv.corr2d(np.eye(5), [[1.0, -1.0]])
flipped: np.ndarray = fastconv.convolve2d(np.eye(5), [[1.0, -1.0]])
padded: np.ndarray = fastconv.pad2d(x, 2, mode="reflect")
back: np.ndarray = fastconv.pad2d_backward(padded, 2)
pooled, indices = fastconv.max_pool2d(x, 2, return_indices=True)
only: np.ndarray = fastconv.max_pool2d(x, 2)
grad_pool: np.ndarray = fastconv.max_pool2d_backward(pooled, indices, x.shape)
avg: np.ndarray = fastconv.avg_pool2d(x, 2, ceil_mode=True)
grad_avg: np.ndarray = fastconv.avg_pool2d_backward(avg, x.shape, 2, ceil_mode=True)
count: int = fastconv.get_num_threads()
fastconv.set_num_threads(count)
with fastconv.threads(1):
    fastconv.show_config()
version: str = fastconv.__version__

model: nn.Sequential = models.tutorial_net(seed=0)
lenet: nn.Module = models.build("lenet", seed=1)
layer = nn.Conv2d(1, 4, 3, padding=1, seed=0)
out: np.ndarray = layer(x)
grad_in: np.ndarray | None = layer.backward(np.ones_like(out))
loss = nn.CrossEntropyLoss()
value: float = loss(model(x), np.array([1, 2]))
model.backward(loss.backward())
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
schedule = optim.CosineAnnealingLR(optimizer, T_max=10)
optimizer.step()
schedule.step()
optimizer.zero_grad()
state: dict[str, np.ndarray] = model.state_dict()
model.load_state_dict(state)
parameters: list[nn.Parameter] = list(model.parameters())

images = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
labels = np.arange(8) % 10
history: list[train.EpochRecord] = train.fit(model, images, labels, optimizer=optimizer,
                                             epochs=1, batch_size=4, progress=False)
accuracy: float = train.evaluate(model, images, labels)
scores: np.ndarray = train.predict(model, images)
standardised, mean, std = train.standardize(images + 1)
prepared: np.ndarray = train.prepare_images(images)

found = datasets.find_data("fashion-mnist")
path_str: str = datasets.cache_dir()
if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        io.save(model, f"{tmp}/m.npz")
        fastconv.load(model, f"{tmp}/m.npz")
        plot.feature_maps([x[0, 0, :, :], y[0, 0, :, :]], f"{tmp}/maps.png", titles=["x", "y"])
