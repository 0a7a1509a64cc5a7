"""Benchmark every convolution and pooling case of the issues: fastconv vs NumPy vs PyTorch.

    python bench/bench_ops.py                    # all cases, float32, 2 threads
    python bench/bench_ops.py resnet stem --repeats 11
    python bench/bench_ops.py --dtype float64 --json bench/float64.json --ceiling

The cases, the NumPy im2col contender and the timing loop live in fastconv.benchmark (so that
the installed `fastconv bench` command runs the same code); this script is the full run.
"""

import importlib.machinery
import os
import sys

# Run the checkout this script sits in when its extensions are built in place (a developer's
# `python setup.py build_ext --inplace`); otherwise the installed fastconv (`pip install .`).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if any(os.path.exists(os.path.join(ROOT, "fastconv", "_conv" + suffix))
       for suffix in importlib.machinery.EXTENSION_SUFFIXES):
    sys.path.insert(0, ROOT)

from fastconv.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
