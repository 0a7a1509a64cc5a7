"""The pooling paths (fastconv.pool.POOL_PATHS), each forced through the private ``_path=``:
the same bits on every path and every instruction-set build, against the NumPy reference.

'window2x2' (2x2 windows at stride 2, no padding) and 'planes' (any geometry) must agree bit
for bit where both apply, including NaN, infinities, ties of signed zeros and empty batches;
and each of the generic, AVX2 and AVX-512 builds (FASTCONV_ISA) must give the same bits.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import _openmp, _pool, pool
from helpers import outputs_at_isas
from reference.pool import (avg_pool2d_backward_reference, avg_pool2d_reference,
                            max_pool2d_reference)


def _canonical_nans(a):
    """``a`` with every NaN replaced by one NaN: the sign and payload of a NaN that arithmetic
    makes (inf - inf) or carries (NaN + NaN) are the compiler's choice of operand order, which
    neither C nor PyTorch fixes; where NaNs are, and every other bit, are compared exactly."""
    a = np.array(a, copy=True)
    if a.dtype.kind == "f":
        a[np.isnan(a)] = np.nan
    return a


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert _canonical_nans(a).tobytes() == _canonical_nans(b).tobytes()


def _awkward(rng, shape, dtype):
    """Values with ties, signed zeros, infinities and NaN."""
    x = rng.integers(-3, 4, shape).astype(dtype)
    flat = x.reshape(-1)
    if flat.size:
        picks = rng.choice(flat.size, size=min(flat.size, 1 + flat.size // 5), replace=False)
        specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=dtype)
        flat[picks] = specials[rng.integers(0, len(specials), picks.size)]
    return x


shapes = st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(2, 13), st.integers(2, 13))


@given(shape=shapes, seed=st.integers(0, 2**16), double=st.booleans())
def test_window2x2_equals_planes(shape, seed, double):
    dtype = np.float64 if double else np.float32
    x = _awkward(np.random.default_rng(seed), shape, dtype)
    for unbatched in (False, True):
        xs = x[0] if unbatched and shape[0] else x
        if unbatched and not shape[0]:
            continue
        fast, fast_idx = fastconv.max_pool2d(xs, 2, return_indices=True, _path="window2x2")
        slow, slow_idx = fastconv.max_pool2d(xs, 2, return_indices=True, _path="planes")
        _same_bits(fast, slow)
        _same_bits(fast_idx, slow_idx)
        _same_bits(fastconv.max_pool2d(xs, 2, _path="window2x2"), slow)
        for divisor in (None, 3, -7):
            a = fastconv.avg_pool2d(xs, 2, divisor_override=divisor, _path="window2x2")
            _same_bits(a, fastconv.avg_pool2d(xs, 2, divisor_override=divisor, _path="planes"))
            gy = _awkward(np.random.default_rng(seed + 1), a.shape, dtype)
            _same_bits(
                fastconv.avg_pool2d_backward(gy, xs.shape, 2, divisor_override=divisor,
                                             _path="window2x2"),
                fastconv.avg_pool2d_backward(gy, xs.shape, 2, divisor_override=divisor,
                                             _path="planes"))


@pytest.mark.parametrize("shape", [(2, 3, 12, 12), (1, 2, 7, 9), (3, 1, 2, 2)])
def test_window2x2_against_the_reference(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    got, indices = fastconv.max_pool2d(x, 2, return_indices=True, _path="window2x2")
    expected, expected_indices = max_pool2d_reference(x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1),
                                                      False)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(fastconv.avg_pool2d(x, 2, _path="window2x2"),
                               avg_pool2d_reference(x, (2, 2), (2, 2), (0, 0, 0, 0), False,
                                                    True, None), **tol)
    gy = rng.standard_normal(got.shape).astype(dtype)
    np.testing.assert_allclose(
        fastconv.avg_pool2d_backward(gy, shape, 2, _path="window2x2"),
        avg_pool2d_backward_reference(gy, shape, (2, 2), (2, 2), (0, 0, 0, 0), True, None),
        **tol)


def test_window2x2_is_the_default_where_it_applies():
    assert pool._pool_path((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (5, 6), (2, 3), None) == \
        "window2x2"
    # a ceil_mode window running past the edge, padding, overlap or dilation: the general path
    assert pool._pool_path((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (5, 6), (3, 3), None) == \
        "planes"
    assert pool._pool_path((2, 2), (2, 2), (1, 1, 1, 1), (1, 1), (5, 6), (3, 4), None) == \
        "planes"
    assert pool._pool_path((3, 3), (2, 2), (0, 0, 0, 0), (1, 1), (5, 6), (2, 2), None) == \
        "planes"
    assert pool._pool_path((2, 2), (2, 2), (0, 0, 0, 0), (2, 2), (5, 6), (2, 2), None) == \
        "planes"


def test_forcing_a_path_that_does_not_apply_is_refused():
    x = np.ones((1, 1, 5, 5), np.float32)
    with pytest.raises(ValueError, match="window2x2"):
        fastconv.max_pool2d(x, 2, ceil_mode=True, _path="window2x2")
    with pytest.raises(ValueError, match="window2x2"):
        fastconv.avg_pool2d(x, 3, _path="window2x2")
    with pytest.raises(ValueError, match="_path must be one of"):
        fastconv.max_pool2d(x, 2, _path="nope")


@pytest.mark.parametrize("path", pool.POOL_PATHS)
def test_thread_count_never_changes_a_bit(path, rng):
    # big enough for several threads: 6*8*33*25 outputs of 4 taps (one thread per 2**15 taps)
    x = _awkward(rng, (6, 8, 66, 51), np.float32)
    results = []
    for threads in (1, 2, 3, 8):
        with fastconv.threads(threads):
            y, idx = fastconv.max_pool2d(x, 2, return_indices=True, _path=path)
            a = fastconv.avg_pool2d(x, 2, _path=path)
            g = fastconv.avg_pool2d_backward(a, x.shape, 2, _path=path)
            # planes tiled by the 2x2 blocks: the one-pass max backward
            tiled = np.ascontiguousarray(x[..., :50])
            yt, it = fastconv.max_pool2d(tiled, 2, return_indices=True, _path=path)
            gm = fastconv.max_pool2d_backward(yt, it, tiled.shape)
        results.append((y.tobytes(), idx.tobytes(), a.tobytes(), g.tobytes(), gm.tobytes()))
    assert all(r == results[0] for r in results)
    assert results[0][4] == _scattered(yt, it, tiled.shape).tobytes()
    # and right, not only repeatable: every row of every plane written, by any thread
    expected, expected_idx = max_pool2d_reference(x, (2, 2), (2, 2), (0, 0, 0, 0))
    np.testing.assert_array_equal(np.frombuffer(results[-1][1], np.int64).reshape(y.shape),
                                  expected_idx)
    np.testing.assert_array_equal(np.frombuffer(results[-1][0], np.float32).reshape(y.shape),
                                  expected)


def _scattered(grad_output, indices, shape):
    """max_pool2d_backward's sums in its own dtype and order: zeros, then each gradient added
    at its index (the NumPy reference sums in float64)."""
    grad_input = np.zeros(shape, dtype=grad_output.dtype)
    planes = grad_input.reshape(shape[0] * shape[1], -1)
    for plane, grads, where in zip(planes, grad_output.reshape(len(planes), -1),
                                   indices.reshape(len(planes), -1)):
        for g, index in zip(grads, where):
            plane[index] += g
    return grad_input


def test_max_backward_of_2x2_blocks_in_one_pass(dtype, rng):
    """Planes tiled by 2x2 blocks, one per output, are written in one pass where every index
    lies in its own block (max2x2_backward_plane), else zeroed and scattered: the scattered
    sums' bits either way (NaN, inf, -0.0 made +0.0), at any thread count, plane by plane."""
    x = _awkward(rng, (3, 4, 8, 22), dtype)  # rows of 11 outputs: a vector and a part
    y, indices = fastconv.max_pool2d(x, 2, return_indices=True)
    grad = _awkward(rng, y.shape, dtype)
    grad.flat[::5] = -0.0
    # overlapping 3x3 stride-2 windows give the same 4x11 planes, their indices outside their
    # blocks (and some repeated); hand-made planes: two indices in one block, one index in
    # another output's block, an index out of its block on the last element only
    _, overlapping = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    mixed = indices.copy()
    mixed[0, 1] = overlapping[0, 1]
    mixed[1, 2, 0, 0] = mixed[1, 2, 0, 1] = 1
    mixed[2, 0, 1, 1] = 0
    mixed[2, 3, 3, 10] = 0
    narrow = np.ascontiguousarray(x[..., :6])  # rows of 3 outputs: zeroed and scattered
    _, narrow_indices = fastconv.max_pool2d(narrow, 2, return_indices=True)
    assert np.array_equal(
        fastconv.max_pool2d_backward(grad[..., :3], narrow_indices, narrow.shape).view(np.uint8),
        _scattered(np.ascontiguousarray(grad[..., :3]), narrow_indices, narrow.shape).view(
            np.uint8))
    for case in (indices, overlapping, mixed):
        expected = _scattered(grad, case, x.shape)
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                got = fastconv.max_pool2d_backward(grad, case, x.shape)
            assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))
    # a bad index is still reported, in a plane the one pass first took
    bad = indices.copy()
    bad[1, 1, 2, 2] = 176
    with pytest.raises(ValueError,
                       match=r"indices must lie in \[0, 176\) for input planes of 8x22"):
        fastconv.max_pool2d_backward(grad, bad, x.shape)


