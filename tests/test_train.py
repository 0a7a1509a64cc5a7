"""train.fit / evaluate / predict: learning, history, progress output, Ctrl-C, determinism."""

import signal

import numpy as np
import pytest

from fastconv import models, nn, optim, train


def blobs(rng, count=600, features=8, classes=3):
    """Well separated Gaussian blobs: any reasonable training reaches high accuracy."""
    centres = rng.standard_normal((classes, features)) * 4
    labels = rng.integers(0, classes, count)
    return (centres[labels] + rng.standard_normal((count, features))).astype(np.float32), labels


def mlp(seed=0):
    return nn.Sequential(nn.Linear(8, 16, seed=seed), nn.ReLU(), nn.Linear(16, 3, seed=seed + 1))


def test_prepare_images():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    prepared = train.prepare_images(images)
    assert prepared.shape == (1, 1, 2, 2) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared[0, 0], [[0, 1], [0.2, 0.4]], rtol=1e-6)
    assert train.prepare_images(images, np.float64).dtype == np.float64
    features = np.ones((4, 3), dtype=np.float64)
    assert train.prepare_images(features) is not None
    assert train.prepare_images(features).shape == (4, 3)


def test_fit_linear_model_learns(rng):
    X, y = blobs(rng, count=800)
    X, y, X_val, y_val = X[:600], y[:600], X[600:], y[600:]
    model = mlp()
    history = train.fit(model, X, y, optimizer=optim.SGD(model, lr=0.05, momentum=0.9),
                        epochs=3, batch_size=32, validation=(X_val, y_val), progress=False)
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "loss", "accuracy", "val_accuracy", "seconds",
                               "images", "images_per_second"}
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["accuracy"] > 0.95 and history[-1]["val_accuracy"] > 0.95
    assert history[0]["images"] == 600 and history[0]["images_per_second"] > 0
    assert train.evaluate(model, X_val, y_val) == history[-1]["val_accuracy"]
    assert train.predict(model, X[:10]).shape == (10, 3)


def test_fit_is_deterministic(rng):
    X, y = blobs(rng, count=200)
    results = []
    for _ in range(2):
        model = mlp(seed=5)
        history = train.fit(model, X, y, optimizer=optim.SGD(model, lr=0.1), epochs=2,
                            batch_size=16, seed=7, progress=False)
        results.append(([r["loss"] for r in history], model.state_dict()))
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        np.testing.assert_array_equal(value, results[1][1][key])


def test_fit_regression_has_no_accuracy(rng):
    X = rng.standard_normal((64, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]])
    model = nn.Sequential(nn.Linear(3, 1, dtype=np.float64, seed=0))
    history = train.fit(model, X, y, loss=nn.MSELoss(), optimizer=optim.SGD(model, lr=0.1),
                        epochs=20, batch_size=16, progress=False)
    assert history[0]["accuracy"] is None
    assert history[-1]["loss"] < 1e-3 * history[0]["loss"]


def test_fit_tutorial_net_loss_falls(rng):
    """A few batches of 28x28 uint8 images through the real network: the loss goes down."""
    labels = rng.integers(0, 2, 256)
    images = rng.integers(0, 60, (256, 28, 28)).astype(np.uint8)
    images[labels == 1, 8:20, 8:20] += 150  # class 1: a bright square
    model = models.tutorial_net(seed=0)
    history = train.fit(model, images, labels, optimizer=optim.SGD(model, lr=0.05, momentum=0.9),
                        epochs=3, batch_size=32, progress=False)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert train.evaluate(model, images, labels) > 0.95


def test_progress_plain_lines(rng, capsys):
    X, y = blobs(rng, count=320)
    train.fit(mlp(), X, y, epochs=2, batch_size=16, validation=(X, y), progress=True)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert any(line.startswith("epoch 1/2:  50% 160/320 images, loss ") for line in lines)
    assert any(line.startswith("epoch 2/2: loss ") and "val_accuracy" in line and "img/s" in line
               for line in lines)
    assert "\r" not in err  # not a terminal: no bar redrawing


