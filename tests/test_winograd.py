"""Winograd F(m x m, 3 x 3) convolution (issue 15): ``algorithm='winograd'`` and the
'winograd' path of fastconv._paths, for each tile size m = 2, 4, 5, 6.

Against the float64 NumPy reference and PyTorch: float64 to ~1e-13, float32 within the
documented bound (1e-4 of max|y| on data of one scale); the input gradient by finite
differences in float64; random shapes by hypothesis; identical bits for any thread count; the
path reached through ``algorithm`` and through ``use_paths``, and never under 'auto'/'direct'.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import _paths, conv, nn, optim
from fastconv._plan import clear_plans, use_paths
from helpers import assert_isa_capped, run_at_isa
from reference.conv import conv2d_backward_ref, conv2d_ref
from reference.nn import numerical_gradient

TILES = (2, 4, 5, 6)
# the documented float32 bound: max |y - y_exact| <= F32_BOUND * max |y_exact|
F32_BOUND = 1e-4
F64_BOUND = 1e-12


@pytest.fixture(params=TILES, ids=[f"F{m}" for m in TILES])
def tile(request, monkeypatch):
    """Run Winograd with tile size m only (winograd_tile picks from WINOGRAD_TILES)."""
    monkeypatch.setattr(_paths, "WINOGRAD_TILES", (request.param,))
    clear_plans()
    yield request.param
    clear_plans()


def _relative_error(actual, expected):
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.abs(expected).max()
    return float(np.abs(np.asarray(actual, dtype=np.float64) - expected).max() / scale)


def _plan(x, w, padding=1, algorithm="auto"):
    prepared, _ = conv._prepare(x, w, None, 1, padding, 1, 1, "zeros", algorithm=algorithm)
    return prepared.plan


def _data(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- forward

@pytest.mark.parametrize("shape, padding", [
    ((2, 3, 7, 9, 5), 1),        # partial tiles on both sides
    ((1, 4, 5, 5, 3), 0),        # 'valid': 3x3 output
    ((3, 2, 6, 11, 4), 2),       # 'full'-like padding
    ((1, 2, 4, 4, 2), 3),        # padding larger than the kernel's reach
    ((2, 5, 3, 3, 7), ((1, 0), (2, 1))),  # asymmetric
    ((1, 2, 3, 5, 2), ((1, 0), (10, 9))),  # whole patch rows left and right of the plane
    ((1, 1, 1, 1, 1), 1),        # one pixel
])
def test_forward_matches_reference(tile, rng, dtype, shape, padding):
    n, c, h, w, k = shape
    x, weight, bias = _data(rng, (n, c, h, w), dtype), _data(rng, (k, c, 3, 3), dtype), \
        _data(rng, k, dtype)
    y = fastconv.conv2d(x, weight, bias, padding=padding, algorithm="winograd")
    assert _plan(x, weight, padding, "winograd").forward.name == "winograd"
    pads = ((padding,) * 4 if isinstance(padding, int)
            else (padding[0][0], padding[0][1], padding[1][0], padding[1][1]))
    expected = conv2d_ref(x, weight, bias, pads=pads)
    assert y.dtype == dtype and y.shape == expected.shape
    bound = F32_BOUND if dtype == np.float32 else F64_BOUND
    assert _relative_error(y, expected) <= bound


@pytest.mark.parametrize("shape", [(16, 64, 28, 28, 64), (4, 256, 14, 14, 256),
                                   (64, 16, 14, 14, 32), (2, 128, 30, 31, 96)])
def test_float32_error_bound_on_normal_data(tile, rng, torch, shape):
    """The documented bound at bench's channel counts, against PyTorch in float64."""
    n, c, h, w, k = shape
    x, weight = _data(rng, (n, c, h, w), np.float32), _data(rng, (k, c, 3, 3), np.float32)
    bias = _data(rng, k, np.float32)
    y = fastconv.conv2d(x, weight, bias, padding=1, algorithm="winograd")
    expected = torch.nn.functional.conv2d(torch.from_numpy(x).double(),
                                          torch.from_numpy(weight).double(),
                                          torch.from_numpy(bias).double(), padding=1).numpy()
    assert _relative_error(y, expected) <= F32_BOUND
    # and float64 stays tight
    y64 = fastconv.conv2d(x.astype(np.float64), weight.astype(np.float64),
                          bias.astype(np.float64), padding=1, algorithm="winograd")
    assert _relative_error(y64, expected) <= F64_BOUND


