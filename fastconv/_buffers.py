"""Arrays a layer hands out step after step, reused once nothing else holds them.

A training step allocates the same large arrays every time (each layer's output, each input
gradient) and frees the previous step's copies part way through the next step. With glibc's
allocator that churn grows the heap by tens of MB and trims it back once per step, so every
step pays the kernel for fresh zeroed pages: measured on the small ResNet at batch 64
(``models.build('resnet')``), about 870 page faults and 6 ms of system time per step of
~65 ms (bench/profile_resnet_step.py has the figures). A :class:`Recycler` keeps the arrays
it made and hands one out again only when its own references are the only ones left (the
caller, a view of it, a layer that kept it: any other reference makes the array busy), so
reuse can never change an array someone still sees. The layers that recycle so: Conv2d (its
output and its input, weight and bias gradients), BatchNorm2d, MaxPool2d, AvgPool2d,
AdaptiveAvgPool2d and ReLU (outputs, max pooling's indices, input gradients), and the eval
plan (fastconv._fusion).

:func:`scratch` serves the kernels' workspaces (and the optimisers' temporaries) the same
way from buffers kept per Python thread: a call's scratch lives only while the call runs.

Examples
--------
>>> import numpy as np
>>> from fastconv._buffers import Recycler
>>> pool = Recycler()
>>> a = pool.empty((2, 3), np.dtype(np.float32))
>>> b = pool.empty((2, 3), np.dtype(np.float32))  # a is still held: a new array
>>> a is b
False
>>> address = a.__array_interface__["data"][0]
>>> del a
>>> pool.empty((2, 3), np.dtype(np.float32)).__array_interface__["data"][0] == address
True
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from functools import partial

import numpy as np

__all__ = ["Recycler", "output_maker", "scratch", "scratch_zeros"]

# sys.getrefcount of an array held only by the recycler's list, read as ``slots[i]`` inside
# _free: the list's reference and getrefcount's argument
_ONLY_OURS = 2


class Recycler:
    """Up to ``slots`` arrays kept per recycler; :meth:`empty` returns an uninitialised array
    (as ``np.empty``), one of the kept ones when it has the shape and dtype and nothing else
    references it, else a new one (kept in place of a busy or mismatched one).

    Parameters
    ----------
    slots : int, default 2
        Two cover a layer whose previous output is still held by the next layer while it
        makes the new one (the next layer lets go later in the same step).
    """

    __slots__ = ("_slots", "_next", "size", "_lock")

    def __init__(self, slots: int = 2) -> None:
        self._slots: list[np.ndarray] = []
        self._next = 0
        self.size = slots
        # one hand-out at a time: two threads running one prepared plan (a Dask worker's
        # threads sharing its model) must not both find the same array free
        self._lock = threading.Lock()

    def _free(self, index: int, shape: tuple[int, ...], dtype: np.dtype) -> bool:
        array = self._slots[index]
        if array.shape != shape or array.dtype != dtype:
            return False
        del array  # the refcount below counts the list's reference only
        return sys.getrefcount(self._slots[index]) == _ONLY_OURS

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` that nothing else
        references."""
        shape = tuple(shape)
        with self._lock:
            for index in range(len(self._slots)):
                if self._free(index, shape, dtype):
                    # referenced here before the lock is let go: busy to any other thread
                    array = self._slots[index]
                    return array
            array = np.empty(shape, dtype=dtype)
            if len(self._slots) < self.size:
                self._slots.append(array)
            else:  # every slot busy or another shape: the oldest is let go (holders keep it)
                self._slots[self._next] = array
                self._next = (self._next + 1) % self.size
            return array

    def __reduce__(self) -> tuple[type[Recycler], tuple[int]]:
        # a copy or a pickle starts empty: the arrays are scratch, not state
        return (Recycler, (self.size,))

    def clear(self) -> None:
        """Let go of every kept array."""
        with self._lock:
            self._slots.clear()
            self._next = 0


# ---------------------------------------------------------------------------- kernel scratch

