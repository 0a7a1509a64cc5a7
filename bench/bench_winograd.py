"""Winograd (issue 15): its float32 error per tile size, and training with it.

    python bench/bench_winograd.py error            # error table: N(0,1) data and trained activations
    python bench/bench_winograd.py train --epochs 2 # a small 3x3 CNN, algorithm='winograd' vs 'direct'
    python bench/bench_winograd.py train --seeds 0 1  # one pair of runs per seed
    python bench/bench_winograd.py train --seeds 0 1 2 3 4 --control  # + direct on other paths
    python bench/bench_winograd.py wgrad resnet vgg14  # the weight gradient alone, vs torch
    python bench/bench_winograd.py wgrad-error     # the weight gradient's float32 error per tile size

``error``: for each tile size m (2, 4, 5, 6) and each 3x3 stride-1 case of bench_ops.py, max |y -
y_float64| / max |y_float64| of the float32 forward pass and input gradient, where y_float64
is fastconv's direct float64 convolution of the same float32 data. The data: N(0,1) inputs and
weights, and the second layer of the small CNN below after one epoch on Fashion-MNIST (its
real ReLU activations and trained weights).
``train``: the CNN trained from the same seed with each algorithm; test accuracy and seconds
per epoch of each (speed ratios belong to bench_ops.py; these are one run on a shared machine).

The speed of the Winograd path: ``python bench/bench_ops.py small resnet vgg28 vgg14
--algorithm winograd``.
"""

import argparse
import sys
import time

from _checkout import use_built_checkout

use_built_checkout()

import numpy as np  # noqa: E402

import fastconv  # noqa: E402
from fastconv import _paths, datasets, nn, optim, train  # noqa: E402
from fastconv._plan import clear_plans, use_paths  # noqa: E402
from fastconv.benchmark import CONV_CASES  # noqa: E402

CASES = [name for name, case in CONV_CASES.items()
         if case[5] == (3, 3) and case[6] == 1 and case[8] == 1]


def cnn(algorithm, seed=0):
    """Conv(1,32,3,p1) ReLU MaxPool(2) Conv(32,64,3,p1) ReLU MaxPool(2) Flatten Linear(3136,10)."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, seed=rng, algorithm=algorithm), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, seed=rng, algorithm=algorithm), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 10, seed=rng))


def _fit(model, epochs, X, y, X_test, y_test, threads, seed=0):
    X_in, mean, std = train.standardize(X)
    X_test_in, _, _ = train.standardize(X_test, mean, std)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with fastconv.threads(threads):
        history = train.fit(model, X_in, y, optimizer=optimizer, epochs=epochs, batch_size=64,
                            progress=False, seed=seed)
        accuracy = train.evaluate(model, X_test_in, y_test)
    return accuracy, [record["seconds"] for record in history], (mean, std)


def _error(m, x, w, gy):
    saved = _paths.WINOGRAD_TILES
    _paths.WINOGRAD_TILES = (m,)
    clear_plans()
    try:
        y = fastconv.conv2d(x, w, padding=1, algorithm="winograd")
        gx = fastconv.conv2d_backward(gy, x, w, padding=1, need=("input",),
                                      algorithm="winograd")[0]
    finally:
        _paths.WINOGRAD_TILES = saved
        clear_plans()
    x64, w64, gy64 = x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64)
    y64 = fastconv.conv2d(x64, w64, padding=1, algorithm="direct")
    gx64 = fastconv.conv2d_backward(gy64, x64, w64, padding=1, need=("input",),
                                    algorithm="direct")[0]
    return (float(np.abs(y - y64).max() / np.abs(y64).max()),
            float(np.abs(gx - gx64).max() / np.abs(gx64).max()))


def error_table(threads):
    rng = np.random.default_rng(0)
    print(f"float32 error, max|y - y_float64| / max|y_float64| (forward; input gradient), "
          f"{threads} threads")
    print(f"{'data':<22}" + "".join(f"{'F(%d,3)' % m:>22}" for m in _paths.WINOGRAD_TILES))
    rows = []
    for name in CASES:
        n, c, h, w, k = CONV_CASES[name][:5]
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        weight = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        gy = rng.standard_normal((n, k, h, w)).astype(np.float32)
        rows.append((f"N(0,1) {name} C={c}", x, weight, gy))
    (X, y), _ = datasets.load_fashion_mnist()
    model = cnn("direct")
    _fit(model, 1, X[:20000], y[:20000], X[:10], y[:10], threads)
    X_in, _, _ = train.standardize(X[20000:20256])
    activations = model[:3](X_in.reshape(-1, 1, 28, 28).astype(np.float32))
    weight = model[3].weight.data
    gy = rng.standard_normal((256, 64, 14, 14)).astype(np.float32)
    rows.append(("trained CNN conv2 C=32", activations, weight, gy))
    worst = 0.0
    with fastconv.threads(threads):
        for label, x, weight, gy in rows:
            cells = []
            for m in _paths.WINOGRAD_TILES:
                forward, backward = _error(m, x, weight, gy)
                worst = max(worst, forward, backward)
                cells.append(f"{forward:.1e}; {backward:.1e}")
            print(f"{label:<22}" + "".join(f"{cell:>22}" for cell in cells), flush=True)
    print(f"largest: {worst:.2e} (documented bound: 1e-4)")


# ---- the weight gradient (WinogradWeight) --------------------------------------------------

def _forced_weight_tile(m):
    """A context: the Winograd weight gradient at tile size m (None: its own choice)."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        saved = _paths.WINOGRAD_WEIGHT_TILES
        _paths.WINOGRAD_WEIGHT_TILES = (m,) if m else saved
        try:
            yield
        finally:
            _paths.WINOGRAD_WEIGHT_TILES = saved
    return scope()