def test_padding_modes_and_unbatched(tile, rng, dtype, torch):
    x, weight = _data(rng, (3, 9, 10), dtype), _data(rng, (4, 3, 3, 3), dtype)
    for mode in ("reflect", "replicate", "circular"):
        y = fastconv.conv2d(x, weight, padding=1, padding_mode=mode, algorithm="winograd")
        layer = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode, bias=False).double()
        layer.weight.data = torch.from_numpy(weight.astype(np.float64))
        expected = layer(torch.from_numpy(x.astype(np.float64))[None])[0].detach().numpy()
        assert y.shape == expected.shape
        bound = F32_BOUND if dtype == np.float32 else F64_BOUND
        assert _relative_error(y, expected) <= bound


def test_many_blocks_and_tiles_across_samples(rng, monkeypatch):
    """More tiles than a block holds, blocks that cut samples apart, and a last lane group
    that is partial: every tile still lands in its own place."""
    monkeypatch.setattr(_paths, "WINOGRAD_BLOCK_BYTES", 1)  # blocks of 16 tiles
    clear_plans()
    x, weight = _data(rng, (5, 3, 9, 7), np.float64), _data(rng, (6, 3, 3, 3), np.float64)
    y = fastconv.conv2d(x, weight, padding=1, algorithm="winograd")
    assert _relative_error(y, conv2d_ref(x, weight, pads=(1, 1, 1, 1))) <= F64_BOUND
    clear_plans()


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("padding", [0, 1, 2, ((2, 0), (1, 2))])
def test_grad_input_matches_reference(tile, rng, dtype, padding):
    x, weight = _data(rng, (2, 3, 8, 7), dtype), _data(rng, (4, 3, 3, 3), dtype)
    y = fastconv.conv2d(x, weight, padding=padding)
    gy = _data(rng, y.shape, dtype)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, weight, padding=padding,
                                          algorithm="winograd")
    plan = _plan(x, weight, padding, "winograd")
    assert plan.grad_input[0].name == "winograd"
    pads = ((padding,) * 4 if isinstance(padding, int)
            else (padding[0][0], padding[0][1], padding[1][0], padding[1][1]))
    rgx, rgw, rgb = conv2d_backward_ref(gy, x, weight, pads=pads)
    bound = F32_BOUND if dtype == np.float32 else F64_BOUND
    assert _relative_error(gx, rgx) <= bound
    # the weight and bias gradients take the usual paths
    auto = fastconv.conv2d_backward(gy, x, weight, padding=padding)
    np.testing.assert_array_equal(gw, auto[1])
    np.testing.assert_array_equal(gb, auto[2])


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_grad_input_reads_the_forward_weight_in_place(tile, rng, dtype, padding):
    """The input gradient's weight transform reads the (K, C, 3, 3) weight transposed and
    flipped in place: the same bits as the forward pass over grad_output with that copy
    made explicitly (the path's sub-plan: padding 2 - p, channels swapped)."""
    x, weight = _data(rng, (2, 5, 9, 8), dtype), _data(rng, (7, 5, 3, 3), dtype)
    y = fastconv.conv2d(x, weight, padding=padding)
    gy = _data(rng, y.shape, dtype)
    gx = fastconv.conv2d_backward(gy, x, weight, padding=padding, need=("input",),
                                  algorithm="winograd")[0]
    flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    expected = fastconv.conv2d(gy, flipped, padding=2 - padding, algorithm="winograd")
    assert expected.shape == gx.shape
    assert gx.tobytes() == expected.tobytes()


