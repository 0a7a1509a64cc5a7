"""The weight gradient by Winograd F(m x m, 3 x 3) (issue 15): the 'winograd' path of
GRAD_WEIGHT in fastconv._paths (WinogradWeight), for each tile size m = 2, 4, 5, 6.

Against the float64 NumPy reference and PyTorch: float64 to ~1e-12, float32 within the
documented bound (1e-4 of max|dW|, on N(0,1) data); by finite differences in float64; random
shapes by hypothesis; sums over several blocks of tiles; identical bits at 1, 2 and 3
threads; every FASTCONV_ISA build; reached through ``algorithm='winograd'`` where it pays and
through ``use_paths``, never under 'auto'/'direct', and the usual path elsewhere.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _paths, conv, nn
from fastconv._plan import clear_plans, use_paths
from helpers import assert_isa_capped, outputs_at_isas
from reference.conv import conv2d_backward_ref
from reference.nn import numerical_gradient

TILES = (2, 4, 5, 6)
# the documented float32 bound: max |dW - dW_exact| <= F32_BOUND * max |dW_exact|
F32_BOUND = 1e-4
F64_BOUND = 1e-12


@pytest.fixture(params=TILES, ids=[f"F{m}" for m in TILES])
def tile(request, monkeypatch):
    """The weight gradient at tile size m only (winograd_weight_tile picks from
    WINOGRAD_WEIGHT_TILES)."""
    monkeypatch.setattr(_paths, "WINOGRAD_WEIGHT_TILES", (request.param,))
    clear_plans()
    yield request.param
    clear_plans()


def _relative_error(actual, expected):
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.abs(expected).max()
    return float(np.abs(np.asarray(actual, dtype=np.float64) - expected).max() / scale)


def _plan(x, w, padding=1, algorithm="auto", **kwargs):
    prepared, _ = conv._prepare(x, w, None, kwargs.get("stride", 1), padding,
                                kwargs.get("dilation", 1), kwargs.get("groups", 1), "zeros",
                                algorithm=algorithm)
    return prepared.plan


def _data(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _winograd_dw(gy, x, weight, padding=1):
    """The weight gradient on the Winograd path, asked for whatever the model says."""
    with use_paths(grad_weight="winograd"):
        assert _plan(x, weight, padding, "winograd").grad_weight.name == "winograd"
        return fastconv.conv2d_backward(gy, x, weight, padding=padding, need=("weight",),
                                        algorithm="winograd")[1]


def _forced_tile(m):
    import contextlib

    @contextlib.contextmanager
    def scope():
        saved = _paths.WINOGRAD_WEIGHT_TILES
        _paths.WINOGRAD_WEIGHT_TILES = (m,)
        try:
            yield
        finally:
            _paths.WINOGRAD_WEIGHT_TILES = saved
    return scope()


def _pads(padding):
    return ((padding,) * 4 if isinstance(padding, int)
            else (padding[0][0], padding[0][1], padding[1][0], padding[1][1]))


@pytest.mark.parametrize("shape, padding", [
    ((2, 3, 7, 9, 5), 1),        # partial tiles on both sides
    ((1, 4, 5, 5, 3), 0),        # 'valid': 3x3 output
    ((3, 2, 6, 11, 4), 2),       # 'full'-like padding
    ((1, 2, 4, 4, 2), 3),        # padding larger than the kernel's reach
    ((2, 5, 3, 3, 7), ((1, 0), (2, 1))),  # asymmetric
    ((1, 1, 1, 1, 1), 1),        # one pixel
    ((2, 17, 6, 7, 19), 1),      # channels past whole GEMM panels on both sides
])
def test_matches_reference(tile, rng, shape, padding):
    """float64, tight (float32 on these shapes: test_random_shapes)."""
    n, c, h, w, k = shape
    dtype = np.float64
    x, weight = _data(rng, (n, c, h, w), dtype), _data(rng, (k, c, 3, 3), dtype)
    pads = _pads(padding)
    gy = _data(rng, (n, k, h + pads[0] + pads[1] - 2, w + pads[2] + pads[3] - 2), dtype)
    dw = _winograd_dw(gy, x, weight, padding)
    expected = conv2d_backward_ref(gy, x, weight, pads=pads)[1]
    assert dw.dtype == dtype and dw.shape == weight.shape
    assert _relative_error(dw, expected) <= F64_BOUND


@pytest.mark.parametrize("shape", [(8, 32, 20, 20, 48), (4, 64, 14, 14, 64)])
def test_float32_error_bound_on_normal_data(tile, rng, shape):
    """The documented bound on N(0,1) data with hundreds of tiles summed, against the direct
    float64 path (the measured figures at bench's shapes: README)."""
    n, c, h, w, k = shape
    x, weight = _data(rng, (n, c, h, w), np.float32), _data(rng, (k, c, 3, 3), np.float32)
    gy = _data(rng, (n, k, h, w), np.float32)
    dw = _winograd_dw(gy, x, weight)
    expected = fastconv.conv2d_backward(gy.astype(np.float64), x.astype(np.float64),
                                        weight.astype(np.float64), padding=1,
                                        need=("weight",), algorithm="direct")[1]
    assert _relative_error(dw, expected) <= F32_BOUND


def test_float64_with_torch(rng, torch):
    x, weight = _data(rng, (4, 24, 13, 15), np.float64), _data(rng, (40, 24, 3, 3), np.float64)
    gy = _data(rng, (4, 40, 13, 15), np.float64)
    dw = _winograd_dw(gy, x, weight)
    expected = torch.nn.grad.conv2d_weight(torch.from_numpy(x), weight.shape,
                                           torch.from_numpy(gy), padding=1).numpy()
    assert _relative_error(dw, expected) <= F64_BOUND


def test_finite_differences(rng):
    x, weight = _data(rng, (2, 3, 6, 5), np.float64), _data(rng, (4, 3, 3, 3), np.float64)
    gy = _data(rng, (2, 4, 6, 5), np.float64)

    def loss():
        return float((fastconv.conv2d(x, weight, padding=1) * gy).sum())

    dw = _winograd_dw(gy, x, weight)
    # the loss is linear in the weights: a large step has no truncation error
    indices, numeric = numerical_gradient(loss, weight, eps=1e-3, count=20, rng=rng)
    np.testing.assert_allclose(dw.reshape(-1)[indices], numeric, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- blocks, threads

def test_bits_independent_of_thread_count(tile, rng, monkeypatch):
    """Several blocks of tiles (blocks of 16, the last partial), output and input channels
    past whole GEMM panels: the same bits at 1, 2 and 3 threads, and within the bound."""
    monkeypatch.setattr(_paths, "WINOGRAD_WEIGHT_BLOCK", 16)
    x, weight = _data(rng, (3, 19, 11, 13), np.float64), _data(rng, (13, 19, 3, 3), np.float64)
    gy = _data(rng, (3, 13, 11, 13), np.float64)
    expected = conv2d_backward_ref(gy, x, weight, pads=(1,) * 4)[1]
    for dtype, bound in ((np.float32, F32_BOUND), (np.float64, F64_BOUND)):
        args = gy.astype(dtype), x.astype(dtype), weight.astype(dtype)
        results = []
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                results.append(_winograd_dw(*args))
        for other in results[1:]:
            assert other.tobytes() == results[0].tobytes()
        assert _relative_error(results[0], expected) <= bound


def test_block_sizes_agree(rng, monkeypatch):
    """Another block sums in another order: within the bound of each other, float64 tight."""
    x, weight = _data(rng, (2, 6, 17, 15), np.float64), _data(rng, (5, 6, 3, 3), np.float64)
    gy = _data(rng, (2, 5, 17, 15), np.float64)
    expected = conv2d_backward_ref(gy, x, weight, pads=(1,) * 4)[1]
    for block in (16, 32, 256):
        monkeypatch.setattr(_paths, "WINOGRAD_WEIGHT_BLOCK", block)
        assert _relative_error(_winograd_dw(gy, x, weight), expected) <= F64_BOUND


def test_workspace_bound(rng, monkeypatch):
    """Blocks shrink to fit the workspace bound; where even 16 tiles do not fit, the usual
    path runs (and computes the same gradient)."""
    x, weight = _data(rng, (4, 16, 12, 12), np.float32), _data(rng, (24, 16, 3, 3), np.float32)
    gy = _data(rng, (4, 24, 12, 12), np.float32)
    clear_plans()
    plan = _plan(x, weight, algorithm="winograd")
    m = _paths.winograd_weight_tile(plan)
    block, *sizes = _paths._winograd_weight_layout(plan, m)
    assert block == 48  # all the tiles, 4 * 3 * 3 at m = 4, in whole groups of 16
    small = (sum(sizes) - 1) * 4
    monkeypatch.setattr(_paths, "WINOGRAD_WORKSPACE_BYTES", small)
    block, *sizes = _paths._winograd_weight_layout(plan, m)
    assert 16 <= block < 48 and sum(sizes) * 4 <= small
    expected = conv2d_backward_ref(gy, x, weight, pads=(1,) * 4)[1]
    assert _relative_error(_winograd_dw(gy, x, weight), expected) <= F32_BOUND
    monkeypatch.setattr(_paths, "WINOGRAD_WORKSPACE_BYTES", 1024)
    clear_plans()
    with use_paths(grad_weight="winograd"):
        assert _plan(x, weight, algorithm="winograd").grad_weight.name != "winograd"
        dw = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("weight",),
                                      algorithm="winograd")[1]
    clear_plans()
    assert _relative_error(dw, expected) <= 1e-5


# ---------------------------------------------------------------- random shapes

@settings(max_examples=12, deadline=None)
@given(st.data())
def test_random_shapes(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    n = data.draw(st.integers(1, 3))
    c = data.draw(st.integers(1, 9))
    k = data.draw(st.integers(1, 9))
    pad = data.draw(st.integers(0, 3))
    h = data.draw(st.integers(max(1, 3 - 2 * pad), 13))
    w = data.draw(st.integers(max(1, 3 - 2 * pad), 13))
    m = data.draw(st.sampled_from(TILES))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    x, weight = _data(rng, (n, c, h, w), dtype), _data(rng, (k, c, 3, 3), dtype)
    gy = _data(rng, (n, k, h + 2 * pad - 2, w + 2 * pad - 2), dtype)
    saved = _paths.WINOGRAD_WEIGHT_TILES
    _paths.WINOGRAD_WEIGHT_TILES = (m,)
    try:
        dw = _winograd_dw(gy, x, weight, pad)
    finally:
        _paths.WINOGRAD_WEIGHT_TILES = saved
    expected = conv2d_backward_ref(gy, x, weight, pads=(pad,) * 4)[1]
    bound = F32_BOUND if dtype == np.float32 else F64_BOUND
    if np.abs(expected).max() > 0:
        assert _relative_error(dw, expected) <= bound


# ---------------------------------------------------------------- paths, API

def test_path_choice(rng):
    """'winograd' takes it where the model says it pays (many channels), not where the
    transforms outweigh the GEMMs (bench's small: 16 -> 32 channels); never 'auto' or
    'direct', even when asked for."""
    x, weight = _data(rng, (16, 64, 12, 12), np.float32), _data(rng, (64, 64, 3, 3), np.float32)
    assert _plan(x, weight).grad_weight.name != "winograd"
    assert _plan(x, weight, algorithm="winograd").grad_weight.name == "winograd"
    assert _plan(x, weight, algorithm="direct").grad_weight.name != "winograd"
    few_x, few_w = _data(rng, (64, 16, 14, 14), np.float32), _data(rng, (32, 16, 3, 3),
                                                                   np.float32)
    assert _plan(few_x, few_w, algorithm="winograd").grad_weight.name != "winograd"
    with use_paths(grad_weight="winograd"):
        assert _plan(few_x, few_w, algorithm="winograd").grad_weight.name == "winograd"
        assert _plan(few_x, few_w).grad_weight.name == "winograd"
        assert _plan(x, weight, algorithm="direct").grad_weight.name != "winograd"
    gy = _data(rng, (16, 64, 12, 12), np.float32)
    chosen = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("weight",),
                                      algorithm="winograd")[1]
    np.testing.assert_array_equal(chosen, _winograd_dw(gy, x, weight))


@pytest.mark.parametrize("kwargs, weight_shape", [
    ({"stride": 2}, (4, 4, 3, 3)), ({"dilation": 2}, (4, 4, 3, 3)),
    ({"groups": 2}, (4, 2, 3, 3)), ({}, (4, 4, 5, 5)), ({}, (4, 4, 3, 1)),
])
def test_elsewhere_not_applicable(rng, kwargs, weight_shape):
    x, weight = _data(rng, (2, 4, 11, 11), np.float32), _data(rng, weight_shape, np.float32)
    with use_paths(grad_weight="winograd"):
        assert _plan(x, weight, 1, "winograd", **kwargs).grad_weight.name != "winograd"


def test_layer(rng, torch):
    """nn.Conv2d(algorithm='winograd') with enough channels takes it; its weight gradient is
    torch's (float64)."""
    layer = nn.Conv2d(64, 64, 3, padding=1, dtype=np.float64, seed=0, algorithm="winograd")
    x = _data(rng, (16, 64, 12, 12), np.float64)
    assert _plan(x, layer.weight.data, algorithm="winograd").grad_weight.name == "winograd"
    y = layer(x)
    layer.backward(np.ones_like(y))
    twin = torch.nn.Conv2d(64, 64, 3, padding=1).double()
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in
                          layer.state_dict().items()})
    twin(torch.from_numpy(x)).sum().backward()
    assert _relative_error(layer.weight.grad, twin.weight.grad.numpy()) <= F64_BOUND


