"""Holding under abuse (issue 12): fork, thread bounds, no NaN where the answer is finite,
``out=`` aliasing through buffer objects, bounded depthwise workspace, atomic loads, up-front
validation in ``train.fit``, and the smaller contract points.

The fork tests run in a subprocess with a timeout: a regression hangs (inside libgomp) rather
than fails, and must not hang the suite.
"""

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import _openmp, _threads
from fastconv import _paths
from fastconv import conv as conv_module
from fastconv._plan import use_paths

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# where the fastconv under test was imported from (an in-place build, or an installed one)
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
FORK_TIMEOUT = 240

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


def _run_script(tmp_path, source, *args, env=None, timeout=FORK_TIMEOUT):
    """Run ``source`` as a file (spawned children re-import it) with the worktree's fastconv
    and the tests directory importable; fail on a non-zero exit or a timeout (a hang)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(
        [PACKAGE_DIR, TESTS_DIR] + [p for p in [environment.get("PYTHONPATH")] if p])
    # its own session, so that a hung run is killed with every process it forked
    process = subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - the regression
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the script hung (killed after {timeout} s); output so far:\n"
                    f"{stdout}\n{stderr}")
    finally:
        try:  # children left behind (a hung forked child whose parent exited)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


# ============================================================================ 1. fork
# Every op of test_robustness.every_op, float32 and float64, computed in the parent at two
# threads after a multi-threaded call has started libgomp's pool, then in a child; the child's
# results must equal the parent's bit for bit (they do not depend on the thread count).
FORK_PRELUDE = """
import os, sys, warnings
# test_robustness compares with torch when it imports; these scripts need not (seconds per
# spawned interpreter), unless they imported torch themselves already
sys.modules.setdefault("torch", None)
import numpy as np
import fastconv
import test_robustness

def every_result():
    with fastconv.threads(2):
        return test_robustness.fallback_results()

def start_parent_threads():
    fastconv.set_num_threads(2)
    x = np.ones((64, 2, 64, 64), np.float32)
    fastconv.max_pool2d(x, 2)            # the issue's example: the pool is now running
    fastconv.conv2d(x, np.ones((4, 2, 3, 3), np.float32), padding=1)

def compare(mine, theirs):
    assert sorted(mine) == sorted(theirs), (sorted(mine), sorted(theirs))
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)
"""


@needs_fork
def test_os_fork_child_computes_every_op_serially_with_one_warning(tmp_path):
    source = FORK_PRELUDE + textwrap.dedent("""
    start_parent_threads()
    parent = every_result()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                child = every_result()
                again = every_result()
            compare(child, parent)
            compare(again, parent)
            forked = [w for w in caught if "forked" in str(w.message)]
            if fastconv._openmp.openmp_enabled():
                assert len(forked) == 1, [str(w.message) for w in caught]
                assert issubclass(forked[0].category, RuntimeWarning)
                assert fastconv.get_num_threads() == 1
            else:  # serial anyway: nothing to warn about
                assert not forked, [str(w.message) for w in caught]
            # a grandchild too
            grandchild = os.fork()
            if grandchild == 0:
                ok = False
                try:
                    compare(every_result(), parent)
                    ok = True
                finally:
                    os._exit(0 if ok else 1)
            _, grand_status = os.waitpid(grandchild, 0)
            assert grand_status == 0, grand_status
            status = 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"child exit status {status}"
    # the parent keeps its threads
    assert fastconv.get_num_threads() == 2
    compare(every_result(), parent)
    print("ok")
    """)
    assert "ok" in _run_script(tmp_path, source).stdout


POOL_SCRIPT = FORK_PRELUDE + """
import concurrent.futures
import multiprocessing

def work(dtype_name):
    # every op in one dtype (fallback_results keys end in '<dtype> <index>')
    results = every_result()
    return {key: value for key, value in results.items() if f" {dtype_name} " in key}

if __name__ == "__main__":
    method, kind = sys.argv[1], sys.argv[2]
    start_parent_threads()
    parent = every_result()
    context = multiprocessing.get_context(method)
    if kind == "pool":
        with context.Pool(2) as pool:
            parts = pool.map(work, ["float32", "float64"])
    else:
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as executor:
            parts = list(executor.map(work, ["float32", "float64"]))
    child = {}
    for part in parts:
        child.update(part)
    compare(child, parent)
    print("ok")
