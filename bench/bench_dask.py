"""fastconv.dask against in-memory fastconv, measured in the same run (medians, interleaved).

1. 1x3x8192x8192 float32, chunks 1024x1024, 5x5 kernel (16 out), stride 2, dilation 2:
   dask on one worker process x 2 threads vs in-memory at 2 threads (target: within 1.5x),
   and equality.
2. LeNet inference over 60,000 28x28 images: 2 worker processes x 1 thread vs 1 x 1
   (target: at least 1.6x faster).
3. The same, 1 worker x 2 threads vs a plain in-memory loop at 2 threads (target: within 1.3x).

Run: python bench/bench_dask.py [--repeats 3] [--size 8192]
"""

import argparse
import statistics
import sys
import time

import numpy as np

import fastconv
import fastconv.dask as fd
import dask.array as da
from distributed import Client, LocalCluster

BATCH = 500


def timed(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cluster(workers, threads):
    return Client(LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               dashboard_address=None))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=8192)
    args = parser.parse_args()
    print("command:", " ".join([sys.executable] + sys.argv))
    rng = np.random.default_rng(0)

    # 1. the large image
    size = args.size
    image = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    weight = rng.standard_normal((16, 3, 5, 5), dtype=np.float32)
    kwargs = dict(stride=2, dilation=2, padding="same")
    with cluster(1, 2) as client:
        lazy = fd.conv2d(da.from_array(image, chunks=(1, 3, 1024, 1024)), weight, **kwargs)
        image_future = client.scatter(image)  # the input already on the worker, as from storage
        del image_future
        dask_times, memory_times = [], []
        for _ in range(args.repeats):  # interleaved
            start = time.perf_counter()
            result = client.compute(lazy, sync=True)
            dask_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            with fastconv.threads(2):
                expected = fastconv.conv2d(image, weight, **kwargs)
            memory_times.append(time.perf_counter() - start)
        equal = np.array_equal(result, expected)
    dask_time, memory_time = statistics.median(dask_times), statistics.median(memory_times)
    print(f"1x3x{size}x{size} conv 5x5 s2 d2 'same', chunks 1024: dask 1 worker x 2 threads "
          f"{dask_time:.2f} s, in-memory 2 threads {memory_time:.2f} s, ratio "
          f"{dask_time / memory_time:.2f} (target <= 1.5), equal bits: {equal}")
    del image, result, expected

    # 2./3. LeNet inference over 60,000 images
    model = fastconv.models.build("lenet")
    images = rng.standard_normal((60000, 1, 28, 28), dtype=np.float32)
    x = da.from_array(images, chunks=(5000, 1, 28, 28))
    lazy = fd.predict(model, x, batch_size=BATCH)
    model.eval()

    def loop():
        with fastconv.threads(2):
            return np.concatenate([model(images[i:i + BATCH]) for i in range(0, 60000, BATCH)])

    figures = {}
    for workers, threads in [(1, 1), (2, 1), (1, 2)]:
        with cluster(workers, threads) as client:
            client.compute(lazy, sync=True)  # warm: workers start, model sent
            figures[(workers, threads)] = timed(lambda: client.compute(lazy, sync=True),
                                                args.repeats)
            memory = timed(loop, args.repeats)
            figures.setdefault("loop", []).append(memory)
    loop_time = statistics.median(figures["loop"])
    one, two, threaded = figures[(1, 1)], figures[(2, 1)], figures[(1, 2)]
    print(f"LeNet 60,000 images, batch {BATCH}: 1x1 {one:.2f} s, 2x1 {two:.2f} s -> speed-up "
          f"{one / two:.2f} (target >= 1.6)")
    print(f"LeNet: 1 worker x 2 threads {threaded:.2f} s vs in-memory loop at 2 threads "
          f"{loop_time:.2f} s -> ratio {threaded / loop_time:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