def test_grad_input_finite_differences(tile, rng):
    x, weight = _data(rng, (1, 2, 6, 5), np.float64), _data(rng, (3, 2, 3, 3), np.float64)
    gy = _data(rng, (1, 3, 6, 5), np.float64)

    def loss():
        return float((fastconv.conv2d(x, weight, padding=1, algorithm="winograd") * gy).sum())

    gx, _, _ = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("input",),
                                        algorithm="winograd")
    # the loss is linear in x: a large step has no truncation error and less rounding
    indices, numeric = numerical_gradient(loss, x, eps=1e-3, count=20, rng=rng)
    np.testing.assert_allclose(gx.reshape(-1)[indices], numeric, rtol=1e-6, atol=1e-8)


def test_grad_input_with_torch(rng, torch):
    x, weight = _data(rng, (8, 32, 14, 14), np.float32), _data(rng, (48, 32, 3, 3), np.float32)
    gy = _data(rng, (8, 48, 14, 14), np.float32)
    gx, _, _ = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("input",),
                                        algorithm="winograd")
    expected = torch.ops.aten.convolution_backward(
        torch.from_numpy(gy).double(), torch.from_numpy(x).double(),
        torch.from_numpy(weight).double(), [48], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [True, False, False])[0].numpy()
    assert _relative_error(gx, expected) <= F32_BOUND


def test_non_finite_weights_take_the_exact_path(rng):
    """Like Transposed, the input gradient as a convolution of grad_output meets its padding:
    with an inf weight the scatter runs, as PyTorch."""
    x, weight = _data(rng, (1, 2, 5, 5), np.float64), _data(rng, (2, 2, 3, 3), np.float64)
    weight[0, 0, 0, 0] = np.inf
    gy = _data(rng, (1, 2, 5, 5), np.float64)
    winograd = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("input",),
                                        algorithm="winograd")[0]
    direct = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("input",),
                                      algorithm="direct")[0]
    np.testing.assert_array_equal(winograd, direct)


# ---------------------------------------------------------------- random shapes

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
    x, weight, bias = _data(rng, (n, c, h, w), dtype), _data(rng, (k, c, 3, 3), dtype), \
        _data(rng, k, dtype)
    saved = _paths.WINOGRAD_TILES
    _paths.WINOGRAD_TILES = (m,)
    try:
        y = fastconv.conv2d(x, weight, bias, padding=pad, algorithm="winograd")
        gx, _, _ = fastconv.conv2d_backward(np.ones_like(y), x, weight, padding=pad,
                                            need=("input",), algorithm="winograd")
    finally:
        _paths.WINOGRAD_TILES = saved
    bound = F32_BOUND if dtype == np.float32 else F64_BOUND
    assert _relative_error(y, conv2d_ref(x, weight, bias, pads=(pad,) * 4)) <= bound
    expected_gx = conv2d_backward_ref(np.ones(y.shape), x, weight, pads=(pad,) * 4)[0]
    if np.abs(expected_gx).max() > 0:
        assert _relative_error(gx, expected_gx) <= bound


# ---------------------------------------------------------------- threads, paths, API

@pytest.mark.parametrize("hw, k_out", [((23, 17), 12), ((14, 14), 41)])
def test_bits_independent_of_thread_count(tile, rng, dtype, hw, k_out):
    """The same bits for any thread count; at 14x14 with 41 output channels the blocks of tiles
    do not share out evenly among the threads, so each block's output channels are cut into
    parts (whole GEMM panels, with the bias and channels past a whole panel)."""
    x, weight = _data(rng, (3, 8) + hw, dtype), _data(rng, (k_out, 8, 3, 3), dtype)
    bias = _data(rng, k_out, dtype)
    gy = _data(rng, (3, k_out) + hw, dtype)
    results = []
    for threads in (1, 2, 3, 5):
        with fastconv.threads(threads):
            y = fastconv.conv2d(x, weight, bias, padding=1, algorithm="winograd")
            gx = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("input",),
                                          algorithm="winograd")[0]
        results.append((y, gx))
    for y, gx in results[1:]:
        assert y.tobytes() == results[0][0].tobytes()
        assert gx.tobytes() == results[0][1].tobytes()
    bound = F32_BOUND if dtype == np.float32 else F64_BOUND
    assert _relative_error(results[0][0], conv2d_ref(x, weight, bias, pads=(1,) * 4)) <= bound


