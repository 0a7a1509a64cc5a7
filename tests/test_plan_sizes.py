"""The per-call sizes a plan keeps (fastconv._paths.sizes_for): the thread count and workspace
shapes of each op are worked out once per thread count and reused, and a changed count (set,
scoped, or a forked child's) still reaches the kernels."""

import numpy as np
import pytest

import fastconv
from fastconv import _paths, _threads
from fastconv._plan import use_paths


class _Recorder:
    """Wraps a kernel: records the thread count (its last argument but one or last) it got."""

    def __init__(self, kernel, position):
        self.kernel, self.position, self.threads = kernel, position, []

    def __call__(self, *args):
        self.threads.append(args[self.position])
        return self.kernel(*args)


@pytest.fixture
def recorded(monkeypatch):
    dtype = np.dtype(np.float32)
    recorders = {}
    for name, position in (("_FORWARD", -2), ("_GRAD_WEIGHT", -1), ("_GRAD_INPUT", -1)):
        table = dict(getattr(_paths.Blas, name))
        recorders[name] = table[dtype] = _Recorder(table[dtype], position)
        monkeypatch.setattr(_paths.Blas, name, table)
    return recorders


def test_a_changed_thread_count_reaches_the_kernels(recorded, rng):
    # 6 samples: work for up to 6 threads in every op
    x = rng.standard_normal((6, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((6, 4, 7, 7)).astype(np.float32)
    expected = []
    with use_paths(forward="blas", grad_input="blas", grad_weight="blas", per_item=True):
        before = fastconv.get_num_threads()
        try:
            for count in (1, 3, 2, 1, 3):
                with fastconv.threads(count):
                    y = fastconv.conv2d(x, w)
                    fastconv.conv2d_backward(gy, x, w)
                expected.append(count)
                fastconv.set_num_threads(count + 1)
                fastconv.conv2d(x, w)
                expected.append(count + 1)
        finally:
            fastconv.set_num_threads(before)
        with fastconv.threads(1):
            np.testing.assert_array_equal(y, fastconv.conv2d(x, w))  # (any count: same bits)
        expected.append(1)
    assert recorded["_FORWARD"].threads == expected
    assert recorded["_GRAD_INPUT"].threads == expected[:-1:2]
    # the weight gradient shares its (sample, tile) pairs out as chunks: at most 6 here
    assert all(1 <= t <= c for t, c in zip(recorded["_GRAD_WEIGHT"].threads, expected[::2]))


def test_each_plan_keeps_its_own_sizes(rng):
    a = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    b = rng.standard_normal((2, 3, 17, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with use_paths(forward="blas"):
        fastconv.conv2d(a, w)
        fastconv.conv2d(b, w)
        key = _threads.threads_key()
        sizes = []
        for x in (a, b):
            conv, _ = fastconv.conv._prepare(x, w, None, 1, 0, 1, 1, "zeros")
            memo = conv.plan.memo
            assert memo is not None
            sizes.append(memo[("forward", "blas", key)])
    assert sizes[0] != sizes[1]
    # and what is kept is what would be worked out afresh
    for x, kept in zip((a, b), sizes):
        conv, _ = fastconv.conv._prepare(x, w, None, 1, 0, 1, 1, "zeros")
        assert _paths.Blas()._forward_sizes(conv.plan, key) == kept


def test_the_key_of_a_forked_child_is_its_own(monkeypatch):
    monkeypatch.setitem(_threads._state, "forked", True)
    monkeypatch.setitem(_threads._state, "fork_warned", True)
    assert _threads.threads_key() == 0
    assert _threads.effective_num_threads(8, _threads.threads_key()) == 1
