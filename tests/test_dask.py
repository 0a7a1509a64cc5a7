"""fastconv.dask: equal to the in-memory functions bit for bit, on Dask's threaded scheduler and
on a real distributed cluster of two worker processes."""

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture(params=["threads", "cluster"])
def compute(request):
    """Compute on Dask's threaded scheduler, or on the two-process cluster."""
    if request.param == "threads":
        return lambda *arrays: __import__("dask").compute(*arrays, scheduler="threads")
    cluster_client = request.getfixturevalue("client")
    return lambda *arrays: cluster_client.compute(list(arrays), sync=True)


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


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_equals_in_memory(compute, chunks, case):
    # float32 with 16 output channels: direct kernels; depthwise with 16 channels
    x = RNG.standard_normal((3, 16, 57, 61)).astype(np.float32)
    for weight, groups in [(RNG.standard_normal((16, 16, 5, 5)), 1),
                           (RNG.standard_normal((16, 1, 3, 3)), 16)]:
        weight = weight.astype(np.float32)
        bias = RNG.standard_normal(16).astype(np.float32)
        xd = da.from_array(x, chunks=chunks or x.shape)
        (result,) = compute(fd.conv2d(xd, weight, bias, groups=groups, **case))
        same_bits(result, fastconv.conv2d(x, weight, bias, groups=groups, **case))


def test_conv2d_forces_the_in_memory_kernel():
    """A plane too big to stage takes the packed GEMM (or the per-plane depthwise kernels) in
    memory, its blocks would take the direct kernels: they are made to take the same one."""
    x = RNG.standard_normal((1, 16, 1100, 700)).astype(np.float32)
    xd = da.from_array(x, chunks=(1, 16, 300, 250))
    for weight, groups in [(RNG.standard_normal((16, 16, 3, 3)), 1),
                           (RNG.standard_normal((16, 1, 5, 5)), 16)]:
        weight = weight.astype(np.float32)
        result = fd.conv2d(xd, weight, stride=2, padding="same", groups=groups).compute(
            scheduler="threads")
        same_bits(result, fastconv.conv2d(x, weight, stride=2, padding="same", groups=groups))


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
    with pytest.raises(ValueError, match=r"x.rechunk\(\{2: -1, 3: -1\}\)"):
        fd.conv2d(x, weight)
    close = fd.conv2d(x, weight, exact=False).compute()
    np.testing.assert_allclose(close, fastconv.conv2d(x.compute(), weight), rtol=1e-5, atol=1e-5)


def test_conv2d_errors_are_the_in_memory_ones():
    x = da.zeros((1, 3, 8, 8), chunks=4)
    with pytest.raises(ValueError, match="groups"):
        fd.conv2d(x, np.zeros((4, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="reflect"):
        fd.conv2d(x, np.zeros((4, 3, 3, 3)), padding=8, padding_mode="reflect")


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_pooling_equals_in_memory(compute, chunks):
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


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad2d_equals_in_memory(mode):
    x = RNG.standard_normal((3, 2, 11, 13))
    value = 0.5 if mode == "constant" else 0
    for chunks in [(2, 1, 4, 5), (1, 1, 3, 2)]:
        xd = da.from_array(x, chunks=chunks)
        for padding in [1, ((2, 3), (0, 4)), ((0, 0), (5, 1))]:
            same_bits(fd.pad2d(xd, padding, mode=mode, value=value).compute(),
                      fastconv.pad2d(x, padding, mode=mode, value=value))
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


def test_predict_sends_the_model_once(client):
    model = fastconv.models.build("lenet")
    x = da.zeros((40, 1, 28, 28), dtype=np.float32, chunks=(5, 1, 28, 28))
    result = fd.predict(model, x)
    graph = dict(result.__dask_graph__())
    models = [key for key, value in graph.items() if isinstance(key, str) and "model" in key]
    assert len(models) == 1  # one key holds the model; the 8 tasks refer to it
    assert client.compute(result, sync=True).shape == (40, 10)


def test_large_image_scaled_down(compute):
    """The benchmark's 1x3x8192x8192 case (1024-chunks, 5x5, stride 2, dilation 2), at 1/4."""
    x = RNG.standard_normal((1, 3, 2048, 2048)).astype(np.float32)
    weight = RNG.standard_normal((16, 3, 5, 5)).astype(np.float32)
    xd = da.from_array(x, chunks=(1, 3, 256, 256))
    (result,) = compute(fd.conv2d(xd, weight, stride=2, dilation=2, padding="same"))
    same_bits(result, fastconv.conv2d(x, weight, stride=2, dilation=2, padding="same"))