"""


@needs_fork
@pytest.mark.parametrize("kind", ["pool", "executor"])
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_pools_compute_every_op(tmp_path, method, kind):
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    assert "ok" in _run_script(tmp_path, POOL_SCRIPT, method, kind).stdout


@needs_fork
def test_fork_after_torch_used_its_threads(tmp_path):
    pytest.importorskip("torch")
    source = "import torch\n" + FORK_PRELUDE + textwrap.dedent("""
    torch.set_num_threads(2)
    x = torch.ones((64, 8, 64, 64))
    torch.nn.functional.conv2d(x, torch.ones((8, 8, 3, 3)), padding=1)
    fastconv.set_num_threads(2)
    parent = every_result()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compare(every_result(), parent)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"child exit status {status}"
    print("ok")
    """)
    assert "ok" in _run_script(tmp_path, source).stdout


@needs_fork
def test_forked_child_holds_and_releases_the_blas():
    """The fork handler forgets a BLAS hold that a parent's thread had entered (its thread is
    gone in the child), and the next hold finds the libraries again."""
    hold = _threads._BlasHold("scipy")
    with hold:
        pass
    assert hold._libraries is not None
    hold.after_fork()
    assert hold._libraries is None
    with hold:  # found again, holds and releases
        pass
    assert hold._native.__enter__() is hold._native
    hold._native.reset()  # a hold entered and never left (a parent thread's): forgotten
    with hold._native:
        pass


# ============================================================================ 2. thread bound
def test_max_threads_is_four_per_cpu_and_at_least_64():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert fastconv.MAX_THREADS == max(64, 4 * cpus)


@pytest.mark.parametrize("count", [fastconv.MAX_THREADS + 1, 10**6, 2**64, 2**200])
def test_set_num_threads_clamps_with_a_warning(count):
    saved = _threads._state["num_threads"]
    try:
        with pytest.warns(RuntimeWarning, match="MAX_THREADS"):
            fastconv.set_num_threads(count)
        assert fastconv.get_num_threads() == fastconv.MAX_THREADS
        with pytest.warns(RuntimeWarning, match="MAX_THREADS"):
            with fastconv.threads(count) as inside:
                assert inside == fastconv.get_num_threads() == fastconv.MAX_THREADS
                x = np.ones((2, 3, 9, 9))
                np.testing.assert_array_equal(fastconv.max_pool2d(x, 3), np.ones((2, 3, 3, 3)))
    finally:
        _threads._state["num_threads"] = saved


def test_the_bound_itself_is_accepted_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fastconv.threads(fastconv.MAX_THREADS):
            assert fastconv.get_num_threads() == fastconv.MAX_THREADS


def test_omp_num_threads_beyond_the_bound_is_clamped(tmp_path):
    if not _openmp.openmp_enabled():
        pytest.skip("a build without OpenMP ignores OMP_NUM_THREADS")
    source = """
    import warnings
    import numpy as np
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastconv
    assert any("OMP_NUM_THREADS" in str(w.message) for w in caught), caught
    assert fastconv.get_num_threads() == fastconv.MAX_THREADS
    x = np.random.default_rng(0).standard_normal((4, 8, 32, 32))
    w = np.ones((8, 8, 3, 3))
    fastconv.conv2d(x, w, padding=1)   # MAX_THREADS threads: created, not aborted
    fastconv.conv2d_backward(np.ones((4, 8, 32, 32)), x, w, padding=1)
    print("ok")
    """
    env = dict(os.environ, OMP_NUM_THREADS="100000")
    assert "ok" in _run_script(tmp_path, source, env=env).stdout


# ============================================================================ 3. NaN gradients
# Each input-gradient path, asked for through the override (fastconv._plan.use_paths), with
# inf and NaN in the weights and in x, against the loop reference, which scatters each output
# pixel's gradient and so never multiplies a weight by grad_output's padding.
DEPTHWISE_PLANES = dict(forward="depthwise", grad_input="depthwise", grad_weight="depthwise")
GRADIENT_PATHS = {
    # (override, which input-gradient path the case must take)
    "transposed": (dict(grad_input="transposed"), "transposed"),
    "transposed packed GEMM": (dict(forward="packed", grad_input="transposed",
                                    grad_weight="packed"), "transposed"),
    "transposed BLAS": (dict(forward="blas", grad_input="transposed"), "transposed"),
    "staged scatter per item": (dict(grad_input="blas", per_item=True), "scatter"),
    "staged scatter banded": (dict(grad_input="blas", per_item=False), "scatter"),
    "packed scatter per item": (dict(grad_input="packed", per_item=True), "scatter"),
    "packed scatter banded": (dict(grad_input="packed", per_item=False), "scatter"),
    "unstaged scatter": (dict(grad_input="blas", stage=False), "scatter"),
    "depthwise": (DEPTHWISE_PLANES, "depthwise"),
    "depthwise direct": ({}, "depthwise direct"),
    "depthwise direct scatter": (dict(grad_input="depthwise-direct"), "depthwise direct"),
}
GRADIENT_CASES = {
    # x shape, weight shape, groups, padding, dilation
    "issue": ((1, 8, 16, 16), (8, 8, 3, 3), 1, 1, 1),
    "16 channels (direct)": ((2, 16, 12, 12), (16, 16, 3, 3), 1, 1, 1),
    "grouped dilated": ((2, 16, 12, 12), (16, 8, 3, 3), 2, 2, 2),
    "depthwise": ((2, 32, 12, 12), (32, 1, 3, 3), 32, 1, 1),
}
SPECIALS = {
    "inf weight": lambda x, w: w.__setitem__((0, 0, 0, 0), np.inf),
    "-inf weight": lambda x, w: w.__setitem__((-1, 0, 2, 1), -np.inf),
    "nan weight": lambda x, w: w.__setitem__((-1, -1, 1, 2), np.nan),
    "inf input": lambda x, w: x.__setitem__((0, 0, 0, 0), np.inf),
    "nan input": lambda x, w: x.__setitem__((-1, -1, 3, 0), np.nan),
}
_KINDS = {"depthwise-direct-gather": "depthwise direct", "depthwise-direct": "depthwise direct",
          "depthwise": "depthwise", "transposed": "transposed", "packed": "scatter",
          "blas": "scatter"}


def _path_taken(x, w, groups, padding, dilation, dtype):
    """The input-gradient path conv2d_backward takes for finite weights of these shapes."""
    conv, _ = conv_module._prepare(x, w, None, 1, padding, dilation, groups, "zeros")
    return _KINDS[conv.plan.grad_input[0].name]


@pytest.mark.parametrize("special", list(SPECIALS))
@pytest.mark.parametrize("path, case", [
    (path, case) for path in GRADIENT_PATHS for case in GRADIENT_CASES
    # depthwise cases for the depthwise paths, the others for the rest
    if (GRADIENT_CASES[case][2] == GRADIENT_CASES[case][0][1])
    == GRADIENT_PATHS[path][1].startswith("depthwise")])
def test_gradients_have_nan_and_inf_exactly_where_the_reference_does(path, case, special,
                                                                     dtype):
    from reference.conv import conv2d_backward_ref
    override, expected_path = GRADIENT_PATHS[path]
    x_shape, w_shape, groups, padding, dilation = GRADIENT_CASES[case]
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    with use_paths(**override):
        taken = _path_taken(x, w, groups, padding, dilation, dtype)
        if taken != expected_path:
            if expected_path == "depthwise direct" or "direct" in case:
                pytest.skip(f"{path} needs float32 and AVX-512 here ({taken} taken)")
            if "packed" in path and not _paths._PACKED_GEMM:
                pytest.skip(f"{path} needs the packed GEMM's micro-kernels ({taken} taken)")
            raise AssertionError(f"{path}: the case took the {taken} path")
        SPECIALS[special](x, w)
        with np.errstate(all="ignore"):
            y = fastconv.conv2d(x, w, padding=padding, dilation=dilation, groups=groups)
            grad_y = rng.standard_normal(y.shape).astype(dtype)
            got = fastconv.conv2d_backward(grad_y, x, w, padding=padding, dilation=dilation,
                                           groups=groups)
            expected = conv2d_backward_ref(grad_y, x, w, (1, 1), (padding,) * 4,
                                           (dilation, dilation), groups)
    for name, ours, theirs in zip(("grad_input", "grad_weight", "grad_bias"), got, expected):
        for what in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(what(ours), what(theirs),
                                          err_msg=f"{name} {what.__name__}")
        finite = np.isfinite(theirs)
        np.testing.assert_allclose(ours[finite], theirs[finite], rtol=2e-3, atol=2e-3)


def test_issue_example_grad_input_has_no_nan(torch):
    x = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32)
    w[0, 0, 0, 0] = np.inf
    grad_y = np.ones((1, 8, 16, 16), np.float32)
    grad_input, _, _ = fastconv.conv2d_backward(grad_y, x, w, padding=1)
    tx = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.conv2d(tx, torch.from_numpy(w), padding=1).backward(
        torch.from_numpy(grad_y))
    np.testing.assert_array_equal(np.isnan(grad_input), np.isnan(tx.grad.numpy()))
    assert not np.isnan(grad_input).any()


# ============================================================================ 5. depthwise memory
@pytest.mark.parametrize("dilation", [8192, 16384, 2**30])
def test_depthwise_workspace_is_bounded_for_huge_dilations(dilation, dtype):
    """The issue's case: the per-plane kernels' band would be (dilation*(k-1))**2 elements;
    measured here with tracemalloc (NumPy reports its buffers to it)."""
    import tracemalloc

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 5)).astype(dtype)
    w = rng.standard_normal((2, 1, 3, 3)).astype(dtype)
    grad_y = rng.standard_normal((1, 2, 5, 5)).astype(dtype)
    tracemalloc.start()
    try:
        y = fastconv.conv2d(x, w, groups=2, dilation=dilation, padding=dilation)
        gx, gw, gb = fastconv.conv2d_backward(grad_y, x, w, groups=2, dilation=dilation,
                                              padding=dilation)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"
    # only the centre tap lands inside the 5x5 image; the others read the padding
    centre = w[:, 0, 1, 1].reshape(1, 2, 1, 1)
    np.testing.assert_allclose(y, x * centre, rtol=1e-6)
    np.testing.assert_allclose(gx, grad_y * centre, rtol=1e-6)
    expected_gw = np.zeros_like(w)
    expected_gw[:, 0, 1, 1] = (grad_y * x).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(gw, expected_gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb, grad_y.sum(axis=(0, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("gemm", ["packed", "blas"])
def test_depthwise_beyond_the_bound_takes_the_grouped_gemm_and_agrees(dtype, gemm):
    """Past DEPTHWISE_SCRATCH_BYTES the plan leaves the per-plane kernels for the GEMMs by
    group; those GEMMs (asked for on a small case) agree with the reference."""
    from reference.conv import conv2d_backward_ref, conv2d_ref

    huge = conv_module._prepare(np.ones((1, 2, 5, 5), dtype), np.ones((2, 1, 3, 3), dtype),
                                None, 1, 8192, 8192, 2, "zeros")[0].plan
    assert not _paths.Depthwise().applies("forward", huge)
    assert {huge.forward.name, huge.grad_weight.name, huge.grad_input[-1].name} <= {
        "packed", "blas"}
    if gemm == "packed" and not _paths._PACKED_GEMM:
        pytest.skip("no packed GEMM micro-kernels here")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 1, 3, 3)).astype(dtype)
    kwargs = dict(groups=3, dilation=(3, 2), padding=(2, 3))
    small = conv_module._prepare(x, w, None, 1, kwargs["padding"], kwargs["dilation"], 3,
                                 "zeros")[0].plan
    assert small.forward.name == "depthwise"
    with use_paths(forward=gemm, grad_input=gemm, grad_weight=gemm):
        plan = conv_module._prepare(x, w, None, 1, kwargs["padding"], kwargs["dilation"], 3,
                                    "zeros")[0].plan
        assert (plan.forward.name, plan.grad_input[0].name, plan.grad_weight.name) == (
            gemm,) * 3
        y = fastconv.conv2d(x, w, **kwargs)
        grad_y = rng.standard_normal(y.shape).astype(dtype)
        got = fastconv.conv2d_backward(grad_y, x, w, **kwargs)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10)
    np.testing.assert_allclose(y, conv2d_ref(x, w, None, (1, 1), (2, 2, 3, 3), (3, 2), 3),
                               **tolerance)
    for ours, theirs in zip(got, conv2d_backward_ref(grad_y, x, w, (1, 1), (2, 2, 3, 3),
                                                     (3, 2), 3)):
        np.testing.assert_allclose(ours, theirs, **tolerance)


# ============================================================================ 4. out= aliasing
def _aliasing_cases(dtype):
    """(name, out, x, weight, bias): one argument a buffer object over out's memory."""
    rng = np.random.default_rng(5)
    cases = []
    out = rng.standard_normal((1, 4, 6, 6)).astype(dtype)
    x = rng.standard_normal((1, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    flat = out.reshape(-1)
    cases.append(("weight memoryview", out, x, memoryview(flat[:w.size].reshape(w.shape)), b))
    cases.append(("bias memoryview", out, x, w, memoryview(flat[7:11])))
    square = rng.standard_normal((1, 1, 6, 6)).astype(dtype)
    cases.append(("x memoryview", square, memoryview(square), np.ones((1, 1, 1, 1), dtype), None))
    cases.append(("x 3-D view memoryview", square, memoryview(square[0]),
                  np.ones((1, 1, 1, 1), dtype), None))
    return cases


@pytest.mark.parametrize("index", range(4))
def test_out_aliasing_a_buffer_object_is_refused_and_out_untouched(index, dtype):
    name, out, x, w, b = _aliasing_cases(dtype)[index]
    before = out.copy()
    if name.startswith("x 3-D"):
        out = out[0]
        before = before[0]
    with pytest.raises(ValueError, match="shares memory"):
        fastconv.conv2d(x, w, b, out=out)
    np.testing.assert_array_equal(out, before)


def test_out_aliasing_a_torch_tensor_is_refused(torch, dtype):
    out = np.random.default_rng(6).standard_normal((2, 3, 5, 5)).astype(dtype)
    before = out.copy()
    weight = np.eye(3, dtype=dtype).reshape(3, 3, 1, 1)
    with pytest.raises(ValueError, match="shares memory with x"):
        fastconv.conv2d(torch.from_numpy(out), weight, out=out)
    bias_tensor = torch.from_numpy(out.reshape(-1)[:3])
    with pytest.raises(ValueError, match="shares memory with bias"):
        fastconv.conv2d(np.ones((2, 3, 5, 5), dtype), weight, bias_tensor, out=out)
    np.testing.assert_array_equal(out, before)


def test_out_sharing_memory_with_an_input_that_conversion_copied_is_fine():
    """The check is on what the kernel reads: an int64 view of out's memory is converted to a
    new float64 array first, so writing out cannot change it."""
    out = np.arange(36, dtype=np.float64).reshape(1, 1, 6, 6)
    x_int = out.view(np.int64)
    x_int[...] = np.arange(36).reshape(1, 1, 6, 6)
    expected = 2.0 * x_int + 1
    result = fastconv.conv2d(memoryview(x_int), np.full((1, 1, 1, 1), 2.0), np.ones(1), out=out)
    assert result is out
    np.testing.assert_array_equal(out, expected)


def test_out_next_to_an_input_in_one_buffer_is_accepted():
    buffer = np.zeros(2 * 36)
    x, out = buffer[:36].reshape(1, 1, 6, 6), buffer[36:].reshape(1, 1, 6, 6)
    x[...] = 3.0
    fastconv.conv2d(memoryview(x), np.ones((1, 1, 1, 1)), out=out)
    np.testing.assert_array_equal(out, np.full((1, 1, 6, 6), 3.0))


# ============================================================================ 6. atomic loads
def _lazy_model():
    from fastconv import nn

    return nn.Sequential(nn.Conv2d(None, 4, 3, seed=1), nn.ReLU(), nn.Conv2d(None, 6, 3, seed=2),
                         nn.Flatten(), nn.Linear(None, 5, seed=3))


def _snapshot(model):
    """Everything a load could change: each parameter's data and grad, the inferred sizes and
    each layer's generator state."""
    state = []
    for name, parameter in model.named_parameters():
        state.append((name, None if parameter.data is None else parameter.data.copy(),
                      None if parameter.grad is None else parameter.grad.copy()))
    for module in model.modules():
        state.append((type(module).__name__, getattr(module, "in_channels", None),
                      getattr(module, "in_features", None),
                      repr(getattr(getattr(module, "_rng", None), "bit_generator", None)
                           and module._rng.bit_generator.state)))
    return state


def _assert_same_snapshot(before, after):
    assert len(before) == len(after)
    for first, second in zip(before, after):
        assert len(first) == len(second)
        for a, b in zip(first, second):
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b, (first, second)


def _good_state():
    rng = np.random.default_rng(8)
    return {"0.weight": rng.standard_normal((4, 3, 3, 3)), "0.bias": rng.standard_normal(4),
            "2.weight": rng.standard_normal((6, 4, 3, 3)), "2.bias": rng.standard_normal(6),
            "4.weight": rng.standard_normal((5, 24)), "4.bias": rng.standard_normal(5)}


BAD_LAZY_STATES = {
    "later weight 0 channels": ("2.weight", np.zeros((6, 0, 3, 3))),
    "first weight 0 channels": ("0.weight", np.zeros((4, 0, 3, 3))),
    "later kernel": ("2.weight", np.zeros((6, 4, 5, 5))),
    "later bias": ("2.bias", np.zeros(7)),
    "last linear 0 features": ("4.weight", np.zeros((5, 0))),
    "last linear rows": ("4.weight", np.zeros((4, 24))),
    "last linear 1-D": ("4.weight", np.zeros(24)),
    "last bias": ("4.bias", np.zeros((5, 1))),
    "last dtype": ("4.bias", np.array(["a"] * 5)),
}


@pytest.mark.parametrize("bad", list(BAD_LAZY_STATES))
@pytest.mark.parametrize("fresh", [True, False], ids=["lazy", "loaded"])
def test_lazy_load_state_dict_is_atomic(bad, fresh):
    model = _lazy_model()
    if not fresh:  # sizes known now: the shape check refuses too, atomically
        model.load_state_dict(_good_state())
    state = _good_state()
    key, value = BAD_LAZY_STATES[bad]
    state[key] = value
    before = _snapshot(model)
    with pytest.raises((ValueError, TypeError)):
        model.load_state_dict(state)
    _assert_same_snapshot(before, _snapshot(model))
    model.load_state_dict(_good_state())  # still loads, and runs
    assert model(np.ones((2, 3, 6, 6), np.float32)).shape == (2, 5)


def test_lazy_conv2d_refuses_zero_channel_input_and_stays_lazy():
    from fastconv import nn

    layer = nn.Conv2d(None, 4, 3, seed=0)
    reference = nn.Conv2d(None, 4, 3, seed=0)
    for bad in (np.ones((2, 0, 5, 5)), np.ones((0, 5, 5))):
        with pytest.raises(ValueError, match="in_channels must be >= 1"):
            layer(bad)
        assert layer.in_channels is None and layer.weight.data is None
    # an input the layer cannot convolve (kernel larger than the image) leaves it lazy too,
    # generator included: the next forward initialises exactly as a fresh layer would
    with pytest.raises(ValueError, match="kernel is larger"):
        layer(np.ones((1, 2, 2, 2)))
    assert layer.in_channels is None and layer.weight.data is None and layer.bias.data is None
    x = np.ones((1, 3, 5, 5), np.float32)
    np.testing.assert_array_equal(layer(x), reference(x))
    np.testing.assert_array_equal(layer.weight.data, reference.weight.data)


def test_grouped_lazy_conv_refuses_a_weight_it_cannot_take_before_loading():
    from fastconv import nn

    model = nn.Sequential(nn.Conv2d(None, 4, 3, groups=2, seed=0), nn.Conv2d(None, 4, 1, seed=1))
    before = _snapshot(model)
    with pytest.raises(ValueError):
        model.load_state_dict({"0.weight": np.ones((4, 0, 3, 3)), "0.bias": np.ones(4),
                               "1.weight": np.ones((4, 4, 1, 1)), "1.bias": np.ones(4)})
    _assert_same_snapshot(before, _snapshot(model))


# ============================================================================ 7. fit validation
def _classifier(seed=0, lazy=False):
    from fastconv import nn

    return nn.Sequential(nn.Linear(None if lazy else 4, 8, seed=seed), nn.ReLU(),
                         nn.Linear(8, 3, seed=seed + 1))


def _blobs(count=96):
    rng = np.random.default_rng(9)
    y = np.arange(count) % 3
    return (rng.standard_normal((count, 4)) + y[:, None]).astype(np.float32), y


BAD_LABELS = {
    # where (the last batch, so that earlier batches would have stepped), value, error
    "11": (11, ValueError, "label 11, outside"),
    "-1": (-1, ValueError, "label -1, outside"),
    "2**40": (2**40, ValueError, "outside"),
    "3 (== classes)": (3, ValueError, "outside"),
}


@pytest.mark.parametrize("lazy", [False, True], ids=["sized", "lazy"])
@pytest.mark.parametrize("bad", list(BAD_LABELS))
def test_fit_refuses_a_bad_label_in_a_later_batch_before_any_step(bad, lazy):
    from fastconv import optim, train

    X, y = _blobs()
    y = y.astype(np.int64)
    value, error, match = BAD_LABELS[bad]
    y[-1] = value
    model = _classifier(lazy=lazy)
    before = _snapshot(model)
    with pytest.raises(error, match=match):
        train.fit(model, X, y, optimizer=optim.SGD(model.parameters(), lr=0.5), batch_size=16,
                  progress=False)
    _assert_same_snapshot(before, _snapshot(model))


def test_fit_refuses_bool_labels_and_float_features_as_labels():
    from fastconv import train

    X, y = _blobs()
    model = _classifier()
    before = _snapshot(model)
    with pytest.raises(TypeError, match="bool"):
        train.fit(model, X, y.astype(bool), progress=False)
    with pytest.raises(TypeError, match="unsupported dtype"):
        train.fit(model, X.astype(complex), y, progress=False)
    with pytest.raises(ValueError, match="must have shape"):
        train.fit(model, X, np.stack([y, y], axis=1), progress=False)
    _assert_same_snapshot(before, _snapshot(model))


@pytest.mark.parametrize("labels, error", [
    (lambda y: np.where(np.arange(y.size) == y.size - 1, 7, y), ValueError),
    (lambda y: np.where(np.arange(y.size) == y.size - 1, -2, y), ValueError),
    (lambda y: y.astype(bool), TypeError),
    (lambda y: y.astype(np.float64), TypeError),
])
def test_fit_checks_validation_labels_up_front(labels, error):
    from fastconv import train

    X, y = _blobs()
    model = _classifier()
    before = _snapshot(model)
    with pytest.raises(error):
        train.fit(model, X, y, validation=(X[:40], labels(y[:40])), progress=False)
    _assert_same_snapshot(before, _snapshot(model))
    with pytest.raises(ValueError, match="samples of shape"):
        train.fit(model, X, y, validation=(X[:40, :3], y[:40]), progress=False)
    _assert_same_snapshot(before, _snapshot(model))


def test_evaluate_refuses_out_of_range_labels_instead_of_counting_misses():
    from fastconv import train

    X, y = _blobs()
    model = _classifier()
    with pytest.raises(ValueError, match="outside"):
        train.evaluate(model, X, np.where(np.arange(y.size) == 90, 5, y), batch_size=16)
    with pytest.raises(TypeError, match="bool"):
        train.evaluate(model, X, y.astype(bool))


def test_cross_entropy_refuses_bool_targets():
    from fastconv import nn

    with pytest.raises(TypeError, match="bool"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([True, False]))


def test_fit_still_trains_and_a_lazy_model_initialises_as_before():
    """The up-front probe runs on a copy of a lazy model: training then gives the same
    weights as a model whose size was given."""
    from fastconv import optim, train

    X, y = _blobs()
    results = []
    for lazy in (False, True):
        model = _classifier(seed=4, lazy=lazy)
        history = train.fit(model, X, y, optimizer=optim.SGD(model.parameters(), lr=0.1),
                            epochs=2, batch_size=16, progress=False, validation=(X, y))
        results.append(model.state_dict())
        assert history[-1]["accuracy"] > 0.5
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])


