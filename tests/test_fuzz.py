"""Property tests: every public function over random geometry (hypothesis).

Each example draws a geometry (shapes, kernel, stride, padding in every accepted form,
dilation, groups, modes), a dtype, a memory layout and sometimes NaN/inf, and checks:

* the result against the slow NumPy references in ``tests/reference`` (and PyTorch when it is
  importable), the exception against the rule when the arguments are invalid;
* that one and two threads give bit-identical results, and that the input's layout does not
  change a bit either;
* algebraic properties that need no reference: every backward is the adjoint of its forward
  (``<f(x), g> == <x, f_backward(g)>`` for the linear ops, and for max pooling along its
  indices).

About half of the examples are forced onto the edges: 1x1 images, kernels as large as the
input, empty batches. Each test runs a multiple of the profile's examples (``_examples``): in
the "ci" profile (60) that is 1,440 examples in all, a few seconds on an idle machine.
"""

import math

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import fastconv
from helpers import TOLERANCE, non_contiguous
from reference.conv import conv2d_backward_ref, conv2d_ref, corr2d_ref, pad_backward_ref
from reference.pad import pad2d_backward_reference, pad2d_reference
from reference.pool import (
    avg_pool2d_backward_reference,
    avg_pool2d_reference,
    max_pool2d_backward_reference,
    max_pool2d_reference,
    pool_output_size,
)

try:  # PyTorch is a comparison target only, never a dependency
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

FLOATS = [np.dtype(np.float32), np.dtype(np.float64)]
LAYOUTS = ["C", "Fortran", "strided"]
EDGES = ["random", "random", "random", "1x1 image", "kernel = input", "empty batch"]
CONV_MODES = ["zeros", "reflect", "replicate", "circular"]
PAD_MODES = ["constant", "reflect", "replicate", "circular", "edge", "wrap"]
PAD_ALIASES = {"edge": "replicate", "wrap": "circular"}


def _examples(factor):
    """The loaded profile's number of examples scaled by ``factor``."""
    return settings(max_examples=max(10, int(settings.default.max_examples * factor)))


# ============================================================================ helpers
def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def in_layout(array, layout):
    """The same values in another memory layout: 'C' (as given), 'Fortran' (a copy) or
    'strided' (a view with negative, non-unit strides)."""
    if layout == "Fortran":
        return np.asfortranarray(array)
    if layout == "strided" and array.ndim:
        return non_contiguous(array)
    return array


