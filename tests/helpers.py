"""Helpers shared by the tests: tolerances and array views."""

import numpy as np

# Tolerances for comparing a kernel with the float64 NumPy reference: float32 results are
# rounded sums of O(100) products, float64 ones agree to a few ulps of the magnitudes involved.
TOLERANCE = {
    np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-4},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-10},
}


def assert_close(actual, expected, dtype=None):
    """Compare with the dtype's tolerance (dtype defaults to ``actual``'s)."""
    dtype = np.dtype(dtype if dtype is not None else actual.dtype)
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


def non_contiguous(array):
    """The same values as ``array`` in a view with negative, non-unit strides."""
    padded = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), dtype=array.dtype)
    padded[..., ::2] = array[..., ::-1]
    view = padded[..., ::-2]
    assert not view.flags.c_contiguous or array.shape[-1] <= 1
    np.testing.assert_array_equal(view, array)
    return view