# ============================================================================ 8. smaller items
@pytest.mark.parametrize("order", [">", "<"])
@pytest.mark.parametrize("kind", ["f4", "f8"])
def test_non_native_byte_order_keeps_its_precision(order, kind):
    from reference.conv import conv2d_ref

    x = np.arange(2 * 3 * 6 * 5, dtype=order + kind).reshape(2, 3, 6, 5) / 7
    w = np.linspace(-1, 1, 4 * 3 * 3 * 3).astype(order + kind).reshape(4, 3, 3, 3)
    expected = np.dtype(kind)
    results = {
        "conv2d": fastconv.conv2d(x, w, padding=1),
        "conv2d_backward": fastconv.conv2d_backward(np.ones((2, 4, 6, 5), order + kind), x, w,
                                                    padding=1)[0],
        "max_pool2d": fastconv.max_pool2d(x, 2),
        "avg_pool2d": fastconv.avg_pool2d(x, 2),
        "pad2d": fastconv.pad2d(x, 1, "reflect"),
        "corr2d": fastconv.corr2d(x[0, 0], w[0, 0]),
    }
    for name, result in results.items():
        assert result.dtype == expected, name
    native = fastconv.conv2d(x.astype(kind), w.astype(kind), padding=1)
    np.testing.assert_array_equal(results["conv2d"], native)
    np.testing.assert_allclose(results["conv2d"], conv2d_ref(x, w, pads=(1, 1, 1, 1)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("call", [
    lambda: fastconv.conv2d(None, np.ones((1, 1, 2, 2))),
    lambda: fastconv.conv2d(np.ones((1, 1, 3, 3)), None),
    lambda: fastconv.conv2d_backward(None, np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))),
    lambda: fastconv.max_pool2d(None, 2),
    lambda: fastconv.avg_pool2d(None, 2),
    lambda: fastconv.pad2d(None, 1),
    lambda: fastconv.corr2d(None, np.ones((2, 2))),
    lambda: fastconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)).astype(complex)),
    lambda: fastconv.conv2d(np.ones((1, 1, 3, 3)).astype(object), np.ones((1, 1, 2, 2))),
], ids=["conv2d x", "conv2d weight", "conv2d_backward grad", "max_pool2d", "avg_pool2d",
        "pad2d", "corr2d", "complex weight", "object x"])
