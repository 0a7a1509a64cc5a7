"""fastconv.dask: equal to the in-memory functions bit for bit, on Dask's threaded scheduler and
on a real distributed cluster of two worker processes.

Every feature runs on the threaded scheduler with the full parametrisation; the cluster runs
the key ones (spatial chunks with halos and the in-memory kernel asked of each block, padding
modes, pooling with indices, predict, the scaled-down large image) on a few chunkings, as its
tasks cost milliseconds each.
"""

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastconv  # noqa: E402
import fastconv.conv as fconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from fastconv._plan import use_paths  # noqa: E402
from fastconv import _paths  # noqa: E402
from reference.conv import conv2d_ref  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def on_threads(*arrays):
    return __import__("dask").compute(*arrays, scheduler="threads")


@pytest.fixture(params=["threads", "cluster"])
def compute(request):
    """Compute on Dask's threaded scheduler, or on the two-process cluster."""
    if request.param == "threads":
        return on_threads
    cluster_client = request.getfixturevalue("client")
    return lambda *arrays: cluster_client.compute(list(arrays), sync=True)


@pytest.fixture
def keeping_replicas(client):
    """The cluster with Dask's active memory manager stopped for the test. Started by default,
    every 2 s it drops the copies of an in-memory key that no waiting task needs, but one:
    also of the model predict sends to both workers, which a worker then fetches (and
    unpickles) again for its next task. A test counting copies made by predict stops it, else
    2 s between predict and compute (a loaded machine) make the count."""
    was_running = client.amm.running()
    client.amm.stop()
    yield client
    if was_running:
        client.amm.start()


@pytest.fixture
def on_cluster(client):
    return lambda *arrays: client.compute(list(arrays), sync=True)


