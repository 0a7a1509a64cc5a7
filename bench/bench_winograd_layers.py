"""algorithm='winograd' against 'direct' on the 3x3 stride-1 layers of a small ResNet
(batch 64; 16-128 channels at 28x28, 14x14 and 7x7), forward and input gradient, float32.

    flock /work/bench.lock python bench/bench_winograd_layers.py --threads 2

Each row: the median of interleaved rounds (direct, winograd, direct, ...) of a few calls each,
and winograd / direct. The input gradient is conv2d_backward(..., need=('input',)).
"""

import argparse
import time

from _checkout import use_built_checkout

use_built_checkout()

import numpy as np  # noqa: E402

import fastconv  # noqa: E402

LAYERS = [(16, 28), (16, 14), (32, 28), (32, 14), (64, 28), (64, 14), (128, 14), (128, 7)]


def _timed(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"float32, batch {args.batch}, {args.threads} threads, median over {args.rounds} "
          f"interleaved rounds of {args.calls} calls")
    print(f"{'layer':<16}{'op':<5}{'direct ms':>10}{'wino ms':>10}{'wino/direct':>13}")
    with fastconv.threads(args.threads):
        for channels, size in LAYERS:
            x = rng.standard_normal((args.batch, channels, size, size)).astype(np.float32)
            w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)
            gy = rng.standard_normal(x.shape).astype(np.float32)
            ops = {
                "fwd": lambda alg: fastconv.conv2d(x, w, padding=1, algorithm=alg),
                "gin": lambda alg: fastconv.conv2d_backward(gy, x, w, padding=1,
                                                            need=("input",), algorithm=alg),
            }
            for op, fn in ops.items():
                times = {"direct": [], "winograd": []}
                for alg in times:
                    fn(alg)  # plans and first-touch outside the timing
                for _ in range(args.rounds):
                    for alg in times:
                        times[alg].append(_timed(lambda: fn(alg), args.calls))
                d, wg = (float(np.median(times[a])) * 1e3 for a in ("direct", "winograd"))
                print(f"{f'{channels}ch {size}x{size}':<16}{op:<5}{d:>10.3f}{wg:>10.3f}"
                      f"{wg / d:>13.3f}")


if __name__ == "__main__":
    main()
