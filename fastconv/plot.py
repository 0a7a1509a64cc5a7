"""Pictures of images and feature maps, channel by channel (needs matplotlib).

matplotlib is an optional extra (``pip install fastconv[plot]``); it is imported only when a
function here is called. Figures are drawn off-screen (Agg) and saved as PNG, so this works on
machines without a display and never changes pyplot's global state.

Examples
--------
>>> import numpy as np
>>> import fastconv
>>> from fastconv import plot
>>> image = np.zeros((28, 28)); image[:, 10:18] = 1.0
>>> vertical = np.array([[-1.0, 0.0, 1.0]] * 3)
>>> maps = fastconv.conv2d(image[None, None], np.stack([vertical, vertical.T])[:, None])
>>> plot.feature_maps(maps[0], "edges.png", titles=["vertical", "horizontal"])  # doctest: +SKIP
'edges.png'
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar, Union

import numpy as np

from ._typing import ArrayLike, StrPath

if TYPE_CHECKING:
    from .nn import Module

_Target = TypeVar("_Target", bound=Union[StrPath, IO[bytes]])

__all__ = ["feature_maps", "layer_feature_maps"]


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "fastconv.plot needs matplotlib, an optional dependency: install it with "
            "'pip install fastconv[plot]' (or 'pip install matplotlib')"
        ) from None
    return Figure, FigureCanvasAgg


def feature_maps(maps: ArrayLike | Sequence[ArrayLike], path: _Target, *,
                 titles: Sequence[str] | None = None, columns: int | None = None,
                 cmap: str = "gray", scale: float = 2.0, suptitle: str | None = None,
                 dpi: int = 100) -> _Target:
    """Draw each channel of ``maps`` as a grey image in a grid and save it as a PNG.

    Parameters
    ----------
    maps : array_like or list of 2-D arrays
        (C, H, W) channels, (H, W) for one image, (1, C, H, W) for one batched sample, or a
        list of 2-D panels (which may differ in size).
    path : str, os.PathLike or a writable binary file
        Where the PNG goes.
    titles : sequence of str, optional
        One per channel (default ``'channel 0'``, ...).
    columns : int, optional
        Grid width (default: up to 8 per row).
    cmap : str, default 'gray'
    scale : float, default 2.0
        Inches per panel.
    suptitle : str, optional
        A title over the grid.
    dpi : int, default 100

    Returns
    -------
    path

    Raises
    ------
    ImportError
        matplotlib is not installed (the message says how to install it).
    ValueError
        ``maps`` has the wrong number of axes, or ``titles`` the wrong length.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    if isinstance(maps, (list, tuple)):  # panels of different sizes
        panels = [np.asarray(panel) for panel in maps]
        if not panels or any(panel.ndim != 2 for panel in panels):
            raise ValueError("a list of maps must hold 2-D arrays")
    else:
        maps = np.asarray(maps)
        if maps.ndim == 4 and maps.shape[0] == 1:
            maps = maps[0]
        if maps.ndim == 2:
            maps = maps[np.newaxis]
        if maps.ndim != 3:
            raise ValueError(
                f"maps must be (C, H, W), (H, W) or (1, C, H, W), got shape {maps.shape}")
        panels = list(maps)
    channels = len(panels)
    if titles is None:
        titles = [f"channel {index}" for index in range(channels)]
    titles = list(titles)
    if len(titles) != channels:
        raise ValueError(f"titles has {len(titles)} entries for {channels} channels")
    columns = min(channels, 8) if columns is None else int(columns)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    rows = max(1, math.ceil(channels / columns))
    figure = Figure(figsize=(scale * columns, scale * rows + (0.4 if suptitle else 0)))
    FigureCanvasAgg(figure)
    for index in range(channels):
        axes = figure.add_subplot(rows, columns, index + 1)
        image = axes.imshow(panels[index], cmap=cmap, interpolation="nearest")
        axes.set_title(titles[index], fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    figure.savefig(path if hasattr(path, "write") else os.fspath(path),  # type: ignore[arg-type]
                   format="png", dpi=dpi)
    return path


def layer_feature_maps(layer: Module, image: ArrayLike, path: _Target, *,
                       include_input: bool = True, **options: Any) -> _Target:
    """Run one image through ``layer`` (any module) and save its output channels as a PNG.

    Parameters
    ----------
    layer : fastconv.nn.Module
        E.g. a :class:`fastconv.nn.Conv2d`, or the first layers of a model
        (``model[:3]``).
    image : array_like
        One image (H, W) or (C, H, W); uint8 is scaled to [0, 1].
    path : str, os.PathLike or a writable binary file
    include_input : bool, default True
        Put the input image first.
    **options
        Passed to :func:`feature_maps`.

    Returns
    -------
    path
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image / 255.0
    if image.ndim == 2:
        image = image[np.newaxis]
    dtype = getattr(layer, "dtype", None)
    if dtype is not None:
        image = image.astype(dtype)
    output = np.asarray(layer(image[np.newaxis]))[0]
    if output.ndim != 3:
        raise ValueError(f"the layer's output for one image has shape {output.shape}; "
                         "feature maps must be (C, H, W)")
    titles = options.pop("titles", None) or [f"channel {c}" for c in range(output.shape[0])]
    if include_input and image.shape[0] == 1:
        return feature_maps(list(image[0:1]) + list(output), path,
                            titles=["input"] + list(titles), **options)
    return feature_maps(output, path, titles=titles, **options)
