"""Robustness: no leaks, concurrency and the GIL, bad input at the edges, the no-OpenMP build.

What SPEC.md promises beyond correct numbers: memory stays flat over long runs (error paths
included), Python threads may call every function at once and the kernels run without the
GIL, NaN and inf propagate as in PyTorch, sizes that cannot work are refused before anything
large is allocated, ``out=`` is never partly written, and a build without OpenMP says so and
computes the same results.
"""

import contextlib
import ctypes
import gc
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastconv
from fastconv import _openmp
from helpers import non_contiguous
from reference.conv import conv2d_backward_ref, conv2d_ref, pad_backward_ref
from reference.pad import pad2d_reference

try:  # PyTorch is a comparison target only, never a dependency
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _assert_same_special_values(actual, expected):
    """NaN, +inf and -inf exactly where the expected result has them."""
    for what in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(what(actual), what(expected), err_msg=what.__name__)


# ============================================================================ every op, once
def every_op(dtype=np.float64, seed=0, batch=2):
    """{name: zero-argument callable} covering every public function, forward and backward.

    Inputs are fixed by ``seed``; the arrays are big enough (6 to 56 KiB of float64 results
    per call) that a result or workspace leaked per call would show within a thousand calls,
    and small enough that a call costs tens of microseconds.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x = normal(batch, 4, 24, 23)
    weight = normal(6, 2, 3, 3)
    bias = normal(6)
    conv_kwargs = dict(stride=(1, 2), padding=((1, 2), (0, 1)), dilation=(2, 1), groups=2)
    y = fastconv.conv2d(x, weight, bias, **conv_kwargs)
    grad_y = normal(*y.shape)
    out = np.empty_like(y)
    circular = dict(padding=(2, 1), padding_mode="circular", groups=2)
    grad_circular = normal(*fastconv.conv2d(x, weight, **circular).shape)
    plane, kernel = normal(31, 29), normal(4, 3)
    pads = ((2, 1), (0, 3))
    padded = {mode: fastconv.pad2d(x, pads, mode) for mode in
              ("constant", "reflect", "replicate", "circular")}
    pooled, indices = fastconv.max_pool2d(x, 3, stride=2, padding=1, dilation=(1, 2),
                                          ceil_mode=True, return_indices=True)
    avg_kwargs = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True,
                      count_include_pad=False)
    averaged = fastconv.avg_pool2d(x, **avg_kwargs)
    x_strided = non_contiguous(x)
    # big enough in float32 for the packed GEMM (fastconv._paths.PACKED_MIN_MACS), not BLAS
    x_wide, weight_wide = normal(batch, 16, 24, 24), normal(32, 16, 3, 3)
    grad_wide = normal(batch, 32, 24, 24)
    ops = {
        "corr2d": lambda: fastconv.corr2d(plane, kernel),
        "convolve2d": lambda: fastconv.convolve2d(plane, kernel),
        "conv2d": lambda: fastconv.conv2d(x, weight, bias, **conv_kwargs),
        "conv2d out=": lambda: fastconv.conv2d(x, weight, bias, **conv_kwargs, out=out),
        "conv2d strided input": lambda: fastconv.conv2d(x_strided, weight, **conv_kwargs),
        "conv2d circular": lambda: fastconv.conv2d(x, weight, **circular),
        "conv2d 'same'": lambda: fastconv.conv2d(x, weight, padding="same", groups=2),
        "conv2d_backward": lambda: fastconv.conv2d_backward(grad_y, x, weight, **conv_kwargs),
        "conv2d_backward circular": lambda: fastconv.conv2d_backward(grad_circular, x, weight,
                                                                     **circular),
        "conv2d wide": lambda: fastconv.conv2d(x_wide, weight_wide, bias[:1].repeat(32),
                                               padding=1),
        "conv2d_backward wide": lambda: fastconv.conv2d_backward(grad_wide, x_wide,
                                                                 weight_wide, padding=1),
        "max_pool2d": lambda: fastconv.max_pool2d(x, 2, stride=1, padding=1),
        "max_pool2d indices": lambda: fastconv.max_pool2d(
            x, 3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True, return_indices=True),
        "max_pool2d_backward": lambda: fastconv.max_pool2d_backward(pooled, indices, x.shape),
        "avg_pool2d": lambda: fastconv.avg_pool2d(x, **avg_kwargs),
        "avg_pool2d divisor": lambda: fastconv.avg_pool2d(x, 2, divisor_override=3),
        "avg_pool2d_backward": lambda: fastconv.avg_pool2d_backward(averaged, x.shape,
                                                                    **avg_kwargs),
    }
    for mode, result in padded.items():
        ops[f"pad2d {mode}"] = lambda mode=mode: fastconv.pad2d(x, pads, mode)
        ops[f"pad2d_backward {mode}"] = (
            lambda mode=mode, result=result: fastconv.pad2d_backward(result, pads, mode))
    return ops


def every_error(dtype=np.float64):
    """{name: (exception type, zero-argument callable that must raise it)}."""
    ops_input = np.ones((2, 4, 16, 15), dtype=dtype)
    weight = np.ones((6, 2, 3, 3), dtype=dtype)
    grad_y = np.ones((2, 6, 14, 13), dtype=dtype)
    pooled, indices = fastconv.max_pool2d(ops_input, 2, return_indices=True)
    out = np.full((2, 6, 14, 12), 7, dtype=dtype)
    return {
        "conv2d groups": (ValueError, lambda: fastconv.conv2d(ops_input, weight, groups=3)),
        "conv2d out= shape": (ValueError,
                              lambda: fastconv.conv2d(ops_input, weight, groups=2, out=out)),
        "conv2d dtype": (TypeError, lambda: fastconv.conv2d(ops_input.astype(complex), weight)),
        "conv2d plane too large": (ValueError,
                                   lambda: fastconv.conv2d(ops_input, weight, padding=2**16,
                                                           groups=2)),
        "conv2d_backward grad shape": (
            ValueError, lambda: fastconv.conv2d_backward(grad_y[..., 1:], ops_input, weight,
                                                         groups=2)),
        "corr2d kernel too large": (ValueError,
                                    lambda: fastconv.corr2d(weight[0, 0], ops_input[0, 0])),
        "pad2d reflect too wide": (ValueError, lambda: fastconv.pad2d(ops_input, 15, "reflect")),
        "pad2d mode": (ValueError, lambda: fastconv.pad2d(ops_input, 1, "mirror")),
        "pad2d_backward too small": (ValueError, lambda: fastconv.pad2d_backward(ops_input, 8)),
        "max_pool2d padding": (ValueError, lambda: fastconv.max_pool2d(ops_input, 3, padding=2)),
        "max_pool2d_backward index": (
            ValueError, lambda: fastconv.max_pool2d_backward(pooled, indices + 240,
                                                             ops_input.shape)),
        "avg_pool2d divisor 0": (ValueError,
                                 lambda: fastconv.avg_pool2d(ops_input, 2, divisor_override=0)),
        "avg_pool2d_backward shape": (
            ValueError, lambda: fastconv.avg_pool2d_backward(pooled[..., 1:], ops_input.shape, 2)),
        "threads(0)": (ValueError, lambda: fastconv.set_num_threads(0)),
    }


def _call_expecting(error, function):
    try:
        function()
    except error:
        return
    raise AssertionError(f"{function} did not raise {error.__name__}")


# ============================================================================ (a) no leaks
def _resident_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _under_address_sanitizer():
    """True when libasan is loaded (the .ci/sanitize run): its quarantine holds freed memory,
    so the resident set grows by design there."""
    try:
        with open("/proc/self/maps") as handle:
            return "libasan" in handle.read()
    except OSError:
        return False


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _malloc_in_use():
    """Bytes in use in the C heap, all arenas (glibc's mallinfo2), or None elsewhere.

    Exact where the resident set is not: a leaked buffer that reuses heap memory freed
    earlier (already resident) does not grow the resident set, but it stays in use here.
    """
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def _memory_after(calls, rounds):
    """Run every call ``rounds`` times; return (resident bytes, C heap bytes in use, Python
    heap blocks) afterwards."""
    for _ in range(rounds):
        for call in calls:
            call()
    gc.collect()
    return _resident_bytes(), _malloc_in_use(), sys.getallocatedblocks()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_resident_memory_stays_flat_over_thousands_of_calls():
    ops = every_op(np.float64)
    ops.update({f"{name} f32": op for name, op in every_op(np.float32, seed=1).items()})
    errors = every_error()
    calls = list(ops.values())
    calls += [lambda error=error, op=op: _call_expecting(error, op)
              for error, op in errors.values()]

    def with_three_threads():
        with fastconv.threads(3):
            ops["conv2d"]()
    calls.append(with_three_threads)

    # Mostly one kernel thread: on a busy machine every parallel region waits for its team to
    # be scheduled, which would make thousands of calls slow; a tenth of the rounds use two.
    rounds = 1000
    with fastconv.threads(2):
        _memory_after(calls, 20)  # warm-up: thread pools, malloc arenas, caches
    with fastconv.threads(1):
        _memory_after(calls, 80)
        before = _memory_after([], 0)
        _memory_after(calls, rounds - rounds // 10)
    with fastconv.threads(2):
        after = _memory_after(calls, rounds // 10)
    resident, blocks = after[0] - before[0], after[2] - before[2]
    heap = None if before[1] is None else after[1] - before[1]
    print(f"\n{len(calls)} ops x {rounds} rounds = {len(calls) * rounds} calls: resident set "
          f"{resident / MIB:+.2f} MiB, C heap in use "
          f"{'n/a' if heap is None else f'{heap / MIB:+.3f} MiB'}, Python heap blocks {blocks:+d}")
    # A float64 result leaked per call (>= 6 KiB here) would add >= 6 MiB per op to the C
    # heap (and, once the heap's free memory is used up, to the resident set); a Python
    # object leaked per call (an array, a memoryview, a tuple) would add `rounds` blocks.
    sanitized = _under_address_sanitizer()  # its allocator keeps freed memory in quarantine
    limits_hit = (blocks >= rounds // 2 or (not sanitized and (
        resident >= 8 * MIB or (heap is not None and heap >= MIB))))
    leaky = ""
    if limits_hit:
        every = list(ops.items()) + [
            (name, lambda error=error, op=op: _call_expecting(error, op))
            for name, (error, op) in errors.items()]
        for name, call in every:
            with fastconv.threads(1):
                first = _memory_after([call], 200)
                last = _memory_after([call], rounds)
            grew = [b - a if a is not None else 0 for a, b in zip(first, last)]
            leaky += (f"\n  {name}: resident {grew[0] / MIB:+.2f} MiB, C heap "
                      f"{grew[1] / MIB:+.3f} MiB, {grew[2]:+d} blocks")
    assert blocks < rounds // 2, f"{blocks} Python heap blocks leaked{leaky}"
    if not sanitized:
        assert resident < 8 * MIB, f"resident set grew {resident / MIB:.1f} MiB{leaky}"
        assert heap is None or heap < MIB, f"C heap in use grew {heap / MIB:.2f} MiB{leaky}"


# ============================================================================ (b) concurrency
def test_python_threads_calling_every_op_at_once_match_serial_results():
    jobs = []
    for dtype, seed in ((np.float32, 3), (np.float64, 4)):
        jobs += [(f"{name} {np.dtype(dtype).name}", op)
                 for name, op in every_op(dtype, seed=seed, batch=3).items()
                 if name != "conv2d out="]  # one `out` array cannot be shared by threads
    expected = [_as_tuple(op()) for _, op in jobs]
    n_threads, repeats = 6, 3
    results = [[None] * len(jobs) for _ in range(n_threads)]
    errors = []
    barrier = threading.Barrier(n_threads)

    def work(worker):
        try:
            barrier.wait()
            order = list(range(len(jobs)))
            order = order[worker * 5 % len(jobs):] + order[:worker * 5 % len(jobs)]
            for _ in range(repeats):
                for index in order:
                    results[worker][index] = _as_tuple(jobs[index][1]())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    for worker in range(n_threads):
        for (name, _), got, want in zip(jobs, results[worker], expected):
            assert len(got) == len(want)
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b, err_msg=f"{name}, thread {worker}")


def _longest_pause(call):
    """Run ``call()`` in another thread while this one keeps running Python code; return the
    call's duration and the longest part of it during which this thread could not run (it
    needs the GIL to)."""
    span = []

    def worker():
        span.append(time.perf_counter())
        call()
        span.append(time.perf_counter())

    thread = threading.Thread(target=worker)
    gaps = []  # (before, after) for every stretch of over 1 ms between two iterations
    last = time.perf_counter()
    thread.start()
    while len(span) < 2:
        now = time.perf_counter()
        if now - last > 1e-3:
            gaps.append((last, now))
        last = now
    gaps.append((last, time.perf_counter()))
    thread.join()
    begin, end = span
    pause = max(max(0.0, min(after, end) - max(before, begin)) for before, after in gaps)
    return end - begin, pause


def _long_calls():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 16, 192, 192)).astype(np.float32)
    weight = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    y = fastconv.conv2d(x, weight, padding=1)
    averaged = fastconv.avg_pool2d(x, 7, stride=1, padding=3)
    return {
        "conv2d": lambda: fastconv.conv2d(x, weight, padding=1),
        "conv2d_backward": lambda: fastconv.conv2d_backward(y, x, weight, padding=1),
        "max_pool2d": lambda: fastconv.max_pool2d(x, 7, stride=1, padding=3),
        "max_pool2d indices": lambda: fastconv.max_pool2d(x, 7, stride=1, padding=3,
                                                          return_indices=True),
        "avg_pool2d": lambda: fastconv.avg_pool2d(x, 7, stride=1, padding=3),
        "avg_pool2d_backward": lambda: fastconv.avg_pool2d_backward(averaged, x.shape, 7,
                                                                    stride=1, padding=3),
    }


@pytest.mark.parametrize("name", list(_long_calls()))
def test_python_code_runs_while_a_kernel_runs(name):
    """The GIL is released inside the kernels: while one thread spends tens of milliseconds
    in one call, another keeps running Python code (a held GIL would stop it for the whole
    call). Unlike a speed-up, this holds on one core and on a busy machine."""
    call = _long_calls()[name]
    with fastconv.threads(1):
        call()
        attempts = []
        for _ in range(5):
            duration, pause = _longest_pause(call)
            attempts.append((duration, pause))
            if pause < 0.5 * duration:
                break
    print(f"\n{name}: (call, longest pause) in ms: "
          f"{[(round(d * 1e3), round(p * 1e3)) for d, p in attempts]}")
    assert any(pause < 0.5 * duration for duration, pause in attempts), (
        f"{name}: another thread was stopped for most of the call: {attempts}")


def test_threads_context_manager_is_per_python_thread():
    before = fastconv.get_num_threads()
    a_entered, b_entered, a_left = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with fastconv.threads(1):
            a_entered.set()
            b_entered.wait(10)
        a_left.set()

    def second():
        a_entered.wait(10)
        with fastconv.threads(3):
            b_entered.set()
            a_left.wait(10)
            seen["inside"] = fastconv.get_num_threads()

    workers = [threading.Thread(target=first), threading.Thread(target=second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = fastconv.get_num_threads()
    state = getattr(fastconv._threads, "_state", None)
    if isinstance(state, dict) and after != before:  # undo the damage for the other tests
        state["num_threads"] = None
    assert seen["inside"] == 3, "the other thread's exit changed this thread's count"
    assert after == before, "the count was not restored after both blocks ended"


# ============================================================================ (c) NaN and inf
def _sprinkle(array, rng, fraction=0.05):
    """A copy of ``array`` with NaN, +inf and -inf at random places."""
    array = array.copy()
    flat = array.reshape(-1)
    places = rng.choice(flat.size, size=max(3, int(fraction * flat.size)), replace=False)
    flat[places] = rng.choice([np.nan, np.inf, -np.inf], size=places.size)
    return array


def _nonzero_weights(rng, shape, dtype):
    """Finite weights bounded away from zero: inf * 0 would make NaN for a reason unrelated
    to propagation (and implementations may or may not skip zero products)."""
    return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_nan_and_inf_propagate_through_conv2d_and_its_gradients(dtype, mode):
    rng = np.random.default_rng(11)
    x = _sprinkle(rng.standard_normal((2, 4, 9, 8)).astype(dtype), rng)
    weight = _nonzero_weights(rng, (6, 2, 3, 2), dtype)
    kwargs = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2, padding_mode=mode)
    ref_kwargs = dict(stride=(2, 1), pads=(2, 2, 1, 1), dilation=(1, 2), groups=2, mode=mode)
    with np.errstate(invalid="ignore"):
        y = fastconv.conv2d(x, weight, **kwargs)
        expected = conv2d_ref(x, weight, **ref_kwargs)
        grad_y = _sprinkle(rng.standard_normal(y.shape).astype(dtype), rng, 0.02)
        grads = fastconv.conv2d_backward(grad_y, x, weight, **kwargs)
        expected_grads = conv2d_backward_ref(grad_y, x, weight, **ref_kwargs)
    assert np.isnan(y).any() and np.isinf(y).any()
    _assert_same_special_values(y, expected)
    for got, want in zip(grads, expected_grads):
        _assert_same_special_values(got, want)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_nan_and_inf_propagate_through_pad2d(dtype, mode):
    rng = np.random.default_rng(12)
    x = _sprinkle(rng.standard_normal((2, 3, 6, 5)).astype(dtype), rng, 0.1)
    pads = (2, 3, 4, 1)
    padding = ((2, 3), (4, 1))
    result = fastconv.pad2d(x, padding, mode)
    np.testing.assert_array_equal(result, pad2d_reference(x, pads, mode))
    grad = _sprinkle(rng.standard_normal(result.shape).astype(dtype), rng)
    # (scatter-add reference: the Jacobian one multiplies NaN by zeros)
    conv_mode = {"constant": "zeros"}.get(mode, mode)
    with np.errstate(invalid="ignore"):
        _assert_same_special_values(fastconv.pad2d_backward(grad, padding, mode),
                                    pad_backward_ref(grad, x.shape[2:], pads, conv_mode))
    filled = fastconv.pad2d(np.ones((1, 2, 2), dtype), 1, value=np.nan)
    assert np.isnan(filled[0, 0]).all() and (filled[0, 1:3, 1:3] == 1).all()


def test_max_pool2d_nan_wins_and_infinities(dtype):
    x = np.array([[[[1.0, np.nan, 3.0, -np.inf],
                    [np.inf, 2.0, np.nan, np.nan],
                    [-np.inf, -np.inf, 5.0, np.inf],
                    [-np.inf, -np.inf, 4.0, 6.0]]]], dtype=dtype)
    values, indices = fastconv.max_pool2d(x, 2, return_indices=True)
    # NaN beats +inf; of several NaNs the last in scan order is reported (PyTorch's
    # `val > max || isnan(val)`); an all -inf window keeps -inf and its first element.
    np.testing.assert_array_equal(values, [[[[np.nan, np.nan], [-np.inf, np.inf]]]])
    np.testing.assert_array_equal(indices, [[[[1, 7], [8, 11]]]])
    grad = fastconv.max_pool2d_backward(np.array([[[[1.0, 2.0], [3.0, np.nan]]]], dtype),
                                        indices, x.shape)
    expected = np.zeros(16)
    expected[[1, 7, 8, 11]] = [1, 2, 3, np.nan]
    np.testing.assert_array_equal(grad.reshape(-1), expected)
    # overlapping windows and padding: -inf padding never wins over a NaN
    values = fastconv.max_pool2d(x, 3, stride=1, padding=1)
    assert np.isnan(values[0, 0, :2, :]).all()


def test_avg_pool2d_nan_and_inf_propagate(dtype):
    x = np.array([[[[1.0, np.nan, 3.0, 1.0],
                    [np.inf, 2.0, 1.0, 1.0],
                    [-np.inf, np.inf, 5.0, np.inf],
                    [1.0, 1.0, 4.0, 6.0]]]], dtype=dtype)
    with np.errstate(invalid="ignore"):
        values = fastconv.avg_pool2d(x, 2)
        np.testing.assert_array_equal(values, [[[[np.nan, 1.5], [np.nan, np.inf]]]])
        grad = fastconv.avg_pool2d_backward(np.array([[[[np.inf, 1], [np.nan, 4]]]], dtype),
                                            x.shape, 2)
    np.testing.assert_array_equal(grad[0, 0, :2, :2], np.inf)
    assert np.isnan(grad[0, 0, 2:, :2]).all() and (grad[0, 0, 2:, 2:] == 1).all()


@pytest.mark.parametrize("op", ["conv2d", "pad2d", "max_pool2d", "avg_pool2d"])
def test_nan_and_inf_match_torch(op, dtype):
    if torch is None:
        pytest.skip("torch is not installed")
    functional = torch.nn.functional
    rng = np.random.default_rng(13)
    x = _sprinkle(rng.standard_normal((2, 4, 9, 8)).astype(dtype), rng, 0.1)
    tx = torch.from_numpy(x).requires_grad_(True)
    if op == "conv2d":
        weight = _nonzero_weights(rng, (4, 2, 3, 3), dtype)
        ours = (fastconv.conv2d(x, weight, padding=1, groups=2, padding_mode="reflect"),)
        theirs = (functional.conv2d(functional.pad(tx, (1, 1, 1, 1), mode="reflect"),
                                    torch.from_numpy(weight), groups=2),)
    elif op == "pad2d":
        ours = (fastconv.pad2d(x, ((1, 2), (3, 0)), "circular"),)
        theirs = (functional.pad(tx, (3, 0, 1, 2), mode="circular"),)
    elif op == "max_pool2d":
        ours = fastconv.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True,
                                   return_indices=True)
        theirs = functional.max_pool2d(tx, 3, stride=2, padding=1, ceil_mode=True,
                                       return_indices=True)
    else:
        ours = (fastconv.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True,
                                    count_include_pad=False),)
        theirs = (functional.avg_pool2d(tx, 3, stride=2, padding=1, ceil_mode=True,
                                        count_include_pad=False),)
    for a, b in zip(ours, theirs):
        b = b.detach().numpy()
        _assert_same_special_values(a, b)
        finite = np.isfinite(b)
        np.testing.assert_allclose(a[finite], b[finite], rtol=1e-5, atol=1e-5)
    grad = _sprinkle(rng.standard_normal(ours[0].shape).astype(dtype), rng)
    theirs[0].backward(torch.from_numpy(grad))
    with np.errstate(invalid="ignore"):
        if op == "conv2d":
            ours_grad = fastconv.conv2d_backward(grad, x, weight, padding=1, groups=2,
                                                 padding_mode="reflect", need=("input",))[0]
        elif op == "pad2d":
            ours_grad = fastconv.pad2d_backward(grad, ((1, 2), (3, 0)), "circular")
        elif op == "max_pool2d":
            ours_grad = fastconv.max_pool2d_backward(grad, ours[1], x.shape)
        else:
            ours_grad = fastconv.avg_pool2d_backward(grad, x.shape, 3, stride=2, padding=1,
                                                     ceil_mode=True, count_include_pad=False)
    _assert_same_special_values(ours_grad, tx.grad.numpy())


def test_depthwise_grad_weight_propagates_nan_over_padding():
    x = np.ones((1, 2, 1, 1))
    weight = np.ones((2, 1, 1, 1))  # groups=2: depthwise
    grad_y = np.ones((1, 2, 3, 3))
    grad_y[0, 1, 0, 0] = np.inf  # over the padding only: that tap multiplies a padded zero
    with np.errstate(invalid="ignore"):
        _, grad_w, _ = fastconv.conv2d_backward(grad_y, x, weight, padding=1, groups=2)
        _, expected, _ = conv2d_backward_ref(grad_y, x, weight, pads=(1, 1, 1, 1), groups=2)
    assert np.isnan(expected[1]).all()  # and PyTorch agrees: nan
    _assert_same_special_values(grad_w, expected)


# ============================================================================ (c) huge sizes
@contextlib.contextmanager
def _address_space_limit(headroom=2 << 30):
    """Cap this process's address space a little above its current size.

    Everything the huge cases below might allocate then fails at once with MemoryError
    instead of being granted lazily (vm.overcommit_memory=1) and filled until the machine
    runs out of memory. Yields False where the cap is unavailable.
    """
    try:
        import resource
        with open("/proc/self/status") as handle:
            size_kib = next(int(line.split()[1]) for line in handle if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration):
        yield False
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size_kib * 1024 + headroom
    if hard != resource.RLIM_INFINITY and hard < limit:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield True
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _giant(shape, dtype=np.float64):
    """A read-only zero-stride array of ``shape`` that occupies one element of memory."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


