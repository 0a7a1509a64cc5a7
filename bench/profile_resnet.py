"""One training step of the small ResNet (``models.build('resnet')``), layer by layer:
fastconv against the same step in PyTorch (``bench_resnet.torch_small_resnet``).

Both sides run ``--steps`` training steps (forward, cross-entropy, backward, Adam step, cosine
schedule) on batches of ``--batch-size`` Fashion-MNIST images, after ``--warmup`` untimed
steps, at ``--threads`` threads. Time is split into categories:

- fastconv: each leaf layer's ``forward`` and ``backward`` (convolutions, batch norms with their
  fused ReLU / residual sum, pooling, linear, loss), ``optimizer.zero_grad`` and ``step``,
  the scheduler; "glue" is the rest of the step (the residual blocks' gradient adds, the
  Python between the layers, the batch gathering).
- PyTorch: ``torch.profiler`` self CPU times of the aten operators, summed into the same
  categories (convolution forward/backward, batch norm forward/backward, ReLU and its
  backward, the residual adds, optimiser, rest).

Medians over the steps of the per-step total; categories are means per step (they add up to
the mean step). The profiler adds its own overhead to PyTorch's side, so the plain step
times (measured without the profiler, interleaved with fastconv's) are printed as well.

    flock /work/bench.lock python bench/profile_resnet.py --steps 40
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
from fastconv import models, nn, optim  # noqa: E402

_LEAF = {nn.Conv2d: "conv", nn.BatchNorm2d: "batch norm", nn.Linear: "linear/pool/loss",
         nn.AdaptiveAvgPool2d: "linear/pool/loss", nn.Flatten: "linear/pool/loss"}


class _Timers:
    """Seconds per category, added by wrappers put on instances' methods."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)

    def wrap(self, owner, name, category):
        method = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - start

        setattr(owner, name, timed)


def _instrument(model, loss, optimizer, scheduler, timers):
    for module in model.modules():
        category = _LEAF.get(type(module))
        if category is None:
            continue
        for name in ("forward", "forward_residual"):
            if hasattr(module, name):
                timers.wrap(module, name, f"{category} forward")
        for name in ("backward", "backward_residual"):
            if hasattr(module, name):
                timers.wrap(module, name, f"{category} backward")
    timers.wrap(loss, "forward", "linear/pool/loss forward")
    timers.wrap(loss, "backward", "linear/pool/loss backward")
    timers.wrap(optimizer, "zero_grad", "optimiser")
    timers.wrap(optimizer, "step", "optimiser")
    timers.wrap(scheduler, "step", "optimiser")


def fastconv_step(model, loss, optimizer, scheduler, xb, yb):
    """One training step of ``model`` on the batch, as fastconv.train.fit runs it."""
    output = model(xb)
    loss(output, yb)
    optimizer.zero_grad()
    nn.backward_without_input_grad(model, loss.backward())
    optimizer.step()
    scheduler.step()


def _fastconv_steps(X, y, rows, args, instrument):
    model = models.build("resnet", seed=0, algorithm=args.algorithm)
    loss = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=2e-3)
    scheduler = optim.CosineAnnealingLR(optimizer, len(rows))
    timers = _Timers()
    if instrument:
        _instrument(model, loss, optimizer, scheduler, timers)
    model.train()
    totals = []
    for step, index in enumerate(rows):
        if step == args.warmup:
            timers.seconds.clear()
        start = time.perf_counter()
        fastconv_step(model, loss, optimizer, scheduler, X[index], y[index])
        if step >= args.warmup:
            totals.append(time.perf_counter() - start)
    return totals, timers.seconds


