"""fastconv._buffers.Recycler and the layers that reuse their arrays through it (BatchNorm2d's
output and gradients): an array is handed out again only when nothing else holds it, and a
training run gives the same bits as with fresh arrays every step."""

import copy
import pickle

import numpy as np
import pytest

from fastconv import _buffers, models, nn, optim
from fastconv._buffers import Recycler
from helpers import steps_kept_by_the_caller

F32 = np.dtype(np.float32)


def _address(array):
    return array.__array_interface__["data"][0]


def test_recycler_reuses_only_arrays_nothing_else_holds():
    pool = Recycler(2)
    a = pool.empty((3, 4), F32)
    b = pool.empty((3, 4), F32)
    assert a is not b and not np.shares_memory(a, b)
    c = pool.empty((3, 4), F32)  # both slots busy: a new array, not kept over a or b's data
    assert not np.shares_memory(c, a) and not np.shares_memory(c, b)
    view = a[1:]
    del a  # the pool let go of a for c; the view still holds it
    d = pool.empty((3, 4), F32)  # slots c and b both held: new, kept in place of b
    assert not np.shares_memory(d, view)
    address_d = _address(d)
    del d
    assert _address(pool.empty((3, 4), F32)) == address_d  # released: handed out again
    del c
    e = pool.empty((3, 4), F32)
    f = pool.empty((3, 4), F32)
    assert not np.shares_memory(e, f) and not np.shares_memory(e, view)


def test_recycler_shape_and_dtype_must_match():
    pool = Recycler(1)
    a = pool.empty((5,), F32)
    address = _address(a)
    del a
    b = pool.empty((6,), F32)
    assert b.shape == (6,) and b.dtype == F32
    del b
    c = pool.empty((6,), np.dtype(np.float64))
    assert c.dtype == np.float64 and c.shape == (6,)
    del c
    d = pool.empty((5,), F32)
    assert d.shape == (5,) and d.flags.c_contiguous
    assert address is not None


def test_recycler_copies_start_empty():
    pool = Recycler(3)
    held = pool.empty((4,), F32)
    for clone in (copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert clone.size == 3
        fresh = clone.empty((4,), F32)
        assert not np.shares_memory(fresh, held)


def test_batch_norm_outputs_and_gradients_kept_by_the_caller_are_never_overwritten(rng):
    bn = nn.BatchNorm2d(3)
    bn.fused_relu = True
    xs = [rng.standard_normal((4, 3, 5, 5)).astype(np.float32) for _ in range(4)]
    outputs, _ = steps_kept_by_the_caller(bn, xs, rng)
    assert len({_address(out) for out in outputs}) == len(outputs)


def test_batch_norm_reuses_its_output_once_released(rng):
    bn = nn.BatchNorm2d(2)
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    addresses = set()
    for _ in range(6):
        out = bn(x)
        addresses.add(_address(out))
        bn.backward(np.ones_like(out))
        del out
    assert len(addresses) <= 2


def _train(steps, rng_seed, monkeypatch=None):
    if monkeypatch is not None:  # fresh arrays every time, as before the recycler
        monkeypatch.setattr(_buffers.Recycler, "empty",
                            lambda self, shape, dtype: np.empty(shape, dtype))
    rng = np.random.default_rng(rng_seed)
    model = models.build("resnet", seed=0)
    loss = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        x = rng.standard_normal((6, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, 6)
        loss(model(x), y)
        optimizer.zero_grad()
        nn.backward_without_input_grad(model, loss.backward())
        optimizer.step()
    return {name: value.copy() for name, value in model.state_dict().items()}


def test_small_resnet_training_same_bits_with_recycled_buffers(monkeypatch):
    recycled = _train(3, 7)
    with pytest.MonkeyPatch.context() as patch:
        fresh = _train(3, 7, patch)
    assert recycled.keys() == fresh.keys()
    for name in recycled:
        np.testing.assert_array_equal(recycled[name], fresh[name], err_msg=name)


def test_recycler_hands_an_array_to_one_thread_at_a_time():
    """Threads sharing a recycler (a prepared plan run by a Dask worker's threads) never get
    the same array at once: each writes its own mark and finds it still there."""
    import sys
    import threading

    pool = Recycler()
    dtype = np.dtype(np.float64)
    clashes = []

    def work(mark):
        for _ in range(3000):
            array = pool.empty((8,), dtype)
            array.fill(mark)
            if not (array == mark).all():
                clashes.append(mark)
            del array

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython will
    try:
        threads = [threading.Thread(target=work, args=(mark,)) for mark in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert clashes == []
