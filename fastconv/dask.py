"""fastconv over Dask arrays: the same convolutions, pooling and models on data larger than memory.

``conv2d``, ``max_pool2d``, ``avg_pool2d`` and ``pad2d`` take a ``dask.array`` in NCHW and return
one; ``predict`` runs a model (or any callable on NumPy batches) over a Dask array chunked on the
batch axis. Every task calls fastconv's in-memory function on one block, so the kernels, their
argument rules and their errors are the in-memory ones. Install with ``pip install
fastconv[dask]``; the module is imported only when asked for (``import fastconv.dask``).

How a block is cut
------------------
Chunks along the batch run blockwise. Along height and width, each input chunk computes the
output windows that *start* in it (a chunk holding none makes no output chunk; windows
starting in the top/left padding belong to the first chunk, in the bottom/right padding to the
last), reading a halo of the rows after it -- up to ``dilation * (kernel - 1)`` rows, from as
many following chunks as that takes. So output chunk
boundaries fall on stride boundaries by construction, whatever the input chunking, and each
block is convolved with only the implicit padding that lies at its own edge of the image. The
padding modes ('reflect', 'replicate', 'circular') are planned on the padded image and the
blocks convolved unpadded, exactly as the in-memory ``conv2d`` pads explicitly and convolves
unpadded; each block reads its padded rows (the input rows they copy) straight from the input's
chunks, with no padded copy of the image in between.

A block that is one chunk, or a contiguous part of one, is that chunk (no copy). Any other is
built by copying each piece once, straight into its place, in a scratch buffer that the Dask
thread reuses from task to task (it grows to the largest block the thread builds: 13 MB for
3 x 1032 x 1032 float32): fresh memory would fault in page by page at every task.

Exactness
---------
The result equals the in-memory result bit for bit:

* Chunks along the batch: always (every kernel computes a sample the same way in any batch).
* Chunks along height/width: fastconv picks a convolution kernel from the plane size (direct
  kernels for planes whose stage fits in 8 MiB, the packed GEMM from 2**21 (float32) / 2**23
  (float64) multiply-adds per sample, depthwise kernels by stage size), and those kernels sum
  in different orders. Each block is therefore asked (through a private argument of the
  in-memory ``conv2d``, for that call only: nothing global changes, other calls in the same
  process are unaffected) for the kernel the whole image gets in memory. One case cannot be
  made exact: convolutions that run on BLAS in
  memory (small ones, or 1x1 ones), because OpenBLAS's sgemm gives a row a different rounding
  depending on how many rows the call has. Splitting those along height/width raises
  ``ValueError`` with the fix (whole planes: ``x.rechunk({2: -1, 3: -1})``), unless
  ``exact=False`` (then results agree to rounding). Pooling and padding have one kernel each
  and are exact for every chunking.

Threads
-------
Each task runs fastconv with ``threads`` threads (default 1), so a worker with ``T`` threads
uses ``T`` cores and a cluster of ``W`` workers x ``T`` threads uses ``W x T``: size the cluster
as ``workers x threads <= cores`` (``LocalCluster``'s default) and nothing is oversubscribed.
Give ``threads=k`` with ``k`` > 1 for a worker with one thread and ``k`` cores (large images).
"""

from __future__ import annotations

import copy
import functools
import operator
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from numpy.typing import ArrayLike

from . import conv as _conv_module
from . import pool as _pool_module
from ._args import as_batched as _as_batched_ndarray
from ._args import as_float_array, check_mode, is_int, output_size, padding4, result_dtype
from ._threads import threads as _threads
from ._typing import PadMode
from .conv import conv2d as _conv2d
from .pad import PAD_MODES, check_pad_limits
from .pool import avg_pool2d as _avg_pool2d
from .pool import max_pool2d as _max_pool2d

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "pad2d", "predict"]

_AXES = ("height", "width")


# ------------------------------------------------------------------------------ input handling
def as_batched(array: Any, name: str) -> tuple[Any, bool]:
    """_args.as_batched (the one rule for 3-D and 4-D inputs) on a Dask array."""
    return _as_batched_ndarray(array, name)


def _as_dask(x: Any, name: str = "x") -> Any:
    array = x if isinstance(x, da.Array) else da.asarray(x)
    if any(np.isnan(size) for sizes in array.chunks for size in sizes):
        raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() "
                         "first")
    return array


def _check_threads(threads: int | None) -> int:
    if threads is None:
        return 1
    if not is_int(threads) or operator.index(threads) < 1:
        raise ValueError(f"threads must be None or an int >= 1, got {threads!r}")
    return operator.index(threads)


