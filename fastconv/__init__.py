"""fastconv: fast 2-D convolution, padding and pooling for NumPy arrays.

Typed Cython + OpenMP kernels behind a NumPy API with PyTorch's semantics
(``torch.nn.functional``). See ``fastconv.show_config()`` for how this copy was built.
"""

import os as _os

from ._version import __version__


def _source_tree_guard() -> None:
    """Explain, instead of a circular-import error, why an unbuilt source tree cannot import.

    ``python -m`` and ``python -c`` put the current directory first on ``sys.path``; run from
    the root of a clone, that finds this folder, which has the Python files but not the
    compiled kernels, and hides the installed package (NumPy guards its source tree the same
    way).
    """
    try:
        from . import _openmp  # noqa: F401  (the smallest extension: is anything built here?)
    except ImportError as exc:
        here = _os.path.dirname(_os.path.abspath(__file__))
        root = _os.path.dirname(here)
        if _os.path.exists(_os.path.join(root, "setup.py")):
            raise ImportError(
                f"fastconv is being imported from its source tree ({root}), whose fastconv/ "
                "folder has no compiled kernels. Python searched the current directory first "
                "(as 'python -m' and 'python -c' do), so it hides any installed fastconv. "
                "Use the 'fastconv' command (e.g. 'fastconv train'), run Python from another "
                "directory, or build the kernels here: 'pip install -e . "
                "--no-build-isolation' (README.md, Development)."
            ) from exc
        raise


_source_tree_guard()
from ._threads import MAX_THREADS, get_num_threads, set_num_threads, threads
from ._config import show_config
from .conv import conv2d, conv2d_backward, convolve2d, corr2d
from .pad import pad2d, pad2d_backward
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .adaptive import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    max_unpool2d,
    max_unpool2d_backward,
)
from .norm import batch_norm, batch_norm_backward
from .transposed import conv_transpose2d, conv_transpose2d_backward

__all__ = [
    "__version__",
    "corr2d",
    "convolve2d",
    "conv2d",
    "conv2d_backward",
    "pad2d",
    "pad2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "batch_norm",
    "batch_norm_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "set_num_threads",
    "get_num_threads",
    "threads",
    "MAX_THREADS",
    "show_config",
]

from . import datasets, models, nn, optim, train
from .io import load, save

__all__ += ["nn", "optim", "train", "datasets", "models", "save", "load"]
