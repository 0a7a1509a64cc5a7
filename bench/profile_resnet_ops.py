"""Each convolution of the small ResNet (``models.build('resnet')``) at its training shapes,
op by op and path by path: fastconv against PyTorch on the same arrays.

For every conv geometry of the model at ``--batch-size`` (the stem's 1 -> 32, the blocks' 3x3
layers at 28, 14 and 7 pixels, the stride-2 3x3 and 1x1 layers), times the forward pass,
the input gradient and the weight gradient: fastconv's chosen path (``auto``), every other
path that applies (forced with ``fastconv._plan.use_paths``), and torch's
``aten::convolution`` / ``convolution_backward`` with one output mask at a time. Then the
batch norms' forward (with the fused ReLU, and with the residual sum) and backward at each
width against torch's batch norm + ReLU (+ add) and their autograd backward. Minimum of
``--repeats`` calls, contenders interleaved, ``--threads`` threads on both sides.

    flock /work/bench.lock python bench/profile_resnet_ops.py
    flock /work/bench.lock python bench/profile_resnet_ops.py --only conv --repeats 20
"""

import argparse
import sys
import time

import numpy as np

from _checkout import use_built_checkout  # noqa: E402

use_built_checkout()

import fastconv  # noqa: E402
from fastconv import _paths, _plan, nn  # noqa: E402
from fastconv.conv import conv2d, conv2d_backward  # noqa: E402

# (name, C_in, C_out, H, kernel, stride, padding): the convolutions of models.small_resnet
GEOMETRIES = [
    ("stem 1->32 3x3 @28", 1, 32, 28, 3, 1, 1),
    ("l1 32->32 3x3 @28", 32, 32, 28, 3, 1, 1),
    ("l2.c1 32->64 3x3 s2 @28", 32, 64, 28, 3, 2, 1),
    ("l2.c2 64->64 3x3 @14", 64, 64, 14, 3, 1, 1),
    ("l2.ds 32->64 1x1 s2 @28", 32, 64, 28, 1, 2, 0),
    ("l3.c1 64->128 3x3 s2 @14", 64, 128, 14, 3, 2, 1),
    ("l3.c2 128->128 3x3 @7", 128, 128, 7, 3, 1, 1),
    ("l3.ds 64->128 1x1 s2 @14", 64, 128, 14, 1, 2, 0),
]
# times each geometry appears in one training step
COUNT = {"l1 32->32 3x3 @28": 2}


def _median_ms(calls, repeats):
    """Minimum times (ms) of each callable, called in turn ``repeats`` times (interleaved):
    on the shared 2 cores the minimum is the figure least touched by other processes."""
    times = [[] for _ in calls]
    for call in calls:
        call()
    for _ in range(repeats):
        for slot, call in zip(times, calls):
            start = time.perf_counter()
            call()
            slot.append(time.perf_counter() - start)
    return [1e3 * min(slot) for slot in times]