def _bounds(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


# ------------------------------------------------------------------------------ axis plans
class _Span(NamedTuple):
    """One output block along one axis: input rows [first, stop), the implicit padding the
    block gets before and after them, and how many outputs it makes."""

    first: int
    stop: int
    pad_before: int
    pad_after: int
    outputs: int
    skip: int = 0  # leading outputs computed only to give a ceil_mode window its input


def _axis_output(size: int, kernel: int, stride: int, dilation: int, before: int, after: int,
                 ceil_mode: bool) -> int:
    outputs: int = output_size((size, 1), (kernel, 1), (stride, 1), (before, after, 0, 0),
                               (dilation, 1), ceil_mode=ceil_mode)[0]
    return outputs


def _window_plan(op: str, axis: int, chunks: Sequence[int], kernel: int, stride: int,
                 dilation: int, before: int, after: int, out_len: int,
                 ceil_mode: bool) -> list[_Span]:
    """Cut the outputs along one axis by the input chunk in which each window starts (chunks
    holding no window start make no output chunk)."""
    bounds = _bounds(chunks)
    length = int(bounds[-1])
    reach = dilation * (kernel - 1)
    starts = np.arange(out_len, dtype=np.int64) * stride - before
    owner = np.searchsorted(bounds[1:-1], starts, side="right")
    counts = np.bincount(owner, minlength=len(chunks))
    spans = []
    first_output = 0
    for count in counts[counts > 0]:  # a chunk holding no window start only lends a halo
        last_output = first_output + int(count)
        for skip in range(first_output + 1):
            # a ceil_mode window running past the padding needs the rows of earlier windows
            # to be cut alone: those are computed too and dropped
            start_output = first_output - skip
            need_first = start_output * stride - before
            need_stop = (last_output - 1) * stride - before + reach + 1
            first, stop = max(0, need_first), min(length, need_stop)
            pad_before = first - need_first
            pad_after = min(after, need_stop - stop)
            try:
                valid = stop > first and _axis_output(
                    stop - first, kernel, stride, dilation, pad_before, pad_after,
                    ceil_mode) == last_output - start_output
            except ValueError:
                valid = False
            if valid:
                break
        else:
            raise ValueError(  # not met: every output can be computed from the whole axis
                f"{op}: cannot cut the chunking {tuple(chunks)} along {_AXES[axis]}; rechunk, "
                f"e.g. x.rechunk({{{axis + 2}: -1}})")
        spans.append(_Span(first, stop, pad_before, pad_after, int(count), skip))
        first_output = last_output
    return spans


Run = tuple[int, slice]  # (input chunk, rows of it), or (-1, slice(0, count)) for a fill


def _runs(indices: np.ndarray, bounds: np.ndarray) -> list[Run]:
    """Input rows ``indices`` (-1 for a fill) as runs of rows of one chunk, step +1 or -1."""
    runs: list[Run] = []
    chunk_of = np.searchsorted(bounds[1:-1], indices, side="right")
    position = 0
    total = len(indices)
    while position < total:
        index = int(indices[position])
        end = position + 1
        if index < 0:
            while end < total and indices[end] < 0:
                end += 1
            runs.append((-1, slice(0, end - position, 1)))
        else:
            chunk = int(chunk_of[position])
            step = 0
            while end < total and indices[end] >= 0 and chunk_of[end] == chunk:
                gap = int(indices[end] - indices[end - 1])
                if gap not in (1, -1) or (step and gap != step):
                    break
                step = gap
                end += 1
            start = index - int(bounds[chunk])
            stop = start + (end - position - 1) * (step or 1)
            last = stop + (step or 1)
            runs.append((chunk, slice(start, last if last >= 0 else None, step or 1)))
        position = end
    return runs


def _run_length(rows: slice) -> int:
    return len(range(rows.start, -1 if rows.stop is None else rows.stop, rows.step))


_scratch = threading.local()  # per Dask thread: the buffer blocks are built in (see _assemble)


def _scratch_array(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array in this thread's scratch buffer, which grows to the
    largest block the thread has built and is then reused: fresh memory costs a page fault
    per page (each time, in a worker whose nanny sets MALLOC_TRIM_THRESHOLD_), reused memory
    does not."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = _scratch.buffer = np.empty(max(nbytes, 1), dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def _assemble(grid: list[list[list[np.ndarray | None]]], rows: list[Run],
              columns: list[Run], fill: float, scratch: bool = False) -> np.ndarray:
    """One block from pieces of input chunks: grid[channel chunk][row run][column run], None
    where a run is a fill (constant padding). Each piece is copied once, straight into its
    place in the block; a block that is one whole chunk is that chunk, not a copy. With
    ``scratch`` the block lives in this thread's scratch buffer (for a task that only reads
    it: the next block this thread builds overwrites it)."""
    reference = next(piece for channel in grid for row in channel for piece in row
                     if piece is not None)
    if len(grid) == 1 and len(rows) == 1 and len(columns) == 1 and reference is grid[0][0][0]:
        piece = reference[:, :, rows[0][1], columns[0][1]]
        if piece.flags.c_contiguous:
            return piece  # e.g. a whole chunk: a view of it
    channel_counts = [next(piece for row in channel for piece in row
                           if piece is not None).shape[1] for channel in grid]
    row_lengths = [_run_length(row_slice) for _, row_slice in rows]
    column_lengths = [_run_length(column_slice) for _, column_slice in columns]
    shape = (reference.shape[0], sum(channel_counts), sum(row_lengths), sum(column_lengths))
    block = (_scratch_array(shape, reference.dtype) if scratch
             else np.empty(shape, dtype=reference.dtype))
    channel_start = 0
    for channel, channel_count in zip(grid, channel_counts):
        channel_stop = channel_start + channel_count
        row_start = 0
        for (_, row_slice), row_length, row in zip(rows, row_lengths, channel):
            row_stop = row_start + row_length
            column_start = 0
            for (_, column_slice), column_length, piece in zip(columns, column_lengths, row):
                column_stop = column_start + column_length
                target = block[:, channel_start:channel_stop, row_start:row_stop,
                               column_start:column_stop]
                if piece is None:
                    target[...] = fill
                else:
                    target[...] = piece[:, :, row_slice, column_slice]
                column_start = column_stop
            row_start = row_stop
        channel_start = channel_stop
    return block


def _contiguous(span: _Span) -> np.ndarray:
    return np.arange(span.first, span.stop, dtype=np.int64)


def _build(op: str, x: Any, row_indices: Sequence[np.ndarray], column_indices: Sequence[np.ndarray],
           task: Callable[[int, int], Callable[..., Any]], out_shape_chunks: tuple[Any, ...],
           dtype: np.dtype, *, all_channels: bool, extras: Sequence[Any] = (), fill: float = 0.0,
           scratch: bool = True, outputs: int = 1, token: Any = None, skips_rows: Sequence[int] = (),
           skips_columns: Sequence[int] = ()) -> list[Any]:
    """The Dask array(s) whose block (n, c, i, j) is ``task(i, j)(block, *extras)``, where
    ``block`` holds the input rows ``row_indices[i]`` and columns ``column_indices[j]`` (-1
    for ``fill``) of batch chunk n and of channel chunk c (every channel chunk with
    ``all_channels``). ``extras`` (arrays) go into the graph once, as keys of their own.
    With ``outputs`` > 1 the task returns a tuple and one array per element is returned.
    ``scratch``: the blocks are built in the thread's scratch buffer (the task must return
    new arrays, not the block)."""
    name = f"{op}-{tokenize(x, op, token)}"
    plans_skip = [list(skips_rows) or [0] * len(row_indices),
                  list(skips_columns) or [0] * len(column_indices)]
    row_bounds, column_bounds = _bounds(x.chunks[2]), _bounds(x.chunks[3])
    row_runs = [_runs(indices, row_bounds) for indices in row_indices]
    column_runs = [_runs(indices, column_bounds) for indices in column_indices]
    graph: dict[Any, Any] = {}
    extra_keys = []
    for index, extra in enumerate(extras):
        key = f"{name}-extra-{index}"
        graph[key] = extra
        extra_keys.append(key)
    channel_chunks = range(len(x.chunks[1]))
    out_channel_chunks = [tuple(channel_chunks)] if all_channels else [
        (c,) for c in channel_chunks]
    names = [name] if outputs == 1 else [f"{name}-{k}" for k in range(outputs)]
    for n in range(len(x.chunks[0])):
        for c_out, sources in enumerate(out_channel_chunks):
            for i, rows in enumerate(row_runs):
                for j, columns in enumerate(column_runs):
                    grid = [[[None if row_chunk < 0 or column_chunk < 0
                              else (x.name, n, c, row_chunk, column_chunk)
                              for column_chunk, _ in columns] for row_chunk, _ in rows]
                            for c in sources]
                    call = (_skipped(task(i, j), plans_skip[0][i], plans_skip[1][j]),
                            (_assemble, grid, rows, columns, fill, scratch), *extra_keys)
                    if outputs == 1:
                        graph[(name, n, c_out, i, j)] = call
                    else:
                        graph[(name, n, c_out, i, j)] = call
                        for k in range(outputs):
                            graph[(names[k], n, c_out, i, j)] = (_item, (name, n, c_out, i, j), k)
    chunks_list = out_shape_chunks if outputs > 1 else (out_shape_chunks,)
    arrays = []
    for k, out_name in enumerate(names):
        layer = HighLevelGraph.from_collections(out_name, graph, dependencies=[x])
        chunks, out_dtype = chunks_list[k]
        arrays.append(da.Array(layer, out_name, chunks, meta=np.empty((0,) * 4, out_dtype)))
    return arrays


def _item(values: tuple[Any, ...], index: int) -> Any:
    return values[index]


def _skipped(function: Callable[..., Any], skip_rows: int, skip_columns: int) -> Callable[..., Any]:
    if not (skip_rows or skip_columns):
        return function
    return functools.partial(_drop_leading, function, skip_rows, skip_columns)


def _drop_leading(function: Callable[..., Any], skip_rows: int, skip_columns: int,
                  *args: Any) -> Any:
    result = function(*args)
    if isinstance(result, tuple):
        return tuple(np.ascontiguousarray(part[:, :, skip_rows:, skip_columns:])
                     for part in result)
    return np.ascontiguousarray(result[:, :, skip_rows:, skip_columns:])


def _finish(result: Any, unbatched: bool) -> Any:
    return result[0] if unbatched else result


# ------------------------------------------------------------------------------ pad2d
def _source_rows(length: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each row of the padded axis, the input row it copies (-1: the constant)."""
    rows = np.arange(-before, length + after, dtype=np.int64)
    if mode == "constant":
        return np.where((rows >= 0) & (rows < length), rows, -1)
    if mode == "reflect":
        rows = np.abs(rows)
        return np.where(rows >= length, 2 * (length - 1) - rows, rows)
    if mode == "replicate":
        return np.clip(rows, 0, length - 1)
    return rows % length  # circular


def _padded_chunks(chunks: Sequence[int], before: int, after: int) -> list[int]:
    sizes = list(chunks)
    sizes[0] += before
    sizes[-1] += after
    return sizes


def _identity(block: np.ndarray) -> np.ndarray:
    return block


def pad2d(x: ArrayLike, padding: Any, mode: PadMode = "constant",
          value: float | None = 0.0) -> Any:
    """:func:`fastconv.pad2d` over a Dask array: the same result, lazily, for any chunking.

    Parameters
    ----------
    x : dask.array.Array or array_like, shape (N, C, H, W) or (C, H, W)
        Input; a NumPy array becomes a one-chunk Dask array.
    padding, mode, value
        As :func:`fastconv.pad2d`.

    Returns
    -------
    dask.array.Array
        The padded array, float32 or float64 as :func:`fastconv.pad2d`; the first and last
        chunks along height and width grow by the padding, the others keep their sizes.

    Raises
    ------
    ValueError, TypeError
        As :func:`fastconv.pad2d`, before anything is computed.

    Examples
    --------
    >>> import dask.array as da, fastconv.dask
    >>> x = da.ones((1, 1, 4, 4), chunks=2)
    >>> fastconv.dask.pad2d(x, 1, mode="reflect").shape
    (1, 1, 6, 6)
    """
    array = _as_dask(x)
    dtype = result_dtype(("x", np.empty(0, dtype=array.dtype)))
    x4, unbatched = as_batched(array.astype(dtype), "x")
    from .pad import pad2d as _pad2d_in_memory
    # every argument rule, on an empty batch of the same planes
    _pad2d_in_memory(np.empty((0,) + x4.shape[1:], dtype=dtype), padding, mode, value)
    top, bottom, left, right = padding4(padding, "padding")
    canonical: Any = check_mode(mode, PAD_MODES, "mode")
    check_pad_limits(x4.shape[2:], (top, bottom, left, right), canonical)
    fill = 0.0 if value is None else float(value)
    fill = float(np.asarray(fill, dtype=dtype))  # rounded to the result dtype, as in memory
    row_sources = _source_rows(x4.shape[2], top, bottom, canonical)
    column_sources = _source_rows(x4.shape[3], left, right, canonical)
    row_chunks = _padded_chunks(x4.chunks[2], top, bottom)
    column_chunks = _padded_chunks(x4.chunks[3], left, right)
    row_indices = np.split(row_sources, np.cumsum(row_chunks)[:-1])
    column_indices = np.split(column_sources, np.cumsum(column_chunks)[:-1])
    chunks = (x4.chunks[0], x4.chunks[1], tuple(row_chunks), tuple(column_chunks))
    (result,) = _build("fastconv-pad2d", x4, row_indices, column_indices,
                       lambda i, j: _identity, (chunks, dtype), dtype, all_channels=False,
                       fill=fill, scratch=False, token=(top, bottom, left, right, canonical, fill))
    return _finish(result, unbatched)


# ------------------------------------------------------------------------------ convolution
def _conv_block(block: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *,
                stride: tuple[int, int], padding: tuple[tuple[int, int], tuple[int, int]],
                dilation: tuple[int, int], groups: int, path: str | None,
                threads: int) -> np.ndarray:
    with _threads(threads):
        result: np.ndarray = _conv2d(block, weight, bias, stride, padding, dilation, groups,
                                     _path=path)
    return result


def conv2d(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
           *, exact: bool = True, threads: int | None = None) -> Any:
    """:func:`fastconv.conv2d` over a Dask array, equal to the in-memory result bit for bit.

    Chunks along the batch run blockwise; along height and width each chunk computes the
    windows that start in it, with a halo from the chunks after it (see the module docstring).
    The input channels may be chunked (each block reads them all); the result has one chunk
    of output channels.

    Parameters
    ----------
    x : dask.array.Array or array_like, shape (N, C_in, H, W) or (C_in, H, W)
        Input; a NumPy array becomes a one-chunk Dask array.
    weight, bias, stride, padding, dilation, groups, padding_mode
        As :func:`fastconv.conv2d` (``weight`` and ``bias`` are in-memory arrays, put into the
        task graph once).
    exact : bool, default True
        Refuse (``ValueError``) height/width chunkings whose result could differ from the
        in-memory one in the last bits (convolutions that run on BLAS; see the module
        docstring). With False they run, equal to rounding.
    threads : int, optional
        fastconv threads per task (default 1: one per Dask thread).

    Returns
    -------
    dask.array.Array
        Shape and dtype of :func:`fastconv.conv2d`'s result; chunks: the batch chunks of
        ``x``, one channel chunk, and along height/width the windows starting in each chunk.

    Raises
    ------
    ValueError, TypeError
        Every error :func:`fastconv.conv2d` raises for these shapes and arguments, before
        anything is computed; and ``ValueError`` naming the fix for a chunking that cannot be
        exact (convolutions that run on BLAS, split along height/width).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv.dask
    >>> x = da.ones((1, 1, 8, 8), chunks=(1, 1, 4, 4))
    >>> y = fastconv.dask.conv2d(x, np.ones((1, 1, 3, 3)), padding=1)
    >>> float(y[0, 0, 0, 0].compute()), float(y[0, 0, 4, 4].compute())
    (4.0, 9.0)
    """
    array = _as_dask(x)
    threads = _check_threads(threads)
    dtype = result_dtype(("x", np.empty(0, dtype=array.dtype)), ("weight", weight),
                         ("bias", bias))
    weight_array: np.ndarray = as_float_array(weight, "weight", dtype)
    bias_array: np.ndarray | None = None if bias is None else as_float_array(bias, "bias", dtype)
    x4, unbatched = as_batched(array.astype(dtype), "x")
    # every argument rule of the in-memory conv2d, on an empty batch of the same planes
    conv_call, _ = _conv_module._prepare_checked(
        np.empty((0,) + x4.shape[1:], dtype=dtype), weight_array, bias_array, stride, padding,
        dilation, groups, padding_mode, ())
    conv = conv_call.plan
    pads = conv.pads
    # the padding modes: planned on the padded image, as the in-memory conv2d pads explicitly
    # and convolves unpadded; each block reads its padded rows straight from the input's
    # chunks (the row each copies), without a padded copy of the image in between
    sources: list[np.ndarray | None] = [None, None]
    plan_chunks = [x4.chunks[2], x4.chunks[3]]
    if conv.mode != "zeros" and any(pads):
        for axis in range(2):
            before, after = pads[2 * axis], pads[2 * axis + 1]
            sources[axis] = _source_rows(x4.shape[2 + axis], before, after, conv.mode)
            plan_chunks[axis] = tuple(_padded_chunks(x4.chunks[2 + axis], before, after))
        pads = (0, 0, 0, 0)
    in_channels, out_channels = x4.shape[1], weight_array.shape[0]
    kernel = weight_array.shape[2:]
    plans = [_window_plan("conv2d", axis, plan_chunks[axis], kernel[axis],
                          conv.stride[axis], conv.dilation[axis], pads[2 * axis],
                          pads[2 * axis + 1], (conv.out_h, conv.out_w)[axis], False)
             for axis in range(2)]
    full_path = _conv_module._kernel_path(conv_call)

    def block_path(rows: _Span, columns: _Span, path: str | None) -> str:
        """The kernel the in-memory conv2d runs for this block, asked for ``path``."""
        block, _ = _conv_module._prepare_checked(
            np.empty((0, in_channels, rows.stop - rows.first, columns.stop - columns.first),
                     dtype=dtype), weight_array, bias_array, conv.stride,
            ((rows.pad_before, rows.pad_after), (columns.pad_before, columns.pad_after)),
            conv.dilation, conv.groups, "zeros", ())
        name: str = _conv_module._kernel_path(block, path)
        return name

    spatial = len(plans[0]) > 1 or len(plans[1]) > 1
    path: str | None = None  # batch chunks only: every block has the image's planes
    if spatial and exact and full_path != "empty":
        if full_path == "blas":
            raise ValueError(
                f"conv2d: this convolution runs on BLAS in memory (fewer than the packed "
                f"GEMM's multiply-adds per sample, or 1x1), and BLAS rounds a row differently "
                f"depending on how many rows each call has, so chunks along height/width "
                f"(here {x4.chunks[2]} x {x4.chunks[3]}) cannot give the in-memory bits. "
                f"Keep whole planes: x.rechunk({{2: -1, 3: -1}}) (batch chunks are fine), or "
                f"pass exact=False for results equal to rounding")
        # a block's smaller plane may choose another kernel (the direct ones, staged; BLAS,
        # below the packed GEMM's multiply-adds): each block asks for the image's
        path = full_path
        shapes = {(rows.stop - rows.first, rows.pad_before, rows.pad_after,
                   columns.stop - columns.first, columns.pad_before, columns.pad_after):
                  (rows, columns) for rows in plans[0] for columns in plans[1]}
        for rows, columns in shapes.values():
            if block_path(rows, columns, path) != path:  # not met: the override only
                raise ValueError(                       # takes size-based choices away
                    f"conv2d: a block of chunks {x4.chunks[2]} x {x4.chunks[3]} cannot run "
                    f"the in-memory kernel ({full_path}); rechunk to whole planes: "
                    f"x.rechunk({{2: -1, 3: -1}}), or pass exact=False")

    def task(i: int, j: int) -> Callable[..., Any]:
        rows, columns = plans[0][i], plans[1][j]
        return functools.partial(
            _conv_block, stride=conv.stride,
            padding=((rows.pad_before, rows.pad_after), (columns.pad_before, columns.pad_after)),
            dilation=conv.dilation, groups=conv.groups, path=path, threads=threads)

    chunks = (x4.chunks[0], (out_channels,), tuple(span.outputs for span in plans[0]),
              tuple(span.outputs for span in plans[1]))
    indices = [[_contiguous(span) if source is None else source[span.first:span.stop]
                for span in plan] for plan, source in zip(plans, sources)]
    (result,) = _build("fastconv-conv2d", x4, indices[0], indices[1], task, (chunks, dtype),
                       dtype,
                       all_channels=True, extras=(weight_array, bias_array),
                       skips_rows=[span.skip for span in plans[0]],
                       skips_columns=[span.skip for span in plans[1]],
                       token=(weight_array, bias_array, conv.stride, conv.pads, conv.mode,
                              conv.dilation, conv.groups, path, threads))
    return _finish(result, unbatched)


# ------------------------------------------------------------------------------ pooling
def _pool_plans(op: str, x4: Any, kernel: tuple[int, int], stride: tuple[int, int],
                pads: tuple[int, ...], dilation: tuple[int, int], out_size: tuple[int, int],
                ceil_mode: bool) -> list[list[_Span]]:
    return [_window_plan(op, axis, x4.chunks[2 + axis], kernel[axis], stride[axis],
                         dilation[axis], pads[2 * axis], pads[2 * axis + 1], out_size[axis],
                         ceil_mode) for axis in range(2)]


def _max_block(block: np.ndarray, *, kernel: tuple[int, int], stride: tuple[int, int],
               padding: tuple[tuple[int, int], tuple[int, int]], dilation: tuple[int, int],
               ceil_mode: bool, origin: tuple[int, int] | None, width: int,
               threads: int) -> Any:
    with _threads(threads):
        result = _max_pool2d(block, kernel, stride, padding, dilation, ceil_mode,
                             return_indices=origin is not None)
    if origin is None:
        return result
    values, indices = result
    rows, columns = np.divmod(indices, block.shape[3])  # the block's plane -> the image's
    return values, (rows + origin[0]) * width + columns + origin[1]


def max_pool2d(x: ArrayLike, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False, *,
               threads: int | None = None) -> Any:
    """:func:`fastconv.max_pool2d` over a Dask array, equal to the in-memory result for any
    chunking (batch, channels, height and width).

    Parameters
    ----------
    x : dask.array.Array or array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size, stride, padding, dilation, ceil_mode, return_indices
        As :func:`fastconv.max_pool2d`; the indices index the flattened H*W plane of the
        whole image, as in memory.
    threads : int, optional
        fastconv threads per task (default 1).

    Returns
    -------
    dask.array.Array, or a pair of them with ``return_indices``

    Raises
    ------
    ValueError, TypeError
        As :func:`fastconv.max_pool2d`, before anything is computed.

    Examples
    --------
    >>> import dask.array as da, fastconv.dask
    >>> x = da.arange(16.0, chunks=4).reshape(1, 1, 4, 4).rechunk((1, 1, 2, 2))
    >>> fastconv.dask.max_pool2d(x, 2).compute()[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    array = _as_dask(x)
    threads = _check_threads(threads)
    dtype = result_dtype(("x", np.empty(0, dtype=array.dtype)))
    x4, unbatched = as_batched(array.astype(dtype), "x")
    _max_pool2d(np.empty((0,) + x4.shape[1:], dtype=dtype), kernel_size, stride, padding,
                dilation, ceil_mode)  # every argument rule, on an empty batch
    _pool_module._check_planes(x4.shape, "x")
    kernel, stride_pair, pads, dilation_pair, out_size = _pool_module._geometry(
        x4.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    plans = _pool_plans("max_pool2d", x4, kernel, stride_pair, pads, dilation_pair, out_size,
                        bool(ceil_mode))

    def task(i: int, j: int) -> Callable[..., Any]:
        rows, columns = plans[0][i], plans[1][j]
        return functools.partial(
            _max_block, kernel=kernel, stride=stride_pair,
            padding=((rows.pad_before, rows.pad_after), (columns.pad_before, columns.pad_after)),
            dilation=dilation_pair, ceil_mode=bool(ceil_mode),
            origin=(rows.first, columns.first) if return_indices else None,
            width=x4.shape[3], threads=threads)

    chunks = (x4.chunks[0], x4.chunks[1], tuple(span.outputs for span in plans[0]),
              tuple(span.outputs for span in plans[1]))
    specs: Any = ((chunks, dtype), (chunks, np.dtype(np.int64))) if return_indices else (
        chunks, dtype)
    results = _build("fastconv-max_pool2d", x4, [_contiguous(span) for span in plans[0]],
                     [_contiguous(span) for span in plans[1]], task, specs, dtype,
                     all_channels=False, outputs=2 if return_indices else 1,
                     skips_rows=[span.skip for span in plans[0]],
                     skips_columns=[span.skip for span in plans[1]],
                     token=(kernel, stride_pair, pads, dilation_pair, ceil_mode, threads))
    if return_indices:
        return _finish(results[0], unbatched), _finish(results[1], unbatched)
    return _finish(results[0], unbatched)


def _avg_block(block: np.ndarray, *, kernel: tuple[int, int], stride: tuple[int, int],
               padding: tuple[tuple[int, int], tuple[int, int]], ceil_mode: bool,
               count_include_pad: bool, divisor_override: int | None,
               threads: int) -> np.ndarray:
    with _threads(threads):
        result: np.ndarray = _avg_pool2d(block, kernel, stride, padding, ceil_mode,
                                         count_include_pad, divisor_override)
    return result


def avg_pool2d(x: ArrayLike, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None, *, threads: int | None = None) -> Any:
    """:func:`fastconv.avg_pool2d` over a Dask array, equal to the in-memory result bit for
    bit for any chunking (each window is summed in the same order, divided by the same
    divisor: a block gets the image's padding only at the image's edges).

    Parameters
    ----------
    x : dask.array.Array or array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As :func:`fastconv.avg_pool2d`.
    threads : int, optional
        fastconv threads per task (default 1).

    Returns
    -------
    dask.array.Array

    Raises
    ------
    ValueError, TypeError
        As :func:`fastconv.avg_pool2d`, before anything is computed.

    Examples
    --------
    >>> import dask.array as da, fastconv.dask
    >>> x = da.ones((1, 1, 4, 4), chunks=(1, 1, 2, 2))
    >>> fastconv.dask.avg_pool2d(x, 2).compute()[0, 0]
    array([[1., 1.],
           [1., 1.]])
    """
    array = _as_dask(x)
    threads = _check_threads(threads)
    dtype = result_dtype(("x", np.empty(0, dtype=array.dtype)))
    x4, unbatched = as_batched(array.astype(dtype), "x")
    _avg_pool2d(np.empty((0,) + x4.shape[1:], dtype=dtype), kernel_size, stride, padding,
                ceil_mode, count_include_pad, divisor_override)  # every argument rule
    _pool_module._check_planes(x4.shape, "x")
    kernel, stride_pair, pads, dilation_pair, out_size = _pool_module._geometry(
        x4.shape[2:], kernel_size, stride, padding, 1, ceil_mode)
    plans = _pool_plans("avg_pool2d", x4, kernel, stride_pair, pads, dilation_pair, out_size,
                        bool(ceil_mode))

    def task(i: int, j: int) -> Callable[..., Any]:
        rows, columns = plans[0][i], plans[1][j]
        return functools.partial(
            _avg_block, kernel=kernel, stride=stride_pair,
            padding=((rows.pad_before, rows.pad_after), (columns.pad_before, columns.pad_after)),
            ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
            divisor_override=divisor_override, threads=threads)

    chunks = (x4.chunks[0], x4.chunks[1], tuple(span.outputs for span in plans[0]),
              tuple(span.outputs for span in plans[1]))
    (result,) = _build("fastconv-avg_pool2d", x4, [_contiguous(span) for span in plans[0]],
                       [_contiguous(span) for span in plans[1]], task, (chunks, dtype), dtype,
                       all_channels=False,
                       skips_rows=[span.skip for span in plans[0]],
                       skips_columns=[span.skip for span in plans[1]],
                       token=(kernel, stride_pair, pads, ceil_mode, count_include_pad,
                              divisor_override, threads))
    return _finish(result, unbatched)


# ------------------------------------------------------------------------------ models
def _eval_copy(model: Any) -> Any:
    """The model the tasks run: a copy in evaluation mode for a fastconv Module (the caller's
    model is left as it is), any other callable as given."""
    from .nn import Module
    if isinstance(model, Module):
        return copy.deepcopy(model).eval()
    return model


def _current_client() -> Any:
    """The ``distributed`` client that would compute a collection now (Dask's default
    scheduler is that client's), else None."""
    try:
        from distributed import default_client
        client = default_client()
    except (ImportError, ValueError):  # no distributed, or no client
        return None
    from dask.base import get_scheduler
    return client if get_scheduler() == client.get else None


def _predict_block(model: Any, block: np.ndarray, *, batch_size: int | None,
                   threads: int) -> np.ndarray:
    step = len(block) if batch_size is None else batch_size
    with _threads(threads):
        outputs = [np.asarray(model(block[start:start + step]))
                   for start in range(0, len(block), max(step, 1))]
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)


def predict(model: Callable[[np.ndarray], Any], x: ArrayLike, batch_size: int | None = None,
            *, threads: int | None = None) -> Any:
    """Run a model's evaluation forward (or any callable on NumPy batches) over a Dask array
    chunked on its first (batch) axis.

    A fastconv ``nn.Module`` is run as an evaluation-mode copy (the caller's model is left
    as it is). Where a ``distributed`` client is Dask's scheduler when ``predict`` is called,
    that copy is sent to every worker there and then (``client.scatter(...,
    broadcast=True)``) and the tasks refer to it: each worker receives and unpickles it once,
    keeps it (with the plans its first batch prepares) for every compute of the result, and
    no task waits for it; the result then belongs to that client. (Dask's active memory
    manager, on by default, drops every 2 s all copies but one of a key that no waiting task
    needs, the model's too: a worker that lost its copy fetches it again for its next task and
    unpickles it, and that copy's first batch prepares its plans again, about 20 ms more for
    LeNet; ``client.amm.stop()`` keeps every copy.) Otherwise (Dask's local schedulers) the
    model is one key of the task graph, which the tasks depend on. Each chunk is cut into
    batches of ``batch_size`` from its start; the result equals the in-memory loop
    ``np.concatenate([model(x[i:i + batch_size]) for i in range(0, n, batch_size)])`` bit for
    bit when every chunk but the last is a multiple of ``batch_size`` (otherwise
    ``ValueError``, as BLAS rounds a batch's rows by the batch's size).

    Parameters
    ----------
    model : fastconv.nn.Module or callable
        Takes a NumPy batch, returns a NumPy array with one row per sample.
    x : dask.array.Array or array_like
        Samples along axis 0; the other axes in one chunk.
    batch_size : int, optional
        Samples per call; default: a whole chunk per call.
    threads : int, optional
        fastconv threads per task (default 1: one per Dask thread).

    Returns
    -------
    dask.array.Array
        The outputs, chunked as ``x`` along axis 0.

    Raises
    ------
    ValueError
        ``x`` chunked along another axis, or chunks that are not multiples of
        ``batch_size`` (the message gives the rechunk).

    Examples
    --------
    >>> import dask.array as da, fastconv, fastconv.dask
    >>> model = fastconv.models.build("lenet")
    >>> x = da.zeros((10, 1, 28, 28), dtype="float32", chunks=(5, 1, 28, 28))
    >>> fastconv.dask.predict(model, x, batch_size=5).shape
    (10, 10)
    """
    array = _as_dask(x)
    threads = _check_threads(threads)
    if array.ndim < 1:
        raise ValueError("x must have a batch axis")
    split = [axis for axis in range(1, array.ndim) if len(array.chunks[axis]) > 1]
    if split:
        whole = ", ".join(f"{axis}: -1" for axis in split)
        raise ValueError(f"predict: x is chunked along axes {split}; only the batch axis may "
                         f"be: x.rechunk({{{whole}}})")
    if batch_size is not None:
        if not is_int(batch_size) or operator.index(batch_size) < 1:
            raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
        batch_size = int(batch_size)
        if any(size % batch_size for size in array.chunks[0][:-1]):
            target = max(1, round(max(array.chunks[0]) / batch_size)) * batch_size
            raise ValueError(
                f"predict: batch chunks {array.chunks[0][:4]}... are not multiples of "
                f"batch_size={batch_size}, so the batches would differ from an in-memory loop "
                f"(BLAS rounds a row by the batch's size); rechunk: x.rechunk({{0: {target}}})")
    local = _eval_copy(model)
    sample = np.asarray(local(np.zeros((1,) + array.shape[1:], dtype=array.dtype)))
    graph: dict[Any, Any] = {}
    client = _current_client()
    if client is not None:
        # on every worker before any task runs, for as long as the result array lives
        model_ref: Any = client.scatter([local], broadcast=True, hash=False)[0]
        # (the keys name the scattered copy: another predict's tasks read another copy)
        name = f"fastconv-predict-{tokenize(array, batch_size, threads, model_ref.key)}"
        # how to make that key where it is not in memory: Dask's local schedulers (computed
        # with scheduler="threads" though the client exists) run it; the cluster has it
        graph[model_ref.key] = (_eval_copy, model)
    else:
        name = f"fastconv-predict-{tokenize(array, batch_size, threads, id(model))}"
        model_ref = f"{name}-model"
        graph[model_ref] = (_eval_copy, model)
    block = functools.partial(_predict_block, batch_size=batch_size, threads=threads)
    tail = (0,) * (array.ndim - 1)
    out_tail = (0,) * (sample.ndim - 1)
    for index in range(len(array.chunks[0])):
        graph[(name, index) + out_tail] = (block, model_ref, (array.name, index) + tail)
    layer = HighLevelGraph.from_collections(name, graph, dependencies=[array])
    chunks = (array.chunks[0],) + tuple((size,) for size in sample.shape[1:])
    return da.Array(layer, name, chunks, meta=np.empty((0,) * sample.ndim, sample.dtype))
