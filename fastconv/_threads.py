"""Thread control: the one place that decides how many threads a kernel uses.

Every kernel takes ``num_threads`` from :func:`effective_num_threads`. The BLAS that the
convolution kernels call (SciPy's OpenBLAS, through ``scipy.linalg.cython_blas``) runs inside
our own ``prange`` regions, so it is held to one thread for the duration of each call
(scikit-learn's ``_argkmin`` does the same): the thread count the user sets is then the number
of cores fastconv occupies, BLAS included.
"""

import contextlib
import os
import threading

from . import _openmp

__all__ = ["set_num_threads", "get_num_threads", "threads", "effective_num_threads"]

_state = {"num_threads": None}


def _as_thread_count(n):
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"n must be an int, got {n!r}")
    n = n.__index__()
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return n


def get_num_threads():
    """Return the number of threads every fastconv kernel uses.

    Returns
    -------
    int
        The count set by :func:`set_num_threads`, or OpenMP's default (which honours
        ``OMP_NUM_THREADS``); always 1 in a build without OpenMP.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_num_threads() >= 1
    True
    """
    n = _state["num_threads"]
    return _openmp.default_num_threads() if n is None else n


def set_num_threads(n):
    """Set the number of threads every fastconv kernel uses (BLAS calls included).

    Parameters
    ----------
    n : int
        Thread count, >= 1. In a build without OpenMP the kernels stay serial whatever ``n``.

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
    _state["num_threads"] = _as_thread_count(n)


@contextlib.contextmanager
def threads(n):
    """Context manager: use ``n`` threads inside the ``with`` block, restore the count after.

    Examples
    --------
    >>> import fastconv
    >>> with fastconv.threads(1):
    ...     fastconv.get_num_threads()
    1
    """
    n = _as_thread_count(n)
    previous = _state["num_threads"]
    _state["num_threads"] = n
    try:
        yield n
    finally:
        _state["num_threads"] = previous


def effective_num_threads(work_items=None):
    """Threads to pass to a kernel: the user's count, capped by the number of work items."""
    n = get_num_threads()
    if work_items is not None:
        n = max(1, min(n, work_items))
    return n


class _BlasHold:
    """Holds the BLAS our kernels call to one thread while a kernel that calls GEMM runs.

    The libraries are found once (threadpoolctl inspects the loaded libraries, which is slow);
    after that, entering and leaving cost a few direct ctypes calls to OpenBLAS's own
    ``openblas_get/set_num_threads`` (threadpoolctl's setter ignores every Python thread but
    the first that used it, which would break concurrent callers). Reference-counted, so
    Python threads calling fastconv at the same time restore the user's setting only when the
    last one leaves. An OpenBLAS built on OpenMP needs no hold: called from inside our own
    parallel region it runs on the calling thread (nested parallelism is off).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._libraries = None
        self._accessors = []
        self._depth = 0
        self._saved = []

    def _find(self):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - a declared dependency
            return []
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS our kernels call)

        blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        # Wheels vendor SciPy's OpenBLAS in scipy.libs/ (or inside the package); elsewhere
        # (conda, distro builds) SciPy shares one BLAS with NumPy, so hold them all.
        scipy_dir = os.path.dirname(os.path.realpath(scipy.__file__))
        owned = [
            lib for lib in blas
            if os.path.realpath(lib.filepath).startswith((scipy_dir + os.sep, scipy_dir + ".libs"))
        ]
        return owned or blas

    def _ensure(self):
        if self._libraries is None:
            self._libraries = self._find()
            for lib in self._libraries:
                getter = setter = None
                if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") != "openmp":
                    symbol = getattr(lib, "_get_symbol", lambda name: None)
                    getter = symbol("openblas_get_num_threads")
                    setter = symbol("openblas_set_num_threads")
                if getter is None or setter is None:  # other BLAS: threadpoolctl's own calls
                    getter, setter = lib.get_num_threads, lib.set_num_threads
                self._accessors.append((getter, setter))

    def info(self):
        self._ensure()
        return [
            {"library": lib.internal_api, "filepath": lib.filepath, "version": lib.version,
             "architecture": getattr(lib, "architecture", None),
             "num_threads": lib.num_threads}
            for lib in self._libraries
        ]

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._ensure()
                self._saved = [getter() for getter, _ in self._accessors]
                for (_, setter), saved in zip(self._accessors, self._saved):
                    if saved != 1:
                        setter(1)
            self._depth += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for (_, setter), saved in zip(self._accessors, self._saved):
                    if saved is not None and saved != 1:
                        setter(saved)
        return False


blas_single_thread = _BlasHold()
