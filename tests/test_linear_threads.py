"""nn.Linear's forward pass on fastconv's threads (fastconv._linear, src/_linear.h): dot
products read in place, the rows split across the threads, every FASTCONV_ISA level."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _fusion, _linear, _threads, models, nn
from helpers import assert_close, assert_isa_capped, bits, run_at_isa

# (rows, in_features, out_features): the example networks' layers, odd sizes (features not a
# multiple of any vector width, rows not of the micro-kernels' blocks), one feature, one row
SHAPES = [(64, 576, 20), (1000, 576, 20), (37, 400, 120), (5, 84, 10), (1, 13, 7),
          (9, 1, 3), (130, 23, 1), (17, 17, 17)]


def _reference(x, weight, bias):
    """The float64 sums (an obviously correct matrix product)."""
    y = x.astype(np.float64) @ weight.astype(np.float64).T
    return y if bias is None else y + bias


@pytest.fixture
def every_thread(monkeypatch):
    monkeypatch.setattr(_linear, "LINEAR_MACS_PER_THREAD", 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_the_reference(rng, dtype, shape, bias):
    rows, features, outs = shape
    x = rng.standard_normal((rows, features)).astype(dtype)
    weight = rng.standard_normal((outs, features)).astype(dtype)
    b = rng.standard_normal(outs).astype(dtype) if bias else None
    assert _linear.takes(x, weight, b)
    y = _linear.forward(x, weight, b)
    assert y.shape == (rows, outs) and y.dtype == dtype
    assert_close(y, _reference(x, weight, b).astype(dtype))
    if bias:  # the bias added after the sums, as NumPy's x @ w.T + b adds it
        assert np.array_equal(bits(y), bits(_linear.forward(x, weight, None) + b))


def test_layer_matches_torch(rng, dtype, torch):
    for rows, features, outs in SHAPES:
        layer = nn.Linear(features, outs, dtype=dtype, seed=int(rng.integers(1000)))
        x = rng.standard_normal((rows, features)).astype(dtype)
        expected = torch.nn.functional.linear(torch.from_numpy(x),
                                              torch.from_numpy(layer.weight.data),
                                              torch.from_numpy(layer.bias.data)).numpy()
        assert_close(layer(x), expected)


def test_results_do_not_depend_on_the_thread_count(rng, dtype, every_thread):
    for rows, features, outs in SHAPES:
        x = rng.standard_normal((rows, features)).astype(dtype)
        weight = rng.standard_normal((outs, features)).astype(dtype)
        b = rng.standard_normal(outs).astype(dtype)
        results = []
        for threads in (1, 2, 3, 7):
            with fastconv.threads(threads):
                results.append(_linear.forward(x, weight, b))
        for y in results[1:]:
            assert np.array_equal(bits(y), bits(results[0]))
        # and a row's result does not depend on the rows around it (the kernels' blocks)
        for first, last in ((0, 1), (1, rows), (rows // 2, rows)):
            if first < last:
                part = _linear.forward(np.ascontiguousarray(x[first:last]), weight, b)
                assert np.array_equal(bits(part), bits(results[0][first:last]))


def test_nan_and_inf_propagate(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((11, 37)).astype(dtype)
    weight = rng.standard_normal((6, 37)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    x[0, 3] = np.nan
    x[1, 36] = np.inf  # in the tail past the last whole vector
    x[2, 0] = -np.inf
    weight[5, 36] = 0  # inf * 0: NaN, as NumPy's
    y = _linear.forward(x, weight, b)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = x @ weight.T + b
    assert np.array_equal(np.isnan(y), np.isnan(expected))
    assert np.array_equal(np.isinf(y), np.isinf(expected))
    assert np.array_equal(np.sign(y[np.isinf(y)]), np.sign(expected[np.isinf(y)]))
    finite = np.isfinite(expected)
    assert_close(y[finite], expected[finite])


def test_layer_takes_it_where_it_can_and_pays(rng):
    features = _linear.LINEAR_MIN_FEATURES
    small = nn.Linear(features - 1, 4, seed=0)
    xs = rng.standard_normal((3, features - 1)).astype(np.float32)
    assert _linear.takes(xs, small.weight.data, small.bias.data)
    assert not _linear.pays(small.weight.data)  # NumPy's matmul: its results
    with _threads.numpy_blas_single_thread():
        expected = xs @ small.weight.data.T
    assert np.array_equal(bits(small(xs)), bits(expected + small.bias.data))
    layer = nn.Linear(features, 4, seed=0)
    x = rng.standard_normal((3, 5, features)).astype(np.float32)  # leading axes kept
    y = layer(x)
    assert y.shape == (3, 5, 4)
    assert np.array_equal(bits(y), bits(_linear.forward(x, layer.weight.data,
                                                          layer.bias.data)))
    assert layer(x[0, 0]).shape == (4,)  # one sample, one axis
    # another dtype than the weight's keeps NumPy's matmul, with the same results
    other = x.astype(np.float64)
    assert not _linear.chooses_kernels(other, layer.weight.data, layer.bias.data)
    with _threads.numpy_blas_single_thread():
        expected = other @ layer.weight.data.T + layer.bias.data
    np.testing.assert_allclose(layer(other), expected, rtol=1e-5, atol=1e-6)
    # other layouts take the kernels on a C-contiguous copy: the copy's bits
    for other in (x[:, ::2], x.transpose(1, 0, 2)):
        assert _linear.chooses_kernels(other, layer.weight.data, layer.bias.data)
        assert np.array_equal(bits(layer(other)), bits(_linear.forward(
            np.ascontiguousarray(other), layer.weight.data, layer.bias.data)))
        assert np.array_equal(bits(_linear.linear(other, layer.weight.data, None)),
                              bits(_linear.forward(other.copy(), layer.weight.data, None)))
    gy = np.ones((3, 5, 4), dtype=np.float32)
    layer(x)
    assert layer.backward(gy).shape == x.shape  # the backward is unchanged


def test_eval_plan_runs_it_bit_for_bit_as_the_layers(dtype):
    """The prepared plan's Linear steps and the layers run one by one: the same bits."""
    for name in ("seed", "lenet"):
        model = models.build(name, seed=0, dtype=dtype).eval()
        x = np.random.default_rng(2).standard_normal((67, 1, 28, 28)).astype(dtype)
        y = model(x)
        steps = [step.__name__ for step in _fusion.prepared(model).steps]
        assert "linear" in steps
        # the tutorial net's Linear(576, 20) runs on the kernels, LeNet's on NumPy's
        assert _linear.pays(model[-3].weight.data) is (name == "seed")
        h = x
        for layer in model:
            h = layer(h)
        assert np.array_equal(bits(y), bits(h))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), features=st.integers(1, 70), outs=st.integers(1, 20),
       bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_random_shapes(rows, features, outs, bias, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((rows, features)).astype(dtype)
        weight = rng.standard_normal((outs, features)).astype(dtype)
        b = rng.standard_normal(outs).astype(dtype) if bias else None
        assert_close(_linear.forward(x, weight, b), _reference(x, weight, b).astype(dtype))


_CHILD = r"""
import numpy as np
import fastconv
from fastconv import _linear

_linear.LINEAR_MACS_PER_THREAD = 1
rng = np.random.default_rng(0)
checked = 0
for dtype in (np.float32, np.float64):
    for rows, features, outs in [(64, 576, 20), (13, 37, 5), (1, 3, 1), (9, 400, 120)]:
        x = rng.standard_normal((rows, features)).astype(dtype)
        w = rng.standard_normal((outs, features)).astype(dtype)
        b = rng.standard_normal(outs).astype(dtype)
        y = _linear.forward(x, w, b)
        ref = x.astype(np.float64) @ w.astype(np.float64).T + b
        tol = 1e-4 if dtype == np.float32 else 1e-12
        assert np.allclose(y, ref, rtol=tol, atol=tol), (rows, features, outs)
        for threads in (2, 3):
            with fastconv.threads(threads):
                assert _linear.forward(x, w, b).tobytes() == y.tobytes()
        checked += 1
print(checked, fastconv._conv.ISA)
"""


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lesser_instruction_sets(isa, tmp_path):
    count, level = run_at_isa(_CHILD, isa, tmp_path).split()
    assert int(count) == 8
    assert_isa_capped(level, isa)


@pytest.mark.parametrize("features", [1, 15, 16, 17, 576, 600])
def test_blocks_give_the_one_output_kernels_bits(dtype, features):
    """The rows x outputs block kernels (AVX-512 float: the sixteen sums' lanes reduced
    together, level by level of the tree) give each output the bits of the one-row,
    one-output kernel, which a single row takes: NaN, infinities and signed zeros included."""
    rng = np.random.default_rng(features)
    x = rng.standard_normal((12, features)).astype(dtype)
    weight = rng.standard_normal((8, features)).astype(dtype)
    x[1, 0] = np.nan
    x[2, -1] = np.inf
    weight[3, 0] = -np.inf
    x[5] = -0.0  # a row of negative zeros: every product -0 or +0
    weight[6] *= 1e30  # large sums next to small ones: the tree's order shows in the bits
    x[7] *= 1e-30
    b = rng.standard_normal(8).astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        blocks = _linear.forward(x, weight, b)
        rows = np.concatenate([_linear.forward(x[r:r + 1], weight, b) for r in range(12)])
    assert np.array_equal(bits(blocks), bits(rows))


def test_prepared_step_is_forward(rng):
    """The eval plan's Linear step (_linear.forward_for: sizes and threads worked out once)
    gives forward's bits, leading axes kept, at any thread count."""
    weight = rng.standard_normal((20, 576)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    for shape in ((64, 576), (3, 5, 576), (576,)):
        x = rng.standard_normal(shape).astype(np.float32)
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                y = _linear.forward_for(shape, weight)(x, weight, b)
            assert y.shape == shape[:-1] + (20,)
            assert np.array_equal(bits(y), bits(_linear.forward(x, weight, b)))
