"""The geometry of a convolution as its kernels see it: one named tuple, made in one place.

``Geometry`` is what every kernel of ``fastconv._conv`` reads (src/conv/geometry.pxi unpacks
the same 16 fields, in this order, into its C struct): the sizes of one (sample, group), then
the two choices made from them, the tile (output pixels per im2col block) and whether to stage
the input. The workspace sizes that follow from a geometry are here too, so that the Python
side that allocates and the Cython side that carves the buffers share one description.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _conv
from ._args import check_size
from ._buffers import scratch

__all__ = ["Geometry", "make_geometry", "TILE_BYTES", "STAGE_BYTES", "POINTWISE_TILE", "ALIGN"]

# An im2col tile (k rows by `tile` output pixels) is sized to stay in L2 next to the GEMM's
# packed panels.
TILE_BYTES = 256 * 1024
POINTWISE_TILE = 4096
# Each thread copies the input of one (sample, group) into a zero-padded stage, from which
# every im2col row is a run of plain 64-byte copies (src/conv/stage.pxi, stage_input), when
# that copy is at most this big. A tile reads only a band of the stage's rows, so it need not
# fit in a cache: on Zen 4, staging the ResNet-sized planes (0.85 MB) made their forward 8%
# and the 7x7 stem's 17% faster. Larger planes (images of millions of pixels) keep im2col
# from x, so the workspace stays bounded.
STAGE_BYTES = 8 * 1024 * 1024
# elements in 64 bytes: the slack per workspace row that lets a kernel align the row's start
ALIGN = {np.dtype(np.float32): 16, np.dtype(np.float64): 8}
# (weight rows, pixel columns) per panel of the packed GEMM
PANELS = {np.dtype(np.float32): _conv.PANELS["float"],
          np.dtype(np.float64): _conv.PANELS["double"]}


class Geometry(NamedTuple):
    """One (sample, group) of a convolution, as the kernels read it (src/conv/geometry.pxi)."""

    in_channels_g: int   # input channels per group
    in_h: int            # the input plane the kernels read (explicitly padded modes: padded)
    in_w: int
    out_channels_g: int  # output channels per group
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_top: int         # implicit zero padding (the far sides follow from the output size)
    pad_left: int
    dil_h: int
    dil_w: int
    tile: int            # output pixels per tile: from the shapes, never the thread count
    staged: bool         # im2col from a zero-padded copy of the input (stage_input)

    @property
    def k(self) -> int:
        """Rows of the im2col matrix: input channels per group times taps."""
        return self.in_channels_g * self.kernel_h * self.kernel_w

    @property
    def n_tiles(self) -> int:
        return -(-(self.out_h * self.out_w) // self.tile)

    @property
    def macs_per_item(self) -> int:
        """Multiply-adds of one (sample, group): C_out/groups * k * output pixels."""
        return self.out_channels_g * self.k * self.out_h * self.out_w

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, unpadded, output = input: the input plane is the GEMM operand."""
        return _pointwise(self)


def _pointwise(shapes: tuple[int, ...]) -> bool:
    (_, in_h, in_w, _, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
     *_) = shapes
    return (kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left) == (1, 1, 1, 1, 0, 0) \
        and (out_h, out_w) == (in_h, in_w)


def _tile_size(k: int, out_plane: int, itemsize: int) -> int:
    """Output pixels per tile: depends on the shapes only, never on the thread count."""
    tile = TILE_BYTES // max(1, k * itemsize)
    tile = max(64, tile - tile % 16)
    return max(1, min(tile, out_plane))


def make_geometry(in_channels_g: int, in_h: int, in_w: int, out_channels_g: int, out_h: int,
                  out_w: int, kernel_h: int, kernel_w: int, stride: tuple[int, int],
                  pads: tuple[int, int], dilation: tuple[int, int], dtype: np.dtype,
                  stage: bool | None = None) -> Geometry:
    """The geometry of these sizes: the tile from the im2col block's bytes, and staging where
    the stage is at most STAGE_BYTES (``stage``: a test's override, False never stages, True
    stages wherever the layout applies)."""
    k = in_channels_g * kernel_h * kernel_w
    shapes = (in_channels_g, in_h, in_w, out_channels_g, out_h, out_w, kernel_h, kernel_w,
              stride[0], stride[1], pads[0], pads[1], dilation[0], dilation[1])
    if _pointwise(shapes):
        # pointwise: the input plane is the GEMM operand itself, no im2col block to keep in
        # L2, so longer tiles only save OpenBLAS re-packing the weights
        tile = min(out_h * out_w, POINTWISE_TILE)
    else:
        tile = _tile_size(k, out_h * out_w, dtype.itemsize)
    check_size(k * tile, "an im2col tile")
    geometry = Geometry(*shapes, tile, False)
    if stage is not False:
        stage_bytes = _conv.stage_size(geometry) * dtype.itemsize
        if 0 < stage_bytes and (stage or stage_bytes <= STAGE_BYTES):
            geometry = geometry._replace(staged=True)
    return geometry