TINY = np.zeros((1, 1, 1, 1))

# (name, exception(s) accepted, call). ValueError alone: refused by index-size checks before
# any allocation; (ValueError, MemoryError): needs more memory than any machine has, so either
# a size check or the allocator refuses it.
HUGE_CASES = [
    ("conv2d output of 2**40 elements", (ValueError, MemoryError),
     lambda: fastconv.conv2d(np.zeros((1, 1, 1024, 1024), np.float32),
                             _giant((2**20, 1, 1, 1), np.float32))),
    ("conv2d padded plane of 2**34", ValueError,
     lambda: fastconv.conv2d(TINY, TINY, padding=2**16)),
    ("conv2d output row of 2**31", ValueError,
     lambda: fastconv.conv2d(TINY, TINY, padding=((0, 0), (0, 2**31)))),
    ("conv2d circular padding 2**31", ValueError,
     lambda: fastconv.conv2d(np.zeros((1, 1, 3, 3)), TINY, padding=2**31,
                             padding_mode="circular")),
    ("conv2d giant broadcast input", (ValueError, MemoryError),
     lambda: fastconv.conv2d(_giant((2**20, 2**20, 2, 2)), TINY)),
    ("conv2d im2col of 2**33 rows", (ValueError, MemoryError),
     lambda: fastconv.conv2d(_giant((1, 2**25, 16, 16), np.float32),
                             _giant((1, 2**25, 16, 16), np.float32))),
    ("conv2d_backward giant broadcast", (ValueError, MemoryError),
     lambda: fastconv.conv2d_backward(_giant((2**20, 1, 2**10, 2**10)),
                                      _giant((2**20, 1, 2**10, 2**10)), TINY)),
    ("corr2d giant broadcast", (ValueError, MemoryError),
     lambda: fastconv.corr2d(_giant((2**21, 2**21)), np.ones((2, 2)))),
    ("pad2d to width 2**31", (ValueError, MemoryError),
     lambda: fastconv.pad2d(TINY, ((0, 0), (0, 2**31)))),
    ("pad2d to 2**82 elements", (ValueError, MemoryError), lambda: fastconv.pad2d(TINY, 2**40)),
    ("pad2d_backward giant broadcast", (ValueError, MemoryError),
     lambda: fastconv.pad2d_backward(_giant((2**10, 2**10, 2**10, 2**12)), 1)),
    ("max_pool2d plane of 2**32", (ValueError, MemoryError),
     lambda: fastconv.max_pool2d(_giant((1, 1, 2**16, 2**16)), 2)),
    ("max_pool2d 2**40 planes", (ValueError, MemoryError),
     lambda: fastconv.max_pool2d(_giant((2**20, 2**20, 2, 2)), 2, return_indices=True)),
    ("max_pool2d 2**62 elements", (ValueError, MemoryError),
     lambda: fastconv.max_pool2d(_giant((2**31, 2**31, 1, 1)), 1)),
    ("max_pool2d_backward plane of 2**32", ValueError,
     lambda: fastconv.max_pool2d_backward(TINY, np.zeros((1, 1, 1, 1), np.int64),
                                          (1, 1, 2**16, 2**16))),
    ("max_pool2d_backward 2**40 planes", (ValueError, MemoryError),
     lambda: fastconv.max_pool2d_backward(_giant((2**20, 2**20, 1, 1)),
                                          np.broadcast_to(np.int64(0), (2**20, 2**20, 1, 1)),
                                          (2**20, 2**20, 2, 2))),
    ("avg_pool2d plane of 2**32", (ValueError, MemoryError),
     lambda: fastconv.avg_pool2d(_giant((1, 1, 2**16, 2**16), np.float32), 2)),
    ("avg_pool2d_backward plane of 2**32", ValueError,
     lambda: fastconv.avg_pool2d_backward(TINY, (1, 1, 2**16, 2**16), 2**16)),
    ("avg_pool2d_backward 2**40 planes", (ValueError, MemoryError),
     lambda: fastconv.avg_pool2d_backward(_giant((2**20, 2**20, 1, 1)), (2**20, 2**20, 2, 2),
                                          2)),
]