def sprinkle(array, rng, on):
    """A copy of ``array`` with a few NaN, +inf and -inf when ``on``."""
    if not on or array.size == 0:
        return array
    array = array.copy()
    flat = array.reshape(-1)
    places = rng.choice(flat.size, size=min(flat.size, 1 + flat.size // 20), replace=False)
    flat[places] = rng.choice([np.nan, np.inf, -np.inf], size=places.size)
    return array


def assert_matches(actual, expected, dtype, grad=False):
    """NaN and inf where ``expected`` has them; elsewhere equal within the dtype's tolerance
    (ten times that, absolute part scaled by the largest magnitude, for gradients)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    for what in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(what(actual), what(expected), err_msg=what.__name__)
    finite = np.isfinite(expected)
    tolerance = TOLERANCE[np.dtype(dtype)]
    rtol, atol = tolerance["rtol"], tolerance["atol"]
    if grad:
        scale = max(1.0, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
        rtol, atol = rtol * 10, atol * 10 * scale
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=atol)


def bitwise_equal(a, b, what=""):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, what
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=what)


def same_with_1_and_2_threads(function):
    """Call ``function`` with one and with two threads; the results must be bit-identical.
    Returns the one-thread results as a tuple."""
    with fastconv.threads(1):
        one = _as_tuple(function())
    with fastconv.threads(2):
        two = _as_tuple(function())
    for index, (a, b) in enumerate(zip(one, two)):
        bitwise_equal(a, b, f"result {index}: 1 vs 2 threads")
    return one


def adjoint_gap(forward_out, grad_out, x, grad_x, scale):
    """| <f(x), g> - <x, f_backward(g)> | relative to ``scale`` (a bound on sum |terms|)."""
    lhs = float(np.dot(forward_out.ravel().astype(np.float64), grad_out.ravel()))
    rhs = float(np.dot(x.ravel().astype(np.float64), grad_x.ravel()))
    return abs(lhs - rhs) / max(scale, 1e-300)


ADJOINT_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-11}


def _torch_tensor(array, grad=False):
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.requires_grad_(True) if grad else tensor


def _record(case, error):
    """Label the example in hypothesis' statistics (pytest --hypothesis-show-statistics)."""
    event(f"refused: {error}" if error else "valid")
    for key in ("edge", "mode", "layout"):
        if key in case:
            event(f"{key}: {case[key]}")
    event(f"dtype: {np.dtype(case['dtype']).name}")
    if case.get("specials"):
        event("with NaN/inf")


# ============================================================================ conv2d
def _same_pads(size, kernel, stride, dilation):
    """SPEC.md's 'same': out = ceil(in / stride), the odd padding at the bottom/right."""
    pads = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


@st.composite
def conv_cases(draw, small=True):
    """A conv2d problem, valid or not: (case dict, expected error or None)."""
    edge = draw(st.sampled_from(EDGES))
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    batch = 0 if edge == "empty batch" else draw(st.integers(1, 2 if small else 3))
    top = 7 if small else 12
    h, w = (1, 1) if edge == "1x1 image" else (draw(st.integers(1, top)), draw(st.integers(1, top)))
    if edge == "kernel = input":
        kernel, dilation = (h, w), (1, 1)
    else:
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        dilation = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2, 3])))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    mode = draw(st.sampled_from(CONV_MODES))
    form = draw(st.sampled_from(["int", "pair", "nested", "nested", "same", "valid"]))
    limit = {"reflect": lambda n: n - 1, "circular": lambda n: n}.get(mode, lambda n: 3)
    pad_h, pad_w = min(3, limit(h)), min(3, limit(w))
    if form == "int":
        pad = draw(st.integers(0, min(pad_h, pad_w)))
        padding, pads = pad, (pad,) * 4
    elif form == "pair":
        ph, pw = draw(st.integers(0, pad_h)), draw(st.integers(0, pad_w))
        padding, pads = (ph, pw), (ph, ph, pw, pw)
    elif form == "nested":
        pads = (draw(st.integers(0, pad_h)), draw(st.integers(0, pad_h)),
                draw(st.integers(0, pad_w)), draw(st.integers(0, pad_w)))
        padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    elif form == "same":
        padding, pads = "same", _same_pads((h, w), kernel, stride, dilation)
    else:
        padding, pads = "valid", (0, 0, 0, 0)
    error = None
    for size, before, after, k, d in ((h, pads[0], pads[1], kernel[0], dilation[0]),
                                      (w, pads[2], pads[3], kernel[1], dilation[1])):
        if size + before + after < d * (k - 1) + 1:
            error = "kernel is larger"
        if mode == "reflect" and max(before, after) >= size:
            error = error or "reflect"
        if mode == "circular" and max(before, after) > size:
            error = error or "circular"
    case = dict(batch=batch, cin=cin, cout=cout, h=h, w=w, kernel=kernel, stride=stride,
                dilation=dilation, groups=groups, mode=mode, padding=padding, pads=pads,
                dtype=draw(st.sampled_from(FLOATS)), layout=draw(st.sampled_from(LAYOUTS)),
                bias=draw(st.booleans()), specials=draw(st.integers(0, 3)) == 0,
                unbatched=batch == 1 and draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)), edge=edge)
    return case, error