def test_none_and_unsupported_arrays_are_type_errors(call):
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("shape", [(True, True, 7, 7), (1, 1, np.True_, 7), (2, 7.0, 7)])
def test_pooling_input_shape_refuses_bools_and_floats(shape):
    grad = np.ones((1, 1, 3, 3))
    indices = np.zeros((1, 1, 3, 3), np.int64)
    with pytest.raises(TypeError, match="input_shape"):
        fastconv.max_pool2d_backward(grad, indices, shape)
    with pytest.raises(TypeError, match="input_shape"):
        fastconv.avg_pool2d_backward(grad, shape, 2)


@pytest.mark.parametrize("divisor", [-2**63, 2**63 - 1, -1])
def test_divisor_override_takes_all_of_int64(divisor, torch):
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float64).reshape(2, 3, 6, 6)
    ours = fastconv.avg_pool2d(x, 2, divisor_override=divisor)
    theirs = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 2,
                                            divisor_override=divisor).numpy()
    np.testing.assert_array_equal(ours, theirs)
    grad = fastconv.avg_pool2d_backward(np.ones_like(ours), x.shape, 2, divisor_override=divisor)
    np.testing.assert_array_equal(grad, np.full(x.shape, 1 / divisor))


@pytest.mark.parametrize("divisor", [-2**63 - 1, 2**63])
def test_divisor_override_beyond_int64_is_refused(divisor):
    with pytest.raises(ValueError, match="int64"):
        fastconv.avg_pool2d(np.ones((1, 1, 4, 4)), 2, divisor_override=divisor)


