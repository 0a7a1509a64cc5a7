"""fastconv.benchmark: its NumPy contenders compute what fastconv computes, and a tiny run
prints and writes its table (timings themselves are never asserted)."""

import json

import numpy as np
import pytest

import fastconv
from fastconv import benchmark


@pytest.mark.parametrize("case", [
    (2, 3, 9, 8, 4, (3, 3), 1, 1, 1),
    (2, 4, 11, 10, 6, (3, 2), 2, 1, 2),
    (1, 6, 7, 7, 6, (3, 3), 1, 1, 6),
])
def test_numpy_conv_contenders_agree_with_fastconv(case, rng):
    n, cin, h, w, cout, kernel, stride, pad, groups = case
    x = rng.standard_normal((n, cin, h, w))
    weight = rng.standard_normal((cout, cin // groups) + kernel)
    bias = rng.standard_normal(cout)
    y = fastconv.conv2d(x, weight, bias, stride, pad, groups=groups)
    np.testing.assert_allclose(benchmark.numpy_conv2d(x, weight, bias, stride, pad, groups), y,
                               rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y.shape)
    ours = fastconv.conv2d_backward(gy, x, weight, stride, pad, groups=groups)
    theirs = benchmark.numpy_conv2d_backward(gy, x, weight, stride, pad, groups)
    for a, b in zip(theirs, ours):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel, stride, pad", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_numpy_pool_contenders_agree_with_fastconv(kernel, stride, pad, rng):
    x = rng.standard_normal((2, 3, 10, 9))
    y, indices = fastconv.max_pool2d(x, kernel, stride, pad, return_indices=True)
    np.testing.assert_array_equal(benchmark.numpy_max_pool2d(x, kernel, stride, pad), y)
    gy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(benchmark.numpy_max_pool2d_backward(gy, x, kernel, stride, pad),
                               fastconv.max_pool2d_backward(gy, indices, x.shape), atol=1e-12)
    # The NumPy average divides by the whole window (count_include_pad, PyTorch's default).
    np.testing.assert_allclose(benchmark.numpy_avg_pool2d(x, kernel, stride, pad),
                               fastconv.avg_pool2d(x, kernel, stride, pad), rtol=1e-12)
    a = fastconv.avg_pool2d(x, kernel, stride, pad)
    gy = rng.standard_normal(a.shape)
    np.testing.assert_allclose(
        benchmark.numpy_avg_pool2d_backward(gy, x.shape, kernel, stride, pad),
        fastconv.avg_pool2d_backward(gy, x.shape, kernel, stride, pad), rtol=1e-12, atol=1e-12)


def test_tiny_run_prints_and_writes_the_table(tmp_path, capsys):
    path = tmp_path / "rows.json"
    assert benchmark.main(["tiny", "avg-k2", "--repeats", "1", "--scaling", "--threads", "2",
                           "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1t/2t" in out and "tiny" in out and "avg-k2" in out
    report = json.loads(path.read_text())
    rows = report["rows"]
    assert [(r["case"], r["op"]) for r in rows] == [("tiny", "fwd"), ("tiny", "bwd"),
                                                    ("avg-k2", "fwd"), ("avg-k2", "bwd")]
    for row in rows:
        assert row["fastconv_ms"] > 0 and row["numpy_ms"] > 0 and row["thread_speedup"] > 0
        assert row["numpy_over_fastconv"] == pytest.approx(row["numpy_ms"] / row["fastconv_ms"])
    with pytest.raises(ValueError, match="unknown case"):
        benchmark.run(["no-such-case"], repeats=1, include_torch=False)


@pytest.mark.parametrize("case", ["tiny", "depthwise", "max-k3s2", "avg-k2"])
def test_onnxruntime_contender_computes_what_fastconv_computes(case):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if case in benchmark.CONV_CASES:
        n, cin, h, w, cout, kernel, stride, pad, groups = benchmark.CONV_CASES[case]
        shrunk = (1, cin, min(h, 12), min(w, 12), cout, kernel, stride, pad, groups)
        (fwd, _), _ = benchmark.conv_contenders(shrunk, np.float32, None, False, ort_threads=1)
    else:
        kind, n, c, h, w, kernel, stride, pad = benchmark.POOL_CASES[case]
        shrunk = (kind, 2, 3, min(h, 13), min(w, 13), kernel, stride, pad)
        (fwd, _), _ = benchmark.pool_contenders(shrunk, np.float32, None, False, ort_threads=1)
    # conv_contenders/pool_contenders compare ONNX Runtime with fastconv once when they build
    # it (and raise on a mismatch); compare here too, independently.
    np.testing.assert_allclose(fwd["ort"](), fwd["fastconv"](), rtol=1e-4, atol=1e-4)


def test_onnxruntime_column_in_the_table(capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rows = benchmark.run(["tiny", "max-k2"], repeats=1, min_seconds=0, include_numpy=False,
                         include_torch=False)
    out = capsys.readouterr().out
    assert "fc/ort" in out and "onnxruntime" in out
    forward = [row for row in rows if row["op"] == "fwd"]
    assert all(row["ort_ms"] > 0 and row["fastconv_over_ort"] > 0 for row in forward)
    pool = [row for row in rows if row["case"] == "max-k2"]
    assert all(row["copy_ms"] > 0 and row["fastconv_over_copy"] > 0 for row in pool)
