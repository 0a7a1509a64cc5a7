"""Where fastconv.dask's time goes on the large image of bench_dask.py (1x3xSxS float32,
chunks 1024x1024, 5x5 kernel, 16 out, stride 2, dilation 2, 'same').

Parts, each timed in this process (medians over repeats), then the whole on Dask's threaded
scheduler and on a one-worker LocalCluster:

* in memory at 1 and 2 threads;
* the blocks' work done serially in this process at 1 thread: building every block (halo
  assembly), convolving every block, and both -- the sum a 1-thread worker must do;
* Dask's threaded scheduler at 2 threads and a LocalCluster 1 worker x 2 threads (input
  persisted there, result kept there), with the number of tasks.

Run: python bench/profile_dask.py [--size 8192] [--repeats 3] [--skip-cluster]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
from _checkout import use_built_checkout

use_built_checkout()

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from bench_dask import forgotten  # noqa: E402  (the same wait as the bench's repeats)


def median_time(function, repeats):
    function()  # warm: pages mapped, plans cached
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()
    print("command:", " ".join([sys.executable] + sys.argv))
    print(f"load average: {', '.join(f'{value:.1f}' for value in os.getloadavg())}")
    rng = np.random.default_rng(0)
    size, chunk = args.size, min(args.chunk, args.size)
    image = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    weight = rng.standard_normal((16, 3, 5, 5), dtype=np.float32)
    kwargs = dict(stride=2, dilation=2, padding="same")
    lazy_input = da.from_array(image, chunks=(1, 3, chunk, chunk))
    lazy = fd.conv2d(lazy_input, weight, **kwargs)
    graph = dict(lazy.__dask_graph__())
    tasks = len(graph)
    print(f"1x3x{size}x{size}, chunks {chunk}: graph of {tasks} keys "
          f"({lazy.numblocks} output blocks)")

    for threads in (1, 2):
        def in_memory():
            with fastconv.threads(threads):
                return fastconv.conv2d(image, weight, **kwargs)
        print(f"in memory, {threads} thread(s): {median_time(in_memory, args.repeats):.3f} s")

    # the blocks' two halves, serially, from a graph whose input chunks are computed already
    chunks = {key: value for key, value in graph.items() if key[0] == lazy_input.name}
    chunk_values = dict(zip(chunks, dask.get(chunks, list(chunks))))
    outputs = [key for key in graph if key[0] == lazy.name]
    calls = [graph[key] for key in outputs]

    def values(grid):
        return [[[None if key is None else chunk_values[key] for key in row] for row in plane]
                for plane in grid]

    def build_all(scratch=True):
        blocks = []
        for call in calls:
            _, (assemble, grid, rows, columns, fill, _), *_ = call
            blocks.append(assemble(values(grid), rows, columns, fill, scratch))
        return blocks

    print(f"  build the {len(calls)} blocks serially (as the tasks do): "
          f"{median_time(build_all, args.repeats):.3f} s")
    blocks = build_all(scratch=False)
    print(f"  ({sum(block.nbytes for block in blocks) / 2**20:.0f} MiB built; in fresh memory "
          f"each: {median_time(lambda: build_all(False), args.repeats):.3f} s)")

    def convolve_all():
        for call, block in zip(calls, blocks):
            function, _, *extras = call
            function(block, *[graph[key] for key in extras])
    print(f"  convolve the built blocks serially (1 thread): "
          f"{median_time(convolve_all, args.repeats):.3f} s")
    del blocks

    def tasks_serially():
        for call in calls:
            function, (assemble, grid, rows, columns, fill, scratch), *extras = call
            function(assemble(values(grid), rows, columns, fill, scratch),
                     *[graph[key] for key in extras])
    print(f"  the tasks serially (build + convolve, 1 thread): "
          f"{median_time(tasks_serially, args.repeats):.3f} s")

    def threaded():  # the blocks, not concatenated into one array
        return lazy.persist(scheduler="threads", num_workers=2)
    print(f"dask threaded scheduler, 2 threads (blocks kept): "
          f"{median_time(threaded, args.repeats):.3f} s")

    if not args.skip_cluster:
        from distributed import Client, LocalCluster, wait
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            stored = client.persist(lazy_input)
            wait(stored)
            on_worker_graph = fd.conv2d(stored, weight, **kwargs)

            def on_worker():
                result = client.persist(on_worker_graph)
                wait(result)
                del result
                forgotten(client, on_worker_graph)
            on_worker()
            print(f"LocalCluster 1 worker x 2 threads, result kept on the worker: "
                  f"{median_time(on_worker, args.repeats):.3f} s")
    print(f"load average after: {', '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