# Scratch arrays up to this size are plain np.empty (the allocator's free lists serve them
# without new pages; fastconv._paths.thread_scratch keeps those of a small call); larger ones
# come from the calling thread's pool. (Equal to _paths.SCRATCH_KEEP_BYTES: a pooled array
# is never small enough for thread_scratch to keep, so it never pins a pool buffer.)
SCRATCH_MIN_BYTES = 1 << 16
# A buffer larger than this is not kept (one huge image's im2col block must not stay behind)
SCRATCH_MAX_BYTES = 64 << 20
# Buffers kept per Python thread: a call holds at most four scratch arrays at once (a
# workspace, packed weights, offsets, partial sums); the others serve the next calls
SCRATCH_SLOTS = 6
# ... and their bytes together at most this (a thread that ran one large layer keeps no more;
# a larger buffer than fits is used once and dropped)
SCRATCH_KEEP_BYTES = 96 << 20


def output_maker(shape: tuple[int, ...], dtype: np.dtype) -> Callable[[], np.ndarray]:
    """A function of no arguments returning an uninitialised C-contiguous array of ``shape``
    and ``dtype`` that nothing else references, for a step that makes one such array every
    call (fastconv._fusion's prepared plans): a :class:`Recycler`'s above SCRATCH_MIN_BYTES,
    plain ``np.empty`` up to it (the allocator's free lists serve those without new pages, as
    for scratch, and at a third of the Recycler's cost: 0.2 against 0.6 us a call, which a
    batch-1 forward pass of LeNet-5 pays six times)."""
    shape = tuple(shape)
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize <= SCRATCH_MIN_BYTES:
        return partial(np.empty, shape, dtype)
    buffers = Recycler()
    return partial(buffers.empty, shape, np.dtype(dtype))


_scratch_local = threading.local()


def scratch(shape: int | tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` for a kernel's scratch
    (written before it is read, dropped when the call returns): a view of one of the calling
    Python thread's kept buffers that nothing else references (the smallest that fits), else
    a new buffer, kept in place of the smallest free one. Each thread has its own buffers,
    so two threads running kernels at once never share one; a buffer is reused only once its
    last view is gone (the Recycler's reference rule).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv._buffers import scratch
    >>> a = scratch((300, 100), np.float32)
    >>> address = a.__array_interface__["data"][0]
    >>> b = scratch((300, 100), np.float32)  # a still held: another buffer
    >>> b.__array_interface__["data"][0] == address
    False
    >>> del a, b
    >>> scratch(10000, np.float64).__array_interface__["data"][0] == address  # fits in a's
    True
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = dtype.itemsize
    for size in shape:
        nbytes *= size
    if nbytes <= SCRATCH_MIN_BYTES or nbytes > SCRATCH_MAX_BYTES:
        return np.empty(shape, dtype=dtype)
    buffers: list[np.ndarray] | None = getattr(_scratch_local, "buffers", None)
    if buffers is None:
        buffers = _scratch_local.buffers = []
    best = smallest_free = -1
    for index in range(len(buffers)):
        size = buffers[index].nbytes
        # the list's reference and getrefcount's argument only: no view of it is alive
        if sys.getrefcount(buffers[index]) != _ONLY_OURS:
            continue
        if size >= nbytes and (best < 0 or size < buffers[best].nbytes):
            best = index
        if smallest_free < 0 or size < buffers[smallest_free].nbytes:
            smallest_free = index
    if best >= 0:
        buffer = buffers[best]
    else:
        buffer = np.empty(nbytes, dtype=np.uint8)
        kept = sum(kept_buffer.nbytes for kept_buffer in buffers)
        if len(buffers) < SCRATCH_SLOTS and kept + nbytes <= SCRATCH_KEEP_BYTES:
            buffers.append(buffer)
        elif smallest_free >= 0 and \
                kept - buffers[smallest_free].nbytes + nbytes <= SCRATCH_KEEP_BYTES:
            # too small for this call: the larger one serves it and more
            buffers[smallest_free] = buffer
    return buffer[:nbytes].view(dtype).reshape(shape)


def scratch_zeros(shape: int | tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """:func:`scratch`, zeroed (for partial sums a kernel adds into)."""
    array = scratch(shape, dtype)
    array.fill(0)
    return array
