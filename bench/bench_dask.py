"""fastconv.dask against in-memory fastconv, measured in the same run (medians, interleaved).

1. 1x3xSxS float32 (S = 8192 by default), chunks 1024x1024, 5x5 kernel (16 out), stride 2,
   dilation 2, 'same': dask on one worker process x 2 threads vs in-memory at 2 threads
   (target: within 1.5x), and equality. The input is persisted on the worker first (as if read
   there from storage); "on worker" times the convolution with its result kept there (a
   pipeline's next stage would read it there), "to client" adds gathering the result into
   this process.
2. LeNet inference over 60,000 28x28 images (input persisted on the workers, batch 500):
   2 worker processes x 1 thread vs 1 x 1 (target: at least 1.6x faster).
3. The same, 1 worker x 2 threads vs a plain in-memory loop at 2 threads (target: within 1.3x).

Each contender runs once before timing (workers started, model sent, kernels warm); then the
contenders of one comparison alternate, repeat after repeat, and medians are reported. The
machine's other load is not controlled: read the ratios, which compare runs made side by side.

Run: python bench/bench_dask.py [--repeats 3] [--size 8192]
"""

import argparse
import contextlib
import os
import statistics
import sys
import time

import numpy as np
from _checkout import use_built_checkout

use_built_checkout()

import dask.array as da  # noqa: E402
import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from distributed import Client, LocalCluster, wait  # noqa: E402

BATCH = 500
IMAGES = 60000


@contextlib.contextmanager
def cluster(workers, threads):
    """A client of a local cluster of worker processes, both closed on leaving."""
    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                      dashboard_address=None) as local, Client(local) as client:
        yield client


def interleaved(contenders, repeats):
    """Median seconds of each callable, the callables alternating within each repeat."""
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def large_image(size, repeats, rng):
    image = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    weight = rng.standard_normal((16, 3, 5, 5), dtype=np.float32)
    kwargs = dict(stride=2, dilation=2, padding="same")
    chunk = min(1024, size)

    def in_memory():
        with fastconv.threads(2):
            return fastconv.conv2d(image, weight, **kwargs)

    with cluster(1, 2) as client:
        stored = client.persist(da.from_array(image, chunks=(1, 3, chunk, chunk)))
        wait(stored)
        lazy = fd.conv2d(stored, weight, **kwargs)

        def on_worker():
            result = client.persist(lazy)
            wait(result)
            del result

        result = client.compute(lazy, sync=True)  # warm, and the bits to compare
        equal = np.array_equal(result.view(np.uint32), in_memory().view(np.uint32))
        del result
        medians = interleaved({"on worker": on_worker,
                               "to client": lambda: client.compute(lazy, sync=True),
                               "in-memory": in_memory}, repeats)
    memory = medians["in-memory"]
    print(f"1x3x{size}x{size} conv 5x5 s2 d2 'same', chunks {chunk}, 1 worker x 2 threads vs "
          f"in-memory at 2 threads: in-memory {memory:.2f} s; dask on worker "
          f"{medians['on worker']:.2f} s (ratio {medians['on worker'] / memory:.2f}, target "
          f"<= 1.5), to client {medians['to client']:.2f} s (ratio "
          f"{medians['to client'] / memory:.2f}); equal bits: {equal}")


def lenet(repeats, rng):
    model = fastconv.models.build("lenet")
    images = rng.standard_normal((IMAGES, 1, 28, 28), dtype=np.float32)
    model.eval()

    def loop():
        with fastconv.threads(2):
            return np.concatenate([model(images[i:i + BATCH])
                                   for i in range(0, IMAGES, BATCH)])

    expected = loop()
    figures = {}
    for workers, threads in [(1, 1), (2, 1), (1, 2)]:
        with cluster(workers, threads) as client:
            stored = client.persist(da.from_array(images, chunks=(5000, 1, 28, 28)))
            wait(stored)
            lazy = fd.predict(model, stored, batch_size=BATCH)
            result = client.compute(lazy, sync=True)  # warm: workers started, model sent
            assert np.array_equal(result, expected), (workers, threads)
            medians = interleaved({"dask": lambda: client.compute(lazy, sync=True),
                                   "loop": loop}, repeats)
        figures[(workers, threads)] = medians["dask"]
        figures.setdefault("loop", []).append(medians["loop"])
        print(f"  LeNet {workers} worker(s) x {threads} thread(s): {medians['dask']:.2f} s "
              f"(in-memory loop at 2 threads alongside: {medians['loop']:.2f} s)")
    loop_time = statistics.median(figures["loop"])
    one, two, threaded = figures[(1, 1)], figures[(2, 1)], figures[(1, 2)]
    print(f"LeNet {IMAGES} images, batch {BATCH}: 1x1 {one:.2f} s, 2x1 {two:.2f} s -> speed-up "
          f"{one / two:.2f} (target >= 1.6); outputs equal to the in-memory loop")
    print(f"LeNet: 1 worker x 2 threads {threaded:.2f} s vs in-memory loop at 2 threads "
          f"{loop_time:.2f} s -> ratio {threaded / loop_time:.2f} (target <= 1.3)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--skip", choices=["image", "lenet"], default=None)
    args = parser.parse_args()
    print("command:", " ".join([sys.executable] + sys.argv))
    print(f"cores: {len(os.sched_getaffinity(0))}, load average: "
          f"{', '.join(f'{value:.1f}' for value in os.getloadavg())} (other users' work)")
    rng = np.random.default_rng(0)
    if args.skip != "image":
        large_image(args.size, args.repeats, rng)
    if args.skip != "lenet":
        lenet(args.repeats, rng)
    print(f"load average after: {', '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
