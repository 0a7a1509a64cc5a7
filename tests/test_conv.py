"""Convolution: corr2d, convolve2d, conv2d, conv2d_backward against references and PyTorch."""

import contextlib
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _conv, _paths, _pool
from fastconv import conv as conv_module
from fastconv._plan import use_paths
from helpers import assert_close, assert_grad_close, non_contiguous, run_at_isa
from reference.conv import conv2d_backward_ref, conv2d_ref, corr2d_ref

# (N, C_in, H, W, C_out, kernel, stride, pads (top, bottom, left, right), dilation, groups)
GEOMETRIES = [
    (2, 3, 7, 9, 4, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (1, 1, 6, 8, 1, (1, 2), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (2, 4, 8, 8, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 2),
    (3, 2, 9, 7, 3, (2, 3), (2, 1), (0, 2, 1, 0), (2, 1), 1),
    (2, 6, 6, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),      # depthwise
    (2, 4, 5, 5, 8, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 4),      # depthwise multiplier 2
    (2, 8, 5, 6, 3, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # pointwise
    (2, 4, 7, 6, 4, (1, 1), (2, 2), (1, 0, 0, 1), (1, 1), 2),      # 1x1 strided, padded
    (1, 2, 5, 5, 2, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # kernel = input
    (1, 1, 1, 1, 2, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # 1x1 image
    (9, 2, 6, 5, 2, (3, 2), (1, 2), (1, 0, 2, 1), (1, 2), 1),      # per-item backward schedule
    (1, 3, 40, 50, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),    # several tiles per image
    (17, 2, 5, 6, 3, (3, 3), (2, 1), (1, 0, 1, 1), (1, 1), 1),     # 3 images per tile, ragged
    (10, 4, 4, 4, 4, (2, 2), (1, 1), (0, 0, 0, 0), (1, 1), 2),     # 2 images per tile, groups
]
GEOMETRY_IDS = [f"g{i}" for i in range(len(GEOMETRIES))]


# Shapes for the packed GEMM's edges (src/_gemm.h): C_out not a multiple of the panel rows,
# pixels not a multiple of the panel columns, k over one K block (256) or several, groups
PACKED_CASES = [
    (3, 32, 9, 11, 13, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),   # k = 288: two K blocks
    (2, 60, 6, 7, 9, (3, 3), (1, 2), (1, 0, 1, 1), (1, 1), 1),     # k = 540: three
    (2, 8, 20, 23, 17, (3, 3), (2, 1), (0, 1, 2, 0), (2, 1), 1),   # strided, dilated, ragged
    (2, 12, 10, 10, 18, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3),  # groups
    (1, 3, 8, 8, 16, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),     # pointwise: BLAS still
    (9, 4, 10, 10, 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),   # whole panels, per item
    (1, 2, 1, 1, 5, (1, 1), (1, 1), (1, 1, 1, 1), (1, 1), 1),      # all padding
    (2, 0, 5, 5, 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),      # no input channels: k = 0
    (2, 3, 5, 5, 0, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),      # no output channels
]


def packed_gemm_everywhere():
    """Take the packed GEMM (instead of BLAS, and instead of the direct kernels), and the
    transposed convolution for the input gradient, for every shape they can do, however small
    (its forward pass the packed GEMM too)."""
    return use_paths(forward="packed", grad_input=("transposed", "packed"),
                     grad_weight="packed")


def transposed_everywhere():
    """The transposed convolution for every stride-1 input gradient it can do, however small."""
    return use_paths(grad_input="transposed")


def unstaged():
    """im2col from x (no stage: no direct kernels but the pointwise ones) and every input
    gradient through the col2im scatter (BLAS; the packed GEMM's scatter runs in
    packed_gemm_everywhere where the transposed convolution does not apply)."""
    return use_paths(grad_input="blas", stage=False)


@pytest.fixture(params=["auto", "packed_path", "unstaged"])
def gemm_path(request):
    """Each test three times: the paths the shapes choose (small test images are staged; the
    direct kernels where there are 16k output channels per group), the packed GEMM and the
    transposed input gradient wherever they apply, and no staging (so no direct kernels) nor
    transposed input gradient."""
    if request.param == "auto":
        yield request.param
        return
    if request.param == "unstaged":
        with unstaged():
            yield request.param
        return
    if not _paths._PACKED_GEMM:
        pytest.skip("no packed GEMM micro-kernel on this CPU")
    with packed_gemm_everywhere():
        yield request.param


def _plan(x, w, padding=1, groups=1, stride=1, dilation=1):
    conv, _ = conv_module._prepare(x, w, None, stride, padding, dilation, groups, "zeros")
    return conv.plan


def test_path_switches_take_effect():
    """The overrides reach the path choices even for shapes seen before (the plans are cached,
    under the override in force), and leave no trace after."""
    # (more input channels than the few-channel path takes: fastconv/_paths.FEW_MAX_CHANNELS)
    x = np.ones((2, 5, 8, 8), np.float32)
    w = np.ones((4, 5, 3, 3), np.float32)
    w16 = np.ones((16, 5, 3, 3), np.float32)

    def paths():
        plan, plan16 = _plan(x, w), _plan(x, w16)
        return (plan.geometry.staged, plan.forward.name, plan.grad_weight.name,
                [path.name for path in plan.grad_input], plan16.forward.name)

    # these tiny convolutions take the packed GEMM where its forward bound is 0 (its AVX2 and
    # AVX-512 kernels; the portable one keeps PACKED_MIN_MACS)
    forward = ("packed" if _paths._PACKED_GEMM
               and _paths.PACKED_MIN_MACS_FORWARD[np.dtype(np.float32)] == 0 else "blas")
    direct = "direct" if _paths._DIRECT else forward
    usual = (True, forward, "blas", ["blas"], direct)
    assert paths() == usual
    with unstaged():
        assert paths() == (False, forward, "blas", ["blas"], forward)
    if _paths._PACKED_GEMM:
        with packed_gemm_everywhere():
            assert paths() == (True, "packed", "packed", ["transposed", "packed"], "packed")
    with transposed_everywhere():
        assert paths()[3] == ["transposed", "blas"]
    assert paths() == usual


def test_path_override_names_are_checked():
    with pytest.raises(ValueError, match="forward paths are"):
        with use_paths(forward="fast"):
            pass
    with pytest.raises(ValueError, match="grad_input paths are"):
        with use_paths(grad_input=("blas", "direct")):  # no direct input gradient
            pass


def test_path_override_is_per_thread():
    """An override in one Python thread does not reach another's calls."""
    x = np.ones((2, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    seen = []
    entered, done = threading.Event(), threading.Event()

    def other():
        entered.wait(10)
        seen.append(_plan(x, w).geometry.staged)
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with use_paths(stage=False):
        entered.set()
        done.wait(10)
        assert not _plan(x, w).geometry.staged
    thread.join()
    assert seen == [True]


@pytest.mark.parametrize("op", ["forward", "grad_input", "grad_weight"])
def test_every_path_is_reachable_and_agrees(rng, dtype, op):
    """Each path of each op, asked for through the override on a shape it applies to, runs
    (the plan says so) and matches the reference."""
    cases = {
        # a depthwise convolution with 16k channels, a dense one with 16k output channels
        "depthwise": (2, 16, 9, 10, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16),
        "dense": (2, 3, 9, 10, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        # a ResNet shortcut's strided 1x1 convolution (StridedPointwise)
        "strided 1x1": (2, 16, 9, 10, 16, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    }
    ran = set()
    for name in _paths.names(op):
        for geometry in cases.values():
            x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, dtype)
            with use_paths(**{op: name}):
                plan = _plan(x, weight, kwargs["padding"], kwargs["groups"], kwargs["stride"],
                             kwargs["dilation"])
                chosen = plan.forward if op != "grad_input" else plan.grad_input[0]
                chosen = plan.grad_weight if op == "grad_weight" else chosen
                if chosen.name != name:
                    continue  # does not apply to this case
                ran.add(name)
                y = fastconv.conv2d(x, weight, bias, **kwargs)
                grad_output = rng.standard_normal(y.shape).astype(dtype)
                grads = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
            assert_close(y, conv2d_ref(x, weight, bias, **ref_kwargs))
            for ours, theirs in zip(grads, conv2d_backward_ref(grad_output, x, weight,
                                                               **ref_kwargs)):
                assert_grad_close(ours, theirs)
    # what this CPU and dtype can run: the direct kernels need float32 and AVX-512, the
    # packed GEMM its micro-kernels
    expected = set(_paths.names(op))
    if not (_paths._DIRECT and dtype == np.float32):
        expected -= {"direct", "depthwise-direct", "depthwise-direct-gather"}
    if dtype != np.float32:  # PointsWeight's gather (stage_points) is float32's
        expected.discard("points")
    if not _paths._PACKED_GEMM:
        expected.discard("packed")
    assert ran == expected


def make_case(rng, geometry, dtype, bias=True):
    batch, cin, h, w, cout, kernel, stride, pads, dilation, groups = geometry
    x = rng.standard_normal((batch, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, cin // groups) + kernel).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype) if bias else None
    kwargs = dict(stride=stride, padding=((pads[0], pads[1]), (pads[2], pads[3])),
                  dilation=dilation, groups=groups)
    ref_kwargs = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    return x, weight, b, kwargs, ref_kwargs


def assert_case_matches_reference(rng, geometry, dtype):
    """conv2d and all three gradients of a random case against the NumPy reference."""
    x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, dtype)
    result = fastconv.conv2d(x, weight, bias, **kwargs)
    assert_close(result, conv2d_ref(x, weight, bias, **ref_kwargs))
    grad_output = rng.standard_normal(result.shape).astype(dtype)
    grads = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
    for actual, wanted in zip(grads, conv2d_backward_ref(grad_output, x, weight, **ref_kwargs)):
        assert_grad_close(actual, wanted)


# ---------------------------------------------------------------- textbook values
def test_corr2d_textbook_value():
    result = fastconv.corr2d([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [[0, 1], [2, 3]])
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, [[19, 25], [37, 43]])


def test_edge_detection_on_the_6x8_image():
    X = np.ones((6, 8))
    X[:, 2:6] = 0
    Y = fastconv.corr2d(X, np.array([[1.0, -1.0]]))
    expected = np.zeros((6, 7))
    expected[:, 1] = 1     # white-to-black edge
    expected[:, 5] = -1    # black-to-white edge
    np.testing.assert_array_equal(Y, expected)
    # the transposed image has horizontal edges, which this kernel cannot see
    np.testing.assert_array_equal(fastconv.corr2d(X.T, np.array([[1.0, -1.0]])), 0)


def test_pointwise_convolution_is_a_matrix_product(rng, dtype):
    x = rng.standard_normal((3, 5, 4, 6)).astype(dtype)
    weight = rng.standard_normal((7, 5, 1, 1)).astype(dtype)
    expected = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0].astype(np.float64), x)
    assert_close(fastconv.conv2d(x, weight), expected)


@pytest.mark.parametrize("shape", [(5, 7), (3, 3), (9, 4)])
def test_corr2d_and_convolve2d_match_definitions(rng, shape):
    X = rng.standard_normal((10, 9))
    K = rng.standard_normal(shape)
    np.testing.assert_allclose(fastconv.corr2d(X, K), corr2d_ref(X, K), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fastconv.convolve2d(X, K), corr2d_ref(X, K[::-1, ::-1]),
                               rtol=1e-12, atol=1e-12)
    scipy_signal = pytest.importorskip("scipy.signal")
    np.testing.assert_allclose(fastconv.convolve2d(X, K),
                               scipy_signal.convolve2d(X, K, mode="valid"), rtol=1e-12, atol=1e-12)


def test_corr2d_errors():
    with pytest.raises(ValueError, match="X must be 2-D"):
        fastconv.corr2d(np.ones((1, 3, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="K must be 2-D"):
        fastconv.corr2d(np.ones((3, 3)), np.ones(2))
    with pytest.raises(ValueError, match="kernel is larger"):
        fastconv.corr2d(np.ones((3, 3)), np.ones((4, 1)))
    with pytest.raises(TypeError, match="unsupported dtype"):
        fastconv.corr2d(np.ones((3, 3), dtype=complex), np.ones((2, 2)))


# ---------------------------------------------------------------- against the reference
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
def test_conv2d_matches_reference(rng, dtype, geometry, gemm_path):
    x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, dtype)
    result = fastconv.conv2d(x, weight, bias, **kwargs)
    assert result.dtype == dtype and result.flags.c_contiguous
    assert_close(result, conv2d_ref(x, weight, bias, **ref_kwargs))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=GEOMETRY_IDS)
def test_conv2d_backward_matches_reference(rng, dtype, geometry, gemm_path):
    x, weight, _, kwargs, ref_kwargs = make_case(rng, geometry, dtype, bias=False)
    forward = fastconv.conv2d(x, weight, **kwargs)
    grad_output = rng.standard_normal(forward.shape).astype(dtype)
    grads = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
    expected = conv2d_backward_ref(grad_output, x, weight, **ref_kwargs)
    for actual, wanted, shape in zip(grads, expected, (x.shape, weight.shape, (weight.shape[0],))):
        assert actual.shape == shape and actual.dtype == dtype
        assert_grad_close(actual, wanted)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_match_reference(rng, dtype, mode):
    x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    pads = (2, 1, 1, 2)
    kwargs = dict(stride=(2, 1), padding=((2, 1), (1, 2)), padding_mode=mode)
    result = fastconv.conv2d(x, weight, **kwargs)
    assert_close(result, conv2d_ref(x, weight, stride=(2, 1), pads=pads, mode=mode))
    grad_output = rng.standard_normal(result.shape).astype(dtype)
    grads = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
    expected = conv2d_backward_ref(grad_output, x, weight, stride=(2, 1), pads=pads, mode=mode)
    for actual, wanted in zip(grads, expected):
        assert_grad_close(actual, wanted)


@pytest.mark.parametrize("size,kernel,stride,dilation", [
    ((7, 8), (3, 3), (1, 1), (1, 1)), ((7, 8), (4, 2), (1, 1), (1, 2)),
    ((7, 8), (3, 3), (2, 2), (1, 1)), ((9, 5), (2, 4), (3, 2), (2, 1)),
])
def test_same_and_valid_padding(rng, size, kernel, stride, dilation):
    x = rng.standard_normal((1, 2) + size)
    weight = rng.standard_normal((3, 2) + kernel)
    same = fastconv.conv2d(x, weight, stride=stride, padding="same", dilation=dilation)
    assert same.shape[2:] == tuple(-(-s // st) for s, st in zip(size, stride))
    pads = []
    for s, k, st, d in zip(size, kernel, stride, dilation):
        out = -(-s // st)
        total = max((out - 1) * st + d * (k - 1) + 1 - s, 0)
        pads += [total // 2, total - total // 2]
    assert_close(same, conv2d_ref(x, weight, stride=stride, pads=tuple(pads), dilation=dilation))
    valid = fastconv.conv2d(x, weight, stride=stride, padding="valid", dilation=dilation)
    np.testing.assert_array_equal(valid, fastconv.conv2d(x, weight, stride=stride,
                                                         dilation=dilation))


# ---------------------------------------------------------------- gradients by finite differences
@pytest.mark.parametrize("geometry", [GEOMETRIES[2], GEOMETRIES[3], GEOMETRIES[5], GEOMETRIES[7]],
                         ids=["strided-groups", "asym-dilated", "depthwise", "pointwise-strided"])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_gradients_by_finite_differences(rng, geometry, mode):
    x, weight, bias, kwargs, _ = make_case(rng, geometry, np.float64)
    if mode != "zeros":
        pads = kwargs["padding"]
        if any(p >= s for p, s in zip((pads[0][0], pads[0][1], pads[1][0], pads[1][1]),
                                      (x.shape[2], x.shape[2], x.shape[3], x.shape[3]))):
            pytest.skip("padding too large for this mode")
    kwargs["padding_mode"] = mode
    probe = rng.standard_normal(fastconv.conv2d(x, weight, bias, **kwargs).shape)

    def loss(x_, weight_, bias_):
        return float((fastconv.conv2d(x_, weight_, bias_, **kwargs) * probe).sum())

    grad_x, grad_w, grad_b = fastconv.conv2d_backward(probe, x, weight, **kwargs)
    eps = 1e-6
    for array, grad, which in ((x, grad_x, 0), (weight, grad_w, 1), (bias, grad_b, 2)):
        numeric = np.zeros_like(array)
        flat = array.reshape(-1)
        for index in rng.choice(flat.size, size=min(flat.size, 25), replace=False):
            saved = flat[index]
            flat[index] = saved + eps
            plus = loss(x, weight, bias)
            flat[index] = saved - eps
            minus = loss(x, weight, bias)
            flat[index] = saved
            numeric.reshape(-1)[index] = (plus - minus) / (2 * eps)
            np.testing.assert_allclose(grad.reshape(-1)[index], numeric.reshape(-1)[index],
                                       rtol=1e-6, atol=1e-7, err_msg=f"argument {which}")


# ---------------------------------------------------------------- random geometry
@st.composite
def conv_geometry(draw):
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    span = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    h = draw(st.integers(max(1, span[0] - pads[0] - pads[1]), 12))
    w = draw(st.integers(max(1, span[1] - pads[2] - pads[3]), 12))
    batch = draw(st.integers(0, 3))
    return (batch, cin, h, w, cout, kernel, stride, pads, dilation, groups)


@given(geometry=conv_geometry(), seed=st.integers(0, 2**32 - 1),
       float32=st.booleans(), contiguous=st.booleans())
def test_random_geometry_matches_reference(geometry, seed, float32, contiguous):
    dtype = np.dtype(np.float32 if float32 else np.float64)
    rng = np.random.default_rng(seed)
    x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, dtype)
    x_in = x if contiguous else non_contiguous(x)
    result = fastconv.conv2d(x_in, weight, bias, **kwargs)
    assert_close(result, conv2d_ref(x, weight, bias, **ref_kwargs))
    grad_output = rng.standard_normal(result.shape).astype(dtype)
    grads = fastconv.conv2d_backward(grad_output, x_in, weight, **kwargs)
    expected = conv2d_backward_ref(grad_output, x, weight, **ref_kwargs)
    for actual, wanted in zip(grads, expected):
        assert_grad_close(actual, wanted)


@given(geometry=conv_geometry(), seed=st.integers(0, 2**32 - 1), float32=st.booleans())
@settings(max_examples=60, deadline=None)
def test_random_geometry_staged_and_unstaged(geometry, seed, float32):
    """Both ways to build the im2col blocks and both input gradients (the stage and the
    transposed convolution, or x and the col2im scatter), with batches large enough for the
    per-item backward schedule (which scatters into the stage)."""
    dtype = np.dtype(np.float32 if float32 else np.float64)
    geometry = (9,) + geometry[1:]
    rng = np.random.default_rng(seed)
    x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, dtype)
    expected_y = conv2d_ref(x, weight, bias, **ref_kwargs)
    grad_output = rng.standard_normal(expected_y.shape).astype(dtype)
    expected = conv2d_backward_ref(grad_output, x, weight, **ref_kwargs)
    for paths in (transposed_everywhere, unstaged):
        with paths():
            assert_close(fastconv.conv2d(x, weight, bias, **kwargs), expected_y)
            grads = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
        for actual, wanted in zip(grads, expected):
            assert_grad_close(actual, wanted)


# ---------------------------------------------------------------- PyTorch
# PyTorch pads symmetrically only: the asymmetric geometries are compared with the reference
TORCH_CASES = [g for g in GEOMETRIES if g[7][0] == g[7][1] and g[7][2] == g[7][3]] + [
    (4, 16, 14, 14, 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (2, 8, 12, 12, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
]


@pytest.mark.parametrize("geometry", TORCH_CASES, ids=[f"t{i}" for i in range(len(TORCH_CASES))])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_matches_torch(torch, dtype, geometry, mode):
    rng = np.random.default_rng(7)
    x, weight, bias, kwargs, _ = make_case(rng, geometry, dtype)
    top, _, left, _ = geometry[7]
    if mode == "reflect" and (top >= x.shape[2] or left >= x.shape[3]):
        pytest.skip("reflect needs padding < size")
    if mode == "circular" and (top > x.shape[2] or left > x.shape[3]):
        pytest.skip("circular needs padding <= size")
    kwargs = dict(kwargs, padding=(top, left), padding_mode=mode)
    layer = torch.nn.Conv2d(x.shape[1], weight.shape[0], weight.shape[2:], stride=kwargs["stride"],
                            padding=(top, left), dilation=kwargs["dilation"],
                            groups=kwargs["groups"], padding_mode=mode, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight.astype(np.float64)))
        layer.bias.copy_(torch.from_numpy(bias.astype(np.float64)))
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    ty = layer(tx)
    grad_output = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(grad_output.astype(np.float64)))
    result = fastconv.conv2d(x, weight, bias, **kwargs)
    assert_close(result, ty.detach().numpy())
    gx, gw, gb = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
    for ours, theirs in ((gx, tx.grad), (gw, layer.weight.grad), (gb, layer.bias.grad)):
        assert_grad_close(ours, theirs.numpy())


def test_same_padding_matches_torch(torch, rng):
    x = rng.standard_normal((2, 3, 9, 8))
    weight = rng.standard_normal((4, 3, 4, 3))
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                          padding="same", dilation=(1, 2))
    assert_close(fastconv.conv2d(x, weight, padding="same", dilation=(1, 2)), expected.numpy())


# ---------------------------------------------------------------- arrays: dtypes, layouts, out=
def test_dtype_rules(rng):
    x = rng.integers(-3, 4, (1, 2, 5, 5))
    weight = rng.integers(-2, 3, (3, 2, 2, 2))
    assert fastconv.conv2d(x, weight).dtype == np.float64
    assert fastconv.conv2d(x.astype(np.float16), weight.astype(np.float16)).dtype == np.float32
    assert fastconv.conv2d(x.astype(np.float32), weight.astype(np.float64)).dtype == np.float64
    assert fastconv.conv2d(x.astype(np.float32), weight.astype(np.float32)).dtype == np.float32
    assert fastconv.conv2d(x.astype(bool), weight).dtype == np.float64
    np.testing.assert_array_equal(fastconv.conv2d(x, weight), conv2d_ref(x, weight))
    for bad in (np.complex64, object, "U3"):
        with pytest.raises(TypeError, match="x has unsupported dtype"):
            fastconv.conv2d(np.ones((1, 2, 5, 5), dtype=bad), weight)
    with pytest.raises(TypeError, match="weight has unsupported dtype"):
        fastconv.conv2d(x, weight.astype(np.complex128))


def test_layouts_and_inputs_untouched(rng, dtype):
    x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    weight = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    expected = fastconv.conv2d(x, weight, padding=1)
    x_copy, weight_copy = x.copy(), weight.copy()
    for variant in (non_contiguous(x), np.asfortranarray(x)):
        np.testing.assert_array_equal(fastconv.conv2d(variant, weight, padding=1), expected)
    from_lists = fastconv.conv2d(x.tolist(), weight.tolist(), padding=1)  # lists hold float64
    assert from_lists.dtype == np.float64
    assert_close(from_lists, expected, dtype)
    np.testing.assert_array_equal(fastconv.conv2d(x, np.asfortranarray(weight), padding=1),
                                  expected)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(weight, weight_copy)


def test_unbatched_input(rng):
    x = rng.standard_normal((3, 6, 6))
    weight = rng.standard_normal((2, 3, 3, 3))
    bias = rng.standard_normal(2)
    result = fastconv.conv2d(x, weight, bias, padding=1)
    assert result.shape == (2, 6, 6)
    np.testing.assert_array_equal(result, fastconv.conv2d(x[None], weight, bias, padding=1)[0])
    grad_output = rng.standard_normal(result.shape)
    gx, gw, gb = fastconv.conv2d_backward(grad_output, x, weight, padding=1)
    bx, bw, bb = fastconv.conv2d_backward(grad_output[None], x[None], weight, padding=1)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gx, bx[0])
    np.testing.assert_array_equal(gw, bw)


def test_empty_batch(dtype):
    x = np.zeros((0, 3, 8, 8), dtype=dtype)
    weight = np.ones((5, 3, 3, 3), dtype=dtype)
    result = fastconv.conv2d(x, weight, np.ones(5, dtype=dtype), stride=2)
    assert result.shape == (0, 5, 3, 3) and result.dtype == dtype
    gx, gw, gb = fastconv.conv2d_backward(np.zeros((0, 5, 3, 3), dtype), x, weight, stride=2)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros_like(weight))
    np.testing.assert_array_equal(gb, np.zeros(5, dtype))


def test_out_argument(rng, dtype):
    x = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    out = np.empty((2, 4, 3, 3), dtype=dtype)
    returned = fastconv.conv2d(x, weight, out=out)
    assert returned is out
    np.testing.assert_array_equal(out, fastconv.conv2d(x, weight))
    sentinel = np.full((2, 4, 3, 3), 7, dtype=dtype)
    bad_outs = [
        (np.full((2, 4, 3, 4), 7, dtype=dtype), ValueError, "out has shape"),
        (sentinel.astype(np.float64 if dtype == np.float32 else np.float32), TypeError, "dtype"),
        (np.full((2, 4, 3, 6), 7, dtype=dtype)[..., ::2], ValueError, "C-contiguous"),
        ([[0.0]], TypeError, "numpy.ndarray"),
    ]
    for bad, error, message in bad_outs:
        before = np.array(bad, copy=True)
        with pytest.raises(error, match=message):
            fastconv.conv2d(x, weight, out=bad)
        np.testing.assert_array_equal(np.asarray(bad), before)
    with pytest.raises(ValueError, match="weight.shape"):  # bad input: out left untouched
        fastconv.conv2d(x, weight[:, :2], out=sentinel)
    np.testing.assert_array_equal(sentinel, 7)


def test_need_selects_gradients(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    weight = rng.standard_normal((4, 3, 3, 3))
    grad_output = rng.standard_normal((2, 4, 3, 3))
    full = fastconv.conv2d_backward(grad_output, x, weight)
    for need in (("input",), ("weight",), ("bias",), ("input", "bias"), ()):
        partial = fastconv.conv2d_backward(grad_output, x, weight, need=need)
        for name, ours, all_of in zip(("input", "weight", "bias"), partial, full):
            if name in need:
                np.testing.assert_array_equal(ours, all_of)
            else:
                assert ours is None
    with pytest.raises(ValueError, match="need may only name"):
        fastconv.conv2d_backward(grad_output, x, weight, need=("inputs",))


def test_nan_and_inf_propagate(gemm_path):
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 3, 3] = np.inf
    result = fastconv.conv2d(x, np.ones((1, 1, 2, 2)))
    assert np.isnan(result[0, 0, :2, :2]).all()
    assert np.isinf(result[0, 0, 2, 2]) and np.isfinite(result[0, 0, 0, 2])


# ---------------------------------------------------------------- the packed GEMM
@pytest.mark.parametrize("geometry", PACKED_CASES,
                         ids=[f"p{i}" for i in range(len(PACKED_CASES))])
def test_packed_gemm_matches_reference(rng, dtype, geometry, gemm_path):
    x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, dtype)
    result = fastconv.conv2d(x, weight, bias, **kwargs)
    assert_close(result, conv2d_ref(x, weight, bias, **ref_kwargs))
    grad_output = rng.standard_normal(result.shape).astype(dtype)
    with fastconv.threads(2):
        grads = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
    for actual, wanted in zip(grads, conv2d_backward_ref(grad_output, x, weight, **ref_kwargs)):
        assert_grad_close(actual, wanted)
    with fastconv.threads(1):
        np.testing.assert_array_equal(fastconv.conv2d_backward(grad_output, x, weight,
                                                               **kwargs)[0], grads[0])
        np.testing.assert_array_equal(fastconv.conv2d(x, weight, bias, **kwargs), result)


def test_packed_gemm_nan_in_the_weights(gemm_path):
    x = np.ones((2, 3, 9, 9), np.float32)
    weight = np.ones((10, 3, 3, 3), np.float32)
    weight[7, 1, 2, 2] = np.nan
    result = fastconv.conv2d(x, weight, padding=1)
    assert np.isnan(result[:, 7]).any() and np.isfinite(np.delete(result, 7, axis=1)).all()




@pytest.mark.parametrize("stride", [(3, 3), (1, 3), (3, 1)])
def test_input_gradient_of_pixels_no_window_reaches(rng, dtype, stride, gemm_path):
    """The last row and column of x are in no window: their gradient is 0. (The per-item
    scatter into the stage writes every element of grad_input, which is not zeroed first.)"""
    x = rng.standard_normal((9, 3, 12, 10)).astype(dtype)
    weight = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    kwargs = dict(stride=stride, padding=((0, 1), (0, 0)))
    grad_output = rng.standard_normal(fastconv.conv2d(x, weight, **kwargs).shape).astype(dtype)
    grad_input = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)[0]
    expected = conv2d_backward_ref(grad_output, x, weight, stride=stride, pads=(0, 1, 0, 0))[0]
    assert_grad_close(grad_input, expected)
    if stride[0] == 3:
        assert not grad_input[:, :, -1].any()
    if stride[1] == 3:
        assert not grad_input[:, :, :, -1].any()


# ---------------------------------------------------------------- the direct kernels
# Shapes for src/_direct.h: 16 channels per group (one-vector blocks), 32 (two-vector), 48
# (three one-vector blocks), 64 in groups of 32; output rows shorter than a micro-kernel or
# cut into uneven runs; tiles that start inside an output row (k = 1152: tiles of 64
# pixels); strides (the stage's column phases), dilation, asymmetric padding; 1x1 strided
# (staged, not pointwise); enough images for the per-item backward, whose input gradient is
# itself a direct convolution (16 input channels); pointwise, read in place (its input
# gradient a direct convolution too where C_in/groups is 16k); 512 channels, whose tiles
# are cut into runs of 128 pixels (the sums of a run are at most 256 KiB); stride 2 along
# rows of 75 columns, 3 of them padding on the left (the stage's AVX-512 split of each row
# into its two phases, 32 columns at a time, src/_stage.h).
DIRECT_CASES = [
    (3, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (2, 16, 9, 11, 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (2, 5, 13, 80, 48, (3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 1),
    (2, 8, 10, 29, 64, (3, 3), (1, 2), (0, 2, 1, 1), (1, 2), 2),
    (1, 128, 9, 37, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (4, 3, 8, 8, 16, (1, 1), (2, 2), (0, 1, 1, 0), (1, 1), 1),
    (9, 32, 7, 7, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (4, 32, 6, 7, 16, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),     # pointwise: x in place
    (2, 8, 5, 9, 32, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2),      # pointwise, groups
    (1, 2, 10, 15, 512, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),   # tiles in runs of 128
    (1, 16, 12, 12, 512, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # the same, pointwise
    (2, 3, 6, 75, 16, (3, 3), (1, 2), (1, 0, 3, 2), (1, 1), 1),     # stride-2 rows split
]


@pytest.mark.skipif(not _conv.DIRECT, reason="no direct kernels on this CPU (AVX-512)")
@pytest.mark.parametrize("geometry", DIRECT_CASES,
                         ids=[f"d{i}" for i in range(len(DIRECT_CASES))])
def test_direct_kernels_match_reference(rng, geometry):
    # (asked for: the few-channel path is the usual choice for the ones with few inputs, and
    # PointsWeight the weight gradient's for the strided 1x1)
    with use_paths(forward="direct", grad_weight="direct"):
        _check_direct_kernels(rng, geometry)


def _check_direct_kernels(rng, geometry):
    x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, np.float32)
    plan = _plan(x, weight, kwargs["padding"], kwargs["groups"], kwargs["stride"],
                 kwargs["dilation"])
    assert plan.forward.name == plan.grad_weight.name == "direct"
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            results.append(fastconv.conv2d(x, weight, bias, **kwargs))
    assert_close(results[0], conv2d_ref(x, weight, bias, **ref_kwargs))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    with fastconv.threads(1):
        np.testing.assert_array_equal(fastconv.conv2d(x, weight, bias, **kwargs)[:1],
                                      fastconv.conv2d(x[:1], weight, bias, **kwargs))
    grad_output = rng.standard_normal(results[0].shape).astype(np.float32)
    grads = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
    for actual, wanted in zip(grads, conv2d_backward_ref(grad_output, x, weight, **ref_kwargs)):
        assert_grad_close(actual, wanted)
    for n in (1, 3):
        with fastconv.threads(n):
            again = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
        for a, b in zip(again, grads):
            np.testing.assert_array_equal(a, b)
    with use_paths(forward=("packed", "blas"), grad_weight=("packed", "blas")):
        assert_close(fastconv.conv2d(x, weight, bias, **kwargs), results[0])
        for a, b in zip(fastconv.conv2d_backward(grad_output, x, weight, **kwargs), grads):
            assert_grad_close(a, b)


@pytest.mark.skipif(not _conv.DIRECT, reason="no direct kernels on this CPU (AVX-512)")
def test_direct_kernels_propagate_nan_and_inf():
    x = np.ones((2, 3, 9, 30), np.float32)
    x[1, 2, 4, 17] = np.nan
    x[0, 0, 0, 0] = np.inf
    weight = np.ones((32, 3, 3, 3), np.float32)
    y = fastconv.conv2d(x, weight, padding=1)
    assert np.isnan(y[1, :, 3:6, 16:19]).all()
    assert np.isfinite(np.delete(y[1], np.s_[16:19], axis=2)).all()
    assert np.isposinf(y[0, :, :2, :2]).all() and np.isfinite(y[0, :, 2:, 2:]).all()


@pytest.mark.skipif(not _conv.DIRECT, reason="no direct kernels on this CPU (AVX-512)")
@pytest.mark.parametrize("geometry", DIRECT_CASES[:4],
                         ids=[f"d{i}" for i in range(4)])
def test_direct_kernels_match_torch(torch, geometry):
    rng = np.random.default_rng(21)
    x, weight, bias, kwargs, _ = make_case(rng, geometry, np.float32)
    top, bottom, left, right = geometry[7]
    padded = torch.nn.functional.pad(torch.from_numpy(x.astype(np.float64)),
                                     (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(
        padded, torch.from_numpy(weight.astype(np.float64)),
        torch.from_numpy(bias.astype(np.float64)), stride=kwargs["stride"],
        dilation=kwargs["dilation"], groups=kwargs["groups"])
    assert_close(fastconv.conv2d(x, weight, bias, **kwargs), expected.numpy())


@st.composite
def lane_geometry(draw, depthwise=False):
    """conv_geometry's shapes for the kernels with channels across the lanes: 16, 32 or 48
    output channels per group (depthwise: 16 or 32 channels), and rows up to 40 wide (several
    micro-kernel runs per output row)."""
    geometry = list(draw(conv_geometry()))
    if depthwise:
        geometry[1] = geometry[4] = geometry[9] = draw(st.sampled_from([16, 32]))
    else:
        geometry[4] = geometry[9] * draw(st.sampled_from([16, 32, 48]))
    kernel, dilation, pads = geometry[5], geometry[8], geometry[7]
    span = dilation[1] * (kernel[1] - 1) + 1
    geometry[3] = draw(st.integers(max(1, span - pads[2] - pads[3]), 40))
    return tuple(geometry)


@pytest.mark.skipif(not _conv.DIRECT, reason="no direct kernels on this CPU (AVX-512)")
@given(geometry=lane_geometry(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_random_geometry_direct_kernels(geometry, seed):
    assert_case_matches_reference(np.random.default_rng(seed), geometry, np.float32)

ISA_LEVELS = ("generic", "avx2", "avx512")


def family_reports(isa):
    """What each kernel family reports at the level ``isa`` (src/_cpu.h), on a CPU with SIMD
    kernels: the GEMM micro-kernel, the GEMM panel rows, the direct kernels, the depthwise
    versions, the pooling build and the staged copies."""
    return {"gemm": {"generic": "generic 6x16", "avx2": "avx2 6x16",
                     "avx512": "avx512 8x16"}[isa],
            "mr": 8 if isa == "avx512" else 6,
            "direct": isa == "avx512",
            "depthwise": ["generic"] + (["avx2"] if isa != "generic" else []),
            "pool": "generic" if isa == "generic" else "avx2",
            "stage": isa}


def reports_here():
    return {"gemm": _conv.packed_gemm_kernel(), "mr": _conv.PANELS["float"][0],
            "direct": _conv.DIRECT, "depthwise": _conv.depthwise_versions(),
            "pool": _pool.ISA, "stage": _conv.STAGE_COPY}


def test_every_family_runs_at_the_isa_in_force():
    """One level for every kernel family: FASTCONV_ISA (as CI runs these tests under
    FASTCONV_ISA=avx2 and =generic) caps each of them."""
    asked = os.environ.get("FASTCONV_ISA")
    assert _conv.ISA in ISA_LEVELS
    assert _pool.ISA == ("generic" if _conv.ISA == "generic" else "avx2")
    if asked in ISA_LEVELS:
        assert ISA_LEVELS.index(_conv.ISA) <= ISA_LEVELS.index(asked)
    if _conv.packed_gemm_kernel() is None:  # a CPU without AVX2: the GEMMs stay with BLAS
        assert _conv.ISA == "generic" and not _conv.DIRECT
        return
    assert reports_here() == family_reports(_conv.ISA)
    assert _conv.depthwise_version() == _conv.depthwise_versions()[-1]


# A child process at one FASTCONV_ISA: what each family reports, and every kernel path that
# level allows run on the cases of ISA_CASES (saved for the parent to check).
_ISA_SCRIPT = """
import json, sys
import numpy as np
import fastconv
from fastconv import _conv, _pool
inputs = np.load(sys.argv[1])
cases = json.loads(sys.argv[3])
out = {}
for i, (stride, pads, dilation, groups) in enumerate(cases):
    x, w, b, gy = (inputs[f"{i}_{name}"] for name in ("x", "w", "b", "gy"))
    kwargs = dict(stride=stride, padding=((pads[0], pads[1]), (pads[2], pads[3])),
                  dilation=dilation, groups=groups)
    for path in (None, "direct", "packed", "blas", "depthwise-direct", "depthwise"):
        try:
            out[f"{i}_forward_{path}"] = fastconv.conv2d(x, w, b, _path=path, **kwargs)
        except ValueError:  # this path cannot run this case (here)
            pass
    for name, grad in zip(("gx", "gw", "gb"), fastconv.conv2d_backward(gy, x, w, **kwargs)):
        out[f"{i}_{name}"] = grad
p = inputs["pool_x"]
for path in ("window2x2", "planes"):
    out[f"max_{path}"], out[f"argmax_{path}"] = fastconv.max_pool2d(
        p, 2, return_indices=True, _path=path)
    out[f"avg_{path}"] = fastconv.avg_pool2d(p, 2, _path=path)
out["avg3"] = fastconv.avg_pool2d(p, 3, 2, 1, count_include_pad=False)
out["avg3_backward"] = fastconv.avg_pool2d_backward(out["avg3"], p.shape, 3, 2, 1,
                                                    count_include_pad=False)
np.savez(sys.argv[2], **out)
print(json.dumps({"isa": _conv.ISA, "gemm": _conv.packed_gemm_kernel(),
                  "mr": _conv.PANELS["float"][0], "direct": _conv.DIRECT,
                  "depthwise": _conv.depthwise_versions(), "pool": _pool.ISA,
                  "stage": _conv.STAGE_COPY, "paths": sorted(out)}))
"""

# (N, C_in, H, W, C_out, kernel, stride, pads, dilation, groups) and dtype: the direct kernels
# (float32, 32 output channels, staged), the packed GEMM over two K blocks (float64, k = 288),
# depthwise on 16 channels (float32: the depthwise direct kernels) and with multiplier 2
ISA_CASES = [
    ((2, 3, 9, 11, 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1), np.float32),
    ((2, 32, 9, 11, 13, (3, 3), (1, 2), (1, 0, 1, 1), (1, 1), 1), np.float64),
    ((2, 16, 10, 9, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16), np.float32),
    ((2, 4, 8, 7, 8, (3, 3), (2, 1), (1, 1, 0, 1), (1, 1), 4), np.float64),
]


def _run_at_isa(isa, inputs, tmp_path, cases):
    """The child script under FASTCONV_ISA=isa (helpers.run_at_isa): (its report, its
    results)."""
    import json

    target = tmp_path / f"{isa}.npz"
    stdout = run_at_isa(_ISA_SCRIPT, isa, tmp_path, inputs, target, json.dumps(cases),
                        timeout=600)
    with np.load(target) as archive:
        return json.loads(stdout.strip().splitlines()[-1]), dict(archive)


@pytest.mark.skipif(bool(os.environ.get("FASTCONV_ISA")),
                    reason="run uncapped: it sets each level itself (CI's capped runs repeat the "
                           "file under one level)")
def test_fastconv_isa_caps_every_family_and_results_stay_right(tmp_path):
    """At each FASTCONV_ISA level up to the CPU's, every family reports that level, the
    paths it allows run (the direct kernels only at avx512) and agree with the NumPy
    reference; pooling gives the same bits at every level."""
    from reference.pool import (avg_pool2d_backward_reference, avg_pool2d_reference,
                                max_pool2d_reference)

    rng = np.random.default_rng(31)
    inputs, expected, cases = {}, {}, []
    for i, (geometry, dtype) in enumerate(ISA_CASES):
        x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, dtype)
        y = conv2d_ref(x, weight, bias, **ref_kwargs)
        gy = rng.standard_normal(y.shape).astype(dtype)
        inputs.update({f"{i}_x": x, f"{i}_w": weight, f"{i}_b": bias, f"{i}_gy": gy})
        expected[f"{i}_forward"] = y
        expected.update(zip((f"{i}_gx", f"{i}_gw", f"{i}_gb"),
                            conv2d_backward_ref(gy, x, weight, **ref_kwargs)))
        cases.append([list(geometry[6]), list(geometry[7]), list(geometry[8]), geometry[9]])
    inputs["pool_x"] = rng.standard_normal((2, 3, 13, 12)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", **inputs)

    # the CPU's own level: avx512 caps nothing
    runs = {"avx512": _run_at_isa("avx512", tmp_path / "inputs.npz", tmp_path, cases)}
    cpu = runs["avx512"][0]["isa"]
    for isa in ISA_LEVELS[:ISA_LEVELS.index(cpu)]:
        runs[isa] = _run_at_isa(isa, tmp_path / "inputs.npz", tmp_path, cases)
    for isa, (report, results) in runs.items():
        level = min(isa, cpu, key=ISA_LEVELS.index)
        assert report["isa"] == level
        if report["gemm"] is None:  # a CPU without AVX2 (then every run is generic)
            assert level == "generic" and not report["direct"]
        else:
            assert {k: report[k] for k in family_reports(level)} == family_reports(level)
        ran = set(report["paths"])
        assert ("0_forward_direct" in ran) == (level == "avx512")
        assert ("2_forward_depthwise-direct" in ran) == (level == "avx512")
        assert ("1_forward_packed" in ran) == (report["gemm"] is not None)
        assert {"0_forward_blas", "2_forward_depthwise", "3_forward_depthwise"} <= ran
        for key, value in results.items():
            case, _, kind = key.partition("_")
            if case.isdigit() and kind.startswith("forward"):
                assert_close(value, expected[f"{case}_forward"])
            elif case.isdigit():
                assert_grad_close(value, expected[key])
        p = inputs["pool_x"]
        for path in ("window2x2", "planes"):
            y, argmax = max_pool2d_reference(p, (2, 2), (2, 2), (0, 0, 0, 0))
            np.testing.assert_array_equal(results[f"max_{path}"], y)
            np.testing.assert_array_equal(results[f"argmax_{path}"], argmax)
            assert_close(results[f"avg_{path}"],
                         avg_pool2d_reference(p, (2, 2), (2, 2), (0, 0, 0, 0)))
        assert_close(results["avg3"], avg_pool2d_reference(p, (3, 3), (2, 2), (1, 1, 1, 1),
                                                           count_include_pad=False))
        assert_close(results["avg3_backward"], avg_pool2d_backward_reference(
            results["avg3"], p.shape, (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad=False))
    baseline = runs["avx512"][1]
    for isa in runs:  # every build of the pooling kernels gives the same bits
        for key in ("max_planes", "avg_planes", "avg_window2x2", "avg3", "avg3_backward"):
            assert runs[isa][1][key].tobytes() == baseline[key].tobytes(), (isa, key)


def test_an_unknown_fastconv_isa_warns_and_runs_the_cpus_level(tmp_path):
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    script = ("import fastconv; from fastconv import _conv; "
              "print(_conv.ISA, _conv.packed_gemm_kernel(), _conv.DIRECT)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_parent,
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("FASTCONV_ISA", None)
    plain = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    unknown = subprocess.run([sys.executable, "-W", "always", "-c", script],
                             env=dict(env, FASTCONV_ISA="avx9000"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and unknown.returncode == 0, plain.stderr + unknown.stderr
    assert "FASTCONV_ISA='avx9000' is not one of generic, avx2, avx512" in unknown.stderr
    assert unknown.stdout == plain.stdout  # as if it were unset


# ---------------------------------------------------------------- threads
THREAD_CASES = [
    (2, 3, 70, 65, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),   # band schedule, many tiles
    (12, 4, 30, 30, 6, (5, 3), (2, 1), (2, 1, 0, 1), (1, 2), 2),  # per-item schedule
    (3, 64, 20, 20, 16, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # pointwise
    (4, 16, 21, 20, 32, (3, 3), (2, 1), (1, 1, 2, 0), (1, 2), 16),  # depthwise, multiplier 2
]


@pytest.mark.parametrize("geometry", THREAD_CASES, ids=["band", "per-item", "pointwise",
                                                        "depthwise"])
def test_results_do_not_depend_on_thread_count(dtype, geometry, gemm_path):
    rng = np.random.default_rng(3)
    x, weight, bias, kwargs, _ = make_case(rng, geometry, dtype)
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            y = fastconv.conv2d(x, weight, bias, **kwargs)
            grads = fastconv.conv2d_backward(np.cos(y), x, weight, **kwargs)
        results.append((y,) + grads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_python_threads_run_concurrently_and_correctly(rng):
    cases = [make_case(np.random.default_rng(i), THREAD_CASES[i % len(THREAD_CASES)],
                       np.float32) for i in range(8)]
    expected = [fastconv.conv2d(x, w, b, **kw) for x, w, b, kw, _ in cases]
    results = [None] * len(cases)
    errors = []

    def work(index):
        try:
            x, w, b, kw, _ = cases[index]
            for _ in range(3):
                results[index] = fastconv.conv2d(x, w, b, **kw)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,error,message", [
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(stride=-1), ValueError, "stride must be >= 1"),
    (dict(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
    (dict(stride=1.5), TypeError, "stride must be an int"),
    (dict(dilation=0), ValueError, "dilation must be >= 1"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding=((1, -1), (0, 0))), ValueError, "padding must be >= 0"),
    (dict(padding="full"), ValueError, "padding must be"),
    (dict(padding=(1, 2, 3)), ValueError, "padding must be an int or a pair"),
    (dict(groups=0), ValueError, "groups must be >= 1"),
    (dict(groups=2.0), TypeError, "groups must be an int"),
    (dict(groups=4), ValueError, "groups=4 must divide"),
    (dict(padding_mode="mirror"), ValueError, "padding_mode must be one of"),
    (dict(dilation=4), ValueError, "kernel is larger than the padded input along height"),
])
def test_bad_arguments_raise(rng, kwargs, error, message):
    x = rng.standard_normal((1, 2, 7, 7))
    weight = rng.standard_normal((2, 2, 3, 3))
    with pytest.raises(error, match=message):
        fastconv.conv2d(x, weight, **kwargs)
    with pytest.raises(error, match=message):
        fastconv.conv2d_backward(np.ones((1, 2, 5, 5)), x, weight, **kwargs)


def test_bad_shapes_raise(rng):
    x = rng.standard_normal((1, 2, 7, 7))
    weight = rng.standard_normal((2, 2, 3, 3))
    with pytest.raises(ValueError, match="x must be 4-D .* or 3-D"):
        fastconv.conv2d(x[0, 0], weight)
    with pytest.raises(ValueError, match="weight must be 4-D"):
        fastconv.conv2d(x, weight[0])
    with pytest.raises(ValueError, match=r"weight.shape\[1\] = 3 must equal"):
        fastconv.conv2d(x, rng.standard_normal((2, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        fastconv.conv2d(x, weight, np.ones(3))
    with pytest.raises(ValueError, match="kernel is larger than the padded input along width"):
        fastconv.conv2d(x, rng.standard_normal((2, 2, 3, 8)))
    with pytest.raises(ValueError, match="empty kernel"):
        fastconv.conv2d(x, np.ones((2, 2, 0, 3)))
    with pytest.raises(ValueError, match="grad_output has shape"):
        fastconv.conv2d_backward(np.ones((1, 2, 5, 4)), x, weight)
    with pytest.raises(ValueError, match="padding"):  # reflect needs pad < size
        fastconv.conv2d(x, weight, padding=7, padding_mode="reflect")


# ---------------------------------------------------------------- depthwise kernels
# The depthwise path (groups == C_in) has its own C kernels: fused taps over zero-padded
# scratch bands, border handling for the exact grad-input paths, and SIMD versions chosen at
# run time. These shapes reach each branch: widths below the kernel, padding beyond the
# kernel, strides and dilations, multipliers, kernels wider than the fused chunk of 9 taps,
# planes bigger than one scratch band, and 1x1 planes.
# (N, C_in, H, W, C_out, kernel, stride, pads (top, bottom, left, right), dilation, groups)
DEPTHWISE_CASES = [
    (2, 3, 7, 2, 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3),        # width < kernel
    (1, 2, 5, 6, 2, (3, 3), (1, 1), (4, 3, 5, 4), (1, 1), 2),        # padding > kernel
    (2, 4, 9, 11, 4, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4),       # stride 2
    (2, 4, 10, 9, 8, (3, 3), (1, 2), (2, 0, 1, 3), (2, 2), 4),       # dilation 2, multiplier 2
    (1, 3, 13, 15, 9, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 3),      # k5, multiplier 3
    (2, 2, 6, 7, 2, (5, 5), (3, 2), (2, 2, 2, 2), (1, 1), 2),        # k5, stride 3x2
    (1, 2, 17, 19, 2, (7, 4), (1, 1), (3, 3, 1, 2), (1, 3), 2),      # 28 taps: chunks
    (1, 2, 12, 12, 2, (11, 11), (1, 1), (5, 5, 5, 5), (1, 1), 2),    # 121 taps
    (1, 2, 1, 1, 2, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2),        # 1x1 plane
    (3, 2, 1, 1, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),        # 1x1 plane, padded
    (2, 2, 8, 9, 2, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 2),        # no padding: in place
    (1, 2, 9, 31, 2, (2, 3), (2, 1), (0, 1, 0, 0), (1, 1), 2),       # in place, stride 2 rows
    (2, 2, 150, 131, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),    # several scratch bands
    (1, 2, 140, 9, 6, (3, 5), (2, 1), (1, 2, 0, 2), (3, 1), 2),      # bands, multiplier 3
]
DEPTHWISE_IDS = [f"dw{i}" for i in range(len(DEPTHWISE_CASES))]


@pytest.mark.parametrize("geometry", DEPTHWISE_CASES, ids=DEPTHWISE_IDS)
def test_depthwise_matches_reference(dtype, geometry):
    assert_case_matches_reference(np.random.default_rng(11), geometry, dtype)


@pytest.mark.parametrize("geometry", DEPTHWISE_CASES, ids=DEPTHWISE_IDS)
def test_depthwise_matches_torch(torch, dtype, geometry):
    rng = np.random.default_rng(12)
    x, weight, bias, kwargs, _ = make_case(rng, geometry, dtype)
    top, bottom, left, right = geometry[7]
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    tw = torch.from_numpy(weight.astype(np.float64)).requires_grad_(True)
    tb = torch.from_numpy(bias.astype(np.float64)).requires_grad_(True)
    padded = torch.nn.functional.pad(tx, (left, right, top, bottom))
    ty = torch.nn.functional.conv2d(padded, tw, tb, stride=kwargs["stride"],
                                    dilation=kwargs["dilation"], groups=kwargs["groups"])
    grad_output = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.from_numpy(grad_output.astype(np.float64)))
    assert_close(fastconv.conv2d(x, weight, bias, **kwargs), ty.detach().numpy())
    grads = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
    for ours, theirs in zip(grads, (tx.grad, tw.grad, tb.grad)):
        assert_grad_close(ours, theirs.numpy())


@pytest.mark.parametrize("geometry", DEPTHWISE_CASES, ids=DEPTHWISE_IDS)
def test_depthwise_versions_agree_bit_for_bit(dtype, geometry):
    """Every SIMD version of the kernels does the same IEEE operations in the same order
    (no FMA, fixed reduction lanes), inf and NaN included."""
    from fastconv import _conv
    rng = np.random.default_rng(13)
    x, weight, bias, kwargs, _ = make_case(rng, geometry, dtype)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 50), replace=False)] = np.inf
    grad_output = rng.standard_normal(fastconv.conv2d(x, weight, **kwargs).shape).astype(dtype)
    grad_output.reshape(-1)[0] = np.nan
    results = {}
    chosen = _conv.depthwise_version()
    try:
        for version in _conv.depthwise_versions():
            _conv.use_depthwise_version(version)
            with np.errstate(invalid="ignore", over="ignore"):
                results[version] = ((fastconv.conv2d(x, weight, bias, **kwargs),)
                                    + fastconv.conv2d_backward(grad_output, x, weight, **kwargs))
    finally:
        _conv.use_depthwise_version(chosen)
    baseline = results.pop("generic")
    for version, arrays in results.items():
        for ours, theirs in zip(arrays, baseline):
            np.testing.assert_array_equal(ours, theirs, err_msg=version)


@pytest.mark.parametrize("channels", [2, 16])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_nonfinite_weight_over_padding(dtype, stride, channels):
    """An inf tap times a padded zero is NaN in the forward (PyTorch's products); the input
    gradient has no products over the padding, so an inf weight stays inf there. (16 float32
    channels: the kernels with the channels across the lanes.)"""
    rng = np.random.default_rng(14)
    x = rng.uniform(0.5, 1.5, (1, channels, 5, 6)).astype(dtype)
    weight = rng.uniform(0.5, 1.5, (channels, 1, 3, 3)).astype(dtype)
    weight[1, 0, 0, 2] = np.inf
    kwargs = dict(padding=1, stride=stride, groups=channels)
    grad_output = np.ones(fastconv.conv2d(x, weight, **kwargs).shape, dtype=dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        y = fastconv.conv2d(x, weight, **kwargs)
        expected = conv2d_ref(x, weight, pads=(1, 1, 1, 1), stride=(stride, stride),
                              groups=channels)
        gx, _, _ = fastconv.conv2d_backward(grad_output, x, weight, **kwargs, need=("input",))
        gx_ref, _, _ = conv2d_backward_ref(grad_output, x, weight, pads=(1, 1, 1, 1),
                                           stride=(stride, stride), groups=channels)
    assert np.isnan(expected).any()
    for ours, theirs in ((y, expected), (gx, gx_ref)):
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs))
        finite = np.isfinite(theirs)
        assert_close(ours[finite], theirs[finite].astype(dtype))



# ---------------------------------------------------------------- depthwise, channels on lanes
# src/_direct.h's fc_dwd_* (float32, 16k channels, multiplier 1): one and several blocks of 16
# channels; the input gradient gathered (stride 1, padding within the kernel's reach) or
# scattered (strides, padding past the reach); rows cut into uneven runs; more taps than the
# weight gradient keeps in registers (49); input rows and columns no window reaches.
DW_DIRECT_CASES = [
    (3, 32, 13, 17, 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 32),
    (2, 16, 20, 9, 16, (5, 3), (2, 1), (2, 0, 0, 1), (1, 2), 16),
    (2, 48, 7, 30, 48, (1, 2), (1, 3), (0, 1, 2, 0), (1, 1), 48),
    (2, 16, 9, 9, 16, (3, 3), (1, 1), (3, 1, 2, 3), (1, 1), 16),
    (1, 16, 21, 19, 16, (7, 7), (1, 1), (3, 3, 3, 3), (2, 1), 16),
    (4, 16, 12, 11, 16, (3, 3), (3, 2), (0, 0, 0, 0), (1, 1), 16),
]
DW_DIRECT_IDS = [f"dwd{i}" for i in range(len(DW_DIRECT_CASES))]


@pytest.mark.skipif(not _conv.DIRECT, reason="no direct kernels on this CPU (AVX-512)")
@pytest.mark.parametrize("geometry", DW_DIRECT_CASES, ids=DW_DIRECT_IDS)
def test_depthwise_direct_matches_reference(geometry):
    rng = np.random.default_rng(15)
    x, weight, bias, kwargs, ref_kwargs = make_case(rng, geometry, np.float32)
    plan = _plan(x, weight, kwargs["padding"], kwargs["groups"], kwargs["stride"],
                 kwargs["dilation"])
    assert plan.forward.name == plan.grad_weight.name == "depthwise-direct"
    grad_output = rng.standard_normal(
        fastconv.conv2d(x, weight, **kwargs).shape).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            results.append((fastconv.conv2d(x, weight, bias, **kwargs),)
                           + fastconv.conv2d_backward(grad_output, x, weight, **kwargs))
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_array_equal(a, b)
    assert_close(results[0][0], conv2d_ref(x, weight, bias, **ref_kwargs))
    for ours, theirs in zip(results[0][1:],
                            conv2d_backward_ref(grad_output, x, weight, **ref_kwargs)):
        assert_grad_close(ours, theirs)
    # each gradient alone takes the same path
    for need, index in (("input", 1), ("weight", 2)):
        alone = fastconv.conv2d_backward(grad_output, x, weight, **kwargs, need=(need,))
        np.testing.assert_array_equal(alone[index - 1], results[0][index])


@pytest.mark.skipif(not _conv.DIRECT, reason="no direct kernels on this CPU (AVX-512)")
@pytest.mark.parametrize("geometry", DW_DIRECT_CASES[:4], ids=DW_DIRECT_IDS[:4])
def test_depthwise_direct_matches_torch(torch, geometry):
    rng = np.random.default_rng(16)
    x, weight, bias, kwargs, _ = make_case(rng, geometry, np.float32)
    top, bottom, left, right = geometry[7]
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    tw = torch.from_numpy(weight.astype(np.float64)).requires_grad_(True)
    ty = torch.nn.functional.conv2d(
        torch.nn.functional.pad(tx, (left, right, top, bottom)), tw,
        torch.from_numpy(bias.astype(np.float64)), stride=kwargs["stride"],
        dilation=kwargs["dilation"], groups=kwargs["groups"])
    grad_output = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(grad_output.astype(np.float64)))
    assert_close(fastconv.conv2d(x, weight, bias, **kwargs), ty.detach().numpy())
    gx, gw, _ = fastconv.conv2d_backward(grad_output, x, weight, **kwargs)
    assert_grad_close(gx, tx.grad.numpy())
    assert_grad_close(gw, tw.grad.numpy())


@pytest.mark.skipif(not _conv.DIRECT, reason="no direct kernels on this CPU (AVX-512)")
def test_depthwise_direct_nonfinite_like_the_plane_kernels():
    """inf in x and NaN in grad_output reach the same outputs as through the per-plane
    kernels (which follow PyTorch's products)."""
    rng = np.random.default_rng(17)
    x = rng.standard_normal((2, 16, 9, 10)).astype(np.float32)
    x[0, 3, 4, 0] = np.inf
    x[1, 7, 0, 5] = -np.inf
    weight = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    grad_output = rng.standard_normal((2, 16, 9, 10)).astype(np.float32)
    grad_output[1, 2, 0, 0] = np.nan
    kwargs = dict(padding=1, groups=16)

    def run():
        with np.errstate(invalid="ignore", over="ignore"):
            return ((fastconv.conv2d(x, weight, **kwargs),)
                    + fastconv.conv2d_backward(grad_output, x, weight, **kwargs))

    direct = run()
    with use_paths(forward="depthwise", grad_input="depthwise", grad_weight="depthwise"):
        planes = run()
    for ours, theirs in zip(direct, planes):
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        np.testing.assert_array_equal(np.isinf(ours), np.isinf(theirs))
        finite = np.isfinite(theirs)
        assert_grad_close(ours[finite], theirs[finite])


@pytest.mark.skipif(not _conv.DIRECT, reason="no direct kernels on this CPU (AVX-512)")
@given(geometry=lane_geometry(depthwise=True), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_random_geometry_depthwise_direct(geometry, seed):
    assert_case_matches_reference(np.random.default_rng(seed), geometry, np.float32)


def test_show_config_lists_the_paths_this_cpu_runs(capsys):
    from fastconv._config import config_info

    paths = config_info()["conv_paths"]
    assert set(paths) == {"forward", "grad_input", "grad_weight"}
    for op, names in paths.items():
        assert names[-1] == "blas" and set(names) <= set(_paths.names(op))
        assert ("direct" in names or "depthwise-direct" in names) == bool(_conv.DIRECT)
        assert ("packed" in names) == (_conv.packed_gemm_kernel() is not None)
    fastconv.show_config()
    assert "conv paths (forward)    : " + ", ".join(paths["forward"]) in capsys.readouterr().out
