"""The few-input-channel path's variant with the output channels across the vector lanes
(fastconv._paths.FewChannelsLanes, src/_fewchan.h's fc_cl_*): a multiple of 16 output
channels, 16 per micro-kernel call, the pooling max kept in registers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _conv, _fusion, _paths, models
from fastconv import conv as conv_module
from fastconv._plan import clear_plans, pooling_path, use_paths
from helpers import (assert_close, bits, check_conv_path_random_shape,
                     check_few_channels_at_isa, check_pooled_store,
                     check_pooled_store_threads, conv_case, conv_plan, few_channels_pooled)
from reference.conv import conv2d_ref

PATH = "few-channels-lanes"

# (batch, C_in, H, W, C_out, kernel, stride, pads (top, bottom, left, right), dilation)
SHAPES = [
    (3, 1, 28, 28, 16, (5, 5), (2, 2), (0, 0, 0, 0), (1, 1)),   # the tutorial net's
    (2, 1, 28, 28, 32, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),   # LeNet-like, 32 channels
    (1, 3, 17, 13, 48, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),   # 48 channels, batch 1
    (2, 2, 11, 9, 16, (3, 2), (2, 1), (2, 0, 1, 3), (2, 1)),    # odd everything, dilation
    (1, 3, 31, 29, 32, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),   # a stem-like 7x7
    (2, 1, 6, 8, 16, (1, 2), (1, 1), (0, 0, 0, 0), (1, 1)),     # tiny planes
    (2, 2, 9, 10, 16, (3, 3), (3, 2), (0, 1, 2, 0), (1, 3)),    # stride 3, wide dilation
    (1, 1, 40, 5, 16, (5, 1), (1, 1), (0, 0, 0, 0), (4, 1)),    # tall and narrow
    (1, 1, 9, 61, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),    # rows past 12 positions
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_the_reference(rng, dtype, shape, bias):
    x, weight, b, kwargs = conv_case(rng, shape, dtype, bias)
    with use_paths(forward=PATH):
        assert conv_plan(x, weight, b, kwargs).forward.name == PATH
        y = fastconv.conv2d(x, weight, b, **kwargs)
        fused = fastconv.conv2d(x, weight, b, activation="relu", **kwargs)
    batch, cin, h, w, cout, kernel, stride, pads, dilation = shape
    expected = conv2d_ref(x, weight, b, stride, pads, dilation, 1)
    assert y.shape == expected.shape and y.dtype == dtype
    assert_close(y, expected)
    assert np.array_equal(bits(fused), bits(np.maximum(y, 0)))


@pytest.mark.parametrize("shape", SHAPES)
def test_same_bits_as_the_pixels_across_lanes_kernels(rng, dtype, shape):
    """The same phase planes, tap offsets and chain of multiply-adds per output as
    FewChannels at the same level: the very same bits."""
    x, weight, b, kwargs = conv_case(rng, shape, dtype)
    with use_paths(forward=PATH):
        y = fastconv.conv2d(x, weight, b, activation="relu", **kwargs)
    with use_paths(forward="few-channels"):
        expected = fastconv.conv2d(x, weight, b, activation="relu", **kwargs)
    assert np.array_equal(bits(y), bits(expected))


def test_matches_torch(rng, dtype, torch):
    for shape in SHAPES:
        x, weight, b, kwargs = conv_case(rng, shape, dtype)
        with use_paths(forward=PATH):
            y = fastconv.conv2d(x, weight, b, **kwargs)
        pads = shape[7]
        xt = torch.nn.functional.pad(torch.from_numpy(x), (pads[2], pads[3], pads[0], pads[1]))
        expected = torch.nn.functional.conv2d(xt, torch.from_numpy(weight),
                                              torch.from_numpy(b), stride=shape[6],
                                              dilation=shape[8]).numpy()
        assert_close(y, expected)


@pytest.fixture
def pays_to_16(monkeypatch):
    """The path taken unpooled too, up to 16 output channels (by default only pooled)."""
    monkeypatch.setattr(_paths, "FEW_LANES_MAX_OUT_CHANNELS", 16)
    clear_plans()
    yield
    clear_plans()


def test_not_taken_unpooled_by_default(rng):
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    weight = rng.standard_normal((16, 1, 5, 5)).astype(np.float32)
    kwargs = dict(stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1))
    assert _paths.FEW_LANES_MAX_OUT_CHANNELS < 16
    assert conv_plan(x, weight, None, kwargs).forward.name == "few-channels"


def test_pools_where_it_pays(rng):
    """pooling_path: the lanes for the pooled store up to FEW_LANES_POOLED_MAX_OUT_CHANNELS
    (a multiple of 16), the plan's own path otherwise, the asked path first, and none where
    the plan's forward path cannot pool."""
    kwargs = dict(stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1))
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    bound = _paths.FEW_LANES_POOLED_MAX_OUT_CHANNELS
    assert bound >= 16
    for cout, expected in ((16, PATH), (12, "few-channels")):
        weight = rng.standard_normal((cout, 1, 5, 5)).astype(np.float32)
        plan = conv_plan(x, weight, None, kwargs)
        assert plan.forward.name == "few-channels"
        assert pooling_path(plan, (2, 2)).name == expected
        with use_paths(forward="few-channels"):
            assert pooling_path(conv_plan(x, weight, None, kwargs), (2, 2)).name == "few-channels"
        with use_paths(forward="blas"):
            assert pooling_path(conv_plan(x, weight, None, kwargs), (2, 2)) is None
    weight = rng.standard_normal((bound + 16, 1, 5, 5)).astype(np.float32)
    plan = conv_plan(x, weight, None, kwargs)
    assert plan.forward.name not in ("few-channels", PATH) or \
        pooling_path(plan, (2, 2)).name == "few-channels"