def _conv_rows(torch, args):
    rng = np.random.default_rng(0)
    total = {"fastconv": 0.0, "torch": 0.0}
    for name, c_in, c_out, size, kernel, stride, padding in GEOMETRIES:
        x = rng.standard_normal((args.batch_size, c_in, size, size)).astype(np.float32)
        w = (rng.standard_normal((c_out, c_in, kernel, kernel)) * 0.1).astype(np.float32)
        y = conv2d(x, w, None, stride, padding)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
        ops = {
            "forward": (lambda: conv2d(x, w, None, stride, padding),
                        lambda: torch.conv2d(tx, tw, None, stride, padding)),
            "grad_input": (
                lambda: conv2d_backward(gy, x, w, stride, padding, need=("input",)),
                lambda: torch.ops.aten.convolution_backward(
                    tgy, tx, tw, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
                    [True, False, False])),
            "grad_weight": (
                lambda: conv2d_backward(gy, x, w, stride, padding, need=("weight",)),
                lambda: torch.ops.aten.convolution_backward(
                    tgy, tx, tw, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
                    [False, True, False])),
        }
        if name.startswith("stem"):
            ops.pop("grad_input")  # the stem never computes the image gradient
        count = COUNT.get(name, 1)
        for op, (ours, theirs) in ops.items():
            calls = [ours, theirs]
            labels = ["auto", "torch"]
            for path in _paths.available(op):
                with _plan.use_paths(**{op: path}):
                    chosen = _chosen(op, x, w, stride, padding)
                if chosen != path:
                    continue
                labels.append(path)

                def forced(path=path, op=op, ours=ours):
                    with _plan.use_paths(**{op: path}):
                        ours()
                calls.append(forced)
            times = _median_ms(calls, args.repeats)
            auto = _chosen(op, x, w, stride, padding)
            total["fastconv"] += count * times[0]
            total["torch"] += count * times[1]
            others = "  ".join(f"{label} {t:6.2f}" for label, t in zip(labels[2:], times[2:]))
            print(f"{name:26s} {op:11s} auto={auto:10s} {times[0]:6.2f}  torch {times[1]:6.2f}"
                  f"  ratio {times[0] / times[1]:4.2f} | {others}", flush=True)
    print(f"conv per step (as used in the model): fastconv {total['fastconv']:.2f} ms, "
          f"torch {total['torch']:.2f} ms")


def _chosen(op, x, w, stride, padding):
    from fastconv.conv import _prepare
    conv, _ = _prepare(x, w, None, stride, padding, 1, 1, "zeros")
    value = getattr(conv.plan, op)
    if op == "grad_input":
        value = next(path for path in value if path.takes(w))
    return value.name


def _norm_rows(torch, args):
    rng = np.random.default_rng(1)
    tnn = torch.nn
    for channels, size in ((32, 28), (64, 14), (128, 7)):
        x = rng.standard_normal((args.batch_size, channels, size, size)).astype(np.float32)
        r = rng.standard_normal(x.shape).astype(np.float32)
        gy = rng.standard_normal(x.shape).astype(np.float32)
        bn, bn_res = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        bn.fused_relu = True
        tbn = tnn.BatchNorm2d(channels)
        tx = torch.from_numpy(x).requires_grad_(True)
        tr = torch.from_numpy(r).requires_grad_(True)
        tgy = torch.from_numpy(gy)

        def torch_forward():
            with torch.no_grad():
                torch.relu_(tbn(tx))

        def torch_forward_res():
            with torch.no_grad():
                torch.relu_(tbn(tx) + tr)

        def torch_backward():
            out = torch.relu(tbn(tx))
            out.backward(tgy)

        def torch_backward_res():
            out = torch.relu(tbn(tx) + tr)
            out.backward(tgy)

        bn(x)
        bn_res.forward_residual(x, r)
        rows = [
            ("bn+relu forward", lambda: bn(x), torch_forward),
            ("bn+add+relu forward", lambda: bn_res.forward_residual(x, r), torch_forward_res),
            ("bn+relu backward", lambda: bn.backward(gy), torch_backward),
            ("bn+add+relu backward", lambda: bn_res.backward_residual(gy), torch_backward_res),
        ]
        for label, ours, theirs in rows:
            times = _median_ms([ours, theirs], args.repeats)
            note = " (torch: forward+backward)" if "backward" in label else ""
            print(f"{channels:4d}@{size:2d} {label:22s} fastconv {times[0]:6.2f}  "
                  f"torch {times[1]:6.2f}{note}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)  # bench_resnet.py's
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", choices=["conv", "norm"], default=None)
    args = parser.parse_args(argv)
    import torch
    fastconv.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"small ResNet ops, batch {args.batch_size}, {args.threads} thread(s), "
          f"min of {args.repeats}, times in ms; ISA {fastconv._conv.ISA}")
    if args.only in (None, "conv"):
        _conv_rows(torch, args)
    if args.only in (None, "norm"):
        _norm_rows(torch, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