def _gzip_bomb(path, header_shape, payload, extra_bytes):
    """An idx file (uint8) announcing ``header_shape`` and holding ``payload``, then
    ``extra_bytes`` zeros more, gzip-compressed (written in chunks)."""
    header = bytes([0, 0, 0x08, len(header_shape)]) + b"".join(
        size.to_bytes(4, "big") for size in header_shape)
    chunk = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as handle:
        handle.write(header + payload)
        for _ in range(extra_bytes // len(chunk)):
            handle.write(chunk)


def test_gzip_bomb_is_not_decompressed_past_the_header_size(tmp_path):
    import tracemalloc

    from fastconv import datasets

    path = tmp_path / "bomb-idx1-ubyte.gz"
    _gzip_bomb(path, (2, 2), bytes([1, 2, 3, 4]), 256 << 20)  # 256 MiB of zeros after
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(datasets.CorruptDatasetError, match="more than 4"):
            datasets.read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes"
    good = tmp_path / "good-idx1-ubyte.gz"
    _gzip_bomb(good, (2, 2), bytes([1, 2, 3, 4]), 0)
    np.testing.assert_array_equal(datasets.read_idx(good), [[1, 2], [3, 4]])
    short = tmp_path / "short-idx1-ubyte.gz"
    _gzip_bomb(short, (2, 2), bytes([1, 2, 3]), 0)
    with pytest.raises(datasets.CorruptDatasetError, match="file has 3"):
        datasets.read_idx(short)


def _model_file_cases(tmp_path):
    from fastconv import models

    good = tmp_path / "good.npz"
    fastconv.save(models.tutorial_net(seed=0), good)
    data = good.read_bytes()
    cases = {
        "corrupt zip": b"PK\x03\x04" + b"\x00garbage" * 40,
        "truncated": data[:len(data) // 2],
        "empty": b"",
        "text": b"hello, world\n" * 10,
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = tmp_path / f"{name.replace(' ', '-')}.npz"
        paths[name].write_bytes(content)
    paths[".npy"] = tmp_path / "array.npy"
    np.save(paths[".npy"], np.ones((3, 3)))
    return paths


def test_load_says_a_bad_file_is_not_a_model_file(tmp_path):
    from fastconv import models
    from fastconv.io import NotAModelFileError

    model = models.tutorial_net(seed=1)
    before = _snapshot(model)
    for name, path in _model_file_cases(tmp_path).items():
        with pytest.raises(NotAModelFileError, match="not a fastconv model file"):
            fastconv.load(model, path)
        with open(path, "rb") as handle:  # a file object too
            with pytest.raises(ValueError, match="not a fastconv model file"):
                fastconv.load(model, handle)
        _assert_same_snapshot(before, _snapshot(model))
    with pytest.raises(FileNotFoundError):
        fastconv.load(model, tmp_path / "missing.npz")
