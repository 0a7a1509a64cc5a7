"""fastconv.nn.Linear's forward pass on fastconv's threads (src/_linear.h, src/conv/linear.pxi).

``x @ weight.T + bias`` as dot products read in place, the rows split across fastconv's
threads; NumPy's matmul (held to one BLAS thread: its own pool would fight OpenMP's for the
cores) ran it on one core, and several single-threaded BLAS calls at once from OpenMP threads
ran 10-60x slower than one (OpenBLAS's locks). The results depend on the shapes and the
instruction set in force, never on the thread count; they may differ from BLAS's in the last
bits (another order of the sums). Where it pays: LINEAR_MIN_FEATURES.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _conv, _threads

__all__ = ["linear", "chooses_kernels", "forward", "forward_for", "numpy_forward", "takes", "pays",
           "LINEAR_MACS_PER_THREAD", "LINEAR_MIN_FEATURES"]

# From this many input features up the kernels pay. Measured (float32, 2 threads, this 2-core Zen,
# medians of 7, ms, ours at 2 threads / ours at 1 / NumPy's one BLAS thread): (1000 rows)
# 576 -> 20 0.136 / 0.200 / 0.294; 400 -> 120 0.705 / 0.987 / 0.880; 120 -> 84 0.510 /
# 0.984 / 0.220; 84 -> 10 0.079 / 0.156 / 0.038; 20 -> 10 0.072 / 0.144 / 0.018. Each output
# reduces its lanes once, which short rows of features do not amortise (BLAS's kernels keep
# outputs across the lanes instead).
LINEAR_MIN_FEATURES = 256
# Below this many multiply-adds per thread a second thread costs more than it saves (waking
# it is microseconds): the tutorial net's Linear(576, 20) at batch 1 is 11.5K multiply-adds,
# at batch 64 737K (0.021 ms on one thread, 0.014 on two).
LINEAR_MACS_PER_THREAD = 1 << 16

_KERNELS = {np.dtype(np.float32): _conv.linear_forward["float"],
            np.dtype(np.float64): _conv.linear_forward["double"]}


def takes(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> bool:
    """Whether ``forward`` runs these arrays: float32 or float64 alike, the weight and bias
    C-contiguous (x is made so), x's last axis the weight's second, at least one row and
    feature, sizes below 2**31."""
    dtype = weight.dtype
    return (dtype in _KERNELS and x.dtype == dtype and weight.ndim == 2 and x.ndim >= 1
            and x.shape[-1] == weight.shape[1] and x.size > 0 and weight.size > 0
            and weight.flags.c_contiguous
            and (bias is None or (bias.dtype == dtype and bias.shape == (weight.shape[0],)
                                  and bias.flags.c_contiguous))
            and max(x.size, weight.size) < 2 ** 31)


def pays(weight: np.ndarray) -> bool:
    """Whether the kernels beat NumPy's matmul for this layer (see LINEAR_MIN_FEATURES)."""
    return weight.shape[-1] >= LINEAR_MIN_FEATURES


def forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``x @ weight.T + bias`` for arrays that ``takes`` accepts: a new array of shape
    ``x.shape[:-1] + (weight.shape[0],)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import _linear
    >>> x, w = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    >>> _linear.forward(x, w, None)[0]
    array([3., 3., 3., 3.], dtype=float32)
    """
    x = np.ascontiguousarray(x)
    rows = x.size // x.shape[-1]
    outs, features = weight.shape
    out = np.empty(x.shape[:-1] + (outs,), dtype=x.dtype)
    threads = _threads.threads_for(rows, rows * outs * features, LINEAR_MACS_PER_THREAD)
    _KERNELS[x.dtype](x.reshape(rows, features), weight, bias, out.reshape(rows, outs),
                      threads)
    return out


def forward_for(shape: tuple[int, ...], weight: np.ndarray
                ) -> Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]:
    """:func:`forward` for inputs of ``shape`` and ``weight``'s shape and dtype (arrays that
    ``takes`` accepts), with the thread count in force now: its sizes and thread count worked
    out once, for a prepared plan's step (fastconv._fusion; remade when the count changes).
    The same results as :func:`forward`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import _linear
    >>> run = _linear.forward_for((2, 3), np.ones((4, 3), np.float32))
    >>> run(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), None)[1]
    array([3., 3., 3., 3.], dtype=float32)
    """
    outs, features = weight.shape
    rows = 1
    for size in shape[:-1]:
        rows *= size
    dtype = weight.dtype
    out_shape = tuple(shape[:-1]) + (outs,)
    threads = _threads.threads_for(rows, rows * outs * features, LINEAR_MACS_PER_THREAD)
    kernel = _KERNELS[dtype]
    empty, contiguous = np.empty, np.ascontiguousarray

    def run(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        out = empty(out_shape, dtype=dtype)
        kernel(contiguous(x).reshape(rows, features), weight, bias, out.reshape(rows, outs),
               threads)
        return out
    return run


def numpy_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``x @ weight.T + bias`` by NumPy's matmul, held to one BLAS thread (its own thread pool
    would fight fastconv's OpenMP threads for the cores): where the kernels do not pay."""
    with _threads.numpy_blas_single_thread():
        output = x @ weight.T
    if bias is not None:
        output += bias
    return output


def chooses_kernels(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> bool:
    """Whether :func:`linear` runs these arrays on fastconv's kernels (:func:`forward`) rather
    than NumPy's matmul (:func:`numpy_forward`): the one place that choice is made."""
    return takes(x, weight, bias) and pays(weight)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``x @ weight.T + bias`` (``nn.Linear``'s forward pass), by the kernels where
    :func:`chooses_kernels` says so, else by NumPy's matmul.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import _linear
    >>> _linear.linear(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4))[1]
    array([3., 3., 3., 3.])
    """
    if chooses_kernels(x, weight, bias):
        return forward(x, weight, bias)
    return numpy_forward(x, weight, bias)