@pytest.mark.parametrize("name,error,call", HUGE_CASES, ids=[case[0] for case in HUGE_CASES])
def test_huge_sizes_are_refused_before_allocating(name, error, call):
    with _address_space_limit() as limited:
        if error is not ValueError and not limited:
            pytest.skip("cannot cap the address space here, and this case would allocate")
        rss_before = _resident_bytes() if os.path.exists("/proc/self/statm") else 0
        start = time.perf_counter()
        with pytest.raises(error):
            call()
        seconds = time.perf_counter() - start
        rss_after = _resident_bytes() if os.path.exists("/proc/self/statm") else 0
    assert seconds < 5, f"{name}: took {seconds:.1f} s to refuse"
    touched = (rss_after - rss_before) / MIB
    assert touched < 256, f"{name}: touched {touched:.0f} MiB"


def test_pooling_work_scales_with_the_input_not_the_padding():
    """A window of 2**28 x 2**28 taps over a 1x1 input (all padding but one tap) must cost
    what the one tap costs, not a loop over 2**28 taps per axis."""
    x = np.zeros((1, 1, 1, 1))
    grad = np.ones((1, 1, 1, 1))
    kernel, pad = 2**28 + 1, 2**27  # PyTorch's limit: padding <= kernel // 2
    calls = {
        "max_pool2d": lambda: fastconv.max_pool2d(x, kernel, padding=pad),
        "max_pool2d indices": lambda: fastconv.max_pool2d(x, kernel, padding=pad,
                                                          return_indices=True),
        "avg_pool2d": lambda: fastconv.avg_pool2d(x, kernel, padding=pad),
        "avg_pool2d_backward": lambda: fastconv.avg_pool2d_backward(grad, x.shape, kernel,
                                                                    padding=pad),
    }
    seconds = {}
    for name, call in calls.items():
        start = time.perf_counter()
        try:
            call()
        except (ValueError, MemoryError):  # refusing is fine too, looping is not
            pass
        seconds[name] = round(time.perf_counter() - start, 3)
    assert max(seconds.values()) < 0.2, f"seconds per call on a 1x1 input: {seconds}"


