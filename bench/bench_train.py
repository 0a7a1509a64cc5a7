"""One training epoch of the tutorial network (or LeNet-5): fastconv against PyTorch.

Both sides train the same architecture from the same initial weights, on the same mini-batches
in the same order, with the recipe of ``python -m fastconv train`` (batch 64, SGD lr 0.05
momentum 0.9 decayed to 0 over the epoch by a per-batch cosine, inputs standardised with the
training set's mean and standard deviation; ``--schedule constant`` and ``--no-standardize``
turn the last two off), with the same number of
threads (``--threads``, default 2, given to ``fastconv.set_num_threads`` and
``torch.set_num_threads``). The two loops run
interleaved, alternating which goes first, and the medians are compared; the epoch time
counts the whole loop (batch preparation, forward, loss, backward, SGD step), not the test
evaluation.

    python bench/bench_train.py                       # tutorial network, one epoch each
    python bench/bench_train.py --model lenet --repeats 3
    python bench/bench_train.py --limit 10000 --repeats 5   # shorter epochs, more of them

The fastconv side is ``fastconv.train.fit`` (what a user runs); the PyTorch side is the usual
hand-written loop over tensors prepared beforehand. Prints per-run times, the medians, the
ratio fastconv / PyTorch (below 1: fastconv is faster) and both test accuracies.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np

from _checkout import use_built_checkout  # noqa: E402

use_built_checkout()

import fastconv  # noqa: E402
from fastconv import datasets, models, optim, train  # noqa: E402


def load_data(limit, path):
    try:
        (X, y), (X_test, y_test) = datasets.load_fashion_mnist(path)
        source = "Fashion-MNIST"
    except datasets.DatasetNotFoundError as exc:
        print(f"({exc.__class__.__name__}: using random images instead of Fashion-MNIST)",
              file=sys.stderr)
        rng = np.random.default_rng(0)
        X = rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, 60000)
        X_test, y_test = X[:10000], y[:10000]
        source = "random images"
    if limit:
        X, y = X[:limit], y[:limit]
    return X, y, X_test, y_test, source


def batches(count, batch_size, seed):
    """The mini-batches train.fit draws for its first epoch (same generator, sorted rows)."""
    order = np.random.default_rng(seed).permutation(count)
    return [np.sort(order[start:start + batch_size]) for start in range(0, count, batch_size)]


def inputs(X, X_test, standardize):
    """Float32 (N, 1, 28, 28) training and test images, as both sides are given them."""
    if not standardize:
        return train.prepare_images(X), train.prepare_images(X_test)
    X, mean, std = train.standardize(X)
    return X, train.standardize(X_test, mean, std)[0]


def fastconv_epoch(model, optimizer, scheduler, X, targets, X_test, y_test, batch_size, seed,
                   accuracy):
    """One epoch of ``fastconv.train.fit`` (what a user runs): (seconds, loss, test accuracy,
    nan unless ``accuracy``); the test evaluation is outside the time."""
    start = time.perf_counter()
    history = train.fit(model, X, targets, optimizer=optimizer, epochs=1, batch_size=batch_size,
                        seed=seed, progress=False, scheduler=scheduler)
    seconds = time.perf_counter() - start
    score = train.evaluate(model, X_test, y_test) if accuracy else float("nan")
    return seconds, history[0]["loss"], score


def torch_epoch(torch, model, optimizer, scheduler, loss_fn, X, y, X_test, y_test, batch_size,
                seed, accuracy):
    """The same epoch as :func:`fastconv_epoch` in PyTorch: the usual hand-written loop over
    tensors prepared beforehand, on the mini-batches ``train.fit`` draws with ``seed``."""
    images = torch.from_numpy(X)  # prepared outside the timing, as for fastconv
    labels = torch.from_numpy(y)
    rows = [torch.from_numpy(batch) for batch in batches(len(X), batch_size, seed)]
    model.train()
    total = 0.0
    start = time.perf_counter()
    for index in rows:
        inputs_, targets = images[index], labels[index]
        optimizer.zero_grad()
        loss = loss_fn(model(inputs_), targets)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(index)
    seconds = time.perf_counter() - start
    score = float("nan")
    if accuracy:
        model.eval()
        with torch.no_grad():
            test = torch.from_numpy(X_test)
            predictions = torch.cat([model(test[i:i + 1000]).argmax(1)
                                     for i in range(0, len(test), 1000)])
        score = float((predictions.numpy() == y_test).mean())
    return seconds, total / len(X), score


def compare(run_fastconv, run_torch, repeats, images, summary, json_path):
    """Run ``run_fastconv(seed)`` and ``run_torch(seed)`` (None: fastconv only) ``repeats``
    times, alternating which goes first; print each run, the medians and the ratio, and
    write ``summary`` with the results to ``json_path`` (if given)."""
    results = {"fastconv": [], "torch": []}
    for repeat in range(repeats):
        sides = ["fastconv", "torch"] if run_torch is not None else ["fastconv"]
        if repeat % 2:
            sides.reverse()
        for side in sides:
            outcome = (run_fastconv if side == "fastconv" else run_torch)(repeat)
            results[side].append(outcome)
            seconds, loss, accuracy = outcome
            print(f"  run {repeat + 1} {side:8s}: epoch {seconds:7.2f} s "
                  f"({images / seconds:6.0f} img/s), loss {loss:.4f}, "
                  f"test accuracy {100 * accuracy:.2f}%", flush=True)
    for side, runs in results.items():
        if runs:
            summary[side] = {"seconds": statistics.median(r[0] for r in runs),
                             "test_accuracy": statistics.median(r[2] for r in runs),
                             "runs": [list(r) for r in runs]}
    line = (f"median epoch: fastconv {summary['fastconv']['seconds']:.2f} s, test accuracy "
            f"{100 * summary['fastconv']['test_accuracy']:.2f}%")
    if "torch" in summary:
        ratio = summary["fastconv"]["seconds"] / summary["torch"]["seconds"]
        summary["ratio"] = ratio
        line += (f"; PyTorch {summary['torch']['seconds']:.2f} s, test accuracy "
                 f"{100 * summary['torch']['test_accuracy']:.2f}%; ratio fastconv/PyTorch "
                 f"{ratio:.2f} ({'fastconv faster' if ratio < 1 else 'PyTorch faster'})")
    print(line)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


def run_fastconv(args, X, y, X_test, y_test, seed):
    model = models.build(args.model, seed=seed)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    scheduler = None
    if args.schedule == "cosine":
        scheduler = optim.CosineAnnealingLR(optimizer, -(-len(X) // args.batch_size))
    return fastconv_epoch(model, optimizer, scheduler, X, y, X_test, y_test, args.batch_size,
                          seed, args.accuracy)


def torch_model(torch, name, state):
    tnn = torch.nn
    if name == "seed":
        model = tnn.Sequential(
            tnn.Conv2d(1, 16, 5, stride=2), tnn.ReLU(), tnn.MaxPool2d(2, 2), tnn.Flatten(),
            tnn.Linear(576, 20), tnn.ReLU(), tnn.Linear(20, 10))
    else:
        model = tnn.Sequential(
            tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.AvgPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.AvgPool2d(2), tnn.Flatten(),
            tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
            tnn.Linear(84, 10))
    model.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
    return model


def run_torch(torch, args, X, y, X_test, y_test, seed):
    # Same initial weights as the fastconv run with this seed.
    model = torch_model(torch, args.model, models.build(args.model, seed=seed).state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    scheduler = None
    if args.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, -(-len(X) // args.batch_size))
    return torch_epoch(torch, model, optimizer, scheduler, torch.nn.CrossEntropyLoss(), X, y,
                       X_test, y_test, args.batch_size, seed, args.accuracy)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["seed", "lenet"], default="seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="epochs timed per side")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    parser.add_argument("--no-standardize", dest="standardize", action="store_false")
    parser.add_argument("--limit", type=int, default=None, help="use only N training images")
    parser.add_argument("--data", default=None, help="directory of the idx files")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                        help="skip the test-set evaluation")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        torch = None
    if args.no_torch:
        torch = None
    X, y, X_test, y_test, source = load_data(args.limit, args.data)
    X, X_test = inputs(X, X_test, args.standardize)
    fastconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(f"{args.model} network, {source}: {len(X)} training images, batch {args.batch_size}, "
          f"SGD lr {args.lr} momentum {args.momentum}, {args.schedule} schedule, "
          f"{'standardised' if args.standardize else '[0, 1]'} inputs, "
          f"{args.threads} thread(s)")
    print(f"fastconv {fastconv.__version__}" + (f", torch {torch.__version__}" if torch else ""))
    summary = {"model": args.model, "threads": args.threads, "images": len(X),
               "schedule": args.schedule, "standardize": args.standardize,
               "batch_size": args.batch_size, "source": source}
    return compare(lambda seed: run_fastconv(args, X, y, X_test, y_test, seed),
                   None if torch is None
                   else lambda seed: run_torch(torch, args, X, y, X_test, y_test, seed),
                   args.repeats, len(X), summary, args.json)


if __name__ == "__main__":
    sys.exit(main())
