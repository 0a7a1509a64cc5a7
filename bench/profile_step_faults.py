"""Training-step cost outside the kernels: wall time, minor page faults and system time per
step of the small ResNet (``models.build('resnet')``, the recipe of bench_resnet.py: Adam lr
2e-3, cosine per batch, label smoothing 0.1) or of the tutorial net / LeNet-5 (the recipe of
bench_train.py: SGD lr 0.05 momentum 0.9, cosine), on Fashion-MNIST batches in train.fit's
order, ``--threads`` threads.

Fresh pages the allocator maps for each step's arrays (and unmaps again) cost a fault each and
show up as system time; the layers' recycled arrays (fastconv._buffers.Recycler) and the
kernels' kept scratch (fastconv._buffers.scratch) are meant to keep both at zero. (Measured
2026-12-03 on the shared 2-core VM: already 0.0 faults per steady step at bf39a7a, as after
the change; the first steps fault ~2000 times each while the heap grows.) ``--fingerprint FILE`` also writes every step's loss and a digest of the final
weights, so two builds can be checked to train to the same bits:

    flock /work/bench.lock python bench/profile_step_faults.py --steps 200
    python bench/profile_step_faults.py --steps 20 --fingerprint /tmp/after.json

Prints the median step (ms), and minor faults and user / system ms per step (means over the
timed steps, from getrusage of the process).
"""

import argparse
import hashlib
import json
import resource
import statistics
import time

import numpy as np

from _checkout import use_built_checkout  # noqa: E402

use_built_checkout()

import fastconv  # noqa: E402
from bench_resnet import smoothed_targets  # noqa: E402
from bench_train import batches, inputs, load_data  # noqa: E402
from fastconv import models, nn, optim  # noqa: E402


def build(name, steps):
    model = models.build(name, seed=0)
    if name == "resnet":
        optimizer = optim.Adam(model.parameters(), lr=2e-3)
    else:
        optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, optimizer, optim.CosineAnnealingLR(optimizer, steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["resnet", "seed", "lenet"], default="resnet")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 32 for resnet, 64 for the others (the benches')")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fingerprint", default=None)
    args = parser.parse_args()
    fastconv.set_num_threads(args.threads)
    batch = args.batch_size or (32 if args.model == "resnet" else 64)
    X, y, X_test, _, _ = load_data(None, None)
    X, _ = inputs(X, X_test, True)
    targets = smoothed_targets(y, 0.1) if args.model == "resnet" else y
    rows = batches(len(X), batch, 0)[:args.warmup + args.steps]
    model, optimizer, scheduler = build(args.model, len(rows))
    loss = nn.CrossEntropyLoss()
    model.train()
    losses, times = [], []
    usage = None
    for step, index in enumerate(rows):
        if step == args.warmup:
            usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        losses.append(loss(model(X[index]), targets[index]))
        optimizer.zero_grad()
        nn.backward_without_input_grad(model, loss.backward())
        optimizer.step()
        scheduler.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    end = resource.getrusage(resource.RUSAGE_SELF)
    count = len(times)
    print(f"{args.model}, batch {batch}, {args.threads} threads, {count} steps after "
          f"{args.warmup}: median step {1e3 * statistics.median(times):.2f} ms, "
          f"{(end.ru_minflt - usage.ru_minflt) / count:.1f} minor faults, "
          f"user {1e3 * (end.ru_utime - usage.ru_utime) / count:.2f} ms, "
          f"system {1e3 * (end.ru_stime - usage.ru_stime) / count:.2f} ms per step")
    if args.fingerprint:
        digest = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        with open(args.fingerprint, "w") as handle:
            json.dump({"model": args.model, "losses": [float(v).hex() for v in losses],
                       "weights": digest.hexdigest()}, handle, indent=1)


if __name__ == "__main__":
    main()