@pytest.mark.parametrize("call", [
    lambda: fastconv.conv2d(TINY, TINY, stride=2**63),
    lambda: fastconv.conv2d(TINY, TINY, dilation=2**64),
    lambda: fastconv.max_pool2d(TINY, 1, stride=2**63),
    lambda: fastconv.max_pool2d(TINY, 1, dilation=2**63),
    lambda: fastconv.avg_pool2d(TINY, 1, stride=2**63),
    lambda: fastconv.avg_pool2d_backward(TINY, (1, 1, 1, 1), 1, stride=2**63),
], ids=["conv-stride", "conv-dilation", "max-stride", "max-dilation", "avg-stride",
        "avg-backward-stride"])
def test_sizes_beyond_ssize_t_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("padding,mode", [(1, "reflect"), (2, "circular"), ("same", "reflect")])
def test_empty_batch_still_checks_padding_mode_limits(padding, mode):
    weight = np.ones((1, 1, 1, 3))
    with pytest.raises(ValueError, match=mode):  # as with a batch of one
        fastconv.conv2d(np.zeros((1, 1, 1, 1)), weight, padding=padding, padding_mode=mode)
    with pytest.raises(ValueError, match=mode):
        fastconv.conv2d(np.zeros((0, 1, 1, 1)), weight, padding=padding, padding_mode=mode)