def test_progress_bar_on_a_terminal(rng, capsys, monkeypatch):
    monkeypatch.setattr(train, "_isatty", lambda stream: True)
    X, y = blobs(rng, count=128)
    train.fit(mlp(), X, y, epochs=1, batch_size=16, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "img/s" in err and "loss=" in err


def test_no_output_without_progress(rng, capsys):
    X, y = blobs(rng, count=64)
    train.fit(mlp(), X, y, progress=False)
    assert capsys.readouterr().err == ""


class InterruptAt(nn.Module):
    """Wraps a model and interrupts training during a given forward call."""

    def __init__(self, model, at, how):
        super().__init__()
        self.model, self.at, self.how, self.calls = model, at, how, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            if self.how == "signal":
                signal.raise_signal(signal.SIGINT)  # as Ctrl-C does
            else:
                raise KeyboardInterrupt
        return self.model(x)

    def backward(self, grad_output, need_input_grad=True):
        return self.model.backward(grad_output, need_input_grad=need_input_grad)


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_ctrl_c_stops_cleanly(rng, how, capsys):
    X, y = blobs(rng, count=320)
    # batch 4 of epoch 2 (10 batches an epoch, after fit's one-sample forward pass that
    # checks the labels against the model's classes)
    model = InterruptAt(mlp(), at=15, how=how)
    before = signal.getsignal(signal.SIGINT)
    history = train.fit(model, X, y, epochs=5, batch_size=32, progress=True)
    assert signal.getsignal(signal.SIGINT) is before
    assert len(history) == 2 and "interrupted" not in history[0]
    assert history[1]["interrupted"] is True
    # the signal finishes the current batch; an exception abandons it
    assert history[1]["images"] == (4 if how == "signal" else 3) * 32
    assert "interrupted" in capsys.readouterr().err
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    assert train.evaluate(model.model, X, y) > 0.5  # still usable


def test_evaluate_restores_modes(rng):
    model = nn.Sequential(nn.Linear(8, 3, seed=0), nn.Dropout(0.5))
    X, y = blobs(rng, count=50)
    model.train()
    first = train.evaluate(model, X, y)
    assert first == train.evaluate(model, X, y)  # dropout off while evaluating
    assert all(module.training for module in model.modules())
    model.eval()
    train.evaluate(model, X, y, batch_size=7)
    assert not any(module.training for module in model.modules())


def test_argument_errors(rng):
    X, y = blobs(rng, count=20)
    with pytest.raises(ValueError, match="20 samples"):
        train.fit(mlp(), X, y[:10], progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train.fit(mlp(), X, y, epochs=0, progress=False)
    with pytest.raises(TypeError, match="batch_size"):
        train.fit(mlp(), X, y, batch_size=2.5, progress=False)
    with pytest.raises(TypeError, match="validation"):
        train.fit(mlp(), X, y, validation=X, progress=False)
    with pytest.raises(TypeError, match="Module"):
        train.fit(lambda x: x, X, y)


def test_standardize():
    images = np.array([[[0, 255], [51, 102]], [[255, 255], [0, 0]]], dtype=np.uint8)
    scaled = images.astype(np.float64) / 255
    Z, mean, std = train.standardize(images)
    assert Z.shape == (2, 1, 2, 2) and Z.dtype == np.float32
    assert mean == pytest.approx(scaled.mean()) and std == pytest.approx(scaled.std())
    np.testing.assert_allclose(Z[:, 0], (scaled - scaled.mean()) / scaled.std(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(Z.mean(), 0, atol=1e-6)
    np.testing.assert_allclose(Z.std(), 1, rtol=1e-5)
    # The test set takes the training set's statistics.
    W, mean2, std2 = train.standardize(images[:1], mean, std, dtype=np.float64)
    assert (mean2, std2) == (mean, std) and W.dtype == np.float64
    np.testing.assert_allclose(W, Z[:1], rtol=1e-6, atol=1e-6)
    # A float input is the caller's: it is copied, never changed.
    floats = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 1, 2, 2)
    before = floats.copy()
    F, _, _ = train.standardize(floats, 0.5, 0.25)
    np.testing.assert_array_equal(floats, before)
    np.testing.assert_allclose(F, (before - 0.5) / 0.25, rtol=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"std": 0.0}, ValueError, "positive finite std"),
    ({"mean": np.nan}, ValueError, "finite mean"),
    ({"dtype": np.int32}, TypeError, "float32 or float64"),
])
def test_standardize_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        train.standardize(np.zeros((2, 3, 3), dtype=np.uint8) + 7, **kwargs)
    with pytest.raises(ValueError, match="positive finite std"):  # a constant image set
        train.standardize(np.zeros((2, 3, 3), dtype=np.uint8))


def test_fit_steps_the_scheduler_once_per_batch(rng):
    X, y = blobs(rng, count=100)
    model = mlp()
    optimizer = optim.SGD(model, lr=0.1, momentum=0.9)
    batches = 2 * -(-100 // 32)  # two epochs of ceil(100 / 32) batches
    schedule = optim.CosineAnnealingLR(optimizer, T_max=batches)
    lrs = []
    history = train.fit(model, X, y, optimizer=optimizer, scheduler=schedule, epochs=2,
                        batch_size=32, progress=False,
                        callback=lambda record: lrs.append(optimizer.lr))
    assert len(history) == 2 and schedule.last_epoch == batches
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(TypeError, match="scheduler must have a step"):
        train.fit(mlp(), X, y, scheduler=0.5, progress=False)