def same_bits(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert np.array_equal(actual.view(np.uint8), expected.view(np.uint8))


RNG = np.random.default_rng(17)
CHUNKINGS = [None, (2, 3, 13, 17), (1, 1, 20, 9), (3, 2, 7, 61)]
CONV_CASES = [
    dict(stride=2, dilation=2, padding="same"),
    dict(padding=((1, 3), (0, 2))),
    dict(stride=3, padding=2, padding_mode="reflect"),
    dict(padding=4, dilation=2, padding_mode="circular"),
    dict(padding=(2, 1), stride=2, padding_mode="replicate"),
]


def check_conv2d(compute, chunks, case):
    # float32 with 16 output channels: direct kernels; depthwise with 16 channels
    x = RNG.standard_normal((3, 16, 57, 61)).astype(np.float32)
    for weight, groups in [(RNG.standard_normal((16, 16, 5, 5)), 1),
                           (RNG.standard_normal((16, 1, 3, 3)), 16)]:
        weight = weight.astype(np.float32)
        bias = RNG.standard_normal(16).astype(np.float32)
        xd = da.from_array(x, chunks=chunks or x.shape)
        (result,) = compute(fd.conv2d(xd, weight, bias, groups=groups, **case))
        same_bits(result, fastconv.conv2d(x, weight, bias, groups=groups, **case))


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_equals_in_memory(chunks, case):
    check_conv2d(on_threads, chunks, case)


@pytest.mark.parametrize("chunks, case", [(CHUNKINGS[3], CONV_CASES[0]),
                                          ((2, 8, 20, 23), CONV_CASES[2])])
def test_conv2d_on_the_cluster(on_cluster, chunks, case):
    check_conv2d(on_cluster, chunks, case)


def kernel_of(x, weight, path=None, **kwargs):
    """The kernel the in-memory conv2d runs for these arguments, asked for ``path``."""
    conv, _ = fconv._prepare_checked(x, weight, None, kwargs.get("stride", 1),
                                     kwargs.get("padding", 0), 1, kwargs.get("groups", 1),
                                     "zeros", ())
    return fconv._kernel_path(conv, path)


# a plane too big to stage (16 x 402 x 362 floats > 8 MiB) takes the packed GEMM or the
# per-plane depthwise kernels in memory; its blocks of 100 x 90 would take the direct ones
BIG = (1, 16, 400, 360)
BIG_CHUNKS = (1, 16, 100, 90)


def test_conv2d_asks_each_block_for_the_in_memory_kernel():
    x = RNG.standard_normal(BIG).astype(np.float32)
    xd = da.from_array(x, chunks=BIG_CHUNKS)
    for weight, groups in [(RNG.standard_normal((32, 16, 3, 3)), 1),
                           (RNG.standard_normal((16, 1, 5, 5)), 16)]:
        weight = weight.astype(np.float32)
        whole = kernel_of(x[:0], weight, stride=2, padding=2, groups=groups)
        block = kernel_of(x[:0, :, :102, :92], weight, stride=2, padding=((2, 0), (2, 0)),
                          groups=groups)
        if _paths._DIRECT:  # (the direct kernels need AVX-512)
            assert (whole, block) in [("packed", "direct"),
                                      ("depthwise", "depthwise-direct")]
        result = fd.conv2d(xd, weight, stride=2, padding=2, groups=groups).compute(
            scheduler="threads")
        same_bits(result, fastconv.conv2d(x, weight, stride=2, padding=2, groups=groups))


def spy_kernels(monkeypatch):
    """Record which forward path each conv2d call runs (observed, not chosen: the paths are
    chosen by the ``_path`` argument under test)."""
    ran = []

    def spy(cls):
        function = cls.forward

        def recorded(self, *args):
            ran.append(self.name)
            return function(self, *args)
        return recorded

    for path in _paths.FORWARD:
        monkeypatch.setattr(type(path), "forward", spy(type(path)))
    return ran


def test_conv2d_private_path_reaches_each_kernel(monkeypatch):
    """conv2d's private ``_path`` (what fastconv.dask asks of each block) runs the kernel it
    names, computes the convolution, and refuses kernels that cannot take the shapes."""
    ran = spy_kernels(monkeypatch)
    small = RNG.standard_normal((2, 16, 12, 12)).astype(np.float32)
    big = RNG.standard_normal(BIG).astype(np.float32)
    small64 = RNG.standard_normal((2, 4, 12, 12))
    dense, depthwise = (RNG.standard_normal((32, 16, 3, 3)).astype(np.float32),
                        RNG.standard_normal((16, 1, 3, 3)).astype(np.float32))
    w64 = RNG.standard_normal((8, 4, 3, 3))
    direct = _paths._DIRECT
    packed = _paths._PACKED_GEMM
    cases = [  # x, weight, groups, path, whether this CPU can run it
        # below the packed GEMM's multiply-adds: BLAS unless asked
        (small, dense, 1, "direct", direct), (small, dense, 1, "packed", packed),
        (small, dense, 1, "blas", True),
        (small, depthwise, 16, "depthwise-direct", direct),
        (small, depthwise, 16, "depthwise", True),
        (small64, w64, 1, "packed", packed), (small64, w64, 1, "blas", True),
        (small64, w64, 1, "direct", False),  # float64: no direct kernels
        (big, dense, 1, "direct", False),  # too big to stage: no direct kernels
        (small, dense, 1, "depthwise", False),  # not a depthwise convolution
        (small, depthwise, 16, "direct", False),
    ]
    for x, weight, groups, path, runs in cases:
        ran.clear()
        if not runs:
            with pytest.raises(ValueError, match="_path"):
                fastconv.conv2d(x, weight, padding=1, groups=groups, _path=path)
            assert ran == []
            continue
        result = fastconv.conv2d(x, weight, padding=1, groups=groups, _path=path)
        assert ran == [path]
        tolerance = 1e-4 if x.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(result, conv2d_ref(x, weight, pads=(1, 1, 1, 1),
                                                      groups=groups),
                                   rtol=tolerance, atol=tolerance)
    with pytest.raises(ValueError, match="_path"):
        fastconv.conv2d(small, dense, _path="gemm")
    # the choices made with a _path are cached apart: plain calls keep their own kernel
    for x, weight, groups in [(small, dense, 1), (small, depthwise, 16), (small64, w64, 1)]:
        ran.clear()
        fastconv.conv2d(x, weight, padding=1, groups=groups)
        assert ran == [kernel_of(x, weight, padding=1, groups=groups)]


FRESH_PROCESS = """
import sys, numpy as np, fastconv
for name in sys.argv[1:]:
    arrays = np.load(name + ".in.npz")
    np.save(name + ".out.npy", fastconv.conv2d(arrays["x"], arrays["w"], padding=1))
"""


def test_blocks_asking_for_a_kernel_leave_other_calls_alone(tmp_path):
    """While Dask blocks run with the whole image's kernel, plain conv2d calls of another
    thread of the same process give the bits a fresh process gives (nothing global changes:
    a module-wide setting would have moved them onto the blocks' kernels)."""
    plain = {  # its kernel is chosen by size: the direct kernels (AVX-512) or BLAS
        "float32": (RNG.standard_normal((2, 16, 12, 12)).astype(np.float32),
                    RNG.standard_normal((32, 16, 5, 5)).astype(np.float32)),
    }
    for name, (x, weight) in plain.items():
        np.savez(tmp_path / f"{name}.in.npz", x=x, w=weight)
    # the fastconv under test (an in-place build or an installed one), from a directory that
    # is not a source tree (python -c looks in the current directory first)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", FRESH_PROCESS]
                   + [str(tmp_path / name) for name in plain],
                   cwd=tmp_path, env=env, check=True)
    fresh = {name: np.load(tmp_path / f"{name}.out.npy") for name in plain}
    # the blocks of these ask for 'packed' (the float32 image is too big to stage, the
    # float64 one has the multiply-adds, its blocks do not) ...
    big = RNG.standard_normal(BIG).astype(np.float32)
    w_big = RNG.standard_normal((32, 16, 3, 3)).astype(np.float32)
    x64 = RNG.standard_normal((4, 4, 90, 80))
    w64 = RNG.standard_normal((16, 4, 5, 5))
    lazy = [fd.conv2d(da.from_array(big, chunks=BIG_CHUNKS), w_big, padding=1),
            fd.conv2d(da.from_array(x64, chunks=(2, 4, 31, 27)), w64, padding=1)]
    assert kernel_of(big, w_big, padding=1) == kernel_of(x64, w64, padding=1) == "packed"
    # ... and the blocks' kernel would change the plain calls' bits (so a setting that
    # leaked from the blocks to this thread could not pass unseen; BLAS is not asked: its
    # sums may fall in the direct kernels' order, bit for bit, with some OpenBLAS builds)
    for name, (x, weight) in plain.items():
        assert kernel_of(x, weight, padding=1) != "packed", name
        assert kernel_of(x, weight, "packed", padding=1) == "packed", name
        assert not np.array_equal(fastconv.conv2d(x, weight, padding=1, _path="packed"),
                                  fresh[name]), name
    stop = threading.Event()
    calls, errors = [0], []

    def plain_calls():
        try:
            while not stop.is_set():
                for name, (x, weight) in plain.items():
                    same_bits(fastconv.conv2d(x, weight, padding=1), fresh[name])
                calls[0] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    other = threading.Thread(target=plain_calls)
    other.start()
    try:
        for _ in range(3):
            results = on_threads(*lazy)
    finally:
        stop.set()
        other.join()
    assert not errors, errors
    assert calls[0] > 3  # the plain calls ran alongside the blocks
    same_bits(results[0], fastconv.conv2d(big, w_big, padding=1))
    same_bits(results[1], fastconv.conv2d(x64, w64, padding=1))


