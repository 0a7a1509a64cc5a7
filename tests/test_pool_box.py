"""The 'box' average-pooling path (stride 1 both ways: src/_pool_impl.h, avg_box_plane and
avg_box_backward_plane), forced through the private ``_path=``.

Its kernels read every window from zero-padded rows, the borders included; the zeros it adds
for taps outside the input must change no bit. So every result is compared bit for bit with the
general 'planes' path, and with the in-order NumPy sums of tests/test_pool_vectors.py (PyTorch's
forward order, the scatter's backward order), at widths around the vector lengths, with
asymmetric padding, count_include_pad, divisor_override, NaN, infinities and signed zeros; and
within tolerance with the slow float64 reference. Then: it is the default where it applies, any
thread count and every instruction-set build give the same bits.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _pool, pool
from helpers import assert_close, outputs_at_isas
from reference.pool import avg_pool2d_backward_reference, avg_pool2d_reference
from test_pool_paths import _awkward, _same_bits
from test_pool_vectors import _avg_backward_in_order, _avg_in_order

DIVISORS = [(True, None), (False, None), (True, 5), (False, -3)]


def _both(x, kernel, pads, ceil_mode, count_include_pad, divisor_override, gy_seed):
    """(forward, backward) on 'box' and on 'planes', the backward of random grad_output."""
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    args = (kernel, 1, padding, ceil_mode, count_include_pad, divisor_override)
    results = []
    for path in ("box", "planes"):
        y = fastconv.avg_pool2d(x, *args, _path=path)
        gy = _awkward(np.random.default_rng(gy_seed), y.shape, x.dtype)
        results.append((y, fastconv.avg_pool2d_backward(gy, x.shape, *args, _path=path), gy))
    return results


@st.composite
def _problems(draw):
    kernel_h, kernel_w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pads = (draw(st.integers(0, kernel_h // 2)), draw(st.integers(0, kernel_h // 2)),
            draw(st.integers(0, kernel_w // 2)), draw(st.integers(0, kernel_w // 2)))
    height = draw(st.integers(max(1, kernel_h - pads[0] - pads[1]), 12))
    width = draw(st.integers(max(1, kernel_w - pads[2] - pads[3]), 40))
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), height, width)
    return shape, (kernel_h, kernel_w), pads, draw(st.booleans()), draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(problem=_problems(), divisor=st.sampled_from(DIVISORS), double=st.booleans())
def test_box_equals_planes(problem, divisor, double):
    shape, kernel, pads, ceil_mode, seed = problem
    x = _awkward(np.random.default_rng(seed), shape, np.float64 if double else np.float32)
    (box_y, box_g, _), (planes_y, planes_g, _) = _both(x, kernel, pads, ceil_mode, *divisor,
                                                       seed + 1)
    _same_bits(box_y, planes_y)
    _same_bits(box_g, planes_g)


# widths around the vector lengths (4 and 8 floats, 2 and 4 doubles; blocks of up to 4
# vectors, then 3, 2 or 1, then an overlapping last one or, narrower than a vector, a tail)
WIDTHS = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 33, 40, 56, 67)
WINDOWS = (((3, 3), (1, 1, 1, 1)), ((3, 3), (0, 1, 1, 0)), ((2, 3), (1, 0, 0, 1)),
           ((1, 5), (0, 0, 2, 2)), ((5, 2), (2, 2, 0, 1)))


@pytest.mark.parametrize("width,kernel,pads", [
    (width, kernel, pads) for width in WIDTHS for kernel, pads in WINDOWS
    if width + pads[2] + pads[3] >= kernel[1]])  # (the window fits the padded row)
def test_box_keeps_the_order_of_its_sums(width, kernel, pads, dtype, rng):
    shape = (2, 3, 7, width)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 1, :] = 1e8  # large and small terms: a sum in another order rounds differently
    x[1, 2, :, 0] = -0.0
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    for count_include_pad, divisor_override in DIVISORS:
        args = (kernel, 1, padding, False, count_include_pad, divisor_override)
        got = fastconv.avg_pool2d(x, *args, _path="box")
        np.testing.assert_array_equal(got, _avg_in_order(x, kernel, (1, 1), pads, False,
                                                         count_include_pad, divisor_override))
        if divisor_override is None or divisor_override > 0:  # +0.0, as the sum from 0
            assert not np.signbit(got[1, 2][got[1, 2] == 0]).any()
        gy = rng.standard_normal(got.shape).astype(dtype)
        gy[0, 1, 0, :] = -0.0
        grad = fastconv.avg_pool2d_backward(gy, shape, *args, _path="box")
        np.testing.assert_array_equal(grad, _avg_backward_in_order(
            gy, shape, kernel, (1, 1), pads, count_include_pad, divisor_override))
        assert_close(got, avg_pool2d_reference(x, kernel, (1, 1), pads, False,
                                               count_include_pad, divisor_override), dtype)
        assert_close(grad, avg_pool2d_backward_reference(gy, shape, kernel, (1, 1), pads,
                                                         count_include_pad, divisor_override),
                     dtype)


def test_box_matches_torch(torch, dtype, rng):
    x = rng.standard_normal((2, 4, 11, 21)).astype(dtype)
    for kernel, padding in (((3, 3), 1), ((3, 5), (1, 2)), ((4, 1), (2, 0))):
        for count_include_pad in (True, False):
            tx = torch.from_numpy(x).requires_grad_()
            expected = torch.nn.functional.avg_pool2d(tx, kernel, 1, padding, False,
                                                      count_include_pad)
            got = fastconv.avg_pool2d(x, kernel, 1, padding, False, count_include_pad,
                                      _path="box")
            np.testing.assert_array_equal(got, expected.detach().numpy())
            gy = rng.standard_normal(got.shape).astype(dtype)
            expected.backward(torch.from_numpy(gy))
            assert_close(fastconv.avg_pool2d_backward(gy, x.shape, kernel, 1, padding, False,
                                                      count_include_pad, _path="box"),
                         tx.grad.numpy(), dtype)


def test_unbatched_input(dtype, rng):
    x = rng.standard_normal((3, 9, 10)).astype(dtype)
    y = fastconv.avg_pool2d(x, 3, 1, 1, _path="box")
    np.testing.assert_array_equal(y, fastconv.avg_pool2d(x[None], 3, 1, 1, _path="planes")[0])
    g = fastconv.avg_pool2d_backward(y, x.shape, 3, 1, 1, _path="box")
    np.testing.assert_array_equal(
        g, fastconv.avg_pool2d_backward(y[None], (1,) + x.shape, 3, 1, 1, _path="planes")[0])


def test_box_is_the_default_at_stride_one():
    assert pool._pool_path((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (56, 56), (56, 56), None,
                           True) == "box"
    assert pool._pool_path((1, 7), (1, 1), (0, 0, 3, 3), (1, 1), (9, 9), (9, 9), None,
                           True) == "box"
    # stride 2, max pooling, or a window taller than the kernels' row table: not the box
    assert pool._pool_path((3, 3), (1, 2), (1, 1, 1, 1), (1, 1), (56, 56), (56, 28), None,
                           True) == "planes"
    assert pool._pool_path((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (56, 56), (56, 56),
                           None) == "planes"
    tall = _pool.BOX_MAX_ROWS + 1
    assert pool._pool_path((tall, 3), (1, 1), (0, 0, 0, 0), (1, 1), (40, 9), (40 - tall + 1, 7),
                           None, True) == "planes"
    assert pool.AVG_POOL_PATHS == ("window2x2", "box", "planes")


def test_forcing_the_box_where_it_does_not_apply_is_refused():
    x = np.ones((1, 1, 40, 5), np.float32)
    with pytest.raises(ValueError, match="_path='box' needs stride 1"):
        fastconv.avg_pool2d(x, 3, 2, _path="box")
    with pytest.raises(ValueError, match="_path='box' needs stride 1"):
        fastconv.avg_pool2d_backward(np.ones((1, 1, 20, 2)), x.shape, 2, _path="box")
    with pytest.raises(ValueError, match="_path='box' needs stride 1"):
        fastconv.avg_pool2d(x, (_pool.BOX_MAX_ROWS + 1, 1), 1, _path="box")
    with pytest.raises(ValueError, match="_path must be one of"):
        fastconv.max_pool2d(x, 3, 1, _path="box")


def test_a_wrongly_sized_scratch_is_refused_not_overrun():
    x = np.ones((1, 1, 6, 6), np.float32)
    out = np.empty((1, 1, 6, 6), np.float32)
    ring_w = _pool.box_ring_width(6, 6, 3, 1, False)
    factors = np.empty(_pool.box_column_factors_size(6), np.float32)
    with pytest.raises(ValueError, match="scratch"):
        _pool.avg_pool2d_forward_box(x, out, factors, np.empty((1, 4 * ring_w - 1), np.float32),
                                     3, 3, 1, 1, 1, 1, True, 0, 1)
    with pytest.raises(ValueError, match="scratch"):
        _pool.avg_pool2d_forward_box(x, out, factors[:5], np.empty((1, 4 * ring_w), np.float32),
                                     3, 3, 1, 1, 1, 1, True, 0, 1)


def test_thread_count_never_changes_a_bit(rng):
    x = _awkward(rng, (4, 8, 30, 37), np.float32)
    gy = _awkward(rng, (4, 8, 30, 37), np.float32)
    results = []
    for threads in (1, 2, 3, 8):
        with fastconv.threads(threads):
            a = fastconv.avg_pool2d(x, 3, 1, 1, count_include_pad=False, _path="box")
            g = fastconv.avg_pool2d_backward(gy, x.shape, 3, 1, 1, count_include_pad=False,
                                             _path="box")
        results.append((a.tobytes(), g.tobytes()))
    assert all(r == results[0] for r in results)
    with fastconv.threads(8):
        assert pool._num_threads(4 * 8, 4 * 8 * 30 * 37 * 9) > 1  # the case runs on several


_SCRIPT = """
import sys, numpy as np, fastconv
from fastconv import _pool
rng = np.random.default_rng(11)
out = []
for dtype in (np.float32, np.float64):
    for shape in ((2, 3, 13, 3), (2, 3, 9, 29), (1, 2, 6, 56)):
        x = rng.integers(-3, 4, shape).astype(dtype)
        x.flat[::11] = np.nan; x.flat[::13] = -0.0; x.flat[::17] = np.inf
        for kernel, padding in (((3, 3), 1), ((2, 5), ((1, 0), (2, 1))), ((1, 1), 0)):
            for include, divisor in ((True, None), (False, None), (True, -7)):
                a = fastconv.avg_pool2d(x, kernel, 1, padding, False, include, divisor,
                                        _path="box")
                g = fastconv.avg_pool2d_backward(a, x.shape, kernel, 1, padding, False,
                                                 include, divisor, _path="box")
                out += [a, g]
np.savez(sys.argv[1], *out)
print(_pool.ISA)
"""


def test_every_instruction_set_gives_the_same_bits(tmp_path):
    results = outputs_at_isas(_SCRIPT, tmp_path)
    assert results["avx2"][1] == results["generic"][1]
    assert results["avx512"][1] == results["generic"][1]
