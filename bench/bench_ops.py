"""Benchmark every convolution and pooling case of the issues: fastconv vs NumPy vs PyTorch.

    python bench/bench_ops.py                    # all cases, float32, 2 threads
    python bench/bench_ops.py resnet stem --repeats 11
    python bench/bench_ops.py --dtype float64 --json bench/float64.json --ceiling

The cases, the NumPy im2col contender and the timing loop live in fastconv.benchmark (so that
the installed `fastconv bench` command runs the same code); this script is the full run.
"""

import sys

from _checkout import use_built_checkout

use_built_checkout()

from fastconv.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