def _wgrad(gy, x, w, m=None, block=None):
    """fastconv's weight gradient on the Winograd path (forced where it would not pay)."""
    saved = _paths.WINOGRAD_WEIGHT_BLOCK
    if block:
        _paths.WINOGRAD_WEIGHT_BLOCK = block
    try:
        with _forced_weight_tile(m), use_paths(grad_weight="winograd"):
            return fastconv.conv2d_backward(gy, x, w, padding=1, need=("weight",),
                                            algorithm="winograd")[1]
    finally:
        _paths.WINOGRAD_WEIGHT_BLOCK = saved


def wgrad_error_table(threads):
    rng = np.random.default_rng(0)
    print(f"float32 weight gradient error, max|dW - dW_float64| / max|dW_float64|, N(0,1) "
          f"data, {threads} threads (dW_float64: fastconv's direct float64 path)")
    print(f"{'case':<24}{'max|dW_float64|':>16}" + "".join(f"{'F(%d,3)' % m:>10}"
                                                          for m in _paths.WINOGRAD_TILES)
          + f"{'direct':>10}")
    worst = 0.0
    with fastconv.threads(threads):
        for name in CASES:
            n, c, h, w, k = CONV_CASES[name][:5]
            x = rng.standard_normal((n, c, h, w)).astype(np.float32)
            weight = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
            gy = rng.standard_normal((n, k, h, w)).astype(np.float32)
            ref = fastconv.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                           weight.astype(np.float64), padding=1,
                                           need=("weight",), algorithm="direct")[1]
            scale = float(np.abs(ref).max())
            cells = []
            for m in _paths.WINOGRAD_TILES:
                err = float(np.abs(_wgrad(gy, x, weight, m) - ref).max()) / scale
                worst = max(worst, err)
                cells.append(f"{err:.1e}")
            direct = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("weight",))[1]
            cells.append(f"{float(np.abs(direct - ref).max()) / scale:.1e}")
            print(f"{name + ' ' + str((n, c, h, w, k)):<24}{scale:>16.1f}"
                  + "".join(f"{cell:>10}" for cell in cells), flush=True)
    print(f"largest Winograd: {worst:.2e} (documented bound: 1e-4)")