# ---- workspaces: what each kernel family carves from a thread's row -------------------------

def stage_elements(geometry: Geometry, dtype: np.dtype) -> int:
    """Elements a thread's workspace row needs after its im2col block: the 64 bytes the staged
    copy may spill past it, then the stage (src/conv/gemm.pxi, stage_of), if staged."""
    return ALIGN[dtype] + (_conv.stage_size(geometry) if geometry.staged else 0)


# The workspaces below are scratch for one kernel call (written before they are read, let go
# when the call returns): fastconv._buffers.scratch hands out the calling thread's kept
# buffers, so that a training step does not map fresh pages for them every time.

def im2col_workspace(rows: int, geometry: Geometry, dtype: np.dtype) -> np.ndarray:
    """Per-thread im2col blocks: k by tile; for the packed GEMM, rows of tile rounded up to
    whole panels, plus one panel (src/conv/stage.pxi, im2col_rows); 64 bytes of slack to align
    each row's start; then the stage."""
    nr = PANELS[dtype][1]
    return scratch((rows, geometry.k * (-(-geometry.tile // nr) + 1) * nr + ALIGN[dtype]
                     + stage_elements(geometry, dtype)), dtype)


def packed_weight_buffer(geometry: Geometry, groups: int, dtype: np.dtype,
                         transposed: bool = False) -> np.ndarray:
    """The buffer the packed GEMM packs the weights into: C_out/groups by k per group (or k by
    C_out/groups for the input gradient), rows rounded up to whole panels, and 64 bytes of
    slack to align its start."""
    mr = PANELS[dtype][0]
    rows, columns = ((geometry.k, geometry.out_channels_g) if transposed
                     else (geometry.out_channels_g, geometry.k))
    return scratch(groups * -(-rows // mr) * mr * columns + ALIGN[dtype], dtype)


def packed_weight_workspace(threads: int, geometry: Geometry, dtype: np.dtype) -> np.ndarray:
    """Per-thread rows for the packed weight gradient: the tile of grad_output in panels, the
    transposed im2col block in panels and nr rows of scratch (src/conv/gemm.pxi,
    grad_weight_impl), then the stage."""
    mr, nr = PANELS[dtype]
    size = (-(-geometry.out_channels_g // mr) * mr + -(-geometry.k // nr) * nr + nr) \
        * geometry.tile
    return scratch((threads, size + 2 * ALIGN[dtype] + stage_elements(geometry, dtype)), dtype)


def gy_rows_workspace(threads: int, geometry: Geometry, dtype: np.dtype) -> np.ndarray:
    """Per-thread copies of C_out/groups rows of a tile of grad_output for the packed GEMM
    (panel_ld(tile) each: whole panels plus one, and 64 bytes of slack)."""
    nr = PANELS[dtype][1]
    return scratch((threads, geometry.out_channels_g * (-(-geometry.tile // nr) + 1) * nr
                     + ALIGN[dtype]), dtype)


def direct_workspace(rows: int, geometry: Geometry, dtype: np.dtype) -> np.ndarray:
    """Per-thread rows for the direct kernels: 64 bytes of slack to align the start, the stage,
    then a run of a tile's pixels (at most 256 KiB of them, _conv.direct_run_pixels) of
    pixel-major sums (the forward pass) or of grad_output (the weight gradient)."""
    return scratch((rows, ALIGN[dtype] + _conv.stage_size(geometry)
                     + _conv.direct_run_pixels(geometry) * geometry.out_channels_g), dtype)


def depthwise_direct_workspace(threads: int, geometry: Geometry) -> np.ndarray:
    """Per-thread rows for fc_dwd_*: 64 bytes of slack, a stage (the input, or the input
    gradient's sums) and a pixel-major tile of 16 planes (the output, or grad_output)."""
    stage, tile = _conv.depthwise_direct_sizes(geometry)
    return scratch((threads, ALIGN[np.dtype(np.float32)] + stage + tile), np.float32)


def depthwise_workspaces(threads: int, geometry: Geometry, multiplier: int, dtype: np.dtype
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per-thread scratch of the per-plane depthwise kernels (padded input bands, a padded
    row) and the float64 lanes of the weight gradient's sums, each row padded to whole cache
    lines."""
    band, lanes = _conv.depthwise_workspace_sizes(geometry, multiplier)
    band += -band % (64 // dtype.itemsize)
    lanes += -lanes % 8
    return (scratch((threads, band), dtype),
            scratch((threads, lanes), np.float64))
