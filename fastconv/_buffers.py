"""Arrays a layer hands out step after step, reused once nothing else holds them.

A training step allocates the same large arrays every time (each layer's output, each input
gradient) and frees the previous step's copies part way through the next step. With glibc's
allocator that churn grows the heap by tens of MB and trims it back once per step, so every
step pays the kernel for fresh zeroed pages: measured on the small ResNet at batch 64
(``models.build('resnet')``), about 870 page faults and 6 ms of system time per step of
~65 ms (bench/profile_resnet_step.py has the figures). A :class:`Recycler` keeps the arrays
it made and hands one out again only when its own references are the only ones left (the
caller, a view of it, a layer that kept it: any other reference makes the array busy), so
reuse can never change an array someone still sees.

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

import numpy as np

__all__ = ["Recycler"]

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
