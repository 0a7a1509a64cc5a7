"""The small ResNet's training step (``models.build('resnet')``) split by kernel *inside the
real step*: fastconv's conv paths per layer and op (forward / grad_input / grad_weight), the
batch-norm kernels, and the Python around them, against PyTorch's aten operators per input
shape in the same loop (``torch.profiler``, record_shapes).

profile_resnet.py splits the step by layer; profile_resnet_ops.py times each op alone (warm
caches, same arrays each call). This one wraps the path methods of ``fastconv._paths`` and the
batch-norm kernels of ``fastconv.norm`` with timers (outermost call only), so it shows what
each op costs where it runs in the step (cold caches, new arrays each step), and what the
layers cost beyond their kernels (argument checks, allocation, reshapes: "layer overhead").

    flock /work/bench.lock python bench/profile_resnet_step.py --steps 60
    flock /work/bench.lock python bench/profile_resnet_step.py --algorithm winograd

Times are ms per step (means over ``--steps`` after ``--warmup``), ``--threads`` threads.
"""

import argparse
import collections
import statistics
import sys
import time

from _checkout import use_built_checkout  # noqa: E402

use_built_checkout()

import fastconv  # noqa: E402
from bench_resnet import torch_small_resnet  # noqa: E402
from bench_train import batches, inputs, load_data  # noqa: E402
from fastconv import _paths, models, nn, norm, optim  # noqa: E402
from profile_resnet import fastconv_step  # noqa: E402


class Timers:
    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.calls = collections.defaultdict(list)  # every call's seconds, per label
        self.depth = 0

    def timed(self, function, label):
        def wrapper(*args, **kwargs):
            if self.depth:
                return function(*args, **kwargs)
            self.depth += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                key = label(*args)
                self.seconds[key] += time.perf_counter() - start
                self.calls[key].append(time.perf_counter() - start)
                self.depth -= 1
        return wrapper


def _layer_name(plan):
    g = plan.geometry
    return (f"{plan.in_channels}->{plan.out_channels} {g.kernel_h}x{g.kernel_w} "
            f"s{plan.stride[0]} @{g.in_h + (0 if plan.mode == 'zeros' else 0)}")


def _instrument_fastconv(timers, model, loss, optimizer, scheduler):
    for cls in {type(path) for paths in _paths.OPS.values() for path in paths}:
        for op in ("forward", "grad_input", "grad_weight"):
            if op in cls.__dict__:
                setattr(cls, op, timers.timed(
                    cls.__dict__[op],
                    lambda self, plan, *rest, op=op: ("conv " + op, _layer_name(plan),
                                                      self.name)))
    _paths.grad_bias = timers.timed(_paths.grad_bias, lambda *a: ("conv grad_bias", "", ""))
    for table, op in ((norm._FORWARD, "bn kernel fwd"), (norm._BACKWARD, "bn kernel bwd")):
        for key in table:
            table[key] = timers.timed(
                table[key], lambda *a, op=op: (op, f"{a[1].shape[1]}@{a[1].shape[2]}", ""))
    # whole layers (kernel time included; the overhead is the difference)
    outer = Timers()
    for module in model.modules():
        kind = {nn.Conv2d: "conv layer", nn.BatchNorm2d: "bn layer"}.get(type(module))
        if kind is None:
            continue
        for name in ("forward", "forward_residual", "backward", "backward_residual"):
            if hasattr(module, name):
                setattr(module, name, outer.timed(getattr(module, name),
                                                  lambda *a, kind=kind: (kind, "", "")))
    for owner, name, label in ((loss, "forward", "loss"), (loss, "backward", "loss"),
                               (optimizer, "step", "optimiser step"),
                               (optimizer, "zero_grad", "optimiser zero_grad"),
                               (scheduler, "step", "scheduler"),
                               (model.avgpool, "forward", "pool+fc"),
                               (model.avgpool, "backward", "pool+fc"),
                               (model.fc, "forward", "pool+fc"),
                               (model.fc, "backward", "pool+fc")):
        setattr(owner, name, outer.timed(getattr(owner, name),
                                         lambda *a, label=label: (label, "", "")))
    return outer


def fastconv_step_profile(X, y, rows, args):
    model = models.build("resnet", seed=0, algorithm=args.algorithm)
    loss = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=2e-3)
    scheduler = optim.CosineAnnealingLR(optimizer, len(rows))
    timers = Timers()
    outer = _instrument_fastconv(timers, model, loss, optimizer, scheduler)
    model.train()
    total = 0.0
    for step, index in enumerate(rows):
        if step == args.warmup:
            for clock in (timers, outer):
                clock.seconds.clear()
                clock.calls.clear()
        start = time.perf_counter()
        fastconv_step(model, loss, optimizer, scheduler, X[index], y[index])
        if step >= args.warmup:
            total += time.perf_counter() - start
    return total, timers, outer


