"""The worker process of bench_ab.py, and the cases its --bits mode checks.

bench_ab.py starts one worker per checkout, with the checkout alone on PYTHONPATH and a
temporary directory as the current one, so each imports its own fastconv. The worker reads
requests (pickled, length-prefixed frames) on stdin and answers on the stdout it was started
with; anything printed while it runs goes to stderr, so it cannot corrupt the frames.

Only fastconv's public functions are called (conv2d, conv2d_backward, max_pool2d,
max_pool2d_backward, avg_pool2d, avg_pool2d_backward, pad2d, pad2d_backward, threads,
set_num_threads, show_config and the case tables of fastconv.benchmark), the ones that exist
at 0f2fc12 already, so the tool keeps working across redesigns of the kernel layer.

Every input is made here, from a seed derived from the case's name, so the two workers make
the same arrays; the parent also compares a digest of them. This module imports neither
fastconv nor anything outside the standard library and NumPy at import time: the parent
imports it for EDGE_CASES and the frame helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import struct
import sys
import time
import traceback
import zlib

import numpy as np

# ---------------------------------------------------------------- frames
_HEADER = struct.Struct("<Q")


def send(stream, message):
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream):
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


# ---------------------------------------------------------------- the cases
# A case is a dict: "kind" (conv, max, avg, pad), the input's shape "x", and the arguments of
# the public functions; keys left out take the functions' defaults. "nonfinite" puts NaN, +inf
# and -inf into the input at fixed places ("w_nonfinite": into the weights).
def _conv(x, cout, kernel, **kw):
    groups = kw.get("groups", 1)
    return dict(kind="conv", x=x, w=(cout, x[-3] // groups) + tuple(kernel), **kw)


EDGE_CASES = {
    # strides, dilations, explicit and named padding
    "e-stride2": _conv((2, 3, 9, 8), 4, (3, 3), stride=2, padding=1),
    "e-stride-hw": _conv((2, 3, 11, 10), 5, (3, 2), stride=(2, 3), padding=(1, 0)),
    "e-dil2": _conv((2, 4, 12, 11), 6, (3, 3), dilation=2, padding=2),
    "e-dil-hw": _conv((2, 3, 13, 9), 4, (3, 2), dilation=(2, 1), stride=(1, 2)),
    "e-pad-asym": _conv((2, 3, 8, 9), 4, (3, 3), padding=((1, 2), (0, 1))),
    "e-same-even": _conv((2, 3, 9, 8), 5, (4, 4), padding="same"),
    "e-same-dil": _conv((2, 3, 10, 10), 4, (3, 3), padding="same", dilation=2),
    "e-valid": _conv((2, 3, 9, 8), 4, (3, 3), padding="valid"),
    "e-kernel-big": _conv((2, 2, 5, 6), 3, (7, 7), stride=3, padding=3),
    "e-1x1-image": _conv((3, 4, 1, 1), 5, (3, 3), padding=1),
    "e-no-bias": dict(_conv((2, 3, 9, 8), 4, (3, 3), padding=1), bias=False),
    "e-unbatched": _conv((3, 9, 8), 4, (3, 3), padding=1),
    "e-batch0": _conv((0, 3, 9, 8), 4, (3, 3), padding=1),
    # padding modes
    "e-reflect": _conv((2, 3, 9, 8), 4, (3, 3), padding=2, padding_mode="reflect"),
    "e-replicate": _conv((2, 3, 9, 8), 4, (3, 3), padding=(2, 1), padding_mode="replicate"),
    "e-circular": _conv((2, 3, 9, 8), 4, (3, 3), padding=2, padding_mode="circular",
                        stride=2),
    # groups
    "e-groups2": _conv((2, 4, 9, 8), 6, (3, 3), padding=1, groups=2),
    "e-groups4-s2": _conv((2, 8, 11, 10), 8, (3, 2), stride=2, padding=1, groups=4),
    "e-groups2-direct": _conv((2, 8, 12, 12), 32, (3, 3), padding=1, groups=2),
    # depthwise: 16k channels (the lanes-of-16 kernels), a multiplier, channels that are not a
    # multiple of 16, strides, dilation, a 5x5 (input gradient as a forward pass)
    "e-dw-16k": _conv((1, 16384, 6, 6), 16384, (3, 3), padding=1, groups=16384),
    "e-dw-mult2": _conv((2, 8, 10, 9), 16, (3, 3), padding=1, groups=8),
    "e-dw-24": _conv((2, 24, 10, 9), 24, (3, 3), padding=1, groups=24),
    "e-dw-s2": _conv((2, 32, 11, 12), 32, (3, 3), stride=2, padding=1, groups=32),
    "e-dw-dil2": _conv((2, 32, 12, 12), 32, (3, 3), dilation=2, padding=2, groups=32),
    "e-dw-5x5": _conv((2, 32, 14, 13), 32, (5, 5), padding=2, groups=32),
    "e-dw-valid": _conv((2, 16, 9, 9), 16, (3, 3), groups=16),
    "e-dw-inf-w": dict(_conv((2, 32, 10, 10), 32, (3, 3), padding=1, groups=32),
                       w_nonfinite=True),
    # pointwise (BLAS on the input in place; at 16/32 channels the direct kernels)
    "e-pw": _conv((4, 64, 14, 14), 24, (1, 1)),
    "e-pw-32": _conv((2, 32, 12, 12), 32, (1, 1)),
    "e-pw-s2": _conv((2, 16, 9, 9), 8, (1, 1), stride=2),
    # sizes on either side of the path thresholds: direct (16 output channels), packed GEMM
    # (millions of multiply-adds per sample), BLAS, a plane too large to stage
    "e-direct-16": _conv((2, 8, 12, 12), 16, (3, 3), padding=1),
    "e-packed": _conv((2, 32, 32, 32), 24, (3, 3), padding=1),
    "e-packed-s2": _conv((2, 32, 33, 31), 40, (3, 3), stride=2, padding=1),
    "e-blas-small": _conv((4, 5, 10, 10), 7, (3, 3), padding=1),
    "e-unstaged": _conv((1, 2, 1200, 1000), 2, (3, 3), padding=1),
    "e-nonfinite": dict(_conv((2, 3, 9, 8), 16, (3, 3), padding=1), nonfinite=True),
    # max pooling: the 2x2 path (and its odd-size overhang), padding, dilation, ceil mode
    "e-max-2x2": dict(kind="max", x=(2, 3, 8, 10), kernel=2),
    "e-max-2x2-odd": dict(kind="max", x=(2, 3, 7, 9), kernel=2, stride=2),
    "e-max-3s2p1": dict(kind="max", x=(2, 4, 11, 10), kernel=3, stride=2, padding=1),
    "e-max-dil": dict(kind="max", x=(2, 3, 12, 11), kernel=3, stride=1, padding=1,
                      dilation=2),
    "e-max-ceil": dict(kind="max", x=(2, 3, 10, 9), kernel=3, stride=2, ceil_mode=True),
    "e-max-rect": dict(kind="max", x=(2, 3, 9, 12), kernel=(2, 3), stride=(1, 2),
                       padding=((1, 0), (0, 1))),
    "e-max-nan": dict(kind="max", x=(2, 3, 8, 8), kernel=2, nonfinite=True),
    "e-max-nan-3": dict(kind="max", x=(2, 3, 9, 9), kernel=3, stride=2, padding=1,
                        nonfinite=True),
    "e-max-unbatched": dict(kind="max", x=(3, 8, 9), kernel=2),
    "e-max-wide": dict(kind="max", x=(4, 64, 40, 40), kernel=2),
    # average pooling
    "e-avg-2x2": dict(kind="avg", x=(2, 3, 8, 10), kernel=2),
    "e-avg-3s1p1": dict(kind="avg", x=(2, 4, 9, 10), kernel=3, stride=1, padding=1),
    "e-avg-excl": dict(kind="avg", x=(2, 4, 9, 10), kernel=3, stride=2, padding=1,
                       count_include_pad=False),
    "e-avg-ceil": dict(kind="avg", x=(2, 3, 10, 9), kernel=3, stride=2, padding=1,
                       ceil_mode=True),
    "e-avg-divisor": dict(kind="avg", x=(2, 3, 9, 9), kernel=(2, 3), stride=(2, 1),
                          divisor_override=5),
    "e-avg-nan": dict(kind="avg", x=(2, 3, 8, 8), kernel=2, nonfinite=True),
    "e-avg-wide": dict(kind="avg", x=(4, 64, 40, 40), kernel=3, stride=1, padding=1),
    # padding
    "e-pad-constant": dict(kind="pad", x=(2, 3, 7, 9), padding=((1, 2), (3, 0)),
                           mode="constant", value=1.5),
    "e-pad-reflect": dict(kind="pad", x=(2, 3, 7, 9), padding=(3, 2), mode="reflect"),
    "e-pad-replicate": dict(kind="pad", x=(2, 3, 7, 9), padding=4, mode="replicate"),
    "e-pad-circular": dict(kind="pad", x=(2, 3, 7, 9), padding=((0, 3), (2, 1)),
                           mode="circular"),
    "e-pad-crop": dict(kind="pad", x=(2, 3, 7, 9), padding=((-1, 2), (1, -2)),
                       mode="constant"),
    "e-pad-plane": dict(kind="pad", x=(7, 9), padding=2, mode="reflect"),
    "e-pad-wide": dict(kind="pad", x=(16, 64, 56, 56), padding=1, mode="constant"),
    "e-pad-wide-reflect": dict(kind="pad", x=(16, 64, 56, 56), padding=2, mode="reflect"),
}


def bench_case(table, name, spec):
    """A case of fastconv.benchmark (CONV_CASES or POOL_CASES) as a case dict, called with
    exactly the arguments benchmark.py times."""
    if table == "conv":
        n, cin, h, w, cout, kernel, stride, pad, groups = spec
        return dict(kind="conv", x=(n, cin, h, w), w=(cout, cin // groups) + tuple(kernel),
                    stride=stride, padding=pad, groups=groups, bench=True)
    kind, n, c, h, w, kernel, stride, pad = spec
    return dict(kind=kind, x=(n, c, h, w), kernel=kernel, stride=stride, padding=pad,
                bench=True)


# ---------------------------------------------------------------- inputs and calls
_CONV_KEYS = ("stride", "padding", "dilation", "groups", "padding_mode")
_POOL_KEYS = ("stride", "padding", "dilation", "ceil_mode")
_AVG_KEYS = ("stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _seed(name, dtype):
    return zlib.crc32(f"{name}/{np.dtype(dtype).name}".encode())


def _spoil(array):
    """NaN, +inf and -inf at fixed places (a few of each, spread through the array)."""
    flat = array.reshape(-1)
    if flat.size:
        for k, value in enumerate((np.nan, np.inf, -np.inf, np.nan)):
            flat[(k * 7919 + 3) % flat.size] = value
    return array


def _kwargs(case, keys):
    return {key: case[key] for key in keys if key in case}


class Prepared:
    """A case's inputs for one dtype, and its calls: ``timed`` (op name -> callable, the
    calls benchmark.py times) and ``checked()`` (op name -> result, for --bits)."""

    def __init__(self, fc, name, case, dtype):
        self.fc = fc
        self.case = case
        dtype = np.dtype(dtype)
        rng = np.random.default_rng(_seed(name, dtype))
        x = rng.standard_normal(case["x"]).astype(dtype)
        if case.get("nonfinite"):
            _spoil(x)
        self.x = x
        self.inputs = [x]
        kind = case["kind"]
        if kind == "conv":
            self.weight = rng.standard_normal(case["w"]).astype(dtype)
            if case.get("w_nonfinite"):
                self.weight.reshape(-1)[[4, 40]] = (np.inf, -np.inf)
            self.bias = (rng.standard_normal(case["w"][0]).astype(dtype)
                         if case.get("bias", True) else None)
            self.kw = _kwargs(case, _CONV_KEYS)
            # benchmark.py passes stride, padding positionally and groups by keyword
            y = fc.conv2d(x, self.weight, self.bias, **self.kw)
            self.gy = rng.standard_normal(y.shape).astype(dtype)
            self.inputs += [self.weight, self.gy] + ([self.bias] if self.bias is not None
                                                     else [])
            self.timed = {
                "conv2d": lambda: fc.conv2d(x, self.weight, self.bias, **self.kw),
                "conv2d_backward": lambda: fc.conv2d_backward(self.gy, x, self.weight,
                                                              **self.kw),
            }
        elif kind == "max":
            self.kw = _kwargs(case, _POOL_KEYS)
            y, self.indices = fc.max_pool2d(x, case["kernel"], return_indices=True, **self.kw)
            self.gy = rng.standard_normal(y.shape).astype(dtype)
            self.inputs.append(self.gy)
            self.timed = {
                "max_pool2d": lambda: fc.max_pool2d(x, case["kernel"], **self.kw),
                "max_pool2d_backward": lambda: fc.max_pool2d_backward(self.gy, self.indices,
                                                                      x.shape),
            }
        elif kind == "avg":
            self.kw = _kwargs(case, _AVG_KEYS)
            y = fc.avg_pool2d(x, case["kernel"], **self.kw)
            self.gy = rng.standard_normal(y.shape).astype(dtype)
            self.inputs.append(self.gy)
            self.timed = {
                "avg_pool2d": lambda: fc.avg_pool2d(x, case["kernel"], **self.kw),
                "avg_pool2d_backward": lambda: fc.avg_pool2d_backward(
                    self.gy, x.shape, case["kernel"], **self.kw),
            }
        elif kind == "pad":
            self.kw = _kwargs(case, ("mode", "value"))
            y = fc.pad2d(x, case["padding"], **self.kw)
            self.gy = rng.standard_normal(y.shape).astype(dtype)
            self.inputs.append(self.gy)
            self.timed = {
                "pad2d": lambda: fc.pad2d(x, case["padding"], **self.kw),
                "pad2d_backward": lambda: fc.pad2d_backward(self.gy, case["padding"],
                                                            case.get("mode", "constant")),
            }
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def digest(self):
        """A digest of every input's shape, dtype and bytes: both workers must agree."""
        sha = hashlib.sha1()
        for array in self.inputs:
            sha.update(repr((array.shape, array.dtype.str)).encode())
            sha.update(np.ascontiguousarray(array).tobytes())
        return sha.hexdigest()

    def checked(self):
        """Every public call on this case: name -> array, or ('error', type, message)."""
        fc, case, x = self.fc, self.case, self.x
        calls = dict(self.timed)
        kind = case["kind"]
        if kind == "conv" and not case.get("bench"):
            calls["conv2d_backward[input]"] = lambda: fc.conv2d_backward(
                self.gy, x, self.weight, **self.kw, need=("input",))[:1]
            calls["conv2d_backward[weight,bias]"] = lambda: fc.conv2d_backward(
                self.gy, x, self.weight, **self.kw, need=("weight", "bias"))[1:]
        elif kind == "max":
            calls["max_pool2d+indices"] = lambda: fc.max_pool2d(
                x, case["kernel"], return_indices=True, **self.kw)
        results = {}
        for op, call in calls.items():
            try:
                result = call()
            except Exception as exc:  # both sides must refuse alike
                results[op] = ("error", type(exc).__name__, str(exc))
                continue
            parts = {"conv2d_backward": ("grad_input", "grad_weight", "grad_bias"),
                     "conv2d_backward[input]": ("grad_input",),
                     "conv2d_backward[weight,bias]": ("grad_weight", "grad_bias"),
                     "max_pool2d+indices": ("out", "indices")}.get(op)
            if parts is None:
                results[op] = result
            else:
                for part, value in zip(parts, result):
                    results[f"{op}.{part}"] = value
        return results