def test_conv2d_float64_packed_and_batch_chunks():
    x = RNG.standard_normal((4, 4, 90, 80))
    weight = RNG.standard_normal((16, 4, 5, 5))
    xd = da.from_array(x, chunks=(3, 2, 31, 27))
    same_bits(fd.conv2d(xd, weight, padding=2, dilation=2).compute(scheduler="threads"),
              fastconv.conv2d(x, weight, padding=2, dilation=2))
    small = RNG.standard_normal((5, 3, 12, 12))  # BLAS in memory: batch chunks are exact
    w3 = RNG.standard_normal((2, 3, 3, 3))
    same_bits(fd.conv2d(da.from_array(small, chunks=(2, 3, 12, 12)), w3, padding=1).compute(),
              fastconv.conv2d(small, w3, padding=1))


def test_conv2d_blas_spatial_chunks_refused_with_the_fix():
    x = da.from_array(RNG.standard_normal((2, 3, 30, 30)).astype(np.float32), chunks=(1, 3, 8, 30))
    weight = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with use_paths(forward="blas"):  # (where the packed GEMM runs, small layers take it)
        with pytest.raises(ValueError, match=r"x.rechunk\(\{2: -1, 3: -1\}\)"):
            fd.conv2d(x, weight)
        close = fd.conv2d(x, weight, exact=False).compute(scheduler="synchronous")
        expected = fastconv.conv2d(x.compute(), weight)
    np.testing.assert_allclose(close, expected, rtol=1e-5, atol=1e-5)


