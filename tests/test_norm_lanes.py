"""The batch-norm loops' summation order and their instruction-set builds (src/_norm.h,
src/_norm_impl.h): the sums follow the documented order bit for bit (16 float64 partial
sums over the rows' blocks of 16, the rows' tails in 16 more, each set added in a fixed
tree), and the generic, AVX2 and AVX-512 builds give the same bits, special values
included, over row lengths around every vector width (8 and 16 floats, 4 and 8 doubles)."""

import numpy as np
import pytest

import fastconv
from fastconv import batch_norm
from fastconv.norm import batch_norm_backward_fused
from helpers import outputs_at_isas

# row lengths H*W: below, at and past each vector width, the small ResNet's 49, 196, 784
LENGTHS = (1, 3, 4, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 49, 196, 784)


def _tree(s):
    """(((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)))+(((s8+s9)+...)), in float64."""
    s = [float(v) for v in s]
    pairs = [s[k] + s[k + 1] for k in range(0, 16, 2)]
    quads = [pairs[k] + pairs[k + 1] for k in range(0, 8, 2)]
    return (quads[0] + quads[1]) + (quads[2] + quads[3])


def _lane_sum(terms):
    """The documented sum of a channel's terms, shape (N, L) float64: lane k of each full
    block of 16 (rows in turn, blocks left to right) adds to partial sum k, lane k of each
    row's tail to tail sum k; then tree(sums) + tree(tail sums)."""
    rows, length = terms.shape
    full = length // 16 * 16
    sums = np.zeros(16)
    tails = np.zeros(16)
    for row in terms:
        for start in range(0, full, 16):
            sums = sums + row[start:start + 16]  # element-wise IEEE adds, one per lane
        tails[:length - full] = tails[:length - full] + row[full:]
    return _tree(sums) + _tree(tails)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", [5, 16, 23, 49, 50])
def test_sums_follow_the_documented_order(dtype, length, rng):
    batch, channels = 3, 2
    x = (rng.standard_normal((batch, channels, length)) * 3 + 7).astype(dtype)
    grad_output = rng.standard_normal(x.shape).astype(dtype)
    weight = rng.standard_normal(channels).astype(dtype)
    out, mean, var = batch_norm(x, None, None, weight, None, training=True, eps=1e-3,
                                return_stats=True, relu=True)
    _, grad_weight, grad_bias, _ = batch_norm_backward_fused(
        grad_output, x, mean, var, weight, eps=1e-3, output=out)
    count = float(batch * length)
    for c in range(channels):
        values = x[:, c].astype(np.float64)
        shift = float(values[0, 0])
        centred = values - shift
        total, squares = _lane_sum(centred), _lane_sum(centred * centred)
        channel_mean = total / count
        assert mean[c] == shift + channel_mean
        assert var[c] == max(squares / count - channel_mean * channel_mean, 0.0)
        g = np.where(out[:, c] > 0, grad_output[:, c], 0).astype(np.float64)
        invstd = 1.0 / np.sqrt(var[c] + 1e-3)
        assert grad_bias[c] == dtype(_lane_sum(g))
        assert grad_weight[c] == dtype(_lane_sum(g * (values - mean[c])) * invstd)


_SCRIPT = """
import sys, numpy as np, fastconv
from fastconv import _norm, batch_norm
from fastconv.norm import batch_norm_backward_fused
rng = np.random.default_rng(5)
out = []
for dtype in (np.float32, np.float64):
    for length in LENGTHS:
        shape = (3, 4, 1, length)
        x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
        residual = rng.standard_normal(shape).astype(dtype)
        grad = rng.standard_normal(shape).astype(dtype)
        residual.flat[::7] = np.nan
        residual.flat[::11] = -0.0
        grad.flat[::5] = np.inf
        grad.flat[::13] = -0.0
        weight = rng.standard_normal(4).astype(dtype)
        bias = rng.standard_normal(4).astype(dtype)
        for relu, add in ((False, False), (True, False), (True, True)):
            for training in (True, False):
                y, mean, var = batch_norm(x, np.zeros(4), np.ones(4), weight, bias,
                                          training=training, return_stats=True, relu=relu,
                                          residual=residual if add else None)
                out += [y, mean, var]
                out += [a for a in batch_norm_backward_fused(
                    np.where(np.isinf(grad), 1.0, grad) if not relu else grad, x, mean, var,
                    weight, 1e-5, training, output=y if relu else None, need_residual=add)
                    if a is not None]
np.savez(sys.argv[1], *out)
print(_norm.ISA)
""".replace("LENGTHS", repr(LENGTHS))


def test_every_instruction_set_gives_the_same_bits(tmp_path):
    results = outputs_at_isas(_SCRIPT, tmp_path)
    assert results["generic"][0] == "generic"  # the cap holds
    assert results["avx2"][1] == results["generic"][1]
    assert results["avx512"][1] == results["generic"][1]


def test_long_rows_and_many_channels_do_not_depend_on_thread_count(rng):
    # channels split unevenly over the threads, rows with tails at every vector width
    x = rng.standard_normal((5, 7, 3, 33)).astype(np.float32)
    skip = rng.standard_normal(x.shape).astype(np.float32)
    grad_output = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for count in (1, 2, 3, 4):
        with fastconv.threads(count):
            out, mean, var = batch_norm(x, None, None, training=True, return_stats=True,
                                        relu=True, residual=skip)
            results.append((out, mean, var) + batch_norm_backward_fused(
                grad_output, x, mean, var, output=out, need_residual=True))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
