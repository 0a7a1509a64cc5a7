"""Convolution kernels: tiled im2col + GEMM, one single-threaded GEMM per tile.

The output pixels of each (sample, group) are cut into tiles of ``tile`` pixels whose im2col
block (K = C_in/groups * kH * kW rows by ``tile`` columns) stays in L2. Each thread packs its
own tile and multiplies it, either with SciPy's OpenBLAS held to one thread by the caller, or
(where the wrapper chooses it, from the shapes) with the packed GEMM of ``_gemm.h``: the
weights are packed once per call and the im2col block is read in place (the forward pass) or
transposed in registers into panels (the weight gradient), where BLAS would re-pack both on
every tile. Where the wrapper stages (geo.staged), a thread first copies the input planes of
the (sample, group) into a zero-padded, column-phase-split stage (stage_input), from which
every im2col row segment is one contiguous run (staged_runs); the per-item input gradient
scatters into such a stage too (col2im_staged, unstage). The tile size and the paths depend
only on the shapes, never on the thread count, and every output element is produced by the
same GEMM call whatever thread runs it, so results are bit-identical for any thread count.

At ISA avx512 (src/_cpu.h), float32 convolutions with a multiple of 16 output channels per group take
the direct kernels of ``_direct.h`` instead (forward_direct, grad_weight_direct): no
im2col block, the output channels across the vector lanes, each input value broadcast from
the stage (or, pointwise, from x) in place; and depthwise convolutions with 16k channels
stage 16 channels pixel-major (depthwise_direct_*).

Row-major arrays are handed to column-major BLAS as their transposes: a row-major (R x C)
block with row stride ``ld`` is a column-major (C x R) matrix with leading dimension ``ld``.

The wrappers (fastconv/conv.py, fastconv/_paths.py) validate everything and allocate every buffer (outputs,
per-thread workspaces, partial sums); these kernels never raise and never allocate.

The kernels live in one file per family, included here (one module, one import):

- ``conv/geometry.pxi``: the Geometry struct and the helpers every family shares (tiles,
  valid ranges, alignment, the per-thread chunk schedule);
- ``conv/stage.pxi``: im2col, the staged input, col2im and the scatter back;
- ``conv/gemm.pxi``: im2col + GEMM (BLAS or the packed GEMM of ``_gemm.h``): forward,
  weight gradient, input gradient, and the bias gradient every path shares;
- ``conv/direct.pxi``: the direct kernels of ``_direct.h``;
- ``conv/depthwise.pxi``: the per-plane depthwise kernels of ``_depthwise.h``;
- ``conv/depthwise_direct.pxi``: the depthwise kernels with 16 channels across the lanes;
- ``conv/winograd.pxi``: Winograd F(m x m, 3 x 3) for 3x3 stride-1 convolutions, the
  transforms of ``_winograd.h`` around the packed GEMM.
- ``conv/winograd_wgrad.pxi``: the weight gradient by Winograd (``_winograd_wgrad.h``), a
  GEMM per alpha^2 position summing over the tiles.
- ``conv/linear.pxi``: fastconv.nn.Linear's forward pass, the dot-product kernels of
  ``_linear.h`` with the rows across the threads.
- ``conv/interleave.pxi``: the strided input gradients' phase planes interleaved into
  grad_input.

Which of them runs is decided in one place, fastconv/_paths.py (the ordered path list), from
the plan that fastconv/_plan.py makes; these entry points take no sentinel and decide
nothing: each runs one path.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcmp, memcpy, memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

from _types cimport floating


cdef extern from "_cpu.h" nogil:
    int fc_cpu_isa()
    const char* fc_cpu_isa_name(int level)


# The instruction-set level every kernel family below picks its code from, once, at import
# (src/_cpu.h: the CPU's, capped by FASTCONV_ISA=generic|avx2|avx512).
ISA = fc_cpu_isa_name(fc_cpu_isa()).decode("ascii")

include "conv/geometry.pxi"
include "conv/gemm.pxi"
include "conv/stage.pxi"
include "conv/direct.pxi"
include "conv/depthwise.pxi"
include "conv/depthwise_direct.pxi"
include "conv/winograd.pxi"
include "conv/winograd_wgrad.pxi"
include "conv/fewchan.pxi"
include "conv/linear.pxi"
include "conv/interleave.pxi"
