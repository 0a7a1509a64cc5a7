"""Mini-batch training and evaluation loops for :mod:`fastconv.nn` models.

Images given as uint8 (as the data set loaders return them) are scaled to [0, 1] in the
model's dtype (float32 unless its parameters are float64), and a stack of single-channel
images (N, H, W) gets its channel axis, (N, 1, H, W); see :func:`prepare_images`.

Examples
--------
>>> from fastconv import datasets, models, optim, train
>>> (X, y), (X_test, y_test) = datasets.load_fashion_mnist()            # doctest: +SKIP
>>> model = models.tutorial_net(seed=0)
>>> opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
>>> history = train.fit(model, X, y, optimizer=opt, epochs=1)             # doctest: +SKIP
>>> train.evaluate(model, X_test, y_test)                                 # doctest: +SKIP
0.87...
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TypedDict

import numpy as np

from .nn import CrossEntropyLoss, Module, backward_without_input_grad
from ._typing import ArrayLike, DTypeLike, LossLike, OptimizerLike, SchedulerLike
from .optim import SGD

__all__ = ["fit", "evaluate", "predict", "prepare_images", "standardize", "EpochRecord"]


class _Interrupted(TypedDict, total=False):
    interrupted: bool  # True only in the last record of a run stopped by Ctrl-C


class EpochRecord(_Interrupted):
    """One epoch of :func:`fit`'s history (a plain dict at run time)."""

    epoch: int
    loss: float
    accuracy: float | None
    val_accuracy: float | None
    seconds: float
    images: int
    images_per_second: float


def _model_dtype(model):
    for parameter in model.parameters():
        if parameter.data is not None:
            return parameter.data.dtype
    for module in model.modules():  # layers whose size is inferred still know their dtype
        if isinstance(getattr(module, "dtype", None), np.dtype):
            return module.dtype
    return np.dtype(np.float32)


def prepare_images(X: ArrayLike, dtype: DTypeLike = np.float32) -> np.ndarray:
    """Turn a batch of images into model input.

    uint8 values 0..255 become ``dtype`` values in [0, 1] (divided by 255, as torchvision's
    ``ToTensor``); a 3-D stack (N, H, W) becomes (N, 1, H, W). Anything else is returned as
    an array unchanged (the layers convert it).

    Parameters
    ----------
    X : array_like
    dtype : float32 or float64, default float32

    Returns
    -------
    numpy.ndarray
    """
    X = np.asarray(X)
    if X.dtype == np.uint8:
        X = np.divide(X, 255, dtype=dtype)
    if X.ndim == 3:
        X = X[:, np.newaxis]
    return X


def standardize(X: ArrayLike, mean: float | None = None, std: float | None = None,
                dtype: DTypeLike = np.float32) -> tuple[np.ndarray, float, float]:
    """Images shifted and scaled to zero mean and unit variance: ``(x - mean) / std``.

    ``X`` goes through :func:`prepare_images` first (uint8 becomes [0, 1]), so ``mean`` and
    ``std`` are on that scale. Leave them out to take them from ``X`` itself (do so on the
    training set, then pass the same two values for the test set), as torchvision's
    ``Normalize`` with the data set's statistics.

    Parameters
    ----------
    X : array_like
        Images; uint8 or floating point.
    mean, std : float, optional
        Default: the mean and standard deviation of all of ``X`` (computed in float64).
    dtype : float32 or float64, default float32

    Returns
    -------
    (numpy.ndarray, float, float)
        The standardised images (a new array of ``dtype``), ``mean`` and ``std``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import train
    >>> X = np.array([[[0, 255]], [[255, 0]]], dtype=np.uint8)
    >>> Z, mean, std = train.standardize(X)
    >>> Z.ravel(), mean, std
    (array([-1.,  1.,  1., -1.], dtype=float32), 0.5, 0.5)
    """
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    X = np.asarray(X)
    images = prepare_images(X, dtype)
    if mean is None:
        mean = float(np.mean(images, dtype=np.float64))
    if std is None:
        std = float(np.std(images, dtype=np.float64))
    mean, std = float(mean), float(std)
    if not np.isfinite(mean) or not np.isfinite(std) or not std > 0:
        raise ValueError(f"standardize needs a finite mean and a positive finite std, got "
                         f"mean={mean}, std={std}")
    # uint8 images were just converted into a new array, which can be reused; anything else
    # is the caller's and is copied.
    out = images if X.dtype == np.uint8 else np.array(images, dtype=dtype, copy=True)
    out -= out.dtype.type(mean)
    out /= out.dtype.type(std)
    return out, mean, std