def _torch_category(name):
    if "Adam" in name or "Optimizer" in name or "_foreach" in name or "lr_scheduler" in name:
        return "optimiser"
    if name in ("aten::convolution_backward",):
        return "conv backward"
    if name in ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution",
                "aten::conv2d", "aten::thnn_conv2d", "aten::_slow_conv2d_forward"):
        return "conv forward"
    if "batch_norm" in name and "backward" in name:
        return "batch norm backward"
    if "batch_norm" in name:
        return "batch norm forward"
    if name in ("aten::threshold_backward",):
        return "relu backward"
    if name in ("aten::relu_", "aten::relu", "aten::clamp_min_", "aten::clamp_min"):
        return "relu forward"
    if name in ("aten::add", "aten::add_"):
        return "residual adds"
    if any(word in name for word in ("linear", "addmm", "aten::mm", "adaptive_avg",
                                     "log_softmax", "nll_loss", "cross_entropy", "avg_pool")):
        return "linear/pool/loss"
    return "rest"


def _torch_steps(torch, X, y, rows, args, profile):
    model = torch_small_resnet(torch, models.build("resnet", seed=0).state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, len(rows))
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = torch.from_numpy(X), torch.from_numpy(y)
    model.train()
    totals = []
    seconds = collections.defaultdict(float)

    def step(index):
        optimizer.zero_grad()
        loss_fn(model(images[index]), labels[index]).backward()
        optimizer.step()
        scheduler.step()

    indices = [torch.from_numpy(index) for index in rows]
    for index in indices[:args.warmup]:
        step(index)
    if not profile:
        for index in indices[args.warmup:]:
            start = time.perf_counter()
            step(index)
            totals.append(time.perf_counter() - start)
        return totals, seconds
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for index in indices[args.warmup:]:
            start = time.perf_counter()
            step(index)
            totals.append(time.perf_counter() - start)
    for event in prof.key_averages():
        seconds[_torch_category(event.key)] += event.self_cpu_time_total / 1e6
    return totals, seconds


def _report(title, totals, seconds, steps):
    mean = sum(totals) / len(totals)
    print(f"{title}: step median {1e3 * statistics.median(totals):7.2f} ms, "
          f"mean {1e3 * mean:7.2f} ms")
    if seconds:
        accounted = 0.0
        for category in sorted(seconds, key=lambda name: -seconds[name]):
            per_step = seconds[category] / steps
            accounted += per_step
            print(f"    {category:28s} {1e3 * per_step:7.2f} ms")
        if title.startswith("fastconv"):
            print(f"    {'glue (step - layers)':28s} {1e3 * (mean - accounted):7.2f} ms")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)  # bench_resnet.py's
    parser.add_argument("--data", default=None, help="directory of the idx files")
    parser.add_argument("--algorithm", choices=["auto", "direct", "winograd"], default="auto",
                        help="fastconv's 3x3 convolutions in the blocks (models.build)")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    if args.no_torch:
        torch = None
    count = (args.steps + args.warmup) * args.batch_size
    X, y, X_test, _, source = load_data(count, args.data)
    X, _ = inputs(X, X_test[:10], True)
    rows = batches(len(X), args.batch_size, 0)
    fastconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(f"small ResNet training step, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.steps} timed steps after {args.warmup}; fastconv algorithm "
          f"{args.algorithm!r}; {source}")
    plain = {"fastconv": [], "torch": []}
    # plain steps first, interleaved (no instrumentation), then the split by category
    for side in (["fastconv", "torch"] if torch is not None else ["fastconv"]) * 2:
        if side == "fastconv":
            plain[side] += _fastconv_steps(X, y, rows, args, False)[0]
        else:
            plain[side] += _torch_steps(torch, X, y, rows, args, False)[0]
    for side, totals in plain.items():
        if totals:
            _report(f"{side} (plain)", totals, None, args.steps)
    totals, seconds = _fastconv_steps(X, y, rows, args, True)
    _report("fastconv by layer", totals, seconds, args.steps)
    if torch is not None:
        totals, seconds = _torch_steps(torch, X, y, rows, args, True)
        _report("PyTorch by operator (profiler on)", totals, seconds, args.steps)
        ratio = statistics.median(plain["fastconv"]) / statistics.median(plain["torch"])
        print(f"plain step ratio fastconv/PyTorch {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