def _conv_arrays(case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = rng.standard_normal((case["batch"], case["cin"], case["h"], case["w"])).astype(dtype)
    x = sprinkle(x, rng, case["specials"])
    weight = rng.standard_normal((case["cout"], case["cin"] // case["groups"])
                                 + case["kernel"]).astype(dtype)
    bias = rng.standard_normal(case["cout"]).astype(dtype) if case["bias"] else None
    return rng, x, weight, bias


def _conv_kwargs(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"], padding_mode=case["mode"])


def _ref_kwargs(case):
    return dict(stride=case["stride"], pads=case["pads"], dilation=case["dilation"],
                groups=case["groups"], mode=case["mode"])


def _torch_conv(case, x, weight, bias, grad_y):
    """PyTorch's forward and gradients: explicit F.pad (any padding) then a 'valid' conv."""
    top, bottom, left, right = case["pads"]
    tx, tw = _torch_tensor(x, True), _torch_tensor(weight, True)
    tb = _torch_tensor(bias, True) if bias is not None else None
    mode = "constant" if case["mode"] == "zeros" else case["mode"]
    padded = F.pad(tx, (left, right, top, bottom), mode=mode) if any(case["pads"]) else tx
    ty = F.conv2d(padded, tw, tb, stride=case["stride"], dilation=case["dilation"],
                  groups=case["groups"])
    ty.backward(_torch_tensor(grad_y))
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), (
        tb.grad.numpy() if tb is not None else None)


@_examples(3)
@given(conv_cases())
def test_conv2d_and_backward_match_reference(problem):
    case, error = problem
    _record(case, error)
    rng, x, weight, bias = _conv_arrays(case)
    kwargs = _conv_kwargs(case)
    x_in = in_layout(x, case["layout"])
    weight_in = in_layout(weight, case["layout"])
    if case["unbatched"]:
        x_in = x_in[0]
    if error is not None:
        if error == "kernel is larger" or case["batch"] > 0:
            with pytest.raises(ValueError, match=error):
                fastconv.conv2d(x_in, weight_in, bias, **kwargs)
        # else: an empty batch skips the padding-mode limits, a known bug with its own test in
        # test_robustness.py (test_empty_batch_still_checks_padding_mode_limits)
        if error == "kernel is larger":  # (mode limits are checked after grad_output's shape)
            with pytest.raises(ValueError, match=error):
                fastconv.conv2d_backward(np.zeros((1, 1, 1, 1)), x_in, weight_in, **kwargs)
        return
    dtype = case["dtype"]
    (y,) = same_with_1_and_2_threads(lambda: fastconv.conv2d(x_in, weight_in, bias, **kwargs))
    assert y.dtype == dtype and y.flags.c_contiguous
    y4 = y[None] if case["unbatched"] else y
    assert y4.shape[1] == case["cout"] and y4.shape[0] == case["batch"]
    if case["padding"] == "same":
        assert y4.shape[2:] == tuple(-(-n // s) for n, s in zip((case["h"], case["w"]),
                                                                 case["stride"]))
    with np.errstate(invalid="ignore", over="ignore"):
        expected = conv2d_ref(x, weight, bias, **_ref_kwargs(case))
    assert_matches(y4, expected, dtype)
    bitwise_equal(y, fastconv.conv2d(x[0] if case["unbatched"] else x, weight, bias, **kwargs),
                  "layout changed the result")

    grad_y = sprinkle(rng.standard_normal(y4.shape).astype(dtype), rng, case["specials"])
    grad_y_in = grad_y[0] if case["unbatched"] else grad_y
    grads = same_with_1_and_2_threads(
        lambda: fastconv.conv2d_backward(grad_y_in, x_in, weight_in, **kwargs))
    with np.errstate(invalid="ignore", over="ignore"):
        expected_grads = conv2d_backward_ref(grad_y, x, weight, **_ref_kwargs(case))
    grad_x = grads[0][None] if case["unbatched"] else grads[0]
    for name, got, want in zip(("input", "weight", "bias"), (grad_x,) + grads[1:],
                               expected_grads):
        assert got.dtype == dtype, name
        assert_matches(got, want, dtype, grad=True)

    if torch is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            theirs = _torch_conv(case, x.astype(np.float64), weight.astype(np.float64),
                                 None if bias is None else bias.astype(np.float64),
                                 grad_y.astype(np.float64))
        assert_matches(y4, theirs[0], dtype)
        theirs_grads = list(theirs[1:])
        for got, want in zip((grad_x,) + grads[1:], theirs_grads):
            if want is not None:
                assert_matches(got, want, dtype, grad=True)


@_examples(3)
@given(conv_cases(small=False))
def test_conv2d_backward_is_the_adjoint_of_conv2d(problem):
    """conv2d is linear in x and in weight: <conv(x, w), g> = <x, grad_input> = <w, grad_weight>,
    and grad_bias is g summed over everything but the channels."""
    case, error = problem
    if error is not None:
        return
    case["specials"] = False
    rng, x, weight, _ = _conv_arrays(case)
    kwargs = _conv_kwargs(case)
    dtype = case["dtype"]
    y = fastconv.conv2d(x, weight, **kwargs)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grad_x, grad_w, grad_b = fastconv.conv2d_backward(grad_y, x, weight, **kwargs)
    scale = float(np.dot(fastconv.conv2d(np.abs(x), np.abs(weight), **kwargs).ravel()
                         .astype(np.float64), np.abs(grad_y).ravel()))
    rtol = ADJOINT_RTOL[dtype]
    assert adjoint_gap(y, grad_y, x, grad_x, scale) <= rtol
    assert adjoint_gap(y, grad_y, weight, grad_w, scale) <= rtol
    np.testing.assert_allclose(grad_b, grad_y.astype(np.float64).sum(axis=(0, 2, 3)),
                               rtol=rtol, atol=rtol * max(1.0, np.abs(grad_y).sum()))


# ============================================================================ corr2d / convolve2d
INPUT_DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.bool_]


@st.composite
def plane_cases(draw):
    edge = draw(st.sampled_from(["random", "random", "1x1", "kernel = input"]))
    shape = (1, 1) if edge == "1x1" else (draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    if edge == "kernel = input":
        kernel = shape
    else:
        kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return dict(shape=shape, kernel=kernel,
                x_dtype=np.dtype(draw(st.sampled_from(INPUT_DTYPES))),
                k_dtype=np.dtype(draw(st.sampled_from(INPUT_DTYPES))),
                layout=draw(st.sampled_from(LAYOUTS + ["list"])),
                seed=draw(st.integers(0, 2**32 - 1)))


def _computed_dtype(dtype):
    if dtype in FLOATS:
        return dtype
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(np.float64)


@_examples(2)
@given(plane_cases())
def test_corr2d_and_convolve2d_match_reference(case):
    rng = np.random.default_rng(case["seed"])

    def draw_plane(shape, dtype):
        if dtype == np.bool_:
            return rng.random(shape) < 0.5
        if dtype.kind == "i":
            return rng.integers(-4, 5, shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    X = draw_plane(case["shape"], case["x_dtype"])
    K = draw_plane(case["kernel"], case["k_dtype"])
    X_in = X.tolist() if case["layout"] == "list" else in_layout(X, case["layout"])
    if any(k > n for k, n in zip(case["kernel"], case["shape"])):
        for function in (fastconv.corr2d, fastconv.convolve2d):
            with pytest.raises(ValueError, match="kernel is larger"):
                function(X_in, K)
        return
    dtype = np.result_type(_computed_dtype(case["x_dtype"]), _computed_dtype(case["k_dtype"]))
    if case["layout"] == "list" and case["x_dtype"].kind == "f":
        dtype = np.result_type(np.float64, _computed_dtype(case["k_dtype"]))  # lists: float64
    (corr,) = same_with_1_and_2_threads(lambda: fastconv.corr2d(X_in, K))
    (conv,) = same_with_1_and_2_threads(lambda: fastconv.convolve2d(X_in, K))
    assert corr.dtype == dtype and conv.dtype == dtype
    X64, K64 = X.astype(np.float64), K.astype(np.float64)
    if dtype == np.float32:  # the inputs as the kernels saw them
        X64, K64 = X.astype(np.float32).astype(np.float64), K.astype(np.float32).astype(np.float64)
    assert_matches(corr, corr2d_ref(X64, K64), dtype)
    assert_matches(conv, corr2d_ref(X64, K64[::-1, ::-1]), dtype)
    signal = pytest.importorskip("scipy.signal")
    assert_matches(conv, signal.convolve2d(X64, K64, mode="valid"), dtype)
    assert_matches(corr, signal.correlate2d(X64, K64, mode="valid"), dtype)
    if torch is not None:
        theirs = F.conv2d(_torch_tensor(X64[None, None]), _torch_tensor(K64[None, None]))
        assert_matches(corr, theirs.numpy()[0, 0], dtype)


# ============================================================================ pad2d
@st.composite
def pad_cases(draw):
    mode = draw(st.sampled_from(PAD_MODES))
    canonical = PAD_ALIASES.get(mode, mode)
    edge = draw(st.sampled_from(EDGES[:4] + ["empty batch"]))
    batch = 0 if edge == "empty batch" else draw(st.integers(1, 2))
    h, w = (1, 1) if edge == "1x1 image" else (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    limit = {"reflect": lambda n: n - 1, "circular": lambda n: n}.get(canonical, lambda n: 6)
    pads = (draw(st.integers(0, limit(h))), draw(st.integers(0, limit(h))),
            draw(st.integers(0, limit(w))), draw(st.integers(0, limit(w))))
    form = draw(st.sampled_from(["int", "pair", "nested"]))
    if form == "int":
        pads = (min(pads),) * 4
        padding = pads[0]
    elif form == "pair":
        pads = (pads[0], pads[0], pads[2], pads[2])
        padding = (pads[0], pads[2])
    else:
        padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    value = 0.0
    if canonical == "constant":
        value = draw(st.sampled_from([0.0, -1.25, 3.0, 0.1, np.inf, np.nan]))
    return dict(mode=mode, canonical=canonical, shape=(batch, draw(st.integers(1, 3)), h, w),
                pads=pads, padding=padding, value=value, dtype=draw(st.sampled_from(FLOATS)),
                layout=draw(st.sampled_from(LAYOUTS)), specials=draw(st.integers(0, 3)) == 0,
                unbatched=batch == 1 and draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


@_examples(3)
@given(pad_cases())
def test_pad2d_and_backward_match_reference(case):
    _record(case, None)
    rng = np.random.default_rng(case["seed"])
    dtype, mode, pads = case["dtype"], case["mode"], case["pads"]
    x = sprinkle(rng.standard_normal(case["shape"]).astype(dtype), rng, case["specials"])
    x_in = in_layout(x, case["layout"])
    if case["unbatched"]:
        x_in = x_in[0]
    (padded,) = same_with_1_and_2_threads(
        lambda: fastconv.pad2d(x_in, case["padding"], mode, value=case["value"]))
    padded4 = padded[None] if case["unbatched"] else padded
    expected = pad2d_reference(x, pads, case["canonical"], case["value"]).astype(dtype)
    bitwise_equal(padded4, expected, "pad2d")

    grad = sprinkle(rng.standard_normal(padded4.shape).astype(dtype), rng, case["specials"])
    grad_in = in_layout(grad, case["layout"])
    if case["unbatched"]:
        grad_in = grad_in[0]
    (grad_x,) = same_with_1_and_2_threads(
        lambda: fastconv.pad2d_backward(grad_in, case["padding"], mode))
    grad_x4 = grad_x[None] if case["unbatched"] else grad_x
    assert grad_x4.shape == x.shape and grad_x.dtype == dtype
    with np.errstate(invalid="ignore"):
        if case["specials"]:  # the Jacobian reference would multiply NaN by its zeros
            conv_mode = {"constant": "zeros"}.get(case["canonical"], case["canonical"])
            expected_grad = pad_backward_ref(grad.astype(np.float64), x.shape[2:], pads,
                                             conv_mode)
        else:
            expected_grad = pad2d_backward_reference(grad, pads, case["canonical"])
    assert_matches(grad_x4, expected_grad, dtype)
    if case["specials"]:
        return
    # adjoint: <pad(x), g> = <x, pad_backward(g)>, with the fill value 0
    zero_padded = fastconv.pad2d(x, case["padding"], mode)
    scale = float(np.dot(np.abs(zero_padded).ravel().astype(np.float64), np.abs(grad).ravel()))
    assert adjoint_gap(zero_padded, grad, x, grad_x4, scale) <= ADJOINT_RTOL[dtype]
    if torch is not None and x.shape[0] > 0:
        top, bottom, left, right = pads
        tx = _torch_tensor(x.astype(np.float64), True)
        kwargs = {"value": float(case["value"])} if case["canonical"] == "constant" else {}
        ty = F.pad(tx, (left, right, top, bottom), mode=case["canonical"], **kwargs)
        ty.backward(_torch_tensor(grad.astype(np.float64)))
        assert_matches(padded4, ty.detach().numpy(), dtype)
        assert_matches(grad_x4, tx.grad.numpy(), dtype)


# ============================================================================ pooling
@st.composite
def pool_cases(draw, kind="max"):
    edge = draw(st.sampled_from(EDGES))
    batch = 0 if edge == "empty batch" else draw(st.integers(1, 2))
    h, w = (1, 1) if edge == "1x1 image" else (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    if edge == "kernel = input":
        kernel = (h, w)
    else:
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (1, 1)
    if kind == "max" and edge != "kernel = input":
        dilation = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2, 3])))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    limits = [k // 2 for k in kernel]  # PyTorch's limit: half the kernel, dilation aside
    form = draw(st.sampled_from(["int", "pair", "nested"]))
    if form == "int":
        pad = draw(st.integers(0, min(limits)))
        padding, pads = pad, (pad,) * 4
    elif form == "pair":
        ph, pw = draw(st.integers(0, limits[0])), draw(st.integers(0, limits[1]))
        padding, pads = (ph, pw), (ph, ph, pw, pw)
    else:
        pads = (draw(st.integers(0, limits[0])), draw(st.integers(0, limits[0])),
                draw(st.integers(0, limits[1])), draw(st.integers(0, limits[1])))
        padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    error = None
    for size, before, after, k, d in ((h, pads[0], pads[1], kernel[0], dilation[0]),
                                      (w, pads[2], pads[3], kernel[1], dilation[1])):
        if size + before + after < d * (k - 1) + 1:
            error = "kernel is larger"
    if error and draw(st.integers(0, 3)):  # keep most examples valid: shrink the window
        kernel, dilation = (min(kernel[0], h), min(kernel[1], w)), (1, 1)
        limits = [k // 2 for k in kernel]
        pads = (min(pads[0], limits[0]), min(pads[1], limits[0]),
                min(pads[2], limits[1]), min(pads[3], limits[1]))
        padding = ((pads[0], pads[1]), (pads[2], pads[3]))
        error = None
    divisor = None
    if kind == "avg":
        divisor = draw(st.sampled_from([None, None, None, 1, 3, -2, 7]))
    return dict(shape=(batch, draw(st.integers(1, 3)), h, w), kernel=kernel, stride=stride,
                padding=padding, pads=pads, dilation=dilation, ceil_mode=draw(st.booleans()),
                count_include_pad=draw(st.booleans()), divisor=divisor,
                dtype=draw(st.sampled_from(FLOATS)), layout=draw(st.sampled_from(LAYOUTS)),
                specials=draw(st.integers(0, 3)) == 0,
                unbatched=batch == 1 and draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)), edge=edge), error


def _pool_input(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(case["dtype"])
    if case["dtype"] == np.float32 and case["seed"] % 3 == 0:  # ties: small integers
        x = rng.integers(-2, 3, case["shape"]).astype(case["dtype"])
    x = sprinkle(x, rng, case["specials"])
    x_in = in_layout(x, case["layout"])
    return rng, x, (x_in[0] if case["unbatched"] else x_in)


def _torch_takes(case):
    """PyTorch pools with symmetric padding only (and we skip its empty batches)."""
    top, bottom, left, right = case["pads"]
    return top == bottom and left == right and case["shape"][0] > 0


@_examples(4)
@given(pool_cases("max"))
def test_max_pool2d_and_backward_match_reference(problem):
    case, error = problem
    _record(case, error)
    rng, x, x_in = _pool_input(case)
    kwargs = dict(kernel_size=case["kernel"], stride=case["stride"], padding=case["padding"],
                  dilation=case["dilation"], ceil_mode=case["ceil_mode"])
    if error is not None:
        with pytest.raises(ValueError, match=error):
            fastconv.max_pool2d(x_in, **kwargs)
        return
    stride = case["stride"] or case["kernel"]
    values, indices = same_with_1_and_2_threads(
        lambda: fastconv.max_pool2d(x_in, **kwargs, return_indices=True))
    (values_only,) = same_with_1_and_2_threads(lambda: fastconv.max_pool2d(x_in, **kwargs))
    bitwise_equal(values, values_only, "return_indices changed the values")
    if case["unbatched"]:
        values, indices = values[None], indices[None]
    expected, expected_indices = max_pool2d_reference(x, case["kernel"], stride, case["pads"],
                                                      case["dilation"], case["ceil_mode"])
    assert values.dtype == case["dtype"] and indices.dtype == np.int64
    np.testing.assert_array_equal(values, expected.astype(case["dtype"]))
    np.testing.assert_array_equal(indices, expected_indices)

    grad = sprinkle(rng.standard_normal(values.shape).astype(case["dtype"]), rng,
                    case["specials"])
    grad_in = grad[0] if case["unbatched"] else grad
    indices_in = indices[0] if case["unbatched"] else indices
    input_shape = x_in.shape
    plane = x.shape[2] * x.shape[3]
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        # a window with no tap inside the input reports PyTorch's out-of-plane index
        with pytest.raises(ValueError, match="indices"):
            fastconv.max_pool2d_backward(grad_in, indices_in, input_shape)
        return
    (grad_x,) = same_with_1_and_2_threads(
        lambda: fastconv.max_pool2d_backward(grad_in, indices_in, input_shape))
    grad_x4 = grad_x[None] if case["unbatched"] else grad_x
    with np.errstate(invalid="ignore"):
        expected_grad = max_pool2d_backward_reference(grad, indices, x.shape)
    assert_matches(grad_x4, expected_grad, case["dtype"])
    if not case["specials"] and np.isfinite(values).all():
        # along its indices max pooling is linear: an adjoint pair (a -inf value comes from a
        # window with no tap in the input, whose index PyTorch points somewhere else)
        scale = float(np.dot(np.abs(values).ravel().astype(np.float64), np.abs(grad).ravel()))
        assert adjoint_gap(values, grad, x, grad_x4, scale) <= ADJOINT_RTOL[case["dtype"]]
    if torch is not None and _torch_takes(case):
        tx = _torch_tensor(x, True)
        ty, tidx = F.max_pool2d(tx, case["kernel"], stride, (case["pads"][0], case["pads"][2]),
                                case["dilation"], case["ceil_mode"], return_indices=True)
        np.testing.assert_array_equal(values, ty.detach().numpy())
        np.testing.assert_array_equal(indices, tidx.numpy())
        ty.backward(_torch_tensor(grad))
        assert_matches(grad_x4, tx.grad.numpy(), case["dtype"])


@_examples(4)
@given(pool_cases("avg"))
def test_avg_pool2d_and_backward_match_reference(problem):
    case, error = problem
    _record(case, error)
    rng, x, x_in = _pool_input(case)
    kwargs = dict(kernel_size=case["kernel"], stride=case["stride"], padding=case["padding"],
                  ceil_mode=case["ceil_mode"], count_include_pad=case["count_include_pad"],
                  divisor_override=case["divisor"])
    if error is not None:
        with pytest.raises(ValueError, match=error):
            fastconv.avg_pool2d(x_in, **kwargs)
        with pytest.raises(ValueError, match=error):
            fastconv.avg_pool2d_backward(np.zeros(x_in.shape[:-2] + (1, 1)), x_in.shape,
                                         **kwargs)
        return
    stride = case["stride"] or case["kernel"]
    dtype = case["dtype"]
    (values,) = same_with_1_and_2_threads(lambda: fastconv.avg_pool2d(x_in, **kwargs))
    values4 = values[None] if case["unbatched"] else values
    reference_kwargs = dict(count_include_pad=case["count_include_pad"],
                            divisor_override=case["divisor"])
    with np.errstate(invalid="ignore"):
        expected = avg_pool2d_reference(x, case["kernel"], stride, case["pads"],
                                        case["ceil_mode"], **reference_kwargs)
    assert values.dtype == dtype
    assert_matches(values4, expected, dtype)

    grad = sprinkle(rng.standard_normal(values4.shape).astype(dtype), rng, case["specials"])
    grad_in = in_layout(grad, case["layout"])
    grad_in = grad_in[0] if case["unbatched"] else grad_in
    (grad_x,) = same_with_1_and_2_threads(
        lambda: fastconv.avg_pool2d_backward(grad_in, x_in.shape, **kwargs))
    grad_x4 = grad_x[None] if case["unbatched"] else grad_x
    with np.errstate(invalid="ignore"):
        expected_grad = avg_pool2d_backward_reference(grad, x.shape, case["kernel"], stride,
                                                      case["pads"], **reference_kwargs)
    assert grad_x.dtype == dtype
    assert_matches(grad_x4, expected_grad, dtype, grad=True)
    if not case["specials"]:
        abs_values = fastconv.avg_pool2d(np.abs(x), **dict(kwargs, divisor_override=(
            None if case["divisor"] is None else abs(case["divisor"]))))
        scale = float(np.dot(np.abs(abs_values).ravel().astype(np.float64),
                             np.abs(grad).ravel()))
        assert adjoint_gap(values4, grad, x, grad_x4, scale) <= ADJOINT_RTOL[dtype]
    if torch is not None and _torch_takes(case):
        tx = _torch_tensor(x, True)
        ty = F.avg_pool2d(tx, case["kernel"], stride, (case["pads"][0], case["pads"][2]),
                          case["ceil_mode"], case["count_include_pad"], case["divisor"])
        assert_matches(values4, ty.detach().numpy(), dtype)
        ty.backward(_torch_tensor(grad))
        assert_matches(grad_x4, tx.grad.numpy(), dtype, grad=True)


@st.composite
def any_pool_arguments(draw):
    """Pooling arguments with no regard for validity (symmetric padding, as PyTorch takes)."""
    return dict(shape=(1, 1, draw(st.integers(1, 6)), draw(st.integers(1, 6))),
                kernel=(draw(st.integers(1, 7)), draw(st.integers(1, 7))),
                stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                padding=(draw(st.integers(0, 4)), draw(st.integers(0, 4))),
                dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()))


@_examples(3)
@given(any_pool_arguments())
def test_pooling_accepts_and_refuses_the_same_arguments_as_torch(case):
    if torch is None:
        pytest.skip("torch is not installed")
    x = np.arange(float(np.prod(case["shape"]))).reshape(case["shape"])
    tx = torch.from_numpy(x)
    calls = {
        "max": (lambda: fastconv.max_pool2d(x, case["kernel"], case["stride"], case["padding"],
                                            case["dilation"], case["ceil_mode"]),
                lambda: F.max_pool2d(tx, case["kernel"], case["stride"], case["padding"],
                                     case["dilation"], case["ceil_mode"])),
        "avg": (lambda: fastconv.avg_pool2d(x, case["kernel"], case["stride"], case["padding"],
                                            case["ceil_mode"], case["count_include_pad"]),
                lambda: F.avg_pool2d(tx, case["kernel"], case["stride"], case["padding"],
                                     case["ceil_mode"], case["count_include_pad"])),
    }
    for name, (ours, theirs) in calls.items():
        dilation = case["dilation"] if name == "max" else (1, 1)
        effective = [(k - 1) * d + 1 for k, d in zip(case["kernel"], dilation)]
        if any(n + 2 * p < e for n, p, e in zip(case["shape"][2:], case["padding"], effective)):
            # SPEC.md: a kernel larger than the padded input is a ValueError. (PyTorch's C
            # division truncates toward zero, so with stride > 1 it still makes one window
            # when the kernel is one longer than the padded input.)
            with pytest.raises(ValueError):
                ours()
            continue
        try:
            expected = theirs().numpy()
        except RuntimeError:
            with pytest.raises(ValueError):
                ours()
            continue
        result = ours()
        if name == "max":
            np.testing.assert_array_equal(result, expected)
        else:
            np.testing.assert_allclose(result, expected, rtol=1e-12)


# ============================================================================ output sizes
@_examples(2)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(1, 5), st.integers(0, 3),
       st.integers(0, 3), st.integers(1, 3), st.booleans())
def test_output_sizes_follow_the_spec_formula(size, kernel, stride, before, after, dilation,
                                              ceil_mode):
    """One axis at a time, every op agrees with SPEC.md's formula (and PyTorch's ceil rule)."""
    effective = dilation * (kernel - 1) + 1
    x = np.zeros((1, 1, size, 2))
    padding = ((before, after), (0, 0))
    if size + before + after < effective:
        with pytest.raises(ValueError, match="along height"):
            fastconv.conv2d(x, np.zeros((1, 1, kernel, 1)), stride=(stride, 1),
                            padding=padding, dilation=(dilation, 1))
        return
    expected = math.floor((size + before + after - effective) / stride) + 1
    y = fastconv.conv2d(x, np.zeros((1, 1, kernel, 1)), stride=(stride, 1), padding=padding,
                        dilation=(dilation, 1))
    assert y.shape[2] == expected
    if max(before, after) <= kernel // 2:  # PyTorch's pooling limit
        pooled = fastconv.max_pool2d(x, (kernel, 1), (stride, 1), padding, (dilation, 1),
                                     ceil_mode)
        assert pooled.shape[2] == pool_output_size(size, kernel, stride, before, after,
                                                   dilation, ceil_mode)
        if not ceil_mode:
            assert pooled.shape[2] == expected
