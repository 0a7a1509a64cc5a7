"""Command line: ``fastconv {train,bench,info}`` (also ``python -m fastconv``).

Examples
--------
Train the tutorial network for one epoch on Fashion-MNIST and save it::

    fastconv train --threads 2 --save seed.npz

LeNet-5 for ten epochs::

    fastconv train --model lenet --epochs 10 --save lenet.npz

Exit status: 0 on success, 1 for a run-time failure (missing or unusable data, a file that
cannot be written), 2 for a bad argument, 130 when training was interrupted (Ctrl-C). Every
failure is one message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["main"]

_DEFAULT_SAVE = "fastconv-{model}.npz"
_DEFAULT_LR = {"sgd": 0.05, "adam": 0.002}


class _CommandError(Exception):
    """A failure reported as one line on stderr with an exit status (1: run time, 2: usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (the ``fastconv bench`` parser's too)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_non_negative_int = int_at_least(0)
_positive_int = int_at_least(1)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    from . import models
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="fastconv: Cython + OpenMP 2-D convolution and pooling for NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"fastconv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{train,bench,info}")
    commands.required = True

    train = commands.add_parser(
        "train", help="train a CNN on Fashion-MNIST and report its test accuracy",
        description="Train a CNN on Fashion-MNIST (or MNIST): prints progress, per-epoch "
                    "loss and accuracy and the final test accuracy, and saves the model.")
    train.add_argument("--model", choices=sorted(models.MODELS), default="seed",
                       help="'seed' (or 'tutorial'): Conv2d(1,16,5,stride=2)-ReLU-MaxPool2d(2)-"
                            "Linear(576,20)-ReLU-Linear(20,10); 'lenet' (or 'lenet5'): LeNet-5 "
                            "(default: seed)")
    train.add_argument("--epochs", type=_positive_int, default=1, help="default: 1")
    train.add_argument("--batch-size", type=_positive_int, default=64, help="default: 64")
    train.add_argument("--optimizer", choices=sorted(_DEFAULT_LR), default="sgd",
                       help="'sgd' (optim.SGD with momentum) or 'adam' (optim.Adam, torch's "
                            "defaults; the small ResNet trains best with it) (default: sgd)")
    train.add_argument("--lr", type=_non_negative_float, default=None,
                       help="learning rate (default: 0.05 for sgd, 0.002 for adam)")
    train.add_argument("--momentum", type=_non_negative_float, default=None,
                       help="SGD momentum (default: 0.9; sgd only)")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd only)")
    train.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                       help="learning rate over the run: 'cosine' decays it from --lr to 0 "
                            "batch by batch (optim.CosineAnnealingLR); 'constant' keeps "
                            "--lr (default: cosine)")
    train.add_argument("--no-standardize", dest="standardize", action="store_false",
                       help="feed the images as x/255 in [0, 1] instead of standardising them "
                            "with the training set's mean and standard deviation")
    train.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                       help="SGD weight decay (default: 0)")
    train.add_argument("--algorithm", choices=["auto", "direct", "winograd"], default="auto",
                       help="convolution algorithm of every Conv2d (fastconv.conv2d's "
                            "algorithm=): 'winograd' runs 3x3 stride-1 layers by Winograd; "
                            "default: auto")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="threads for the kernels and BLAS (default: the OpenMP default)")
    train.add_argument("--seed", type=_non_negative_int, default=0,
                       help="seed of the initial weights and the shuffling (default: 0)")
    train.add_argument("--save", metavar="PATH", default=None,
                       help=f"where to save the trained model as .npz (default: "
                            f"{_DEFAULT_SAVE.format(model='MODEL')}; '' to not save). Checked "
                            f"before training; written atomically, and only when training "
                            f"completes")
    train.add_argument("--save-on-interrupt", action="store_true",
                       help="when training is interrupted (Ctrl-C), save the partial model as "
                            "PATH with '.interrupted' before its suffix (never over PATH)")
    train.add_argument("--data", metavar="PATH", default=None,
                       help="directory holding the idx files (default: $FASTCONV_DATA, "
                            "/usr/share/datasets/fashion-mnist, the user cache)")
    train.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist",
                       help="default: fashion-mnist")
    train.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                       help="train on the first N training images only")
    train.add_argument("--no-download", action="store_true",
                       help="fail instead of downloading when the data is not found")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    commands.add_parser("bench", add_help=False,
                        help="time fastconv against NumPy and PyTorch (see 'fastconv bench -h')")
    commands.add_parser("info", help="print version, OpenMP, threads, BLAS and build flags",
                        description="Same as fastconv.show_config().")
    return parser


