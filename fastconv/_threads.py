"""Thread control: the one place that decides how many threads a kernel uses.

Every kernel takes ``num_threads`` from :func:`effective_num_threads`. The BLAS that the
convolution kernels call (SciPy's OpenBLAS, through ``scipy.linalg.cython_blas``) runs inside
our own ``prange`` regions, so it is held to one thread for the duration of each call
(scikit-learn's ``_argkmin`` does the same): the thread count the user sets is then the number
of cores fastconv occupies, BLAS included.

Two guards keep any setting from hanging or killing the process:

- Thread counts are bounded by :data:`MAX_THREADS` (four per CPU this process may run on, and
  at least 64): a larger count, from :func:`set_num_threads`, :func:`threads` or
  ``OMP_NUM_THREADS``, is clamped to it with a ``RuntimeWarning``. (libgomp aborts the whole
  process, with no Python exception, when it cannot create the threads asked for.)
- After ``os.fork()`` the child's OpenMP runtime is unusable: libgomp's thread pool belongs
  to the parent, and the child's first parallel region with more than one thread waits
  forever for threads that do not exist in it. A fork handler marks the child, and every
  kernel there runs on the calling thread alone (a one-thread parallel region does not touch
  the pool), with a one-time ``RuntimeWarning``; the BLAS is held to one thread there too.
  Processes started with 'spawn' or 'forkserver' start afresh and keep their threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from . import _openmp
from ._args import as_int

__all__ = ["set_num_threads", "get_num_threads", "threads", "effective_num_threads",
           "MAX_THREADS"]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


#: The largest thread count fastconv uses: 4 per usable CPU, and at least 64. Larger
#: requests are clamped to it (with a RuntimeWarning).
MAX_THREADS = max(64, 4 * _usable_cpus())

_state: dict[str, Any] = {"num_threads": None, "forked": False, "fork_warned": False}
# ``with threads(n)`` overrides the count for the Python thread that entered it only, so that
# overlapping blocks in two Python threads cannot restore each other's setting.
_local = threading.local()


def _clamped(n: int, source: str) -> int:
    if n > MAX_THREADS:
        warnings.warn(
            f"fastconv: {source} asks for {n} threads; using {MAX_THREADS} (fastconv.MAX_THREADS,"
            f" 4 per usable CPU and at least 64): creating more could abort the process",
            RuntimeWarning, stacklevel=4)
        return MAX_THREADS
    return n


def _as_thread_count(n: Any, source: str = "n") -> int:
    return _clamped(as_int(n, "n", 1), source)


# OpenMP reads OMP_NUM_THREADS once, at start-up; so can we.
_DEFAULT_NUM_THREADS = _clamped(_openmp.default_num_threads(), "OMP_NUM_THREADS (or OpenMP's "
                                "default)")


def _after_fork_in_child() -> None:
    """os.register_at_fork handler: OpenMP is unusable in this process from now on."""
    if _openmp.openmp_enabled():
        _state["forked"] = True
        _state["fork_warned"] = False
    for hold in (_blas_hold, _numpy_blas_hold):
        hold.after_fork()


def _warn_forked() -> None:
    _state["fork_warned"] = True
    warnings.warn(
        "fastconv: this process was forked from one whose OpenMP runtime cannot be used after "
        "fork(), so fastconv runs on one thread here (use the 'spawn' or 'forkserver' start "
        "method of multiprocessing to keep multithreading)", RuntimeWarning, stacklevel=4)


def get_num_threads() -> int:
    """Return the number of threads every fastconv kernel uses.

    Returns
    -------
    int
        The count set by :func:`set_num_threads`, or OpenMP's default (which honours
        ``OMP_NUM_THREADS``), at most :data:`MAX_THREADS`; always 1 in a build without
        OpenMP and in a process forked from another (see the module's docstring).

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_num_threads() >= 1
    True
    """
    if _state["forked"]:
        return 1
    # counts are >= 1, so `or` falls through only where nothing was set
    return getattr(_local, "num_threads", None) or _state["num_threads"] or _DEFAULT_NUM_THREADS


def set_num_threads(n: int) -> None:
    """Set the number of threads every fastconv kernel uses (BLAS calls included).

    Parameters
    ----------
    n : int
        Thread count, >= 1. Above :data:`MAX_THREADS` (4 per usable CPU, at least 64) it is
        clamped to that, with a ``RuntimeWarning``. In a build without OpenMP, and in a forked
        child process, the kernels stay serial whatever ``n``.

    Raises
    ------
    ValueError
        If ``n < 1``.
    TypeError
        If ``n`` is not an int.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.set_num_threads(1)
    >>> fastconv.get_num_threads()
    1
    """
    _state["num_threads"] = _as_thread_count(n, f"set_num_threads({n!r})")


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Context manager: use ``n`` threads inside the ``with`` block, restore the count after.

    The override belongs to the Python thread that enters the block: other Python threads
    keep their own count, and overlapping blocks in several threads do not interfere.
    ``n`` follows :func:`set_num_threads`'s rules (>= 1, clamped to :data:`MAX_THREADS`).

    Examples
    --------
    >>> import fastconv
    >>> with fastconv.threads(1):
    ...     fastconv.get_num_threads()
    1
    """
    n = _as_thread_count(n, f"threads({n!r})")
    previous = getattr(_local, "num_threads", None)
    _local.num_threads = n
    try:
        yield n
    finally:
        _local.num_threads = previous


def threads_key() -> int:
    """What the thread count of the next kernel depends on besides its shapes: the count in
    force, or 0 in a forked child (which runs on one thread, and warns once). Caches of
    per-call sizes (fastconv._plan.sizes_for) key on it, so that a changed count, a
    ``threads()`` block or a fork is honoured by the next call."""
    if _state["forked"]:
        return 0
    # get_num_threads() inline: every convolution call reads it
    return getattr(_local, "num_threads", None) or _state["num_threads"] or _DEFAULT_NUM_THREADS


def effective_num_threads(work_items: int | None = None, key: int | None = None) -> int:
    """Threads to pass to a kernel: the user's count, capped by the number of work items.

    ``key``: a :func:`threads_key` read by the caller (the count it keys a cache on), used
    instead of reading the count again."""
    n = get_num_threads() if not key else key
    if _state["forked"] and not _state["fork_warned"] and (
            getattr(_local, "num_threads", None) or _state["num_threads"]
            or _DEFAULT_NUM_THREADS) > 1 and (work_items is None or work_items > 1):
        _warn_forked()
    if work_items is not None and work_items < n:
        return work_items if work_items > 1 else 1
    return n


# Is threading worth it? Below about this much work per thread, waking a thread costs more
# than it saves; measured per kernel family, in that family's unit of work.
COPY_ELEMENTS_PER_THREAD = 1 << 12  # padding and adaptive pooling: elements read or written
NORM_ELEMENTS_PER_THREAD = 1 << 14  # batch norm: elements (two passes over each)
OPTIM_ELEMENTS_PER_THREAD = 1 << 14  # optimisers' updates: parameter elements
POOL_TAPS_PER_THREAD = 1 << 15  # max/avg pooling: window taps visited


def threads_for(items: int, work: int, work_per_thread: int) -> int:
    """Threads for a kernel that shares ``items`` out among its threads and does ``work``
    units in all: no more threads than items, nor than ``work // work_per_thread`` (at least
    one), nor than :func:`effective_num_threads` allows.

    Examples
    --------
    >>> threads_for(8, 100, POOL_TAPS_PER_THREAD)
    1
    """
    return effective_num_threads(max(1, min(items, work // work_per_thread)))


class _BlasHold:
    """Holds the BLAS our kernels call to one thread while a kernel that calls GEMM runs.

    The libraries are found once, at the first hold (threadpoolctl inspects the loaded
    libraries, which is slow). OpenBLAS's own ``openblas_get/set_num_threads`` are then bound
    into ``fastconv._openmp.BlasHold``, so entering and leaving cost two C calls. (threadpoolctl's
    own setter ignores every Python thread but the first that used it, which would break
    concurrent callers.) Reference-counted: Python threads calling fastconv at the same time
    restore the user's setting only when the last one leaves. An OpenBLAS built on OpenMP
    needs no hold: called from inside our parallel region it runs on the calling thread
    (nested parallelism is off); another BLAS is held through threadpoolctl.
    """

    def __init__(self, package):
        self._package = package
        self._libraries = None
        self._native = _openmp.BlasHold()
        self._fallback = []
        # the first use, from several threads at once (a Dask worker's), binds once: a
        # second bind while the first thread holds the BLAS would be refused
        self._binding = threading.Lock()

    def _find(self):
        """The BLAS libraries that ``package`` (scipy or numpy) loaded."""
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a declared dependency
            return []
        import importlib

        module = importlib.import_module(self._package)
        if self._package == "scipy":
            importlib.import_module("scipy.linalg.cython_blas")  # loads the kernels' BLAS
        blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        # Wheels vendor their OpenBLAS in <package>.libs/ (or inside the package); elsewhere
        # (conda, distro builds) SciPy and NumPy share one BLAS, so hold them all.
        package_dir = os.path.dirname(os.path.realpath(module.__file__))
        owned = [
            lib for lib in blas
            if os.path.realpath(lib.filepath).startswith(
                (package_dir + os.sep, package_dir + ".libs"))
        ]
        return owned or blas

    def _ensure(self):
        with self._binding:
            if self._libraries is None:
                self._bind()

    def _bind(self):
        import ctypes

        libraries = self._find()
        addresses = []
        for lib in libraries:
            if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") == \
                    "openmp" and not _state["forked"]:  # (after fork its OpenMP is unusable)
                continue
            symbol = getattr(lib, "_get_symbol", lambda name: None)
            getter = symbol("openblas_get_num_threads") if lib.internal_api == "openblas" else None
            setter = symbol("openblas_set_num_threads") if lib.internal_api == "openblas" else None
            if getter is not None and setter is not None:
                addresses.append((ctypes.cast(getter, ctypes.c_void_p).value,
                                  ctypes.cast(setter, ctypes.c_void_p).value))
            else:
                self._fallback.append(lib)
        self._native.bind(addresses)
        self._libraries = libraries

    def after_fork(self):
        """In a forked child: forget a hold that a parent's thread had entered, and find the
        libraries again at the next hold, this time holding those threaded by OpenMP too."""
        self._native.reset()
        self._libraries = None
        self._fallback = []

    def info(self):
        self._ensure()
        return [
            {"library": lib.internal_api, "filepath": lib.filepath, "version": lib.version,
             "architecture": getattr(lib, "architecture", None),
             "num_threads": lib.num_threads}
            for lib in self._libraries
        ]

    def __enter__(self):
        if self._libraries is None:
            self._ensure()
        if self._fallback:  # pragma: no cover - only with a BLAS other than OpenBLAS
            self._saved = [lib.get_num_threads() for lib in self._fallback]
            for lib in self._fallback:
                lib.set_num_threads(1)
        return self._native.__enter__()

    def __exit__(self, *exc):
        self._native.__exit__()
        if self._fallback:  # pragma: no cover - only with a BLAS other than OpenBLAS
            for lib, saved in zip(self._fallback, self._saved):
                lib.set_num_threads(saved)
        return False


_blas_hold = _BlasHold("scipy")
_numpy_blas_hold = _BlasHold("numpy")
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _hold(hold):
    if hold._libraries is None or hold._fallback:
        return hold
    return hold._native


def blas_single_thread():
    """The context manager that holds the kernels' BLAS (SciPy's) to one thread."""
    return _hold(_blas_hold)


def numpy_blas_single_thread():
    """The same for NumPy's BLAS, around the small matrix products of fastconv.nn.Linear.

    NumPy's OpenBLAS keeps its own pool of threads, which spin while they wait for work, as
    OpenMP's do after each kernel; alternating the two pools on the same cores (a Linear after
    a Conv2d, every batch) makes them fight for the cores, while one thread does a network's
    small linear layers in microseconds.
    """
    return _hold(_numpy_blas_hold)


def blas_info():
    """The BLAS libraries fastconv's kernels call, for show_config()."""
    return _blas_hold.info()