def _check_xy(X, y, name="X"):
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 2:
        raise ValueError(f"{name} must be a batch of samples (N, ...), got shape {X.shape}")
    if y.ndim < 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"{name} has {X.shape[0]} samples but the targets have shape {y.shape}")
    return X, y


def _check_samples(X: np.ndarray, name: str) -> None:
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} has unsupported dtype {X.dtype}; samples must be numbers")


def _probe(model: Module, X: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The model's output for the first sample of ``X``, in evaluation mode (modes restored).

    A model with layers whose size is still inferred is probed on a copy, so that nothing in
    ``model`` changes before training starts."""
    lazy = any(parameter.data is None for parameter in model.parameters())
    probe = copy.deepcopy(model) if lazy else model
    modes = [(module, module.training) for module in probe.modules()]
    probe.eval()
    try:
        return np.asarray(probe(prepare_images(X[:1], dtype)))
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)


def _check_labels(y: np.ndarray, output: np.ndarray, name: str) -> None:
    """Class labels for ``output`` (one sample's logits, classes on axis 1): integers (not
    bool), of the output's extra axes, each in [0, classes)."""
    if y.dtype.kind == "b":
        raise TypeError(f"{name} are bool; class labels must be integers 0 .. classes-1")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer class labels, got dtype {y.dtype}")
    if output.ndim < 2:
        raise ValueError(f"the model's output has shape {output.shape} for one sample; class "
                         "labels need logits (N, classes, ...)")
    classes = output.shape[1]
    if y.shape[1:] != output.shape[2:]:
        raise ValueError(f"{name} have shape {y.shape}; for the model's output of shape "
                         f"(N,) + {output.shape[1:]} they must have shape "
                         f"(N,) + {output.shape[2:]}")
    if y.size:
        low, high = y.min(), y.max()
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise ValueError(f"{name} hold label {int(bad)}, outside [0, {classes}) (the "
                             f"model outputs {classes} classes)")


def _check_positive(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def predict(model: Module, X: ArrayLike, batch_size: int = 256) -> np.ndarray:
    """Model outputs for every sample of ``X``, computed in evaluation mode, batch by batch.

    The model's train/eval modes are restored afterwards.

    Parameters
    ----------
    model : fastconv.nn.Module
    X : array_like
        Samples (N, ...); uint8 images are scaled as in :func:`prepare_images`.
    batch_size : int, default 256

    Returns
    -------
    numpy.ndarray
        Outputs stacked along axis 0.
    """
    batch_size = _check_positive(batch_size, "batch_size")
    X = np.asarray(X)
    dtype = _model_dtype(model)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        outputs = [model(prepare_images(X[start:start + batch_size], dtype))
                   for start in range(0, X.shape[0], batch_size)]
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
    if not outputs:
        return np.empty((0,), dtype=dtype)
    return np.concatenate(outputs)


def evaluate(model: Module, X: ArrayLike, y: ArrayLike, batch_size: int = 256) -> float:
    """Classification accuracy of ``model`` on ``(X, y)``: the fraction of argmax hits.

    Parameters
    ----------
    model : fastconv.nn.Module
        Outputs (N, classes) logits; evaluated in eval mode, modes restored afterwards.
    X : array_like
        Samples; uint8 images are scaled to [0, 1] and get a channel axis.
    y : array_like of int
        Class labels (N,).
    batch_size : int, default 256

    Returns
    -------
    float
        Accuracy in [0, 1] (NaN for an empty set).
    """
    X, y = _check_xy(X, y)
    _check_samples(X, "X")
    if X.shape[0] == 0:
        return float("nan")
    batch_size = _check_positive(batch_size, "batch_size")
    correct = 0
    dtype = _model_dtype(model)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        for start in range(0, X.shape[0], batch_size):
            output = model(prepare_images(X[start:start + batch_size], dtype))
            if start == 0:  # every label checked before one counts (or misses)
                _check_labels(y, output, "labels")
            correct += int(np.count_nonzero(output.argmax(axis=1) == y[start:start + batch_size]))
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
    return correct / X.shape[0]


@contextlib.contextmanager
def _stop_at_batch_end():
    """Turn the first Ctrl-C into a request to stop after the current batch.

    A batch interrupted half-way would leave some parameters updated and others not; with
    this, the first SIGINT only sets a flag that the loop checks between batches. A second
    Ctrl-C raises KeyboardInterrupt at once. Only the main thread can own signal handlers;
    elsewhere (or under a custom handler) Ctrl-C raises as usual and the loop catches it.
    """
    state = {"requested": False}
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield state
        return

    def handler(signum, frame):
        if state["requested"]:
            raise KeyboardInterrupt
        state["requested"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


class _Progress:
    """A tqdm bar on a terminal, a line every ~10% of an epoch otherwise, nothing when off."""

    def __init__(self, enabled, total, epoch, epochs, stream):
        self.total = total
        self.prefix = f"epoch {epoch}/{epochs}"
        self.stream = stream
        self.bar = None
        self.enabled = enabled
        self.seen = 0
        self.next_line = 0.1
        self.start = time.perf_counter()
        if enabled and _isatty(stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.prefix, unit="img", unit_scale=True,
                            file=stream, leave=True, dynamic_ncols=True, mininterval=0.25)

    def update(self, count, running_loss, batch_index):
        self.seen += count
        if not self.enabled:
            return
        if self.bar is not None:
            if batch_index % 10 == 0 or self.seen == self.total:
                self.bar.set_postfix(loss=f"{running_loss:.4f}", refresh=False)
            self.bar.update(count)
        elif self.total and self.seen / self.total >= self.next_line and self.seen < self.total:
            self.next_line = (int(self.seen * 10 / self.total) + 1) / 10
            rate = self.seen / max(time.perf_counter() - self.start, 1e-9)
            print(f"{self.prefix}: {100 * self.seen / self.total:3.0f}% "
                  f"{self.seen}/{self.total} images, loss {running_loss:.4f}, "
                  f"{rate:.0f} img/s", file=self.stream, flush=True)

    def close(self, record):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        print(f"{self.prefix}: {_summary(record)}", file=self.stream, flush=True)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _summary(record):
    parts = [f"loss {record['loss']:.4f}"]
    if record["accuracy"] is not None:
        parts.append(f"accuracy {100 * record['accuracy']:.2f}%")
    if record["val_accuracy"] is not None:
        parts.append(f"val_accuracy {100 * record['val_accuracy']:.2f}%")
    parts.append(f"{record['seconds']:.1f} s ({record['images_per_second']:.0f} img/s)")
    if record.get("interrupted"):
        parts.append(f"interrupted after {record['images']} images")
    return ", ".join(parts)


def fit(model: Module, X: ArrayLike, y: ArrayLike, *, loss: LossLike | None = None,
        optimizer: OptimizerLike | None = None, epochs: int = 1, batch_size: int = 64,
        shuffle: bool = True, seed: int | None = 0,
        validation: tuple[ArrayLike, ArrayLike] | None = None, progress: bool = True,
        callback: Callable[[EpochRecord], object] | None = None,
        scheduler: SchedulerLike | None = None) -> list[EpochRecord]:
    """Train ``model`` on ``(X, y)`` with mini-batches.

    Each step: forward, loss, ``optimizer.zero_grad()``, ``model.backward(loss.backward())``
    (the first layer is told that the images need no gradient), ``optimizer.step()``.
    The model is put in training mode and left in it.

    Parameters
    ----------
    model : fastconv.nn.Module
    X : array_like
        Training samples (N, ...). uint8 images are scaled to [0, 1] in the model's dtype
        (float32 by default) one batch at a time, and (N, H, W) gets a channel axis.
    y : array_like
        Targets: int class labels (N,) for classification.
    loss : fastconv.nn.Module, optional
        Default :class:`fastconv.nn.CrossEntropyLoss`.
    optimizer : optional
        Anything with ``zero_grad()`` and ``step()``; default
        ``optim.SGD(model.parameters(), lr=0.05, momentum=0.9)``.
    epochs : int, default 1
    batch_size : int, default 64
        The last batch of an epoch may be smaller.
    shuffle : bool, default True
        A new order every epoch, drawn from ``seed``.
    seed : int, default 0
    validation : (X_val, y_val), optional
        Accuracy on it is measured after every epoch.
    progress : bool, default True
        On a terminal, a tqdm progress bar with the running loss and images/s on stderr; when
        stderr is not a terminal, a plain line every ~10% of an epoch. Either way, a summary
        line per epoch.
    callback : callable, optional
        Called with each epoch's record as soon as it is complete.
    scheduler : optional
        A learning-rate schedule such as :class:`fastconv.optim.CosineAnnealingLR`: its
        ``step()`` is called after every ``optimizer.step()``, once per batch (so its
        ``T_max`` counts batches: ``epochs * ceil(N / batch_size)`` decays over the whole run).

    Returns
    -------
    list of dict
        One record per epoch: ``epoch``, ``loss`` (mean over the epoch's samples),
        ``accuracy`` (training accuracy seen during the epoch, None when the targets are not
        class labels), ``val_accuracy`` (None without ``validation``), ``seconds`` (training
        time of the epoch, validation excluded), ``images`` and ``images_per_second``.

    Notes
    -----
    Ctrl-C stops training cleanly: the current batch is finished (a second Ctrl-C stops at
    once), the model stays usable, and the history so far is returned, its last record marked
    ``interrupted=True`` and covering the images seen in that epoch.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a fastconv.nn.Module, got {type(model).__name__}")
    X, y = _check_xy(X, y)
    _check_samples(X, "X")
    epochs = _check_positive(epochs, "epochs")
    batch_size = _check_positive(batch_size, "batch_size")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError("validation must be a pair (X_val, y_val)")
        validation = _check_xy(*validation, name="validation X")
        _check_samples(validation[0], "validation X")
        if validation[0].shape[1:] != X.shape[1:]:
            raise ValueError(f"validation X has samples of shape {validation[0].shape[1:]}, X "
                             f"has {X.shape[1:]}")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler must have a step() method, got {type(scheduler).__name__}")
    loss = CrossEntropyLoss() if loss is None else loss
    # Every label checked before the first optimizer step, against the classes the model
    # outputs (one sample's forward pass in evaluation mode), not batch by batch.
    int_targets = isinstance(loss, CrossEntropyLoss) and y.dtype.kind in "iub"
    checked = ([(y, "labels y")] if int_targets and X.shape[0] else []) + (
        [(validation[1], "validation labels")]
        if validation is not None and validation[0].shape[0] else [])
    if checked:
        probe = X if X.shape[0] or validation is None else validation[0]
        output = _probe(model, probe, _model_dtype(model))
        for labels, name in checked:
            _check_labels(labels, output, name)
    if optimizer is None:
        optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    classify = y.ndim == 1 and y.dtype.kind in "iu"
    count = X.shape[0]
    rng = np.random.default_rng(seed)
    stream = sys.stderr
    history: list[EpochRecord] = []
    model.train()
    with _stop_at_batch_end() as interrupt:
        for epoch in range(1, epochs + 1):
            order = rng.permutation(count) if shuffle else None
            bar = _Progress(progress, count, epoch, epochs, stream)
            loss_sum = 0.0
            correct = 0
            seen = 0
            stopped = False
            dtype = _model_dtype(model)
            start = time.perf_counter()
            try:
                for batch_index, first in enumerate(range(0, count, batch_size)):
                    if order is None:
                        rows = slice(first, first + batch_size)
                    else:
                        rows = np.sort(order[first:first + batch_size])
                    inputs = prepare_images(X[rows], dtype)
                    targets = y[rows]
                    output = model(inputs)
                    value = loss(output, targets)
                    optimizer.zero_grad()
                    backward_without_input_grad(model, loss.backward())
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    size = targets.shape[0]
                    loss_sum += value * size
                    seen += size
                    if classify:
                        correct += int(np.count_nonzero(output.argmax(axis=1) == targets))
                    bar.update(size, loss_sum / seen, batch_index)
                    if interrupt["requested"]:
                        stopped = True
                        break
            except KeyboardInterrupt:
                stopped = True
            seconds = time.perf_counter() - start
            record: EpochRecord = {
                "epoch": epoch,
                "loss": loss_sum / seen if seen else float("nan"),
                "accuracy": (correct / seen if seen else float("nan")) if classify else None,
                "val_accuracy": None,
                "seconds": seconds,
                "images": seen,
                "images_per_second": seen / seconds if seconds > 0 else float("nan"),
            }
            if stopped:
                record["interrupted"] = True
                if bar.bar is not None:
                    bar.bar.close()
                    bar.bar = None
                if progress:
                    print(f"epoch {epoch}/{epochs}: interrupted, stopping; the model keeps the "
                          f"weights of the last completed batch", file=stream, flush=True)
            elif validation is not None:
                model_mode = model.training
                X_val, y_val = validation
                record["val_accuracy"] = evaluate(model, X_val, y_val,
                                                  batch_size=max(batch_size, 256))
                model.train(model_mode)
            history.append(record)
            bar.close(record)
            if callback is not None:
                callback(record)
            if stopped:
                break
    return history