def wgrad_speed(cases, threads, repeats, tiles, blocks):
    """The weight gradient alone: fastconv's Winograd path (forced, at its own tile size and
    at each of ``tiles``, at each of ``blocks``), fastconv's usual path and PyTorch's,
    interleaved; medians."""
    from fastconv.benchmark import _median_times, _torch_module

    torch = _torch_module()
    if torch is not None:
        torch.set_num_threads(threads)
    print(f"weight gradient alone, float32, {threads} threads, median over {repeats}+ "
          f"interleaved rounds of 5 calls; torch "
          f"{torch.__version__ if torch is not None else 'not installed'}")
    for name in cases:
        n, c, h, w, k = CONV_CASES[name][:5]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        weight = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
        gy = rng.standard_normal((n, k, h, w)).astype(np.float32)
        ref = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("weight",))[1]
        scale = float(np.abs(ref).max())
        runs = {"direct": lambda: fastconv.conv2d_backward(gy, x, weight, padding=1,
                                                           need=("weight",))[1],
                "chosen": lambda: fastconv.conv2d_backward(gy, x, weight, padding=1,
                                                           need=("weight",),
                                                           algorithm="winograd")[1]}
        for b in blocks or [None]:
            for m in [None] + list(tiles):
                label = "wino" + (f" m={m}" if m else "") + (f" b={b}" if b else "")
                runs[label] = (lambda m=m, b=b: _wgrad(gy, x, weight, m, b))
        if torch is not None:
            runs["torch"] = lambda: torch.ops.aten.convolution_backward(
                torch.from_numpy(gy), torch.from_numpy(x), torch.from_numpy(weight), [k],
                [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])[1].numpy()
        with fastconv.threads(threads):
            for label, fn in runs.items():
                if float(np.abs(fn() - ref).max()) > 1e-3 * scale:
                    raise RuntimeError(f"{label} disagrees with fastconv's direct path on {name}")
            times = _median_times(runs, repeats, 0.3)
        base = times.get("torch", times["direct"])
        ref_name = "torch" if "torch" in times else "direct"
        print(f"{name} {(n, c, h, w, k)}, Winograd m={_chosen_tile(x, weight, gy)}; "
              f"chosen for algorithm='winograd': {_chosen_path(x, weight, gy)}")
        for label, seconds in times.items():
            print(f"  {label:<16}{seconds * 1e3:9.2f} ms  {seconds / base:6.2f}x {ref_name}",
                  flush=True)


def _chosen_plan(x, weight, gy):
    from fastconv._plan import choose
    from fastconv.conv import _prepare

    conv, _ = _prepare(x, weight, None, 1, 1, 1, 1, "zeros",
                       extra=(("grad_output", gy),), algorithm="winograd")
    return conv.plan, choose


def _chosen_tile(x, weight, gy):
    plan, _ = _chosen_plan(x, weight, gy)
    return _paths.winograd_weight_tile(plan)


def _chosen_path(x, weight, gy):
    plan, _ = _chosen_plan(x, weight, gy)
    return plan.grad_weight.name


def train_compare(epochs, threads, limit, seeds, control=False):
    (X, y), (X_test, y_test) = datasets.load_fashion_mnist()
    if limit:
        X, y = X[:limit], y[:limit]
    print(f"small 3x3 CNN, Fashion-MNIST ({len(X)} training images), {epochs} epochs, "
          f"batch 64, SGD 0.05 momentum 0.9, {threads} threads")
    # the control: the direct model's exact arithmetic summed in another order (the packed
    # im2col GEMM for every convolution), rounding differences of ~1e-7 instead of
    # Winograd's ~1e-5: how far the test accuracy moves on rounding alone
    arms = [("direct", "direct", None), ("winograd", "winograd", None)]
    if control:
        arms.append(("packed", "direct", "packed"))
    for seed in seeds:
        accuracies = {}
        for name, algorithm, path in arms:
            start = time.perf_counter()
            with use_paths(forward=path, grad_input=path, grad_weight=path):
                accuracy, seconds, _ = _fit(cnn(algorithm, seed), epochs, X, y, X_test, y_test,
                                            threads, seed)
            accuracies[name] = 100 * accuracy
            print(f"seed {seed} {name:<9} test accuracy {100 * accuracy:.2f}%  "
                  "seconds per epoch " + ", ".join(f"{s:.1f}" for s in seconds)
                  + f"  (total {time.perf_counter() - start:.1f} s)", flush=True)
        for name in accuracies.keys() - {"direct"}:
            print(f"seed {seed} {name} - direct: "
                  f"{accuracies[name] - accuracies['direct']:+.2f} points", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("error", "train", "wgrad", "wgrad-error"))
    parser.add_argument("cases", nargs="*", default=["resnet", "small", "vgg28", "vgg14"],
                        help="wgrad: bench_ops.py's cases")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tiles", type=int, nargs="*", default=[],
                        help="wgrad: also time the Winograd path at these tile sizes")
    parser.add_argument("--blocks", type=int, nargs="*", default=[],
                        help="wgrad: ... and at these blocks of tiles")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="training images (train)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="train: the seeds (initial weights and shuffling), one pair each")
    parser.add_argument("--control", action="store_true",
                        help="train: also the direct model on the packed GEMM paths (the "
                             "same arithmetic in another order: the accuracy's spread from "
                             "rounding alone)")
    args = parser.parse_args(argv)
    if args.what == "error":
        error_table(args.threads)
    elif args.what == "wgrad":
        wgrad_speed(args.cases, args.threads, args.repeats, args.tiles, args.blocks)
    elif args.what == "wgrad-error":
        wgrad_error_table(args.threads)
    else:
        train_compare(args.epochs, args.threads, args.limit, args.seeds, args.control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
