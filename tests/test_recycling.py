"""Arrays reused from step to step in training: the layers' outputs and gradients
(fastconv._buffers.Recycler in Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLU), the
kernels' scratch (fastconv._buffers.scratch) and the optimisers' temporaries. An array the
caller still holds is never overwritten, memory is reused once released, and training gives
the same bits as with fresh arrays."""

import threading
import weakref

import numpy as np
import pytest

import fastconv
from fastconv import _buffers, models, nn, optim
from fastconv._buffers import scratch, scratch_zeros
from helpers import adam_reference_step, steps_kept_by_the_caller


def _address(array):
    return array.__array_interface__["data"][0]


def _layers():
    return [
        (nn.Conv2d(3, 8, 3, padding=1, seed=0), (4, 3, 10, 10)),
        (nn.Conv2d(3, 8, 1, stride=2, bias=False, seed=1), (4, 3, 10, 10)),
        (nn.MaxPool2d(2), (4, 3, 10, 10)),
        (nn.MaxPool2d(3, stride=2, padding=1), (4, 3, 10, 10)),
        (nn.AvgPool2d(2), (4, 3, 10, 10)),
        (nn.AdaptiveAvgPool2d(2), (4, 3, 10, 10)),
        (nn.ReLU(), (4, 3, 10, 10)),
    ]


@pytest.mark.parametrize("index", range(7), ids=lambda i: type(_layers()[i][0]).__name__ + str(i))
def test_outputs_and_gradients_kept_by_the_caller_are_never_overwritten(rng, index):
    layer, shape = _layers()[index]
    inputs = (rng.standard_normal(shape).astype(np.float32) for _ in range(5))
    outputs, grads = steps_kept_by_the_caller(layer, inputs, rng)
    held = outputs + grads
    for i, first in enumerate(held):
        for second in held[i + 1:]:
            assert not np.shares_memory(first, second)


@pytest.mark.parametrize("index", range(7), ids=lambda i: type(_layers()[i][0]).__name__ + str(i))
def test_outputs_and_gradients_reused_once_released(rng, index):
    """The arrays themselves come back (not merely the same addresses from the allocator):
    the layer keeps them and hands them out again once the caller lets go."""
    layer, shape = _layers()[index]
    x = rng.standard_normal(shape).astype(np.float32)
    outputs, grads = [], []
    for _ in range(6):
        out = layer(x)
        grad = layer.backward(np.ones_like(out))
        outputs.append(weakref.ref(out))
        grads.append(weakref.ref(grad))
        del out, grad
    # the layer keeps what its backward needs (the input, a view): at most two alternate
    for refs in (outputs, grads):
        assert all(ref() is not None for ref in refs)
        assert len({id(ref()) for ref in refs}) <= 2


def test_views_and_in_place_changes_of_a_result_keep_it_busy(rng):
    conv = nn.Conv2d(2, 4, 3, padding=1, seed=0)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    first = conv(x)[1:]  # only a view of the first output survives
    kept = first.copy()
    for _ in range(3):
        second = conv(x * 2)
        second += 1  # the caller's array: its own to change
        assert not np.shares_memory(second, first)
    np.testing.assert_array_equal(first, kept)
    grad = conv.backward(np.ones((2, 4, 6, 6), np.float32))
    grad *= 3
    again = conv.backward(np.ones((2, 4, 6, 6), np.float32))
    assert not np.shares_memory(grad, again)
    np.testing.assert_array_equal(grad, 3 * again)


def test_scratch_reuses_only_buffers_no_view_holds():
    dtype = np.dtype(np.float64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_buffers._scratch_local, "buffers", [], raising=False)  # its own pool
        a = scratch((200, 100), dtype)  # 160 000 bytes: pooled
        b = scratch((200, 100), dtype)
        assert not np.shares_memory(a, b)
        address = _address(a)
        a[...] = 1
        view = a[::2]
        del a
        c = scratch((100, 100), dtype)  # a's buffer is still held by the view, b's by b
        assert not np.shares_memory(c, view) and not np.shares_memory(c, b)
        c[...] = 2
        np.testing.assert_array_equal(view, 1)
        del view, b, c
        d = scratch((150, 100), dtype)  # all released: the smallest that fits, a's or b's
        assert d.flags.c_contiguous and d.shape == (150, 100) and d.dtype == dtype
        assert _address(d) == address
        zeros = scratch_zeros((300, 100), np.float32)
        assert not zeros.any() and not np.shares_memory(zeros, d)