def test_is_the_usual_choice_where_it_pays(rng, pays_to_16):
    kwargs = dict(stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1))
    for cin, cout, expected in ((1, 16, PATH), (_paths.FEW_MAX_CHANNELS, 16, PATH),
                                (1, 12, "few-channels")):
        x = rng.standard_normal((2, cin, 28, 28)).astype(np.float32)
        weight = rng.standard_normal((cout, cin, 5, 5)).astype(np.float32)
        assert conv_plan(x, weight, None, kwargs).forward.name == expected
    # more input channels, or output channels past the measured bound: not taken
    for cin, cout in ((_paths.FEW_MAX_CHANNELS + 1, 16),
                      (1, _paths.FEW_LANES_MAX_OUT_CHANNELS + 16)):
        x = rng.standard_normal((2, cin, 28, 28)).astype(np.float32)
        weight = rng.standard_normal((cout, cin, 5, 5)).astype(np.float32)
        assert conv_plan(x, weight, None, kwargs).forward.name != PATH
    # nor where the output channels are no multiple of 16, even by override
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    weight = rng.standard_normal((24, 1, 5, 5)).astype(np.float32)
    with use_paths(forward=PATH):
        assert conv_plan(x, weight, None, kwargs).forward.name != PATH


def test_nan_inf_and_signed_zeros(dtype):
    """Non-finite inputs reach exactly the outputs whose windows hold them."""
    rng = np.random.default_rng(3)
    for shape in (SHAPES[0], SHAPES[2]):
        x, weight, b, kwargs = conv_case(rng, shape, dtype)
        x[0, 0, 3, 5] = np.nan
        x[-1, 0, -1, -1] = np.inf
        x[0, -1, 0, 0] = -np.inf
        weight[0] = 0
        weight[17 % shape[4]] = -0.0
        b[0] = -0.0
        with use_paths(forward=PATH):
            y = fastconv.conv2d(x, weight, b, **kwargs)
            fused = fastconv.conv2d(x, weight, b, activation="relu", **kwargs)
        with use_paths(forward="blas"):
            expected = fastconv.conv2d(x, weight, b, **kwargs)
        assert np.array_equal(np.isnan(y), np.isnan(expected))
        assert np.array_equal(np.isinf(y), np.isinf(expected))
        assert np.array_equal(np.signbit(y[np.isinf(y)]), np.signbit(expected[np.isinf(y)]))
        finite = np.isfinite(expected)
        assert_close(y[finite], expected[finite])
        assert np.array_equal(bits(fused), bits(np.maximum(y, 0)))


@pytest.fixture
def every_thread(monkeypatch):
    """Threads for any work, however small (the bands then split even one sample)."""
    monkeypatch.setattr(_paths, "FEW_MACS_PER_THREAD", 1)
    clear_plans()  # (the plans keep the layouts worked out under the old setting)
    yield
    clear_plans()