def test_conv2d_errors_are_the_in_memory_ones():
    x = da.zeros((1, 3, 8, 8), chunks=4)
    with pytest.raises(ValueError, match="groups"):
        fd.conv2d(x, np.zeros((4, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="reflect"):
        fd.conv2d(x, np.zeros((4, 3, 3, 3)), padding=8, padding_mode="reflect")


def check_pooling(compute, chunks):
    x = RNG.standard_normal((3, 4, 57, 61)).astype(np.float32)
    xd = da.from_array(x, chunks=chunks or x.shape)
    cases = [dict(kernel_size=3, stride=2, padding=1, dilation=2),
             dict(kernel_size=(2, 3), ceil_mode=True, padding=(1, 1))]
    for case in cases:
        values, indices = compute(*fd.max_pool2d(xd, return_indices=True, **case))
        expected_values, expected_indices = fastconv.max_pool2d(x, return_indices=True, **case)
        same_bits(values, expected_values)
        same_bits(indices, expected_indices)
    for case in [dict(kernel_size=3, stride=2, padding=1),
                 dict(kernel_size=(2, 3), ceil_mode=True, padding=(1, 1),
                      count_include_pad=False),
                 dict(kernel_size=3, stride=3, ceil_mode=True, padding=1),
                 dict(kernel_size=2, divisor_override=3)]:
        (result,) = compute(fd.avg_pool2d(xd, **case))
        same_bits(result, fastconv.avg_pool2d(x, **case))


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_pooling_equals_in_memory(chunks):
    check_pooling(on_threads, chunks)


def test_pooling_on_the_cluster(on_cluster):
    check_pooling(on_cluster, CHUNKINGS[3])


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad2d_equals_in_memory(mode):
    x = RNG.standard_normal((3, 2, 11, 13))
    value = 0.5 if mode == "constant" else 0
    cases = [(chunks, padding) for chunks in [(2, 1, 4, 5), (1, 1, 3, 2)]
             for padding in [1, ((2, 3), (0, 4)), ((0, 0), (5, 1))]]
    results = on_threads(*[fd.pad2d(da.from_array(x, chunks=chunks), padding, mode=mode,
                                    value=value) for chunks, padding in cases])
    for (_, padding), result in zip(cases, results):
        same_bits(result, fastconv.pad2d(x, padding, mode=mode, value=value))
    with pytest.raises(ValueError, match="reflect"):
        fd.pad2d(da.from_array(x, chunks=4), 11, mode="reflect")


def test_three_dimensional_input():
    x = RNG.standard_normal((16, 20, 20)).astype(np.float32)
    weight = RNG.standard_normal((16, 16, 3, 3)).astype(np.float32)
    same_bits(fd.conv2d(da.from_array(x, chunks=(16, 7, 7)), weight, padding=1).compute(),
              fastconv.conv2d(x, weight, padding=1))


def test_predict_equals_the_in_memory_loop(compute):
    model = fastconv.models.build("lenet")
    x = RNG.standard_normal((70, 1, 28, 28)).astype(np.float32)
    (result,) = compute(fd.predict(model, da.from_array(x, chunks=(20, 1, 28, 28)),
                                   batch_size=10))
    model.eval()
    same_bits(result, np.concatenate([model(x[i:i + 10]) for i in range(0, 70, 10)]))
    assert model.training is False  # (set here); predict ran an eval copy of its own


def test_predict_any_callable_and_errors():
    x = da.from_array(np.arange(12.0).reshape(6, 2), chunks=(4, 2))
    np.testing.assert_array_equal(fd.predict(lambda b: b.sum(axis=1), x).compute(),
                                  np.arange(12.0).reshape(6, 2).sum(axis=1))
    with pytest.raises(ValueError, match=r"x.rechunk\(\{0: 3\}\)"):
        fd.predict(lambda b: b, x, batch_size=3)
    with pytest.raises(ValueError, match=r"x.rechunk\(\{1: -1\}\)"):
        fd.predict(lambda b: b, da.zeros((4, 4), chunks=2))


def test_predict_sends_the_model_once(keeping_replicas):
    """Without a client (the local schedulers): one graph key holds the model, the tasks
    refer to it. With the cluster's client as Dask's scheduler: the model is on both workers
    before anything is computed, and the graph holds no copy of it."""
    client = keeping_replicas
    model = fastconv.models.build("lenet")
    x = da.zeros((40, 1, 28, 28), dtype=np.float32, chunks=(5, 1, 28, 28))
    with __import__("dask").config.set(scheduler="threads"):  # the client is not the scheduler
        local = fd.predict(model, x)
    graph = dict(local.__dask_graph__())
    models = [key for key, value in graph.items() if isinstance(key, str) and "model" in key]
    assert len(models) == 1  # one key holds the model; the 8 tasks refer to it
    assert local.compute(scheduler="threads").shape == (40, 10)

    result = fd.predict(model, x)  # the client (the fixture's) is Dask's default scheduler
    graph = dict(result.__dask_graph__())
    assert not [key for key in graph if isinstance(key, str) and "model" in key]
    references = {value[1] for key, value in graph.items()
                  if isinstance(key, tuple) and key[0] == result.name}
    (future,) = references  # every task refers to the one scattered model
    assert isinstance(future, distributed.Future)
    assert len(client.who_has([future])[future.key]) == 2  # on both workers already
    same_bits(client.compute(result, sync=True), local.compute(scheduler="threads"))


@pytest.mark.parametrize("size", [2048, 1024])
def test_large_image_scaled_down(size, on_cluster):
    """The benchmark's 1x3x8192x8192 case (1024-chunks, 5x5, stride 2, dilation 2), at 1/4
    on the threaded scheduler, at 1/8 on the cluster (which is sent the image)."""
    compute = on_threads if size == 2048 else on_cluster
    x = RNG.standard_normal((1, 3, size, size)).astype(np.float32)
    weight = RNG.standard_normal((16, 3, 5, 5)).astype(np.float32)
    xd = da.from_array(x, chunks=(1, 3, size // 8, size // 8))
    (result,) = compute(fd.conv2d(xd, weight, stride=2, dilation=2, padding="same"))
    same_bits(result, fastconv.conv2d(x, weight, stride=2, dilation=2, padding="same"))


UNPICKLED = []  # in each worker process: one entry per copy of a CountsItsCopies unpickled


class CountsItsCopies:
    """A callable model that counts, in the process that receives it, how often it is
    unpickled there."""

    def __call__(self, batch):
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        UNPICKLED.append(1)


def test_predict_unpickles_the_model_once_per_worker(keeping_replicas):
    client = keeping_replicas
    x = da.from_array(np.arange(96.0).reshape(24, 2, 2), chunks=(2, 2, 2))  # 12 tasks
    result = fd.predict(CountsItsCopies(), x)
    np.testing.assert_array_equal(client.compute(result, sync=True),
                                  np.arange(96.0).reshape(24, 4).sum(axis=1, keepdims=True))
    counts = client.run(lambda: len(__import__(CountsItsCopies.__module__).UNPICKLED))
    assert list(counts.values()) == [1, 1], counts  # once on each worker, not once a task
    client.compute(result, sync=True)  # computed again: the workers keep their copy
    counts = client.run(lambda: len(__import__(CountsItsCopies.__module__).UNPICKLED))
    assert list(counts.values()) == [1, 1], counts


def test_predict_twice_with_one_model_keeps_each_copy(client):
    """Each predict sends the model as it is then; two results of one model object, changed
    in between, are two task sets computing side by side, each with its own copy."""
    model = fastconv.models.build("lenet")
    x = RNG.standard_normal((12, 1, 28, 28)).astype(np.float32)
    xd = da.from_array(x, chunks=(4, 1, 28, 28))
    before = fd.predict(model, xd)
    model.eval()

    def in_memory():  # batches of a chunk, as predict's tasks run them
        return np.concatenate([model(x[i:i + 4]) for i in range(0, 12, 4)])
    expected_before = in_memory()
    model[0].weight.data *= 2  # (in place: the copy sent above keeps the old weights)
    after = fd.predict(model, xd)
    assert before.name != after.name
    got_before, got_after = client.compute([before, after], sync=True)
    same_bits(got_before, expected_before)
    same_bits(got_after, in_memory())


def test_predict_built_with_a_client_computes_on_threads_too(client):
    """A result built while the cluster's client is Dask's scheduler (the model scattered to
    the workers) computes on the threaded scheduler as well, from the model key's task."""
    model = fastconv.models.build("lenet").eval()
    x = RNG.standard_normal((8, 1, 28, 28)).astype(np.float32)
    result = fd.predict(model, da.from_array(x, chunks=(4, 1, 28, 28)))
    expected = np.concatenate([model(x[:4]), model(x[4:])])
    same_bits(result.compute(scheduler="threads"), expected)
    same_bits(client.compute(result, sync=True), expected)
