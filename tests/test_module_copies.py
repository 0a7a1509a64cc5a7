"""A pickled or copied module carries its state (parameters, buffers, settings), not what the
last forward kept for its backward."""

import copy
import pickle

import numpy as np
import pytest

import fastconv
from fastconv import nn


def _models():
    return {
        "seed": fastconv.models.build("seed"),
        "lenet": fastconv.models.build("lenet"),
        "small_resnet": fastconv.models.small_resnet(),
        # the other layers that keep something: indices, masks, splits, a loss's gradient
        "branches": nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(),
            nn.Concat(nn.Identity(), nn.Conv2d(4, 2, 1)),
            nn.MaxPool2d(2, return_indices=False), nn.Dropout(0.5), nn.AdaptiveMaxPool2d(2),
            nn.Flatten(), nn.Linear(24, 10)),
    }


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_pickle_leaves_the_kept_arrays_behind(name, mode):
    model = _models()[name]
    fresh = len(pickle.dumps(model))
    model.train(mode == "train")
    x = np.random.default_rng(0).standard_normal((16, 1, 28, 28), dtype=np.float32)
    out = model(x)
    loss = nn.CrossEntropyLoss()
    loss(out, np.arange(16) % 10)
    model.backward(loss.backward())
    # the kept arrays of a batch of 16 are tens of kilobytes at least
    assert len(pickle.dumps(model)) <= fresh + 4096
    assert len(pickle.dumps(loss)) < 1024


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_a_copy_computes_as_the_original_and_its_backward_needs_a_forward(copier):
    model = fastconv.models.build("lenet")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 1, 28, 28), dtype=np.float32)
    out = model(x)
    twin = copier(model)
    with pytest.raises(RuntimeError, match="before forward"):
        twin.backward(np.ones_like(out))
    # the original still has what it kept, untouched by the copy
    grad = model.backward(np.ones_like(out))
    twin_out = twin(x)
    twin_grad = twin.backward(np.ones_like(out))
    assert np.array_equal(twin_out, out) and np.array_equal(twin_grad, grad)
    for (key, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert np.array_equal(a, b), key