# ============================================================================ (c) indices
@pytest.mark.parametrize("bad,error", [
    (-1, ValueError), (16, ValueError), (2**40, ValueError), (-2**63, ValueError),
])
def test_max_pool2d_backward_refuses_indices_out_of_range(bad, error):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    values, indices = fastconv.max_pool2d(x, 2, return_indices=True)
    for position in np.ndindex(indices.shape):
        corrupt = indices.copy()
        corrupt[position] = bad
        saved = corrupt.copy()
        with pytest.raises(error, match="indices"):
            fastconv.max_pool2d_backward(values, corrupt, x.shape)
        np.testing.assert_array_equal(corrupt, saved)


def test_max_pool2d_backward_refuses_bad_index_arrays():
    x = np.arange(32.0).reshape(2, 1, 4, 4)
    values, indices = fastconv.max_pool2d(x, 2, return_indices=True)
    wrapped = indices.astype(np.uint64)
    wrapped[0, 0, 0, 0] = np.iinfo(np.uint64).max  # becomes -1 as int64: still refused
    with pytest.raises(ValueError, match="indices"):
        fastconv.max_pool2d_backward(values, wrapped, x.shape)
    with pytest.raises(ValueError, match="indices"):  # in range for 4x4, not for 2x2 planes
        fastconv.max_pool2d_backward(values, indices, (2, 1, 2, 2))
    with pytest.raises(TypeError, match="indices"):
        fastconv.max_pool2d_backward(values, indices.astype(np.float64), x.shape)
    with pytest.raises(TypeError, match="indices"):
        fastconv.max_pool2d_backward(values, indices > 3, x.shape)
    with pytest.raises(ValueError, match="indices has shape"):
        fastconv.max_pool2d_backward(values, indices[..., :1], x.shape)
    # a valid index per plane in every plane but the last one's final window
    indices[-1, -1, -1, -1] = 16
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        fastconv.max_pool2d_backward(values, indices, x.shape)
    # int32 and non-contiguous indices are fine
    good = fastconv.max_pool2d(x, 2, return_indices=True)[1]
    expected = fastconv.max_pool2d_backward(values, good, x.shape)
    np.testing.assert_array_equal(
        fastconv.max_pool2d_backward(values, good.astype(np.int32), x.shape), expected)
    np.testing.assert_array_equal(
        fastconv.max_pool2d_backward(non_contiguous(values), non_contiguous(good), x.shape),
        expected)