def torch_step_profile(torch, X, y, rows, args):
    model = torch_small_resnet(torch, models.build("resnet", seed=0).state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, len(rows))
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = torch.from_numpy(X), torch.from_numpy(y)
    indices = [torch.from_numpy(index) for index in rows]
    model.train()

    def step(index):
        optimizer.zero_grad()
        loss_fn(model(images[index]), labels[index]).backward()
        optimizer.step()
        scheduler.step()

    for index in indices[:args.warmup]:
        step(index)
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                record_shapes=True) as prof:
        for index in indices[args.warmup:]:
            step(index)
    total = time.perf_counter() - start
    return total, prof.key_averages(group_by_input_shape=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)  # bench_resnet.py's
    parser.add_argument("--algorithm", choices=["auto", "direct", "winograd"], default="auto")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    X, y, X_test, _, _ = load_data((args.steps + args.warmup) * args.batch_size, None)
    X, _ = inputs(X, X_test[:10], True)
    rows = batches(len(X), args.batch_size, 0)
    fastconv.set_num_threads(args.threads)
    print(f"small ResNet step by kernel, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.steps} steps after {args.warmup}, fastconv algorithm {args.algorithm!r}; "
          "ms per step")
    total, kernel_timers, layer_timers = fastconv_step_profile(X, y, rows, args)
    kernels, layers = kernel_timers.seconds, layer_timers.seconds
    per = 1e3 / args.steps
    by_kind = collections.defaultdict(float)
    print(f"  {'op':16s} {'layer':22s} {'path':18s} {'mean':>7s} {'median':>7s} (ms per step; "
          "median: of the calls, times calls per step, less touched by other processes)")
    for (kind, layer, path), seconds in sorted(kernels.items()):
        calls = kernel_timers.calls[kind, layer, path]
        median = statistics.median(calls) * len(calls) * per
        print(f"  {kind:16s} {layer:22s} {path:18s} {per * seconds:7.2f} {median:7.2f}")
        by_kind[kind] += seconds
    print("fastconv totals:")
    kernel_sum = 0.0
    for kind, seconds in sorted(by_kind.items(), key=lambda item: -item[1]):
        print(f"  {kind:28s} {per * seconds:7.2f}")
        kernel_sum += seconds
    conv_kernels = sum(s for k, s in by_kind.items() if k.startswith("conv"))
    bn_kernels = sum(s for k, s in by_kind.items() if k.startswith("bn"))
    layer_conv = layers.get(("conv layer", "", ""), 0.0)
    layer_bn = layers.get(("bn layer", "", ""), 0.0)
    print(f"  {'conv layer overhead':28s} {per * (layer_conv - conv_kernels):7.2f}")
    print(f"  {'bn layer overhead':28s} {per * (layer_bn - bn_kernels):7.2f}")
    accounted = layer_conv + layer_bn
    for (label, _, _), seconds in sorted(layers.items()):
        if label not in ("conv layer", "bn layer"):
            print(f"  {label:28s} {per * seconds:7.2f}")
            accounted += seconds
    print(f"  {'rest (glue, batch gather)':28s} {per * (total - accounted):7.2f}")
    print(f"  {'step':28s} {per * total:7.2f}")
    if args.no_torch:
        return 0
    import torch
    torch.set_num_threads(args.threads)
    total, events = torch_step_profile(torch, X, y, rows, args)
    from profile_resnet import _torch_category
    categories = collections.defaultdict(float)
    for event in events:
        name = "copies" if event.key in ("aten::copy_", "aten::clone", "aten::empty",
                                         "aten::empty_like", "aten::zeros_like",
                                         "aten::zero_", "aten::fill_") else \
            _torch_category(event.key)
        categories[name] += event.self_cpu_time_total / 1e3 / args.steps
    print(f"PyTorch (profiler on) step {per * total:.2f}; self CPU by category:")
    for name, ms in sorted(categories.items(), key=lambda item: -item[1]):
        print(f"  {name:28s} {ms:7.2f}")
    print("PyTorch self CPU by operator and input shape:")
    rows_out = sorted(events, key=lambda e: -e.self_cpu_time_total)
    shown = 0.0
    for event in rows_out[:40]:
        ms = event.self_cpu_time_total / 1e3 / args.steps
        if ms < 0.05:
            continue
        shape = str(event.input_shapes[:1])[:40]
        print(f"  {event.key:40s} {shape:42s} {ms:7.2f}")
        shown += ms
    print(f"  listed {shown:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
