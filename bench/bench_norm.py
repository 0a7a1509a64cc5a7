"""Batch-norm backward kernels alone: fastconv's against PyTorch's on the same arrays, at the
small ResNet's training shapes (32@28, 64@14, 128@7; ``--batch-size``).

Three variants, each as the layers run it after a training-mode forward:
  plain     fastconv.norm.batch_norm_backward_fused            vs aten native_batch_norm_backward
  relu      ... with ``output`` (the fused ReLU's mask)       vs threshold_backward + the above
  add+relu  ... with ``output`` and ``need_residual``          vs threshold_backward + the above
            (the end of a residual block: the masked gradient goes to the shortcut too)
Torch is given its saved mean and invstd (the forward's), so neither side runs a forward.
Medians (and minima) of ``--repeats`` calls, contenders interleaved, ``--threads`` threads
on both sides; times in ms.

    flock /work/bench.lock python bench/bench_norm.py
    flock /work/bench.lock python bench/bench_norm.py --batch-size 32 --repeats 60
    flock /work/bench.lock python bench/bench_norm.py --checkout /path/to/other/checkout
"""

import argparse
import statistics
import sys
import time

import numpy as np

from _checkout import use_built_checkout  # noqa: E402

if "--checkout" in sys.argv:  # another built checkout's fastconv (an A/B against this one)
    sys.path.insert(0, sys.argv[sys.argv.index("--checkout") + 1])
else:
    use_built_checkout()

import fastconv  # noqa: E402
from fastconv import norm  # noqa: E402

SHAPES = ((32, 28), (64, 14), (128, 7))
# batch norms of each width in one step of models.build('resnet'), by variant
COUNT = {(32, 28): {"relu": 2, "add+relu": 1},
         (64, 14): {"relu": 1, "add+relu": 1, "plain": 1},
         (128, 7): {"relu": 1, "add+relu": 1, "plain": 1}}


def _times(calls, repeats):
    """Per callable: (median, min) ms over ``repeats`` calls made in turn (interleaved)."""
    slots = [[] for _ in calls]
    for call in calls:
        call()
    for _ in range(repeats):
        for slot, call in zip(slots, calls):
            start = time.perf_counter()
            call()
            slot.append(time.perf_counter() - start)
    return [(1e3 * statistics.median(slot), 1e3 * min(slot)) for slot in slots]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--checkout", default=None,
                        help="time the fastconv built in place in this checkout instead")
    args = parser.parse_args(argv)
    import torch
    fastconv.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"fastconv from {fastconv.__file__}")
    print(f"batch-norm backward, batch {args.batch_size}, {args.threads} thread(s), median "
          f"(min) of {args.repeats}, ms; ISA {fastconv._conv.ISA}; torch {torch.__version__}")
    rng = np.random.default_rng(0)
    totals = {"fastconv": 0.0, "torch": 0.0}
    minima = {"fastconv": 0.0, "torch": 0.0}
    for channels, size in SHAPES:
        shape = (args.batch_size, channels, size, size)
        x = rng.standard_normal(shape).astype(np.float32)
        residual = rng.standard_normal(shape).astype(np.float32)
        gy = rng.standard_normal(shape).astype(np.float32)
        weight = (1 + 0.1 * rng.standard_normal(channels)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(channels)).astype(np.float32)
        tx, tgy, tw = (torch.from_numpy(a) for a in (x, gy, weight))
        for variant in ("plain", "relu", "add+relu"):
            relu = variant != "plain"
            out, mean, var = norm.batch_norm(
                x, None, None, weight, bias, training=True, return_stats=True, relu=relu,
                residual=residual if variant == "add+relu" else None)
            tout = torch.from_numpy(out)
            tmean = torch.from_numpy(mean.astype(np.float32))
            tinvstd = torch.from_numpy((1 / np.sqrt(var + 1e-5)).astype(np.float32))

            def ours(out=out, mean=mean, var=var, relu=relu, variant=variant):
                norm.batch_norm_backward_fused(
                    gy, x, mean, var, weight, 1e-5, True, output=out if relu else None,
                    need_residual=variant == "add+relu")

            def theirs(tout=tout, tmean=tmean, tinvstd=tinvstd, relu=relu):
                g = torch.ops.aten.threshold_backward(tgy, tout, 0) if relu else tgy
                torch.ops.aten.native_batch_norm_backward(
                    g, tx, tw, None, None, tmean, tinvstd, True, 1e-5, [True, True, True])

            (ours_med, ours_min), (theirs_med, theirs_min) = _times([ours, theirs],
                                                                    args.repeats)
            count = COUNT[(channels, size)].get(variant, 0)
            totals["fastconv"] += count * ours_med
            totals["torch"] += count * theirs_med
            minima["fastconv"] += count * ours_min
            minima["torch"] += count * theirs_min
            print(f"{channels:4d}@{size:2d} {variant:9s} fastconv {ours_med:6.3f} "
                  f"({ours_min:6.3f})  torch {theirs_med:6.3f} ({theirs_min:6.3f})  "
                  f"ratio {ours_med / theirs_med:4.2f}", flush=True)
    print(f"per step as models.build('resnet') uses them: fastconv {totals['fastconv']:.2f} ms,"
          f" torch {totals['torch']:.2f} ms, ratio {totals['fastconv'] / totals['torch']:.2f}; "
          f"of the minima: fastconv {minima['fastconv']:.2f} ms, torch {minima['torch']:.2f} ms, "
          f"ratio {minima['fastconv'] / minima['torch']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