# ---------------------------------------------------------------- the worker's loop
def _hello(fc):
    info = {"file": os.path.realpath(fc.__file__), "version": fc.__version__,
            "num_threads": fc.get_num_threads(), "numpy": np.__version__,
            "python": sys.executable, "extensions": {}}
    for ext in ("_conv", "_pool", "_pad", "_openmp"):
        module = sys.modules.get(f"fastconv.{ext}")
        if module is not None:
            info["extensions"][ext] = os.path.realpath(module.__file__)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        fc.show_config()
    info["config"] = text.getvalue()
    try:
        from fastconv import benchmark
        info["cases"] = {"conv": dict(benchmark.CONV_CASES), "pool": dict(benchmark.POOL_CASES)}
        info["settle"] = getattr(benchmark, "SETTLE_SECONDS", None)
    except ImportError:
        info["cases"] = {"conv": {}, "pool": {}}
    return info


def main():
    # The frames go to the stdout we were started with; everything printed from here on
    # (warnings, a library's chatter) to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    try:
        import fastconv as fc
        from threadpoolctl import threadpool_limits
    except Exception:
        send(out, ("error", traceback.format_exc()))
        return 1
    send(out, ("ok", _hello(fc)))
    prepared = {}
    limits = None
    while True:
        message = receive(requests)
        if message is None or message[0] == "quit":
            return 0
        command, args = message
        try:
            if command == "threads":
                # every kernel's count (fastconv's setting) and the BLAS NumPy calls
                fc.set_num_threads(args)
                if limits is not None:
                    limits.restore_original_limits()
                limits = threadpool_limits(limits=args)
                reply = fc.get_num_threads()
            elif command == "prepare":  # (key, name, case, dtype) -> input digest
                key, name, case, dtype = args
                prepared.clear()
                prepared[key] = Prepared(fc, name, case, dtype)
                for call in prepared[key].timed.values():
                    call()
                reply = prepared[key].digest()
            elif command == "block":  # (key, op, calls) -> seconds per timed call
                key, op, calls = args
                call = prepared[key].timed[op]
                call()  # untimed: the first call after a pause wakes the threads
                times = []
                for _ in range(calls):
                    start = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - start)
                reply = times
            elif command == "check":  # (name, case, dtype, threads) -> (digest, results)
                name, case, dtype, threads = args
                with fc.threads(threads):
                    try:
                        case_inputs = Prepared(fc, name, case, dtype)
                    except Exception as exc:  # the forward call that shapes grad_output
                        reply = (None, {"setup": ("error", type(exc).__name__, str(exc))})
                    else:
                        reply = (case_inputs.digest(), case_inputs.checked())
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception:
            send(out, ("error", traceback.format_exc()))
            continue
        send(out, ("ok", reply))


if __name__ == "__main__":
    sys.exit(main())
