"""The few-input-channel path (fastconv._paths.FewChannels, src/_fewchan.h): output pixels
across the lanes, read in place from a per-sample split into stride phases, and its pooling
in the store (the eval plan's Conv2d -> ReLU -> MaxPool2d)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import _paths
from fastconv import conv as conv_module
from fastconv._plan import clear_plans, use_paths
from helpers import (assert_close, bits, check_conv_path_random_shape,
                     check_few_channels_at_isa, check_pooled_store,
                     check_pooled_store_threads, conv_case, conv_plan)
from reference.conv import conv2d_ref

PATH = "few-channels"

# (batch, C_in, H, W, C_out, kernel, stride, pads (top, bottom, left, right), dilation)
SHAPES = [
    (3, 1, 28, 28, 16, (5, 5), (2, 2), (0, 0, 0, 0), (1, 1)),   # the tutorial net's
    (2, 1, 28, 28, 6, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),    # LeNet's first layer
    (1, 3, 17, 13, 17, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),   # C_out past the lanes, batch 1
    (2, 2, 11, 9, 5, (3, 2), (2, 1), (2, 0, 1, 3), (2, 1)),     # odd everything, dilation
    (1, 3, 31, 29, 1, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),    # a stem-like 7x7, one output
    (2, 1, 6, 8, 3, (1, 2), (1, 1), (0, 0, 0, 0), (1, 1)),      # bench's 'tiny'
    (2, 2, 9, 10, 8, (3, 3), (3, 2), (0, 1, 2, 0), (1, 3)),     # stride 3, wide dilation
    (1, 1, 40, 5, 4, (5, 1), (1, 1), (0, 0, 0, 0), (4, 1)),     # tall and narrow
    (2, 1, 9, 90, 4, (2, 5), (1, 2), (1, 0, 3, 2), (1, 9)),     # a reach past 2 vectors
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


def test_is_the_usual_choice_for_few_channels_only(rng):
    # (12 output channels: with a multiple of 16 the channels-across-lanes variant is taken,
    # tests/test_fewchan_lanes.py)
    for cin, expected in ((1, True), (_paths.FEW_MAX_CHANNELS, True),
                          (_paths.FEW_MAX_CHANNELS + 1, False)):
        x = rng.standard_normal((2, cin, 12, 12)).astype(np.float32)
        weight = rng.standard_normal((12, cin, 3, 3)).astype(np.float32)
        kwargs = dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))
        assert (conv_plan(x, weight, None, kwargs).forward.name == PATH) is expected
    # nor for more output channels than FEW_MAX_OUT_CHANNELS (the other kernels win there)
    for cout, expected in ((_paths.FEW_MAX_OUT_CHANNELS - 1, True),
                           (_paths.FEW_MAX_OUT_CHANNELS + 1, False)):
        x = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
        weight = rng.standard_normal((cout, 1, 3, 3)).astype(np.float32)
        assert (conv_plan(x, weight, None, kwargs).forward.name == PATH) is expected
    # grouped convolutions never take it
    x = rng.standard_normal((2, 2, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    conv, _ = conv_module._prepare(x, weight, None, 1, 0, 1, 2, "zeros")
    assert conv.plan.forward.name != PATH


def test_nan_inf_and_signed_zeros(dtype):
    """Non-finite inputs reach exactly the outputs whose windows hold them (the columns the
    kernel computes past the grid's width never leak into a stored one)."""
    rng = np.random.default_rng(3)
    x, weight, b, kwargs = conv_case(rng, SHAPES[0], dtype)
    x[0, 0, 3, 5] = np.nan
    x[1, 0, 27, 27] = np.inf
    x[2, 0, 0, 0] = -np.inf
    weight[0] = 0
    b[0] = -0.0
    with use_paths(forward=PATH):
        y = fastconv.conv2d(x, weight, b, **kwargs)
        fused = fastconv.conv2d(x, weight, b, activation="relu", **kwargs)
    with use_paths(forward="blas"):
        expected = fastconv.conv2d(x, weight, b, **kwargs)
    assert np.array_equal(np.isnan(y), np.isnan(expected))
    assert np.array_equal(np.isinf(y), np.isinf(expected))
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
    for shape in (SHAPES[0], SHAPES[2], SHAPES[3]):
        x, weight, b, kwargs = conv_case(rng, shape, dtype)
        outs = []
        with use_paths(forward=PATH):
            for threads in (1, 2, 3, 7):
                with fastconv.threads(threads):
                    outs.append(fastconv.conv2d(x, weight, b, activation="relu", **kwargs))
        for out in outs[1:]:
            assert np.array_equal(bits(out), bits(outs[0]))


@pytest.mark.parametrize("grid_w", [1, 7, 8, 9, 15, 16, 17, 33])
def test_dense_rows_do_not_depend_on_the_grid_width(rng, dtype, grid_w, every_thread):
    """Unpooled, the kernels run over the grid's positions dense (src/_fewchan.h, fc_few_cols
    and fc_few_dense): a vector of positions spans grid rows, and each row's column planes
    are built a vector of columns at a time (AVX-512: 16 floats, 8 doubles), the last one
    partly. An output is the same chain whatever the width, so a narrow input's result is,
    bit for bit, the first columns of a wider input's; with 5 output channels (a partial
    group of 4) and bands cut by 3 threads."""
    kwargs = dict(stride=(2, 2), padding=((1, 2), (1, 0)))
    width = 2 * (grid_w - 1) + 4  # ((width + 1 - 5) // 2 + 1 == grid_w columns
    wide = rng.standard_normal((2, 1, 13, width + 40)).astype(dtype)
    x = np.ascontiguousarray(wide[..., :width])
    weight = rng.standard_normal((5, 1, 3, 5)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    with use_paths(forward=PATH):
        for threads in (1, 3):
            with fastconv.threads(threads):
                for relu in ("relu", None):
                    y = fastconv.conv2d(x, weight, b, activation=relu, **kwargs)
                    y_wide = fastconv.conv2d(wide, weight, b, activation=relu, **kwargs)
                    assert y.shape[3] == grid_w and y_wide.shape[3] == grid_w + 20
                    assert np.array_equal(bits(y), bits(y_wide[..., :grid_w])), (threads, relu)
    assert_close(y, conv2d_ref(x, weight, b, (2, 2), (1, 2, 1, 0), (1, 1), 1))


@pytest.mark.parametrize("pool", [(2, 2), (3, 3), (2, 3), (1, 2)])
def test_pooled_store_is_the_pooled_convolution_bit_for_bit(rng, dtype, pool):
    """Pooling in the store: the max (pooling's rule) of the very sums the unpooled path
    stores, ReLU'd or not, NaN included; and the pooling reference agrees."""
    check_pooled_store(_paths.FewChannels(), SHAPES, rng, dtype, pool)


def test_pooled_store_threads(rng, every_thread):
    check_pooled_store_threads(_paths.FewChannels(), SHAPES[:1], rng)


@given(batch=st.integers(1, 3), cin=st.integers(1, 3), h=st.integers(1, 14),
       w=st.integers(1, 14), cout=st.integers(1, 9), kh=st.integers(1, 4),
       kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dh=st.integers(1, 2), dw=st.integers(1, 2), pad=st.integers(0, 2),
       seed=st.integers(0, 2 ** 16))
def test_random_shapes(batch, cin, h, w, cout, kh, kw, sh, sw, dh, dw, pad, seed):
    check_conv_path_random_shape(PATH, batch, cin, h, w, cout, kh, kw, sh, sw, dh, dw, pad,
                                 seed)


# (batch, C_in, H, W, C_out, kernel, stride, padding, dilation) of the capped-level runs
ISA_SHAPES = [(3, 1, 28, 28, 16, 5, 2, 0, 1), (2, 3, 13, 11, 7, 3, 1, 1, 2),
              (1, 2, 9, 10, 5, 3, 2, 2, 1)]


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lesser_instruction_sets(isa, tmp_path):
    """Under FASTCONV_ISA caps (a child process), the kernels of that level agree with the
    reference (a NaN input included), fuse the ReLU and pool bit for bit, and give the same
    bits on any thread count."""
    check_few_channels_at_isa(isa, tmp_path, PATH, "FewChannels", ISA_SHAPES)
