"""Two configurations of the small ResNet's training step (``models.build('resnet')``) in one
process, taking turns in blocks of steps: the ratio of their step times with the machine's
swings cancelled, for deciding whether a change can pay before building it.

On the shared 2-core VM the same build's step takes about 42 ms or about 47 ms for tens of
seconds at a time, so two processes run one after the other differ by more than most changes
are worth. Here two models (A and B, the same weights, bench_resnet.py's recipe: Adam lr
2e-3, cosine decay per batch, label smoothing 0.1, batch 32) train on the same mini-batches,
a block of ``--block`` steps of A, then of B, and so on; the first ``--skip`` steps of a
block are not timed. Each step is what train.fit runs (profile_resnet.py's fastconv_step).

B is A with one of these changes (``--b``):

``winograd``
    ``models.build(..., algorithm='winograd')`` (its 3x3 stride-1 convolutions), with
    ``--tiles`` and ``--weight-tiles`` setting the Winograd tile sizes it may take
    (fastconv._paths.WINOGRAD_TILES, WINOGRAD_WEIGHT_TILES).
``drop-bn1``, ``no-residual-add``, ``no-grad-add``
    Upper bounds, not real configurations: B skips some work altogether, so its training
    differs from A's and only its time means anything. ``drop-bn1``: each block's first batch
    norm (and its ReLU) passes its input through in the forward pass and runs its backward
    without the ReLU's mask (what fusing it into the next convolution's staging could save
    at most, its statistics included). ``no-residual-add``: the blocks' backward skips the
    sum of the two branches' input gradients. ``no-grad-add``: the convolutions' weight
    gradients are not added to ``.grad``.

    flock /work/bench.lock python bench/ab_resnet_step.py --b winograd
    flock /work/bench.lock python bench/ab_resnet_step.py --b winograd --tiles 2 --weight-tiles 2
    flock /work/bench.lock python bench/ab_resnet_step.py --b drop-bn1

Prints the median step of each and B / A (below 1: B is faster), with the load average.
"""

import argparse
import os
import statistics
import sys
import time
import types

import numpy as np

from _checkout import use_built_checkout  # noqa: E402

use_built_checkout()

import fastconv  # noqa: E402
from bench_resnet import smoothed_targets  # noqa: E402
from bench_train import batches, inputs, load_data  # noqa: E402
from fastconv import _paths, models, nn, optim  # noqa: E402
from profile_resnet import fastconv_step  # noqa: E402

CHANGES = ("winograd", "drop-bn1", "no-residual-add", "no-grad-add")


class _KeptGradient(np.ndarray):
    """A ``.grad`` that ``+=`` leaves as it is (no-grad-add)."""

    def __iadd__(self, other):
        return self


def _pass_through(self, x, residual, relu):
    """BatchNorm2d._run that keeps x (its statistics taken as 0 and 1) and returns it."""
    channels = x.shape[1]
    self._kept = (x, np.zeros(channels), np.ones(channels), True, None)
    return x


def _nothing():
    return None


def build(change, args):
    """Model B (``change``) or A (None): (fastconv_step's arguments but the batch, (a
    function run before each of its blocks, one run after))."""
    algorithm = "winograd" if change == "winograd" else "auto"
    model = models.build("resnet", seed=0, algorithm=algorithm)
    if change == "drop-bn1":
        for module in model.modules():
            if isinstance(module, models.BasicBlock):
                module.bn1._run = types.MethodType(_pass_through, module.bn1)
    elif change == "no-grad-add":
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.grad = module.weight.grad.view(_KeptGradient)
    optimizer = optim.Adam(model.parameters(), lr=2e-3)
    scheduler = optim.CosineAnnealingLR(optimizer, args.steps)
    model.train()
    if change == "no-residual-add":
        real = models.add_inplace

        def skip(grad_x, grad_shortcut):
            return None

        def switch(on):
            models.add_inplace = skip if on else real
        return (model, nn.CrossEntropyLoss(), optimizer, scheduler), (lambda: switch(True),
                                                                     lambda: switch(False))
    return (model, nn.CrossEntropyLoss(), optimizer, scheduler), (_nothing, _nothing)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--b", choices=CHANGES, required=True, help="what B changes")
    parser.add_argument("--tiles", type=int, nargs="+", default=None,
                        help="winograd: the forward's tile sizes m (default: all)")
    parser.add_argument("--weight-tiles", type=int, nargs="+", default=None,
                        help="winograd: the weight gradient's tile sizes m")
    parser.add_argument("--steps", type=int, default=300, help="steps per model")
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2, help="untimed steps at a block's start")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.block <= args.skip:
        parser.error("--block must exceed --skip")
    if args.tiles is not None:
        _paths.WINOGRAD_TILES = tuple(args.tiles)
    if args.weight_tiles is not None:
        _paths.WINOGRAD_WEIGHT_TILES = tuple(args.weight_tiles)
    X, y, X_test, _, source = load_data(args.steps * 32, None)
    X, _ = inputs(X, X_test[:10], True)
    targets = smoothed_targets(y, 0.1)
    rows = batches(len(X), 32, 0)
    fastconv.set_num_threads(args.threads)
    sides = {"A": build(None, args), "B": build(args.b, args)}
    print(f"small ResNet, {source}: A the model as built, B {args.b}"
          + (f" (tiles {_paths.WINOGRAD_TILES}, weight tiles {_paths.WINOGRAD_WEIGHT_TILES})"
             if args.b == "winograd" else "")
          + f"; {len(rows)} steps each in blocks of {args.block} ({args.skip} untimed), "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    times = {"A": [], "B": []}
    for first in range(0, len(rows), args.block):
        for name in ("A", "B") if (first // args.block) % 2 == 0 else ("B", "A"):
            step_args, (enter, leave) = sides[name]
            enter()
            try:
                for offset, index in enumerate(rows[first:first + args.block]):
                    start = time.perf_counter()
                    fastconv_step(*step_args, X[index], targets[index])
                    if offset >= args.skip:
                        times[name].append(time.perf_counter() - start)
            finally:
                leave()
    a, b = (1e3 * statistics.median(times[name]) for name in ("A", "B"))
    print(f"  median step: A {a:.2f} ms, B {b:.2f} ms; B / A {b / a:.3f}; load average "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
