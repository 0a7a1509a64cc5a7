"""fastconv: fast 2-D convolution, padding and pooling for NumPy arrays.

Typed Cython + OpenMP kernels behind a NumPy API with PyTorch's semantics
(``torch.nn.functional``). See ``fastconv.show_config()`` for how this copy was built.
"""

from ._version import __version__
from ._threads import get_num_threads, set_num_threads, threads
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
    "show_config",
]

from . import datasets, models, nn, optim, train
from .io import load, save

__all__ += ["nn", "optim", "train", "datasets", "models", "save", "load"]