def test_the_2x2_kernels_run_on_several_threads():
    """The thread test above proves something only if its case really runs on several."""
    if not _openmp.openmp_enabled():
        pytest.skip("a build without OpenMP runs every kernel on one thread")
    with fastconv.threads(4):
        assert pool._num_threads(6 * 8 * 33, 6 * 8 * 33 * 25 * 4) == 4


_SCRIPT = """
import sys, numpy as np, fastconv
from fastconv import _pool
rng = np.random.default_rng(7)
out = []
for dtype in (np.float32, np.float64):
    x = rng.integers(-3, 4, (3, 5, 37, 29)).astype(dtype)
    x.flat[::11] = np.nan; x.flat[::13] = -0.0; x.flat[::17] = np.inf
    for path in ("window2x2", "planes"):
        y, i = fastconv.max_pool2d(x, 2, return_indices=True, _path=path)
        a = fastconv.avg_pool2d(x, 2, _path=path)
        g = fastconv.avg_pool2d_backward(a, x.shape, 2, _path=path)
        out += [y, i, a, g]
    y, i = fastconv.max_pool2d(x, 3, 2, 1, dilation=1, ceil_mode=True, return_indices=True)
    a = fastconv.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    out += [y, i, a, fastconv.avg_pool2d_backward(a, x.shape, 3, 1, 1,
                                                  count_include_pad=False)]
    tiled = np.ascontiguousarray(x[:, :, :36, :28])  # the one-pass 2x2 max backward
    y, i = fastconv.max_pool2d(tiled, 2, return_indices=True)
    out += [fastconv.max_pool2d_backward(y, i, tiled.shape)]
np.savez(sys.argv[1], *out)
print(_pool.ISA)
"""


