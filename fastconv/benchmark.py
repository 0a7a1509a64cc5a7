"""Benchmark fastconv against a vectorised NumPy implementation and, when installed, PyTorch
and ONNX Runtime (``pip install "fastconv[bench]"``).

Run ``python bench/bench_ops.py`` (full) or ``fastconv bench`` (quick). Every contender gets
NumPy arrays in and returns NumPy arrays out; the contenders are interleaved in short blocks
after a pause that lets the previous one's threads go idle (see _median_times), and the
median per call is reported, because the machine is shared and
noisy. Ratios are
taken within one run: ``np/fc`` is how many times faster fastconv is than NumPy, ``fc/torch``
is fastconv's time as a fraction of PyTorch's and ``fc/ort`` as a fraction of ONNX Runtime's
(below 1.0: fastconv is faster). ONNX Runtime runs forward passes only (an inference engine),
with the weights as constants of the graph and the same thread count. For the memory-bound
pooling ops, ``copy ms`` times ``np.copyto`` of the input's bytes into another buffer (one
read and one write of the input: a floor that moves at least what the op must), and
``fc/copy`` is fastconv's time over it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

import fastconv

# name: (N, C_in, H, W, C_out, kernel, stride, padding, groups)
CONV_CASES = {
    "seed": (64, 1, 28, 28, 16, (5, 5), 2, 0, 1),
    "lenet": (64, 6, 14, 14, 16, (5, 5), 1, 0, 1),
    "small": (64, 16, 14, 14, 32, (3, 3), 1, 1, 1),
    "resnet": (16, 64, 56, 56, 64, (3, 3), 1, 1, 1),
    "down": (16, 64, 56, 56, 128, (3, 3), 2, 1, 1),
    "pointwise": (16, 256, 28, 28, 64, (1, 1), 1, 0, 1),
    "stem": (8, 3, 224, 224, 64, (7, 7), 2, 3, 1),
    "image": (1, 3, 360, 640, 3, (5, 5), 1, 0, 1),
    "tiny": (1, 1, 6, 8, 1, (1, 2), 1, 0, 1),
    "depthwise": (16, 128, 28, 28, 128, (3, 3), 1, 1, 128),
    "vgg28": (8, 128, 28, 28, 128, (3, 3), 1, 1, 1),
    "vgg14": (8, 256, 14, 14, 256, (3, 3), 1, 1, 1),
}
# name: (kind, N, C, H, W, kernel, stride, padding)
POOL_CASES = {
    "max-k2": ("max", 64, 16, 24, 24, 2, 2, 0),
    "max-k2-12": ("max", 64, 16, 12, 12, 2, 2, 0),  # the tutorial net's
    "max-k3s2": ("max", 16, 64, 112, 112, 3, 2, 1),
    "avg-k2": ("avg", 64, 16, 24, 24, 2, 2, 0),
    "avg-k3s1": ("avg", 16, 64, 56, 56, 3, 1, 1),
}
QUICK_CASES = ("seed", "lenet", "small", "tiny", "depthwise", "max-k2", "avg-k2")


# ---------------------------------------------------------------- the NumPy contender
def _windows(x, kernel, stride, pad, fill=0.0):
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, ::stride, ::stride]


def numpy_conv2d(x, weight, bias, stride, pad, groups):
    """im2col by sliding windows, then one matmul per group."""
    n = x.shape[0]
    out_channels, cin_g, kh, kw = weight.shape
    windows = _windows(x, (kh, kw), stride, pad)            # N, C, OH, OW, kh, kw
    oh, ow = windows.shape[2:4]
    cout_g = out_channels // groups
    windows = windows.reshape(n, groups, cin_g, oh, ow, kh, kw)
    cols = windows.transpose(1, 0, 3, 4, 2, 5, 6).reshape(groups, n * oh * ow, cin_g * kh * kw)
    wmat = weight.reshape(groups, cout_g, cin_g * kh * kw)
    y = np.matmul(cols, wmat.transpose(0, 2, 1))             # G, N*OH*OW, cout_g
    y = y.reshape(groups, n, oh, ow, cout_g).transpose(1, 0, 4, 2, 3).reshape(
        n, out_channels, oh, ow)
    if bias is not None:
        y = y + bias[None, :, None, None]
    return np.ascontiguousarray(y)


def numpy_conv2d_backward(grad_output, x, weight, stride, pad, groups):
    """grad_weight = gy @ cols, grad_input = col2im(gy @ W) with one strided add per tap."""
    n, channels, h, w = x.shape
    out_channels, cin_g, kh, kw = weight.shape
    cout_g = out_channels // groups
    windows = _windows(x, (kh, kw), stride, pad)
    oh, ow = windows.shape[2:4]
    cols = windows.reshape(n, groups, cin_g, oh, ow, kh, kw).transpose(
        1, 0, 3, 4, 2, 5, 6).reshape(groups, n * oh * ow, cin_g * kh * kw)
    gy = grad_output.reshape(n, groups, cout_g, oh, ow).transpose(1, 0, 3, 4, 2).reshape(
        groups, n * oh * ow, cout_g)
    grad_weight = np.matmul(gy.transpose(0, 2, 1), cols).reshape(weight.shape)
    wmat = weight.reshape(groups, cout_g, cin_g * kh * kw)
    dcols = np.matmul(gy, wmat).reshape(groups, n, oh, ow, cin_g, kh, kw)
    dcols = dcols.transpose(1, 0, 4, 5, 6, 2, 3).reshape(n, channels, kh, kw, oh, ow)
    grad_padded = np.zeros((n, channels, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            grad_padded[:, :, p:p + stride * oh:stride, q:q + stride * ow:stride] += dcols[:, :, p, q]
    grad_input = grad_padded[:, :, pad:pad + h, pad:pad + w]
    grad_bias = grad_output.sum(axis=(0, 2, 3))
    return np.ascontiguousarray(grad_input), grad_weight, grad_bias


def numpy_max_pool2d(x, kernel, stride, pad):
    return np.ascontiguousarray(_windows(x, (kernel, kernel), stride, pad, -np.inf).max(axis=(4, 5)))


def numpy_avg_pool2d(x, kernel, stride, pad):
    return np.ascontiguousarray(_windows(x, (kernel, kernel), stride, pad).mean(axis=(4, 5)))


def numpy_max_pool2d_backward(grad_output, x, kernel, stride, pad):
    """Route each gradient to the first maximum of its window (one masked add per tap)."""
    n, c, h, w = x.shape
    windows = _windows(x, (kernel, kernel), stride, pad, -np.inf)
    oh, ow = windows.shape[2:4]
    flat = windows.reshape(n, c, oh, ow, kernel * kernel)
    first = flat.argmax(axis=-1)
    grad_padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    for tap in range(kernel * kernel):
        p, q = divmod(tap, kernel)
        grad_padded[:, :, p:p + stride * oh:stride, q:q + stride * ow:stride] += np.where(
            first == tap, grad_output, 0)
    return np.ascontiguousarray(grad_padded[:, :, pad:pad + h, pad:pad + w])


def numpy_avg_pool2d_backward(grad_output, x_shape, kernel, stride, pad):
    n, c, h, w = x_shape
    oh, ow = grad_output.shape[2:]
    share = grad_output / (kernel * kernel)
    grad_padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=grad_output.dtype)
    for p in range(kernel):
        for q in range(kernel):
            grad_padded[:, :, p:p + stride * oh:stride, q:q + stride * ow:stride] += share
    return np.ascontiguousarray(grad_padded[:, :, pad:pad + h, pad:pad + w])


# ---------------------------------------------------------------- timing
# After a call, a library's idle threads keep spinning for a while: OpenMP's briefly,
# OpenBLAS's (NumPy's matmul) for up to ~0.1 s, yielding but still taking the cores. Measured
# here: a pointwise conv2d right after NumPy's GEMMs took 9-13 ms, after a 0.2 s pause 3.8 ms.
SETTLE_SECONDS = 0.2


def _median_times(contenders, repeats, min_seconds, per_block=5, settle=SETTLE_SECONDS):
    """Interleave the contenders block by block; return {name: median seconds per call}.

    Each round gives every contender, after ``settle`` seconds for the previous one's threads
    to go idle, one untimed call and then ``per_block`` timed ones: no contender is charged
    for another library's spinning threads. Rounds repeat until ``repeats`` rounds and
    ``min_seconds`` have passed, so drift on a shared machine hits every contender alike.
    """
    times = {name: [] for name in contenders}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < min_seconds and rounds < 10 * repeats):
        for name, fn in contenders.items():
            if settle and len(contenders) > 1:
                time.sleep(settle)
            fn()
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(values) for name, values in times.items()}


def _torch_module():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _onnxruntime_module():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        return None
    return onnx, onnxruntime


def ort_runner(model, inputs, threads):
    """A callable running an ONNX ``model`` on ``inputs`` (name -> array) with ONNX Runtime.

    All graph optimisations on (ORT's default), ``threads`` intra-op threads, sequential
    execution: how an inference user would run it on this many cores.
    """
    _, onnxruntime = _onnxruntime_module()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    return lambda: session.run(None, inputs)[0]


def onnx_single_op(op_type, x, out_shape, attributes, initializers=()):
    """An ONNX model of one node ``op_type`` on input ``x`` (float32/float64, fixed shape) with
    output shape ``out_shape``, and ``initializers`` (name, array) as constant inputs after x."""
    onnx, _ = _onnxruntime_module()
    from onnx import helper, numpy_helper

    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    names = ["x"] + [name for name, _ in initializers]
    node = helper.make_node(op_type, names, ["y"], **attributes)
    graph = helper.make_graph(
        [node], op_type.lower(), [helper.make_tensor_value_info("x", elem, list(x.shape))],
        [helper.make_tensor_value_info("y", elem, list(out_shape))],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


def _check_same(result, expected, who, case):
    """A contender that computes something else is not timed: compare it once first."""
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    if result.shape != expected.shape or not np.allclose(result, expected, rtol=1e-4,
                                                         atol=1e-4 * scale):
        raise RuntimeError(f"{who} disagrees with fastconv on {case}")


def conv_contenders(case, dtype, torch, include_numpy, ort_threads=None, algorithm=None):
    """(forward contenders, flops), (backward contenders, flops), and with ``algorithm``
    (conv2d's, not 'auto') a third pair: the input gradient alone. With ``algorithm`` the
    contender ``alg`` is fastconv run with it."""
    n, cin, h, w, cout, kernel, stride, pad, groups = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, cin // groups) + kernel).astype(dtype)
    bias = rng.standard_normal(cout).astype(dtype)
    y = fastconv.conv2d(x, weight, bias, stride, pad, groups=groups)
    gy = rng.standard_normal(y.shape).astype(dtype)
    flops = 2.0 * y.size * (cin // groups) * kernel[0] * kernel[1]
    fwd = {"fastconv": lambda: fastconv.conv2d(x, weight, bias, stride, pad, groups=groups)}
    bwd = {"fastconv": lambda: fastconv.conv2d_backward(gy, x, weight, stride, pad, groups=groups)}
    if include_numpy:
        fwd["numpy"] = lambda: numpy_conv2d(x, weight, bias, stride, pad, groups)
        bwd["numpy"] = lambda: numpy_conv2d_backward(gy, x, weight, stride, pad, groups)
    if torch is not None:
        def torch_forward():
            return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                              torch.from_numpy(bias), stride, pad, 1,
                                              groups).numpy()

        def torch_backward():
            grads = torch.ops.aten.convolution_backward(
                torch.from_numpy(gy), torch.from_numpy(x), torch.from_numpy(weight), [cout],
                [stride, stride], [pad, pad], [1, 1], False, [0, 0], groups, [True, True, True])
            return [g.numpy() for g in grads]

        fwd["torch"] = torch_forward
        bwd["torch"] = torch_backward
    if ort_threads is not None:
        model = onnx_single_op("Conv", x, y.shape, {"strides": [stride, stride], "pads": [pad] * 4,
                                           "group": groups, "kernel_shape": list(kernel)},
                               [("w", weight), ("b", bias)])
        fwd["ort"] = ort_runner(model, {"x": x}, ort_threads)
        _check_same(fwd["ort"](), y, "onnxruntime", case)
    if algorithm is None:
        return (fwd, flops), (bwd, 2 * flops)
    fwd["alg"] = lambda: fastconv.conv2d(x, weight, bias, stride, pad, groups=groups,
                                         algorithm=algorithm)
    _check_same(fwd["alg"](), y, f"fastconv algorithm={algorithm!r}", case)
    bwd["alg"] = lambda: fastconv.conv2d_backward(gy, x, weight, stride, pad, groups=groups,
                                                  algorithm=algorithm)
    gin = {"fastconv": lambda: fastconv.conv2d_backward(gy, x, weight, stride, pad,
                                                        groups=groups, need=("input",)),
           "alg": lambda: fastconv.conv2d_backward(gy, x, weight, stride, pad, groups=groups,
                                                   need=("input",), algorithm=algorithm)}
    _check_same(gin["alg"]()[0], gin["fastconv"]()[0], f"fastconv algorithm={algorithm!r}",
                case)
    if torch is not None:
        gin["torch"] = lambda: torch.ops.aten.convolution_backward(
            torch.from_numpy(gy), torch.from_numpy(x), torch.from_numpy(weight), [cout],
            [stride, stride], [pad, pad], [1, 1], False, [0, 0], groups,
            [True, False, False])[0].numpy()
    return (fwd, flops), (bwd, 2 * flops), (gin, flops)


def pool_contenders(case, dtype, torch, include_numpy, ort_threads=None):
    kind, n, c, h, w, kernel, stride, pad = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    copy_target = np.empty_like(x)
    if kind == "max":
        y, indices = fastconv.max_pool2d(x, kernel, stride, pad, return_indices=True)
        gy = rng.standard_normal(y.shape).astype(dtype)
        fwd = {"fastconv": lambda: fastconv.max_pool2d(x, kernel, stride, pad)}
        bwd = {"fastconv": lambda: fastconv.max_pool2d_backward(gy, indices, x.shape)}
        if include_numpy:
            fwd["numpy"] = lambda: numpy_max_pool2d(x, kernel, stride, pad)
            bwd["numpy"] = lambda: numpy_max_pool2d_backward(gy, x, kernel, stride, pad)
        if torch is not None:
            t_indices = torch.from_numpy(indices)
            fwd["torch"] = lambda: torch.nn.functional.max_pool2d(
                torch.from_numpy(x), kernel, stride, pad).numpy()
            bwd["torch"] = lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                torch.from_numpy(gy), torch.from_numpy(x), [kernel, kernel], [stride, stride],
                [pad, pad], [1, 1], False, t_indices).numpy()
    else:
        y = fastconv.avg_pool2d(x, kernel, stride, pad)
        gy = rng.standard_normal(y.shape).astype(dtype)
        fwd = {"fastconv": lambda: fastconv.avg_pool2d(x, kernel, stride, pad)}
        bwd = {"fastconv": lambda: fastconv.avg_pool2d_backward(gy, x.shape, kernel, stride, pad)}
        if include_numpy:
            fwd["numpy"] = lambda: numpy_avg_pool2d(x, kernel, stride, pad)
            bwd["numpy"] = lambda: numpy_avg_pool2d_backward(gy, x.shape, kernel, stride, pad)
        if torch is not None:
            fwd["torch"] = lambda: torch.nn.functional.avg_pool2d(
                torch.from_numpy(x), kernel, stride, pad).numpy()
            bwd["torch"] = lambda: torch.ops.aten.avg_pool2d_backward(
                torch.from_numpy(gy), torch.from_numpy(x), [kernel, kernel], [stride, stride],
                [pad, pad], False, True, None).numpy()
    if ort_threads is not None:
        attributes = {"kernel_shape": [kernel, kernel], "strides": [stride, stride],
                      "pads": [pad] * 4}
        if kind == "avg":
            attributes["count_include_pad"] = 1  # torch's default, as fastconv's
        model = onnx_single_op("MaxPool" if kind == "max" else "AveragePool", x, y.shape,
                               attributes)
        fwd["ort"] = ort_runner(model, {"x": x}, ort_threads)
        _check_same(fwd["ort"](), y, "onnxruntime", case)
    # The same bytes as the op's input, read once and written once.
    fwd["copy"] = lambda: np.copyto(copy_target, x)
    bwd["copy"] = lambda: np.copyto(copy_target, x)
    return (fwd, 0.0), (bwd, 0.0)


def sgemm_ceiling(dtype, repeats=5):
    """GFLOP/s of a 2048x2048 matrix product through NumPy's BLAS: the machine's ceiling."""
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(dtype)
    seconds = _median_times({"gemm": lambda: a @ a}, repeats, 0.5, per_block=1)["gemm"]
    return 2 * 2048 ** 3 / seconds / 1e9


def _one_thread(fn):
    def call():
        with fastconv.threads(1):
            return fn()
    return call


def run(cases: Iterable[str] | None = None, dtype: npt.DTypeLike = np.float32, threads: int = 2,
        repeats: int = 7, min_seconds: float = 0.3, include_numpy: bool = True,
        include_torch: bool = True, scaling: bool = False, out: TextIO | None = None,
        include_ort: bool = True, algorithm: str = "auto") -> list[dict[str, Any]]:
    """Time every case; return a list of result rows (dicts) and print the table to ``out``.

    ``algorithm`` (conv2d's; not 'auto') adds fastconv run with it as a contender of the
    convolutions, the columns ``alg ms``, ``alg/torch`` and ``alg/ort`` beside the default
    ones, and a third op per convolution, ``gin``: the input gradient alone.

    ``scaling`` adds fastconv on one thread as a fourth contender and a column ``1t/Nt``:
    how many times faster ``threads`` threads are than one. ``out`` defaults to the current
    ``sys.stdout``.
    """
    out = sys.stdout if out is None else out
    torch = _torch_module() if include_torch else None
    if torch is not None:
        torch.set_num_threads(threads)
    ort = _onnxruntime_module() if include_ort else None
    ort_threads = threads if ort is not None else None
    from threadpoolctl import threadpool_limits

    names = list(cases) if cases else list(CONV_CASES) + list(POOL_CASES)
    rows: list[dict[str, Any]] = []
    header = (f"{'case':<11}{'op':<5}{'fastconv ms':>12}{'numpy ms':>11}{'torch ms':>10}"
              f"{'ort ms':>9}{'copy ms':>9}"
              f"{'fc GFLOP/s':>11}{'np/fc':>8}{'fc/torch':>9}{'fc/ort':>8}{'fc/copy':>8}"
              + (f"{'1t/%dt' % threads:>8}" if scaling else "")
              + (f"{'alg ms':>10}{'alg/torch':>10}{'alg/ort':>8}" if algorithm != "auto"
                 else ""))
    print(f"fastconv {fastconv.__version__}, {np.dtype(dtype).name}, {threads} threads, "
          f"torch {'%s' % torch.__version__ if torch is not None else 'not installed'}, "
          f"onnxruntime {ort[1].__version__ if ort is not None else 'not installed'}, "
          f"median over {repeats}+ interleaved rounds of 5 calls"
          + (f"; alg: algorithm={algorithm!r}" if algorithm != "auto" else ""), file=out)
    print(header, file=out)
    print("-" * len(header), file=out)
    with fastconv.threads(threads), threadpool_limits(limits=threads):
        for name in names:
            if name in CONV_CASES:
                pairs = conv_contenders(CONV_CASES[name], dtype, torch, include_numpy,
                                        ort_threads,
                                        None if algorithm == "auto" else algorithm)
            elif name in POOL_CASES:
                pairs = pool_contenders(POOL_CASES[name], dtype, torch, include_numpy,
                                        ort_threads)
            else:
                raise ValueError(f"unknown case {name!r}; known: "
                                 f"{sorted(CONV_CASES) + sorted(POOL_CASES)}")
            for op, (contenders, flops) in zip(("fwd", "bwd", "gin"), pairs):
                if scaling:
                    contenders["fastconv_1t"] = _one_thread(contenders["fastconv"])
                medians = _median_times(contenders, repeats, min_seconds)
                row = {"case": name, "op": op, "dtype": np.dtype(dtype).name, "threads": threads}
                for who, seconds in medians.items():
                    row[f"{who}_ms"] = seconds * 1e3
                row["fastconv_gflops"] = flops / medians["fastconv"] / 1e9 if flops else None
                if "numpy" in medians:
                    row["numpy_over_fastconv"] = medians["numpy"] / medians["fastconv"]
                if "torch" in medians:
                    row["fastconv_over_torch"] = medians["fastconv"] / medians["torch"]
                if "ort" in medians:
                    row["fastconv_over_ort"] = medians["fastconv"] / medians["ort"]
                if "copy" in medians:
                    row["fastconv_over_copy"] = medians["fastconv"] / medians["copy"]
                if "fastconv_1t" in medians:
                    row["thread_speedup"] = medians["fastconv_1t"] / medians["fastconv"]
                if "alg" in medians:
                    row["algorithm"] = algorithm
                    if "torch" in medians:
                        row["alg_over_torch"] = medians["alg"] / medians["torch"]
                    if "ort" in medians:
                        row["alg_over_ort"] = medians["alg"] / medians["ort"]
                rows.append(row)
                print(_format_row(row), file=out, flush=True)
    ratios = [row["fastconv_over_torch"] for row in rows if "fastconv_over_torch" in row]
    if ratios:
        geomean = float(np.exp(np.mean(np.log(ratios))))
        print(f"geometric mean fastconv/torch over {len(ratios)} ops: {geomean:.3f}", file=out)
    ratios = [row["fastconv_over_ort"] for row in rows if "fastconv_over_ort" in row]
    if ratios:
        geomean = float(np.exp(np.mean(np.log(ratios))))
        print(f"geometric mean fastconv/onnxruntime over {len(ratios)} forward ops: "
              f"{geomean:.3f}", file=out)
    speedups = [row["numpy_over_fastconv"] for row in rows if "numpy_over_fastconv" in row]
    if speedups:
        print(f"slowest speed-up over numpy: {min(speedups):.2f}x", file=out)
    return rows


def _format_row(row):
    def cell(key, width, fmt):
        value = row.get(key)
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"

    return (f"{row['case']:<11}{row['op']:<5}{cell('fastconv_ms', 12, '.3f')}"
            f"{cell('numpy_ms', 11, '.3f')}{cell('torch_ms', 10, '.3f')}"
            f"{cell('ort_ms', 9, '.3f')}{cell('copy_ms', 9, '.3f')}"
            f"{cell('fastconv_gflops', 11, '.1f')}{cell('numpy_over_fastconv', 8, '.2f')}"
            f"{cell('fastconv_over_torch', 9, '.3f')}{cell('fastconv_over_ort', 8, '.3f')}"
            f"{cell('fastconv_over_copy', 8, '.2f')}"
            + (cell("thread_speedup", 8, ".2f") if "thread_speedup" in row else "")
            + (cell("alg_ms", 10, ".3f") + cell("alg_over_torch", 10, ".3f")
               + cell("alg_over_ort", 8, ".3f") if "algorithm" in row else ""))


def main(argv: Sequence[str] | None = None) -> int:
    from .__main__ import int_at_least  # the command line's rule for counts

    parser = argparse.ArgumentParser(
        prog="fastconv bench",
        description="Time fastconv against NumPy and (when installed) PyTorch; print ratios.")
    parser.add_argument("cases", nargs="*", help="case names (default: all, or the quick set)")
    parser.add_argument("--quick", action="store_true", help="small cases, few repeats")
    parser.add_argument("--threads", type=int_at_least(1), default=2)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int_at_least(1), default=None)
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy contender")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument("--no-ort", action="store_true",
                        help="skip ONNX Runtime even if installed")
    parser.add_argument("--ceiling", action="store_true",
                        help="also measure the 2048x2048 GEMM ceiling through NumPy's BLAS")
    parser.add_argument("--scaling", action="store_true",
                        help="also time fastconv on one thread; print the speed-up of --threads")
    parser.add_argument("--algorithm", choices=("auto", "direct", "winograd"), default="auto",
                        help="also time the convolutions with conv2d's algorithm=ALGORITHM "
                             "(columns alg ms, alg/torch, alg/ort; op gin: input gradient)")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = parser.parse_args(argv)
    known = list(CONV_CASES) + list(POOL_CASES)
    unknown = [name for name in args.cases if name not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(map(repr, unknown))}; choose from "
                     f"{', '.join(known)}")
    cases = args.cases or (list(QUICK_CASES) if args.quick else None)
    repeats = args.repeats or (3 if args.quick else 7)
    rows = run(cases, dtype=np.dtype(args.dtype), threads=args.threads, repeats=repeats,
               min_seconds=0.05 if args.quick else 0.3, include_numpy=not args.no_numpy,
               include_torch=not args.no_torch, scaling=args.scaling,
               include_ort=not args.no_ort, algorithm=args.algorithm)
    report = {"rows": rows, "machine": platform.platform(), "python": sys.version.split()[0],
              "config": {"threads": args.threads, "dtype": args.dtype, "repeats": repeats,
                         "algorithm": args.algorithm}}
    if args.ceiling:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=args.threads):
            ceiling = sgemm_ceiling(np.dtype(args.dtype))
        report["gemm_ceiling_gflops"] = ceiling
        print(f"GEMM ceiling (2048^3 through NumPy's BLAS, {args.threads} threads): "
              f"{ceiling:.1f} GFLOP/s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