# ============================================================================ (c) out=
def _bad_outs(shape, dtype):
    other = np.float32 if dtype == np.float64 else np.float64
    read_only = np.full(shape, 7, dtype)
    read_only.flags.writeable = False
    return [
        ("shape", np.full(shape[:-1] + (shape[-1] + 1,), 7, dtype), ValueError),
        ("unbatched shape", np.full(shape[1:], 7, dtype), ValueError),
        ("dtype", np.full(shape, 7, other), TypeError),
        ("int dtype", np.full(shape, 7, np.int64), TypeError),
        ("fortran", np.asfortranarray(np.full(shape, 7, dtype)), ValueError),
        ("strided", np.full(shape[:-1] + (2 * shape[-1],), 7, dtype)[..., ::2], ValueError),
        ("reversed", np.full(shape, 7, dtype)[..., ::-1], ValueError),
        ("read-only", read_only, ValueError),
        ("list", np.full(shape, 7, dtype).tolist(), TypeError),
    ]


def test_bad_out_raises_and_is_left_untouched(dtype):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    weight = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    shape = fastconv.conv2d(x, weight).shape
    for name, bad, error in _bad_outs(shape, dtype):
        before = np.array(bad, copy=True)
        with pytest.raises(error):
            fastconv.conv2d(x, weight, out=bad)
        np.testing.assert_array_equal(np.asarray(bad), before, err_msg=name)
    # a good out with a bad argument elsewhere is not written either
    out = np.full(shape, 7, dtype)
    for kwargs in (dict(groups=2), dict(padding_mode="mirror"), dict(stride=0)):
        with pytest.raises(ValueError):
            fastconv.conv2d(x, weight, out=out, **kwargs)
        np.testing.assert_array_equal(out, 7)
    with pytest.raises(TypeError):
        fastconv.conv2d(x.astype(complex), weight, out=out)
    np.testing.assert_array_equal(out, 7)
    # and a good out is written whole and returned, unbatched too
    assert fastconv.conv2d(x, weight, out=out) is out
    np.testing.assert_array_equal(out, fastconv.conv2d(x, weight))
    out3 = np.full(shape[1:], 7, dtype)
    assert fastconv.conv2d(x[0], weight, out=out3) is out3
    np.testing.assert_array_equal(out3, fastconv.conv2d(x, weight)[0])