def test_path_choice(rng):
    x, weight = _data(rng, (2, 4, 10, 10), np.float32), _data(rng, (8, 4, 3, 3), np.float32)
    assert _plan(x, weight).forward.name != "winograd"                 # 'auto': never
    assert _plan(x, weight, algorithm="winograd").forward.name == "winograd"
    assert _plan(x, weight, algorithm="direct").forward.name != "winograd"
    with use_paths(forward="winograd", grad_input="winograd"):
        plan = _plan(x, weight)
        assert plan.forward.name == "winograd" and plan.grad_input[0].name == "winograd"
        y = fastconv.conv2d(x, weight, padding=1)
        gx = fastconv.conv2d_backward(np.ones_like(y), x, weight, padding=1,
                                      need=("input",))[0]
        # 'direct' refuses Winograd even when asked for
        assert _plan(x, weight, algorithm="direct").forward.name != "winograd"
    np.testing.assert_array_equal(y, fastconv.conv2d(x, weight, padding=1,
                                                     algorithm="winograd"))
    np.testing.assert_array_equal(gx, fastconv.conv2d_backward(
        np.ones_like(y), x, weight, padding=1, need=("input",), algorithm="winograd")[0])
    # the private _path reaches it too
    np.testing.assert_array_equal(y, fastconv.conv2d(x, weight, padding=1, _path="winograd"))


@pytest.mark.parametrize("kwargs, weight_shape", [
    ({"stride": 2}, (4, 4, 3, 3)), ({"dilation": 2}, (4, 4, 3, 3)),
    ({"groups": 2}, (4, 2, 3, 3)), ({}, (4, 4, 5, 5)), ({}, (4, 4, 3, 1)),
])
def test_elsewhere_the_usual_path(rng, kwargs, weight_shape):
    x, weight = _data(rng, (2, 4, 11, 11), np.float32), _data(rng, weight_shape, np.float32)
    auto = fastconv.conv2d(x, weight, padding=1, **kwargs)
    winograd = fastconv.conv2d(x, weight, padding=1, algorithm="winograd", **kwargs)
    np.testing.assert_array_equal(auto, winograd)
    gy = np.ones_like(auto)
    for a, b in zip(fastconv.conv2d_backward(gy, x, weight, padding=1, **kwargs),
                    fastconv.conv2d_backward(gy, x, weight, padding=1, algorithm="winograd",
                                             **kwargs)):
        np.testing.assert_array_equal(a, b)


def test_bad_algorithm():
    x, weight = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    for bad in ("fast", "Winograd", None, 1):
        with pytest.raises(ValueError, match="algorithm must be one of"):
            fastconv.conv2d(x, weight, algorithm=bad)
        with pytest.raises(ValueError, match="algorithm must be one of"):
            fastconv.conv2d_backward(np.ones((1, 1, 2, 2)), x, weight, algorithm=bad)
        with pytest.raises(ValueError, match="algorithm must be one of"):
            nn.Conv2d(1, 1, 3, algorithm=bad)


def test_layer(rng, torch):
    layer = nn.Conv2d(3, 5, 3, padding=1, dtype=np.float64, seed=0, algorithm="winograd")
    assert "algorithm='winograd'" in repr(layer)
    x = _data(rng, (2, 3, 9, 9), np.float64)
    y = layer(x)
    gx = layer.backward(np.ones_like(y))
    twin = torch.nn.Conv2d(3, 5, 3, padding=1).double()
    twin.load_state_dict({key: torch.from_numpy(value) for key, value in
                          layer.state_dict().items()})
    tx = torch.from_numpy(x).requires_grad_()
    ty = twin(tx)
    ty.sum().backward()
    assert _relative_error(y, ty.detach().numpy()) <= F64_BOUND
    assert _relative_error(gx, tx.grad.numpy()) <= F64_BOUND
    assert _relative_error(layer.weight.grad, twin.weight.grad.numpy()) <= F64_BOUND


