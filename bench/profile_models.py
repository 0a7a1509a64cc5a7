"""Where a small model's eval forward pass spends its time: each step of its prepared plan.

For the tutorial network and LeNet-5 at batch 1, 64 and 1000: the whole ``model(x)`` (fused,
from the plan prepared once per input shape), the same layers run one by one (each layer's
own forward, no fusion, no plan), and each step of the plan alone, named by its function
(``convolve``: a Conv2d and the ReLU fused into it; ``convolve_pool``: Conv2d + ReLU +
MaxPool2d in one step). Medians over interleaved rounds, each round the best of two timings.

    python bench/profile_models.py                # 2 threads
    python bench/profile_models.py --threads 1
"""

import argparse
import sys
import timeit

import numpy as np

from _checkout import use_built_checkout

use_built_checkout()

import fastconv  # noqa: E402
from fastconv import _fusion, models  # noqa: E402


def profile(name, batch, rounds):
    model = models.build(name, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    model(x)
    plan = _fusion.prepared(model)
    inputs = [x]
    for step in plan.steps:
        inputs.append(step(inputs[-1]))

    def layerwise():
        h = x
        for layer in model:
            h = layer(h)
        return h

    calls = {"model": lambda: model(x), "layers": layerwise}
    for index, step in enumerate(plan.steps):
        calls[index] = lambda step=step, h=inputs[index]: step(h)
    number = max(1, 400 // batch)
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            times[key].append(min(timeit.repeat(call, number=number, repeat=2)) / number)
    medians = {key: float(np.median(value)) * 1e3 for key, value in times.items()}
    # each step by its function's name: convolve (Conv2d, with a following ReLU fused),
    # convolve_pool (Conv2d + ReLU + MaxPool2d in one step), pool, relu, flatten, linear...
    names = [step.__name__ for step in plan.steps]
    return medians, names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    print(f"fastconv {fastconv.__version__}, float32, eval forward, {args.threads} threads (ms)")
    with fastconv.threads(args.threads):
        for name in ("seed", "lenet"):
            for batch in (1, 64, 1000):
                medians, names = profile(name, batch, args.rounds)
                steps = "  ".join(f"{step} {medians[index]:.4f}"
                                  for index, step in enumerate(names))
                print(f"{name:<6}{batch:>5}  model {medians['model']:.4f}  layer by layer "
                      f"{medians['layers']:.4f}  | {steps}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