def test_scratch_gives_back_the_same_memory_step_after_step():
    addresses = set()
    for _ in range(5):
        work = scratch(50_000, np.float32)
        addresses.add(_address(work))
        del work
    assert len(addresses) == 1
    small = scratch(100, np.float32)  # below the pool's threshold: a plain array
    assert small.base is None
    huge = scratch((_buffers.SCRATCH_MAX_BYTES // 8 + 1,), np.float64)  # above: not kept
    assert huge.base is None


def test_scratch_buffers_are_per_thread():
    """Two threads never get the same buffer: each writes its mark into its scratch array,
    lets the other run, and finds its mark still there."""
    barrier = threading.Barrier(2)
    clashes, addresses = [], {}

    def work(mark):
        for _ in range(20):
            array = scratch(40_000, np.float32)
            array.fill(mark)
            addresses.setdefault(mark, set()).add(_address(array))
            barrier.wait()
            if not (array == mark).all():
                clashes.append(mark)
            del array
            barrier.wait()

    threads = [threading.Thread(target=work, args=(mark,)) for mark in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clashes == []
    assert not addresses[1] & addresses[2]


def test_convolution_scratch_comes_from_the_pool(rng, monkeypatch):
    """The kernels' workspaces of a layer large enough to need them are the thread's kept
    buffers after the first step: no new buffer appears in later steps."""
    monkeypatch.setattr(_buffers._scratch_local, "buffers", [], raising=False)
    conv = nn.Conv2d(16, 32, 3, padding=1, seed=0)
    x = rng.standard_normal((8, 16, 24, 24)).astype(np.float32)
    grad = np.ones((8, 32, 24, 24), np.float32)
    results = []
    for _ in range(3):
        out = conv(x)
        results.append((out.copy(), conv.backward(grad).copy()))
        buffers = list(_buffers._scratch_local.buffers)
        del out
    assert buffers  # the paths' workspaces here exceed the threshold
    conv(x)
    conv.backward(grad)
    assert all(a is b for a, b in zip(_buffers._scratch_local.buffers, buffers))
    for out, gx in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(gx, results[0][1])


def _fresh(patch):
    """Fresh arrays everywhere, as before the recycling."""
    patch.setattr(_buffers.Recycler, "empty", lambda self, shape, dtype: np.empty(shape, dtype))
    patch.setattr(_buffers, "SCRATCH_MAX_BYTES", 0)


def _train(name, steps, fresh):
    with pytest.MonkeyPatch.context() as patch:
        if fresh:
            _fresh(patch)
        rng = np.random.default_rng(3)
        model = models.build(name, seed=0)
        loss = nn.CrossEntropyLoss()
        optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses = []
        for _ in range(steps):
            x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
            losses.append(loss(model(x), rng.integers(0, 10, 16)))
            optimizer.zero_grad()
            nn.backward_without_input_grad(model, loss.backward())
            optimizer.step()
        return losses, {key: value.copy() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("name", ["seed", "lenet"])
def test_small_networks_train_to_the_same_bits_with_recycled_arrays(name):
    losses, state = _train(name, 3, fresh=False)
    fresh_losses, fresh_state = _train(name, 3, fresh=True)
    assert losses == fresh_losses
    for key in state:
        np.testing.assert_array_equal(state[key], fresh_state[key], err_msg=key)


# ---- the optimisers' in-place steps against their textbook expressions (the code before)

@pytest.mark.parametrize("kind, amsgrad, weight_decay",
                         [(optim.Adam, False, 0.0), (optim.Adam, True, 0.01),
                          (optim.AdamW, False, 0.05)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_step_in_place_gives_the_textbook_bits(rng, kind, amsgrad, weight_decay, dtype):
    shapes = [(40, 30, 3, 3), (7,)]  # one pooled scratch array, one plain
    values = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    grads = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    parameters = [nn.Parameter(value.copy()) for value in values]
    for parameter, grad in zip(parameters, grads):
        parameter.grad = grad.copy()
    optimizer = kind(parameters, lr=3e-3, weight_decay=weight_decay, amsgrad=amsgrad)
    for _ in range(4):
        optimizer.step()
    expected, state = [v.copy() for v in values], {}
    for step in range(1, 5):
        adam_reference_step(expected, grads, state, step, lr=3e-3, weight_decay=weight_decay,
                            amsgrad=amsgrad, decoupled=kind is optim.AdamW)
    for parameter, want in zip(parameters, expected):
        np.testing.assert_array_equal(parameter.data, want)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_step_in_place_gives_the_textbook_bits(rng, nesterov):
    value = rng.standard_normal((64, 40, 3, 3)).astype(np.float32)
    grad = rng.standard_normal(value.shape).astype(np.float32)
    parameter = nn.Parameter(value.copy())
    parameter.grad = grad.copy()
    optimizer = optim.SGD([parameter], lr=0.05, momentum=0.9, nesterov=nesterov,
                          weight_decay=1e-4)
    data, buffer = value.copy(), None
    for _ in range(3):
        optimizer.step()
        g = grad + np.float32(1e-4) * data
        buffer = g.copy() if buffer is None else buffer * np.float32(0.9) + g
        step = g + np.float32(0.9) * buffer if nesterov else buffer
        data -= np.float32(0.05) * step
    np.testing.assert_array_equal(parameter.data, data)


def test_threads_setting_does_not_change_recycled_results(rng):
    conv = nn.Conv2d(8, 16, 3, padding=1, seed=0)
    x = rng.standard_normal((4, 8, 20, 20)).astype(np.float32)
    results = []
    for count in (1, 2, 1):
        with fastconv.threads(count):
            results.append(conv(x).copy())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_scratch_keeps_at_most_its_byte_bound_per_thread():
    """Buffers that would take a thread's kept scratch past SCRATCH_KEEP_BYTES are used once
    and dropped; smaller ones are still kept and reused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_buffers._scratch_local, "buffers", [], raising=False)  # its own pool
        patch.setattr(_buffers, "SCRATCH_KEEP_BYTES", 1 << 20)
        first = scratch(600_000, np.uint8)  # kept: 600 kB of 1 MiB
        second = scratch(600_000, np.uint8)  # first still held, and no room: not kept
        kept = _buffers._scratch_local.buffers
        assert [buffer.nbytes for buffer in kept] == [600_000]
        assert _address(first) == _address(kept[0]) and _address(second) != _address(first)
        del first, second
        third = scratch(300_000, np.uint8)  # fits in the kept buffer
        assert _address(third) == _address(kept[0])
        fourth = scratch(400_000, np.uint8)  # 600 kB + 400 kB <= 1 MiB: kept beside it
        assert len(kept) == 2 and sum(buffer.nbytes for buffer in kept) <= 1 << 20
        del third, fourth