@pytest.mark.parametrize("kernel", [1, 3])
def test_out_overlapping_an_input_is_refused_or_correct(kernel):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 3, 96, 96))
    weight = rng.standard_normal((3, 3, kernel, kernel))
    expected = fastconv.conv2d(x, weight, padding=kernel // 2)
    try:
        result = fastconv.conv2d(x, weight, padding=kernel // 2, out=x)
    except ValueError:
        return
    np.testing.assert_array_equal(result, expected)


# ============================================================================ (d) no-OpenMP build
def test_openmp_flag_agrees_with_show_config(capsys):
    enabled = _openmp.openmp_enabled()
    assert isinstance(enabled, bool)
    fastconv.show_config()
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.strip().startswith("OpenMP"))
    assert ("enabled" in line.split(":", 1)[1].split()) == enabled, line
    assert ("disabled" in line) == (not enabled), line
    from fastconv._config import config_info
    info = config_info()
    assert info["openmp"] == enabled
    flags = " ".join(info["compile_args"] + info["link_args"])
    if info["compile_args"] and sys.platform.startswith("linux"):
        assert ("openmp" in flags) == enabled, flags
    if not enabled:
        assert _openmp.default_num_threads() == 1
        assert info["openmp_default_threads"] == 1
    expect = os.environ.get("FASTCONV_EXPECT_OPENMP")
    if expect is not None:  # set by .ci/no-openmp: this must be the build it made
        assert enabled == (expect == "1"), (enabled, fastconv.__file__)
        assert os.path.realpath(fastconv.__file__).startswith(os.path.realpath(sys.prefix)), (
            f"imported {fastconv.__file__}, not the build installed in {sys.prefix}")


def test_every_op_gives_the_same_results_with_1_and_3_threads():
    """Bit-identical whatever the thread count, and in a serial build too."""
    ops = every_op(np.float64, seed=6)
    with fastconv.threads(1):
        one = {name: _as_tuple(op()) for name, op in ops.items()}
    with fastconv.threads(3):
        three = {name: _as_tuple(op()) for name, op in ops.items()}
    for name in ops:
        for a, b in zip(one[name], three[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


def fallback_results():
    """Every op on fixed inputs, in both dtypes, as {key: array}: what the two builds compare."""
    results = {}
    for dtype, seed in ((np.float32, 21), (np.float64, 22)):
        for name, op in every_op(dtype, seed=seed, batch=3).items():
            for index, array in enumerate(_as_tuple(op())):
                results[f"{name} {np.dtype(dtype).name} {index}"] = array
    return results


CHILD_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import fastconv
from fastconv import _openmp
import test_robustness
with fastconv.threads(2):
    results = test_robustness.fallback_results()
np.savez(sys.argv[2], __openmp__=_openmp.openmp_enabled(), __file__=fastconv.__file__,
         **results)
"""


def test_other_build_gives_identical_results(tmp_path):
    """FASTCONV_OTHER_BUILD_PYTHON names a Python whose fastconv is the other build (OpenMP
    vs not; .ci/no-openmp sets it, with FASTCONV_OTHER_BUILD_PATH when that build is an
    in-place one). Every op must give bit-identical results in both."""
    other_python = os.environ.get("FASTCONV_OTHER_BUILD_PYTHON")
    if not other_python:
        pytest.skip("FASTCONV_OTHER_BUILD_PYTHON is not set (see .ci/no-openmp)")
    if os.sep in other_python:  # the child runs elsewhere
        other_python = os.path.abspath(other_python)
    env = dict(os.environ)
    env.pop("FASTCONV_OTHER_BUILD_PYTHON")
    extra = env.pop("FASTCONV_OTHER_BUILD_PATH", None)
    env.pop("PYTHONPATH", None)
    if extra:
        env["PYTHONPATH"] = extra
    saved = tmp_path / "other.npz"
    subprocess.run([other_python, "-c", CHILD_SCRIPT, TESTS_DIR, str(saved)], cwd=tmp_path,
                   env=env, check=True, timeout=300)
    with np.load(saved) as other:
        other_openmp = bool(other["__openmp__"])
        other_file = str(other["__file__"])
        theirs = {key: other[key] for key in other.files if not key.startswith("__")}
    assert other_openmp != _openmp.openmp_enabled(), (
        f"both builds have OpenMP={other_openmp} ({other_file} and {fastconv.__file__})")
    with fastconv.threads(2):
        ours = fallback_results()
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_blas_hold_first_used_by_several_threads_at_once():
    """A Dask worker's threads may all make their first BLAS call together: the hold binds the
    BLAS once (a second bind while another thread holds it used to raise RuntimeError)."""
    from fastconv._threads import _BlasHold

    hold = _BlasHold("scipy")  # fresh: not bound yet
    n_threads = 4
    barrier = threading.Barrier(n_threads)
    errors = []

    def first_use():
        try:
            barrier.wait()
            with hold:
                time.sleep(0.05)  # held while the others bind
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=first_use) for _ in range(n_threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    assert hold._libraries is not None