def test_results_do_not_depend_on_the_thread_count(rng, dtype, every_thread):
    for shape in (SHAPES[0], SHAPES[2], SHAPES[3], SHAPES[8]):
        x, weight, b, kwargs = conv_case(rng, shape, dtype)
        outs = []
        with use_paths(forward=PATH):
            for threads in (1, 2, 3, 7):
                with fastconv.threads(threads):
                    outs.append(fastconv.conv2d(x, weight, b, activation="relu", **kwargs))
        for out in outs[1:]:
            assert np.array_equal(bits(out), bits(outs[0]))


def _pooled(x, weight, b, kwargs, pool, relu=True):
    """FewChannelsLanes.forward_pooled called directly."""
    return few_channels_pooled(_paths.FewChannelsLanes(), x, weight, b, kwargs, pool, relu)


@pytest.mark.parametrize("pool", [(2, 2), (3, 3), (2, 3), (1, 2)])
def test_pooled_store_is_the_pooled_convolution_bit_for_bit(rng, dtype, pool):
    """The max over the window positions kept in registers: pooling's rule (NaN, then the
    greater, scan order) on the very sums the unpooled path stores, ReLU'd or not."""
    check_pooled_store(_paths.FewChannelsLanes(), SHAPES, rng, dtype, pool)


def test_pooled_store_threads(rng, every_thread):
    check_pooled_store_threads(_paths.FewChannelsLanes(), SHAPES[:2], rng)


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
@pytest.mark.parametrize("unpooled_too", [False, True])
def test_tutorial_net_eval_plan_pools_on_this_path(dtype_, unpooled_too, request):
    """The tutorial net's prepared plan runs Conv2d -> ReLU -> MaxPool2d as one step on
    this path (by default; and where the path is the unpooled choice too), bit for bit the
    layers run one by one."""
    if unpooled_too:
        request.getfixturevalue("pays_to_16")
    model = models.tutorial_net(seed=0, dtype=dtype_).eval()
    x = np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(dtype_)
    conv = model[0]
    probe, _ = conv_module._prepare(x, conv.weight.data, conv.bias.data, conv.stride,
                                    conv.padding, conv.dilation, conv.groups, "zeros")
    assert probe.plan.forward.name == (PATH if unpooled_too else "few-channels")
    y = model(x)
    step = _fusion.prepared(model).steps[0]
    assert step.__name__ == "convolve_pool"
    assert step.path.name == PATH
    h = x
    for layer in model:
        h = layer(h)
    assert np.array_equal(bits(y), bits(h))


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 3), cin=st.integers(1, 3), h=st.integers(1, 14),
       w=st.integers(1, 30), cout=st.sampled_from([16, 32, 48]), kh=st.integers(1, 4),
       kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dh=st.integers(1, 2), dw=st.integers(1, 2), pad=st.integers(0, 2),
       seed=st.integers(0, 2 ** 16))
def test_random_shapes(batch, cin, h, w, cout, kh, kw, sh, sw, dh, dw, pad, seed):
    check_conv_path_random_shape(PATH, batch, cin, h, w, cout, kh, kw, sh, sw, dh, dw, pad,
                                 seed)


# (batch, C_in, H, W, C_out, kernel, stride, padding, dilation) of the capped-level runs
ISA_SHAPES = [(3, 1, 28, 28, 16, 5, 2, 0, 1), (2, 3, 13, 11, 32, 3, 1, 1, 2),
              (1, 2, 9, 30, 48, 3, 2, 2, 1)]


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lesser_instruction_sets(isa, tmp_path):
    """Under FASTCONV_ISA caps (a child process), the kernels of that level agree with the
    reference and with FewChannels bit for bit, fuse the ReLU and pool bit for bit, and
    give the same bits on any thread count."""
    check_few_channels_at_isa(isa, tmp_path, PATH, "FewChannelsLanes", ISA_SHAPES,
                              "few-channels")


