"""show_config(): how this copy of fastconv was built and what it runs with."""

from __future__ import annotations

import os
import platform
import sys
import warnings
from typing import Any

import numpy as np

from . import _conv, _openmp, _paths, _pool
from ._threads import blas_info, get_num_threads
from ._version import __version__


ISA_CHOICES = ("generic", "avx2", "avx512")


def _check_isa_setting() -> None:
    """FASTCONV_ISA caps the instruction set of every kernel family (src/_cpu.h);
    an unknown value is ignored there, so say so here rather than silently."""
    value = os.environ.get("FASTCONV_ISA")
    if value and value not in ISA_CHOICES:
        warnings.warn(f"FASTCONV_ISA={value!r} is not one of {', '.join(ISA_CHOICES)}; it is "
                      "ignored (the CPU's own instruction set is used)", RuntimeWarning,
                      stacklevel=3)


_check_isa_setting()


def config_info() -> dict[str, Any]:
    """Return the facts that :func:`show_config` prints, as a dict."""
    try:
        from ._build_info import BUILD_INFO
    except ImportError:  # pragma: no cover - only when built by hand without setup.py
        BUILD_INFO = {}
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "openmp": _openmp.openmp_enabled(),
        "num_threads": get_num_threads(),
        "openmp_default_threads": _openmp.default_num_threads(),
        "blas": blas_info(),
        "isa": _conv.ISA,
        "isa_cap": os.environ.get("FASTCONV_ISA") or None,
        "gemm_kernel": _conv.packed_gemm_kernel(),
        "direct_kernels": _conv.DIRECT,
        "depthwise_kernels": _conv.depthwise_version(),
        "pool_kernels": _pool.ISA,
        "stage_copy": _conv.STAGE_COPY,
        "conv_paths": {op: list(_paths.available(op)) for op in _paths.OPS},
        "compiler": BUILD_INFO.get("compiler", "unknown"),
        "compile_args": BUILD_INFO.get("compile_args", []),
        "link_args": BUILD_INFO.get("link_args", []),
        "cython_directives": BUILD_INFO.get("cython_directives", {}),
    }


def show_config() -> None:
    """Print the version, OpenMP status, threads, BLAS, the instruction set and the code each
    kernel family runs at it, and compiler flags.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.show_config()  # doctest: +SKIP
    fastconv 0.1.0
    ...
    """
    info = config_info()
    lines = [
        f"fastconv {info['version']}",
        f"  python            : {info['python']} ({info['platform']})",
        f"  numpy             : {info['numpy']}",
        f"  OpenMP            : {'enabled' if info['openmp'] else 'disabled (serial build)'}",
        f"  threads           : {info['num_threads']} "
        f"(OpenMP default {info['openmp_default_threads']})",
    ]
    if info["blas"]:
        for lib in info["blas"]:
            lines.append(
                f"  BLAS              : {lib['library']} {lib['version']} "
                f"({lib['architecture']}) {lib['filepath']}"
            )
    else:
        lines.append("  BLAS              : not found")
    kernel = info["gemm_kernel"]
    lines += [
        f"  instruction set   : {info['isa']}"
        f"{' (FASTCONV_ISA=' + info['isa_cap'] + ')' if info['isa_cap'] else ''}",
        f"  GEMM micro-kernel : {kernel + ' (convolutions)' if kernel else 'none (BLAS only)'}",
        f"  direct kernels    : "
        f"{'avx512 (float32 convolutions)' if info['direct_kernels'] else 'none'}",
        f"  depthwise kernels : {info['depthwise_kernels']}",
        f"  pooling kernels   : {info['pool_kernels']}",
        f"  staged copies     : {info['stage_copy']}",
    ]
    lines += [f"  conv paths ({op.replace('_', ' ')}){' ' * (11 - len(op))}: "
              f"{', '.join(names)}" for op, names in info["conv_paths"].items()]
    lines += [
        f"  compiler          : {info['compiler']}",
        f"  compile flags     : {' '.join(info['compile_args']) or '(none)'}",
        f"  link flags        : {' '.join(info['link_args']) or '(none)'}",
        f"  cython directives : {info['cython_directives']}",
    ]
    print("\n".join(lines))