def test_every_instruction_set_gives_the_same_bits(tmp_path):
    results = outputs_at_isas(_SCRIPT, tmp_path)
    for isa, (used, _) in results.items():
        assert used == isa or (used in ("generic", "avx2") and isa != "generic"), used
    assert results["avx2"][1] == results["generic"][1]
    assert results["avx512"][1] == results["generic"][1]


def test_the_isa_in_use_is_reported():
    assert _pool.ISA in ("generic", "avx2", "avx512")


def test_an_unknown_isa_setting_warns_and_is_ignored(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTCONV_ISA", None)  # (this process may run under a cap: CI's capped runs)
    runs = [subprocess.run([sys.executable, "-W", "always", "-c",
                            "import fastconv; from fastconv import _pool; print(_pool.ISA)"],
                           env=dict(env, **extra), cwd=tmp_path, capture_output=True, text=True,
                           timeout=120) for extra in ({"FASTCONV_ISA": "sse9"}, {})]
    assert runs[0].returncode == 0 and runs[1].returncode == 0, runs[0].stderr + runs[1].stderr
    assert "FASTCONV_ISA='sse9' is not one of generic, avx2, avx512" in runs[0].stderr
    assert runs[0].stdout.strip() == runs[1].stdout.strip()  # as if it were unset
