"""Command line: ``python -m fastconv {train,bench,info}`` (also installed as ``fastconv``).

Examples
--------
Train the tutorial network for one epoch on Fashion-MNIST and save it::

    python -m fastconv train --threads 2 --save seed.npz

LeNet-5 for ten epochs::

    python -m fastconv train --model lenet --epochs 10 --save lenet.npz
"""

import argparse
import sys

__all__ = ["main"]

_DEFAULT_SAVE = "fastconv-{model}.npz"


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _parser():
    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="fastconv: Cython + OpenMP 2-D convolution and pooling for NumPy.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{train,bench,info}")
    commands.required = True

    train = commands.add_parser(
        "train", help="train a CNN on Fashion-MNIST and report its test accuracy",
        description="Train a CNN on Fashion-MNIST (or MNIST): prints progress, per-epoch "
                    "loss and accuracy and the final test accuracy, and saves the model.")
    train.add_argument("--model", choices=["seed", "lenet"], default="seed",
                       help="'seed': Conv2d(1,16,5,stride=2)-ReLU-MaxPool2d(2)-Linear(576,20)-"
                            "ReLU-Linear(20,10); 'lenet': LeNet-5 (default: seed)")
    train.add_argument("--epochs", type=_positive_int, default=1, help="default: 1")
    train.add_argument("--batch-size", type=_positive_int, default=64, help="default: 64")
    train.add_argument("--lr", type=_non_negative_float, default=0.05,
                       help="SGD learning rate (default: 0.05)")
    train.add_argument("--momentum", type=_non_negative_float, default=0.9,
                       help="SGD momentum (default: 0.9)")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    train.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                       help="learning rate over the run: 'cosine' decays it from --lr to 0 "
                            "batch by batch (optim.CosineAnnealingLR); 'constant' keeps "
                            "--lr (default: cosine)")
    train.add_argument("--no-standardize", dest="standardize", action="store_false",
                       help="feed the images as x/255 in [0, 1] instead of standardising them "
                            "with the training set's mean and standard deviation")
    train.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                       help="SGD weight decay (default: 0)")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="threads for the kernels and BLAS (default: the OpenMP default)")
    train.add_argument("--seed", type=int, default=0,
                       help="seed of the initial weights and the shuffling (default: 0)")
    train.add_argument("--save", metavar="PATH", default=None,
                       help=f"where to save the trained model as .npz (default: "
                            f"{_DEFAULT_SAVE.format(model='MODEL')}; '' to not save)")
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


def _train(args):
    import fastconv

    from . import datasets, io, models, optim, train

    loader = {"fashion-mnist": datasets.load_fashion_mnist, "mnist": datasets.load_mnist}
    try:
        (X_train, y_train), (X_test, y_test) = loader[args.dataset](
            args.data, download=not args.no_download)
    except (datasets.DatasetNotFoundError, datasets.CorruptDatasetError) as exc:
        print(f"fastconv train: {exc}", file=sys.stderr)
        return 1
    if args.limit is not None:
        X_train, y_train = X_train[:args.limit], y_train[:args.limit]
    threads = args.threads if args.threads is not None else fastconv.get_num_threads()
    model = models.build(args.model, seed=args.seed)
    if args.nesterov and args.momentum == 0:
        print("fastconv train: --nesterov needs a --momentum above 0", file=sys.stderr)
        return 2
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, nesterov=args.nesterov)
    scheduler = None
    if args.schedule == "cosine":
        batches = -(-len(X_train) // args.batch_size)
        scheduler = optim.CosineAnnealingLR(optimizer, T_max=args.epochs * batches)
    print(f"{args.dataset}: {len(X_train)} training and {len(X_test)} test images "
          f"of {X_train.shape[1]}x{X_train.shape[2]}")
    if args.standardize:
        # The test set is scaled with the training set's statistics, as it would be in use.
        X_train, mean, std = train.standardize(X_train)
        X_test, _, _ = train.standardize(X_test, mean, std)
        print(f"inputs standardised: (x/255 - {mean:.4f}) / {std:.4f}, the training set's mean "
              f"and standard deviation (the trained model expects its inputs scaled so)")
    print(f"model {args.model}:\n{model}")
    print(f"SGD lr={args.lr}{' with cosine decay to 0' if scheduler else ''} "
          f"momentum={args.momentum}"
          f"{' (Nesterov)' if args.nesterov else ''} weight_decay={args.weight_decay}, "
          f"batch size {args.batch_size}, {args.epochs} epoch(s), {threads} thread(s)",
          flush=True)

    def report(record):
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
        accuracy = history[-1]["val_accuracy"]
        if accuracy is None:  # interrupted during the last epoch: evaluate what we have
            accuracy = train.evaluate(model, X_test, y_test)
    total = sum(record["seconds"] for record in history)
    print(f"training time {total:.1f} s over {len(history)} epoch(s); "
          f"test accuracy {100 * accuracy:.2f}% ({len(X_test)} images)")
    save = _DEFAULT_SAVE.format(model=args.model) if args.save is None else args.save
    if save:
        io.save(model, save)
        print(f"saved model to {save}")
    return 0


def _bench(argv):
    from . import benchmark  # the lead's module; imported only when asked for

    result = benchmark.main(argv)
    return 0 if result is None else result


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        0 on success, 1 when training data is missing, 2 for bad arguments (argparse).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        # Everything after 'bench' belongs to the benchmark's own parser (including -h).
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "info":
        import fastconv

        fastconv.show_config()
        return 0
    try:
        return _train(args)
    except KeyboardInterrupt:  # a second Ctrl-C, outside the training loop's handling
        print("fastconv train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