def test_cli_accepts_algorithm():
    from fastconv.__main__ import _parser

    args = _parser().parse_args(["train", "--algorithm", "winograd"])
    assert args.algorithm == "winograd"
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--algorithm", "fft"])


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_instruction_set_builds(isa, tmp_path, monkeypatch):
    """Each build of the transforms (FASTCONV_ISA caps it) computes the same convolution, to
    the rounding of its arithmetic (builds with FMA may differ in the last bits); with
    padding 1 and with padding wider than a patch row (the edge tiles' masked row loads)."""
    pads = [1, ((1, 0), (10, 9))]
    code = (
        "import sys, numpy as np, fastconv\n"
        "from fastconv import _conv, _paths\n"
        f"PADS = {pads!r}\n"
        f"for m in {TILES}:\n"
        "    _paths.WINOGRAD_TILES = (m,)\n"
        "    rng = np.random.default_rng(0)\n"
        "    for dtype in (np.float32, np.float64):\n"
        "        x = rng.standard_normal((2, 5, 13, 11)).astype(dtype)\n"
        "        w = rng.standard_normal((7, 5, 3, 3)).astype(dtype)\n"
        "        for i, pad in enumerate(PADS):\n"
        "            y = fastconv.conv2d(x, w, padding=pad, algorithm='winograd')\n"
        "            np.save(f'{sys.argv[1]}/{m}-{np.dtype(dtype).name}-{i}.npy', y)\n"
        "print(_conv.winograd_isa())\n"
    )
    stdout = run_at_isa(code, isa, tmp_path, tmp_path, timeout=600)
    assert_isa_capped(stdout.split()[-1], isa)
    for m in TILES:
        monkeypatch.setattr(_paths, "WINOGRAD_TILES", (m,))
        clear_plans()
        rng = np.random.default_rng(0)
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((2, 5, 13, 11)).astype(dtype)
            w = rng.standard_normal((7, 5, 3, 3)).astype(dtype)
            for i, pad in enumerate(pads):
                y = fastconv.conv2d(x, w, padding=pad, algorithm="winograd")
                other = np.load(tmp_path / f"{m}-{np.dtype(dtype).name}-{i}.npy")
                bound = F32_BOUND if dtype == np.float32 else F64_BOUND
                assert _relative_error(other, y) <= bound / 10
    clear_plans()


# ---------------------------------------------------------------- kept weight transforms

def _cold(x, weight, **kwargs):
    """The convolution with no transform kept (what a first call computes)."""
    _paths.clear_winograd_weights()
    return fastconv.conv2d(x, weight, algorithm="winograd", **kwargs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kept_weights_same_bits_as_a_first_call(rng, dtype):
    x, weight = _data(rng, (2, 6, 14, 14), dtype), _data(rng, (9, 6, 3, 3), dtype)
    cold = _cold(x, weight, padding=1)
    key = _paths._winograd_weights_key(weight, _paths.winograd_tile(
        _plan(x, weight, algorithm="winograd")), False)
    assert key in _paths._WINOGRAD_WEIGHTS
    for _ in range(2):
        warm = fastconv.conv2d(x, weight, padding=1, algorithm="winograd")
        assert warm.tobytes() == cold.tobytes()
    # another array with the same bytes: the same result, whichever entry it finds
    assert fastconv.conv2d(x, weight.copy(), padding=1,
                           algorithm="winograd").tobytes() == cold.tobytes()


def test_weights_changed_in_place_are_transformed_again(rng):
    """The weights an optimiser or a user changes in place are never served a stale
    transform: one element, a sign of zero, an in-place step of every element."""
    x, weight = _data(rng, (2, 4, 10, 10), np.float32), _data(rng, (5, 4, 3, 3), np.float32)
    fastconv.conv2d(x, weight, padding=1, algorithm="winograd")  # kept
    weight[4, 3, 2, 2] += 1.0  # the last element: a compare that stops early cannot miss it
    warm = fastconv.conv2d(x, weight, padding=1, algorithm="winograd")
    assert warm.tobytes() == _cold(x, weight, padding=1).tobytes()
    assert not np.array_equal(warm, fastconv.conv2d(x, weight - np.float32(1.0), padding=1,
                                                    algorithm="winograd"))
    weight[:] = 0.0
    fastconv.conv2d(x, weight, padding=1, algorithm="winograd")  # kept with +0.0
    weight[0, 0, 1, 1] = -0.0  # equal as numbers, not as bytes
    warm = fastconv.conv2d(x, weight, padding=1, algorithm="winograd")
    assert warm.tobytes() == _cold(x, weight, padding=1).tobytes()
    layer = nn.Conv2d(4, 5, 3, padding=1, seed=0, algorithm="winograd")
    y0 = layer(x)
    layer.backward(np.ones_like(y0))
    optim.SGD(layer.parameters(), lr=0.1).step()
    y1 = layer(x)
    assert not np.array_equal(y0, y1)
    assert y1.tobytes() == _cold(x, layer.weight.data, padding=1,
                                 bias=layer.bias.data).tobytes()


def test_kept_weights_input_gradient(rng):
    """The forward pass's and the input gradient's transforms of one weight are kept apart
    (the input gradient's is of the flipped, transposed kernels)."""
    x, weight = _data(rng, (2, 6, 9, 9), np.float64), _data(rng, (6, 6, 3, 3), np.float64)
    gy = _data(rng, (2, 6, 9, 9), np.float64)
    _paths.clear_winograd_weights()
    expected = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("input",),
                                        algorithm="winograd")[0]
    _paths.clear_winograd_weights()
    for _ in range(2):
        fastconv.conv2d(x, weight, padding=1, algorithm="winograd")
        gx = fastconv.conv2d_backward(gy, x, weight, padding=1, need=("input",),
                                      algorithm="winograd")[0]
        assert gx.tobytes() == expected.tobytes()


