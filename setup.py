"""Build the fastconv extensions: cythonize src/*.pyx with OpenMP when the compiler has it.

Environment switches (all optional):

FASTCONV_DISABLE_OPENMP=1   build serially even if the compiler supports OpenMP
FASTCONV_DEBUG_CYTHON=1     turn Cython's bounds/wraparound/initialised checks back on
FASTCONV_SANITIZE=address,undefined
                            compile and link with -fsanitize=... (see README, development)
FASTCONV_NATIVE=1           local opt-in: add -march=native (never in a distributed build)
FASTCONV_BUILD_ONLY=_pool,_pad
                            build only these extensions (for parallel development builds)
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

EXTENSIONS = ["_openmp", "_conv", "_pad", "_pool", "_norm", "_adaptive", "_optim"]
# C headers an extension includes besides those its .pyx names (cythonize finds those): listed
# so that they are shipped in the sdist and a change to them rebuilds the extension
EXTRA_DEPENDS = {"_conv": ["src/_cpu.h", "src/_depthwise.h", "src/_depthwise_impl.h",
                           "src/_direct.h", "src/_epilogue.h", "src/_gemm.h", "src/_simd.h",
                           "src/_stage.h", "src/_winograd.h", "src/_winograd_impl.h",
                           "src/_winograd_matrices.h",
                           "src/_winograd_wgrad.h", "src/_winograd_wgrad_impl.h"],
                 "_pool": ["src/_cpu.h", "src/_pool.h", "src/_pool_impl.h"],
                 "_norm": ["src/_norm.h", "src/_norm_impl.h", "src/_cpu.h"]}
# compiler options of one extension only (GCC and clang; MSVC's /fp:precise does not contract):
# the optimisers' updates must round every product and sum apart, as the NumPy operations
# they replace (src/_optim.pyx); no errno from sqrt lets the loop be vectorised
EXTRA_COMPILE_ARGS = {"_optim": ["-ffp-contract=off", "-fno-math-errno"]}

OPENMP_TEST_PROGRAM = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n > 0 && omp_get_max_threads() > 0);
        return 0;
    }
    """
)


def _flag_on(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _compiler_command():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def openmp_flags():
    """Return (compile_args, link_args) that enable OpenMP, or ([], []) if it does not build.

    Like scikit-learn's ``_build_utils/openmp_helpers.py``: compile and run a tiny
    ``#pragma omp parallel`` program rather than trusting the platform.
    """
    if _flag_on("FASTCONV_DISABLE_OPENMP"):
        print("fastconv: FASTCONV_DISABLE_OPENMP is set, building without OpenMP")
        return [], []
    if sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    compiler = _compiler_command()
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "test_openmp.c")
        binary = os.path.join(tmp, "test_openmp")
        with open(source, "w") as handle:
            handle.write(OPENMP_TEST_PROGRAM)
        for compile_args, link_args in candidates:
            try:
                # The flags the extensions get from the environment too (a libomp outside
                # the default paths, e.g. Homebrew's on macOS: see [tool.cibuildwheel.macos]).
                env_flags = [os.environ.get(name, "") for name in ("CPPFLAGS", "CFLAGS")]
                subprocess.run(
                    compiler + " ".join(env_flags).split() + compile_args
                    + [source, "-o", binary] + link_args
                    + os.environ.get("LDFLAGS", "").split(),
                    check=True, capture_output=True, timeout=120,
                )
                result = subprocess.run([binary], check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if result.stdout.strip() == b"1":
                return compile_args, link_args
    warnings.warn(
        "fastconv: the C compiler does not support OpenMP; building the kernels serially. "
        "Install an OpenMP-capable compiler (gcc, or clang with libomp) for multithreading.",
        stacklevel=1,
    )
    return [], []


def cython_directives():
    debug = _flag_on("FASTCONV_DEBUG_CYTHON")
    return {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "nonecheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }


def extensions():
    omp_compile, omp_link = openmp_flags()
    # -g0: no debug information (Python's own CFLAGS bring -g). With it, the unrolled Winograd
    # transforms (6 builds of src/_winograd_impl.h) took GCC twice as long, and _conv's build
    # dominated CI; release wheels are stripped of it anyway.
    compile_args = ["-O3", "-g0"] if sys.platform != "win32" else ["/O2"]
    link_args = []
    if _flag_on("FASTCONV_NATIVE"):
        compile_args.append("-march=native")
    sanitize = os.environ.get("FASTCONV_SANITIZE", "").strip()
    if sanitize:
        compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}"]
        link_args.append(f"-fsanitize={sanitize}")
    only = [name for name in os.environ.get("FASTCONV_BUILD_ONLY", "").split(",") if name]
    names = [name for name in EXTENSIONS if not only or name in only]
    return [
        Extension(
            f"fastconv.{name}",
            [os.path.join("src", f"{name}.pyx")],
            include_dirs=[numpy.get_include(), "src"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
            extra_compile_args=(compile_args + omp_compile
                                + (EXTRA_COMPILE_ARGS.get(name, []) if sys.platform != "win32"
                                   else [])),
            extra_link_args=link_args + omp_link,
            depends=EXTRA_DEPENDS.get(name, []),
        )
        for name in names
    ]


def build_flags_module(exts):
    """Record how the extensions were compiled, for fastconv.show_config()."""
    ext = exts[0] if exts else None
    flags = {
        "compile_args": list(ext.extra_compile_args) if ext else [],
        "link_args": list(ext.extra_link_args) if ext else [],
        "compiler": " ".join(_compiler_command()),
        "cython_directives": cython_directives(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastconv", "_build_info.py")
    with open(path, "w") as handle:
        handle.write("# Generated by setup.py at build time; not committed.\n")
        handle.write(f"BUILD_INFO = {flags!r}\n")


class BuildExt(build_ext):
    """build_ext compiling the extensions side by side by default (one job per CPU): _conv's
    compile is most of the build, and the other five fit beside it on a second core."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1


exts = extensions()
build_flags_module(exts)

setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        exts,
        compiler_directives=cython_directives(),
        include_path=["src"],
        nthreads=int(os.environ.get("FASTCONV_CYTHON_JOBS", "0")) or None,
    ),
)