def _interrupted_path(path: str) -> str:
    """``model.npz`` -> ``model.interrupted.npz``: where a partial model goes, never ``path``."""
    stem, suffix = os.path.splitext(path)
    return f"{stem}.interrupted{suffix or '.npz'}"


def _check_writable(path: str) -> None:
    """Refuse, before any training, a save path whose file could not be written.

    The model is written beside the target under a temporary name and renamed over it, so the
    directory must exist and accept a new file; probing by creating (and removing) one catches
    read-only mounts, missing permissions and pseudo file systems such as /proc alike.
    """
    if os.path.isdir(path):
        raise _CommandError(f"--save {path!r} is a directory; give a file name such as "
                            f"{os.path.join(path, 'model.npz')!r}", status=2)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise _CommandError(f"--save {path!r}: directory {directory!r} does not exist", status=2)
    probe = os.path.join(directory, f".fastconv-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise _CommandError(f"--save {path!r}: cannot write in {directory!r} "
                            f"({exc.strerror or exc})", status=2) from None


def _check_images(name: str, images: Any, labels: Any, classes: int) -> None:
    """The data set must hold 28x28 images (what the models take) and labels in range."""
    import numpy as np

    if images.shape[0] == 0:
        raise _CommandError(f"the {name} set is empty")
    if images.shape[1:] != (28, 28):
        raise _CommandError(f"the {name} images are {images.shape[1]}x{images.shape[2]}; the "
                            f"models take 28x28 images (Fashion-MNIST or MNIST idx files)")
    low, high = int(np.min(labels)), int(np.max(labels))
    if low < 0 or high >= classes:
        raise _CommandError(f"the {name} labels range over {low}..{high}; the models have "
                            f"{classes} classes, 0..{classes - 1}")


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    import fastconv

    from . import datasets, io, models, nn, optim, train

    save = _DEFAULT_SAVE.format(model=args.model) if args.save is None else args.save
    if save:
        _check_writable(save)
        if args.save_on_interrupt:
            _check_writable(_interrupted_path(save))
    elif args.save_on_interrupt:
        raise _CommandError("--save-on-interrupt needs a --save path", status=2)
    if args.optimizer != "sgd" and (args.momentum is not None or args.nesterov):
        raise _CommandError(f"--momentum and --nesterov are SGD's; --optimizer "
                            f"{args.optimizer} does not take them", status=2)
    if args.lr is None:
        args.lr = _DEFAULT_LR[args.optimizer]
    if args.momentum is None:
        args.momentum = 0.9
    if args.nesterov and args.momentum == 0:
        raise _CommandError("--nesterov needs a --momentum above 0", status=2)

    loader = {"fashion-mnist": datasets.load_fashion_mnist, "mnist": datasets.load_mnist}
    try:
        (X_train, y_train), (X_test, y_test) = loader[args.dataset](
            args.data, download=not args.no_download)
    except (datasets.DatasetNotFoundError, datasets.CorruptDatasetError) as exc:
        raise _CommandError(str(exc)) from None
    except OSError as exc:  # unreadable files, a --data that is not a directory, ...
        raise _CommandError(f"cannot read the {args.dataset} data: {exc}") from None
    if args.limit is not None:
        X_train, y_train = X_train[:args.limit], y_train[:args.limit]
    classes = 10
    _check_images("training", X_train, y_train, classes)
    _check_images("test", X_test, y_test, classes)

    threads = args.threads if args.threads is not None else fastconv.get_num_threads()
    model = models.build(args.model, seed=args.seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.algorithm = args.algorithm
    optimizer: optim.SGD | optim.Adam
    if args.optimizer == "adam":
        optimizer = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        name, details = "Adam", ""
    else:
        optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                              weight_decay=args.weight_decay, nesterov=args.nesterov)
        name = "SGD"
        details = f" momentum={args.momentum}{' (Nesterov)' if args.nesterov else ''}"
    scheduler = None
    if args.schedule == "cosine":
        batches = -(-len(X_train) // args.batch_size)
        scheduler = optim.CosineAnnealingLR(optimizer, T_max=args.epochs * batches)
    print(f"{args.dataset}: {len(X_train)} training and {len(X_test)} test images "
          f"of {X_train.shape[1]}x{X_train.shape[2]}")
    if args.standardize:
        # The test set is scaled with the training set's statistics, as it would be in use.
        try:
            X_train, mean, std = train.standardize(X_train)
        except ValueError:  # zero (or no finite) standard deviation
            raise _CommandError("the training images have no spread (all one value), so they "
                                "cannot be standardised; pass --no-standardize to train on "
                                "x/255") from None
        X_test, _, _ = train.standardize(X_test, mean, std)
        print(f"inputs standardised: (x/255 - {mean:.4f}) / {std:.4f}, the training set's mean "
              f"and standard deviation (the trained model expects its inputs scaled so)")
    print(f"model {args.model}:\n{model}")
    print(f"{name} lr={args.lr}{' with cosine decay to 0' if scheduler else ''}{details} "
          f"weight_decay={args.weight_decay}, "
          f"batch size {args.batch_size}, {args.epochs} epoch(s), {threads} thread(s)",
          flush=True)

    def report(record: Mapping[str, Any]) -> None:
        line = (f"epoch {record['epoch']}/{args.epochs}: loss {record['loss']:.4f}, "
                f"train accuracy {100 * record['accuracy']:.2f}%")
        if record["val_accuracy"] is not None:
            line += f", test accuracy {100 * record['val_accuracy']:.2f}%"
        line += f", {record['seconds']:.1f} s ({record['images_per_second']:.0f} img/s)"
        if record.get("interrupted"):
            line += ", interrupted"
        print(line, flush=True)

    with fastconv.threads(threads):
        # The test set is evaluated after every epoch (fit's "validation"); with progress on,
        # fit itself prints each epoch's summary (on stderr, beside the bar).
        history = train.fit(model, X_train, y_train, optimizer=optimizer, epochs=args.epochs,
                            batch_size=args.batch_size, seed=args.seed,
                            validation=(X_test, y_test), progress=not args.quiet,
                            callback=report if args.quiet else None, scheduler=scheduler)
    total = sum(record["seconds"] for record in history)
    images = sum(record["images"] for record in history)
    complete = sum(1 for record in history if not record.get("interrupted"))
    if history and history[-1].get("interrupted"):
        partial = history[-1]["images"]
        print(f"training interrupted after {images} images ({complete} complete epoch(s) and "
              f"{partial} images of epoch {history[-1]['epoch']}) in {total:.1f} s",
              file=sys.stderr)
        if save and args.save_on_interrupt:
            target = _interrupted_path(save)
            io.save(model, target)
            print(f"saved the partial model to {target} ({save} left as it was)",
                  file=sys.stderr)
        else:
            print(f"model not saved{f' ({save} left as it was)' if save else ''}; "
                  f"--save-on-interrupt keeps a partial model", file=sys.stderr)
        return 130
    accuracy = history[-1]["val_accuracy"]
    print(f"training time {total:.1f} s over {complete} epoch(s), {images} images; "
          f"test accuracy {100 * accuracy:.2f}% ({len(X_test)} images)")  # type: ignore[operator]  # (validation given: a float)
    if save:
        try:
            io.save(model, save)
        except OSError as exc:  # the directory changed during training
            raise _CommandError(f"cannot save the model to {save!r}: {exc}") from None
        print(f"saved model to {save}")
    return 0


def _bench(argv: list[str]) -> int:
    from . import benchmark  # imported only when asked for: it is the largest module

    result = benchmark.main(argv)
    return 0 if result is None else int(result)


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "bench":
        # Everything after 'bench' belongs to the benchmark's own parser (including -h).
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "info":
        import fastconv

        fastconv.show_config()
        return 0
    return _train(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional

    Returns
    -------
    int
        0 on success, 1 for a run-time failure (data missing or unusable, a file that cannot
        be written), 2 for a bad argument, 130 when interrupted. Failures print one line on
        stderr (argparse's usage line too for bad arguments).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _run(arguments)
        sys.stdout.flush()
        return status
    except _CommandError as exc:
        print(f"fastconv: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        print("fastconv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``fastconv info | head``): end quietly, as cat or ls do.
        # Python would also report the failed flush of stdout at exit, so point it at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
