"""Peak memory of one convolution call: the workspace fastconv (and PyTorch) need beyond the
inputs, weights and outputs.

Each measurement runs in a fresh process: it allocates and touches the inputs, reads the
resident set size, resets the peak (``/proc/self/clear_refs``, Linux), makes one call, keeps
the results, and reads the peak resident set size (``VmHWM``). The workspace is ``peak - before - results``: what the call needed on
top of what the caller holds before and after it.

    python bench/bench_memory.py                      # resnet case at batch 16 and 64
    python bench/bench_memory.py --batches 16 64 128 --threads 2 --json memory.json

The resnet case is x (N, 64, 56, 56), weight (64, 64, 3, 3), padding 1, float32; forward is
``conv2d``, backward is ``conv2d_backward`` (input, weight and bias gradients).
"""

import argparse
import json
import subprocess
import sys

from _checkout import built_checkout

MIB = 1024 * 1024

CHILD = r"""
import json, resource, sys
import numpy as np
side, op, batch, threads, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if root:
    sys.path.insert(0, root)


def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def high_water_mark():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024


rng = np.random.default_rng(0)
x = rng.standard_normal((batch, 64, 56, 56), dtype=np.float32)
weight = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
bias = rng.standard_normal(64, dtype=np.float32)
grad_output = rng.standard_normal((batch, 64, 56, 56), dtype=np.float32)
if side == "fastconv":
    import fastconv
    fastconv.set_num_threads(threads)
    forward = lambda: [fastconv.conv2d(x, weight, bias, padding=1)]
    backward = lambda: list(fastconv.conv2d_backward(grad_output, x, weight, padding=1))
else:
    import torch
    torch.set_num_threads(threads)
    tx, tw, tb, tg = map(torch.from_numpy, (x, weight, bias, grad_output))
    forward = lambda: [torch.nn.functional.conv2d(tx, tw, tb, padding=1).numpy()]
    backward = lambda: [g.numpy() for g in torch.ops.aten.convolution_backward(
        tg, tx, tw, [64], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True])]
# Imports (OpenBLAS's buffers, torch's libraries) can peak higher than anything after them:
# reset the high-water mark to the current RSS (Linux: clear_refs 5) just before the call.
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = rss()
results = (forward if op == "fwd" else backward)()
peak = high_water_mark()
result_bytes = sum(r.nbytes for r in results)
print(json.dumps({"before": before, "peak": peak, "results": result_bytes,
                  "held": x.nbytes + weight.nbytes + bias.nbytes + grad_output.nbytes}))
"""


def measure(side, op, batch, threads):
    output = subprocess.run(
        [sys.executable, "-c", CHILD, side, op, str(batch), str(threads), built_checkout()],
        capture_output=True, text=True, check=True).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    figures["workspace"] = figures["peak"] - figures["before"] - figures["results"]
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sides = ["fastconv"]
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            sides.append("torch")
        except ImportError:
            pass
    print(f"resnet case (N, 64, 56, 56) k3 p1, float32, {args.threads} threads; MiB")
    print(f"{'side':<9}{'op':<5}{'batch':>6}{'inputs':>9}{'results':>9}{'peak RSS':>10}"
          f"{'workspace':>11}")
    rows = []
    for batch in args.batches:
        for op in ("fwd", "bwd"):
            for side in sides:
                figures = measure(side, op, batch, args.threads)
                row = {"side": side, "op": op, "batch": batch, "threads": args.threads,
                       **figures}
                rows.append(row)
                print(f"{side:<9}{op:<5}{batch:>6}{figures['held'] / MIB:>9.1f}"
                      f"{figures['results'] / MIB:>9.1f}{figures['peak'] / MIB:>10.1f}"
                      f"{figures['workspace'] / MIB:>11.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