def test_kept_weights_bounded(rng, monkeypatch):
    _paths.clear_winograd_weights()
    x = _data(rng, (1, 16, 8, 8), np.float32)
    weights = [_data(rng, (16, 16, 3, 3), np.float32) for _ in range(6)]
    fastconv.conv2d(x, weights[0], padding=1, algorithm="winograd")
    (copy, packed), = _paths._WINOGRAD_WEIGHTS.values()
    size = copy.nbytes + packed.nbytes
    monkeypatch.setattr(_paths, "WINOGRAD_WEIGHTS_BYTES", 5 * size // 2)
    monkeypatch.setattr(_paths, "WINOGRAD_WEIGHTS_KEEP_BYTES", size)
    _paths.clear_winograd_weights()
    results = [fastconv.conv2d(x, w, padding=1, algorithm="winograd") for w in weights]
    # the two most recent kept, the others forgotten oldest first
    assert [key[0] for key in _paths._WINOGRAD_WEIGHTS] == [id(w) for w in weights[-2:]]
    for w, y in zip(weights, results):
        assert fastconv.conv2d(x, w, padding=1, algorithm="winograd").tobytes() == y.tobytes()
    # a layer larger than the per-layer limit is transformed every call, never kept
    _paths.clear_winograd_weights()
    big = _data(rng, (64, 16, 3, 3), np.float32)
    fastconv.conv2d(x, big, padding=1, algorithm="winograd")
    assert not _paths._WINOGRAD_WEIGHTS


def test_kept_weights_from_python_threads(rng):
    """Calls from several Python threads at once, some with weights changed between calls:
    each gets the bits of a first call with its own weights (an entry is used by one call at
    a time)."""
    import threading

    x = _data(rng, (2, 8, 14, 14), np.float32)
    weights = [_data(rng, (16, 8, 3, 3), np.float32) for _ in range(3)]
    expected = [_cold(x, w, padding=1) for w in weights]
    shared = weights[0].copy()
    errors = []

    def run(index):
        for step in range(6):
            if index == 0:  # the same weights every call: hits
                y, want = fastconv.conv2d(x, shared, padding=1, algorithm="winograd"), 0
            else:  # another array, switched between two values in place: misses
                own = weights[index].copy() if step == 0 else own
                want = index if step % 2 == 0 else 0
                own[...] = weights[want]
                y = fastconv.conv2d(x, own, padding=1, algorithm="winograd")
            if y.tobytes() != expected[want].tobytes():
                errors.append((index, step))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