def test_instruction_set_builds(tmp_path):
    """Each build of the transforms (FASTCONV_ISA caps it) computes the same gradient, to the
    rounding of its arithmetic (builds with FMA may differ in the last bits)."""
    code = (
        "import sys, numpy as np, fastconv\n"
        "from fastconv import _paths\n"
        "from fastconv._plan import use_paths\n"
        "arrays = []\n"
        f"for m in {TILES}:\n"
        "    _paths.WINOGRAD_WEIGHT_TILES = (m,)\n"
        "    rng = np.random.default_rng(0)\n"
        "    for dtype in (np.float32, np.float64):\n"
        "        x = rng.standard_normal((2, 5, 13, 11)).astype(dtype)\n"
        "        w = rng.standard_normal((7, 5, 3, 3)).astype(dtype)\n"
        "        gy = rng.standard_normal((2, 7, 13, 11)).astype(dtype)\n"
        "        with use_paths(grad_weight='winograd'):\n"
        "            arrays.append(fastconv.conv2d_backward(gy, x, w, padding=1,\n"
        "                need=('weight',), algorithm='winograd')[1])\n"
        "np.savez(sys.argv[1], *arrays)\n"
        "print(fastconv._conv.winograd_isa())\n"
    )
    results = outputs_at_isas(code, tmp_path, isas=("generic", "avx2"))
    # this process's build (the CPU's own level) is the one they are compared with
    native = []
    for m in TILES:
        rng = np.random.default_rng(0)
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((2, 5, 13, 11)).astype(dtype)
            w = rng.standard_normal((7, 5, 3, 3)).astype(dtype)
            gy = rng.standard_normal((2, 7, 13, 11)).astype(dtype)
            with _forced_tile(m):
                native.append(_winograd_dw(gy, x, w).tobytes())
    for isa, (used, arrays) in results.items():
        assert_isa_capped(used, isa)
        for index, (got, want) in enumerate(zip(arrays, native)):
            dtype = np.float32 if index % 2 == 0 else np.float64
            got, want = np.frombuffer(got, dtype), np.frombuffer(want, dtype)
            bound = F32_BOUND if dtype == np.float32 else F64_BOUND
            assert _relative_error(got, want) <= bound / 10, (isa, used, index)
    # and the references: the capped builds are checked against the uncapped one above
    rng = np.random.default_rng(0)
    for _ in range(2):  # the script's float32 draws, then its float64 ones
        x = rng.standard_normal((2, 5, 13, 11))
        w = rng.standard_normal((7, 5, 3, 3))
        gy = rng.standard_normal((2, 7, 13, 11))
    expected = conv2d_backward_ref(gy, x, w, pads=(1,) * 4)[1]
    assert _relative_error(np.frombuffer(native[1], np.float64), expected.reshape(-1)) <= \
        F64_BOUND