@pytest.mark.parametrize("relu", [True, False])
def test_pooled_store_with_a_non_finite_bias(dtype, relu):
    """An infinite or NaN bias: the bias and ReLU taken per window position (as the unfused
    layers take them), so a window of sums 5 and -inf with a bias of +inf pools to NaN,
    not +inf; NaN payloads as the pooling kernel keeps them."""
    rng = np.random.default_rng(7)
    x, weight, b, kwargs = conv_case(rng, SHAPES[0], dtype)
    x[0, 0, 10:12, 10:14] = -np.inf
    x[1, 0, 4, 4] = np.nan
    weight = np.abs(weight)
    b[0], b[1], b[2] = np.inf, np.nan, -np.inf
    with use_paths(forward=PATH):
        plain = fastconv.conv2d(x, weight, b, **kwargs)
    full = np.maximum(plain, 0) if relu else plain
    expected = fastconv.max_pool2d(full, 2)
    got = _pooled(x, weight, b, kwargs, (2, 2), relu)
    assert np.isnan(got[0, 0]).any()  # the case above happens
    assert np.array_equal(bits(got), bits(expected))


# (batch, C_in, H, W, C_out, kernel, stride, dilation) without padding, and the padding that
# the explicitly zero-padded input replaces
IN_PLACE = [
    (3, 1, 28, 28, 16, (5, 5), (2, 2), (1, 1), (2, 1, 0, 3)),   # the tutorial net's
    (2, 2, 13, 17, 32, (3, 3), (1, 2), (1, 1), (1, 1, 1, 1)),
    (1, 3, 16, 30, 48, (2, 4), (2, 1), (2, 1), (0, 2, 1, 0)),   # dilation, rows past 6
    (2, 1, 9, 40, 16, (3, 3), (1, 1), (1, 2), (1, 0, 0, 1)),    # grid rows of 13 to 19
]


@pytest.mark.parametrize("shape", IN_PLACE)
@pytest.mark.parametrize("pool", [(1, 1), (2, 2), (3, 3), (2, 3)])
def test_input_read_in_place_is_the_phase_planes_bit_for_bit(rng, dtype, shape, pool):
    """Without padding the kernels read x itself (no phase planes); padded, they read the
    phase planes, which hold the padding's zeros: the convolution of a zero-padded x and the
    padded convolution of x are the same chains, so the same bits, pooled or not, with a
    finite bias (the 2 x 2 kernels) and an infinite one (the window positions one by one)."""
    batch, cin, h, w, cout, kernel, stride, dilation, pads = shape
    x, weight, b, _ = conv_case(rng, (batch, cin, h, w, cout, kernel, stride, (0,) * 4,
                                      dilation), dtype)
    x[0, 0, h // 2, w // 3] = np.nan
    padded = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    in_place = dict(stride=stride, padding=0, dilation=dilation)
    phased = dict(stride=stride, padding=((pads[0], pads[1]), (pads[2], pads[3])),
                  dilation=dilation)
    plan = conv_plan(padded, weight, b, in_place)
    if plan.out_h < pool[0] or plan.out_w < pool[1]:
        pytest.skip("no whole window")
    # in place: no phase planes in the workspace; padded: phase planes
    assert _conv.few_sizes(plan.geometry, pool[0], pool[1], 1, 8, True)[3] == 0
    assert _conv.few_sizes(conv_plan(x, weight, b, phased).geometry, pool[0], pool[1], 1, 8,
                           True)[3] > 0
    for bias in (b, np.where(np.arange(cout) % 3 == 0, np.inf, b).astype(dtype)):
        for relu in (True, False):
            got = _pooled(padded, weight, bias, in_place, pool, relu)
            expected = _pooled(x, weight, bias, phased, pool, relu)
            assert np.array_equal(bits(got), bits(expected)), (shape, pool, relu)


@pytest.mark.parametrize("cout", [16, 48])
def test_pooled_2x2_store_every_grid_width(rng, dtype, cout):
    """The 2 x 2 kernels (the four window positions' sums at once) on grid rows of 1 to 15
    positions (one call per row up to 6, then several, the last one short), in place and
    from the phase planes: pooling's rule on the unpooled sums, bit for bit."""
    for width in range(2, 31, 2):
        for pad in (0, 1):
            shape = (2, 1, 9, width + 2, cout, (3, 3), (1, 1), (pad,) * 4, (1, 1))
            x, weight, b, kwargs = conv_case(rng, shape, dtype)
            x[1, 0, 4, width // 2] = np.nan
            with use_paths(forward=PATH):
                plain = fastconv.conv2d(x, weight, b, **kwargs)
            for relu in (True, False):
                full = np.maximum(plain, 0) if relu else plain
                got = _pooled(x, weight, b, kwargs, (2, 2), relu)
                assert np.array_equal(bits(got), bits(fastconv.max_pool2d(full, 2))), (
                    width, pad, relu)
