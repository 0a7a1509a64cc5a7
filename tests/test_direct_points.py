"""1x1 kernels over compact planes of their input (src/conv/stage.pxi, stage_points): the
direct forward pass (src/conv/direct.pxi, pointwise_rows: the input in place where pointwise,
else gathered, read as one row of pixels) and the weight gradient of a strided or padded 1x1
as a pointwise one (fastconv._paths.PointsWeight). Against the NumPy loop reference, BLAS and
torch, the same bits on 1, 2 and 3 threads."""

import numpy as np
import pytest
from helpers import assert_close, assert_grad_close
from reference.conv import conv2d_backward_ref, conv2d_ref

import fastconv
from fastconv import _conv, _paths
from fastconv._plan import use_paths

needs_direct = pytest.mark.skipif(not _conv.DIRECT,
                                  reason="no direct kernels on this CPU (AVX-512)")

# (N, C_in, H, W, C_out, stride, padding, groups)
CASES = [
    (3, 8, 13, 11, 32, 2, 0, 1),          # odd sizes, the last column and row read
    (2, 5, 14, 17, 16, 3, 0, 1),          # stride 3, 16 channels (V = 1)
    (2, 6, 9, 10, 64, (2, 3), 1, 2),      # mixed strides, padding, two groups
    (2, 4, 7, 9, 48, 1, (1, 2), 1),       # stride 1 with padding (not pointwise)
    (3, 16, 12, 12, 32, 1, 0, 1),         # pointwise: x read in place
    (2, 8, 3, 3, 32, 2, 2, 1),            # more padding than input: rows of zeros only
]


def _case(rng, case):
    n, cin, h, w, cout, stride, padding, groups = case
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    weight = rng.standard_normal((cout, cin // groups, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    return x, weight, bias, dict(stride=stride, padding=padding, groups=groups)


def _pads(padding):
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph, pw, pw)


def _stride(stride):
    return (stride, stride) if isinstance(stride, int) else stride


def _direct(x, weight, bias, kwargs):
    """The direct forward pass on 1 thread, after checking 2 and 3 give the same bits."""
    results = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads), use_paths(forward="direct"):
            conv, _ = fastconv.conv._prepare(x, weight, None, kwargs["stride"],
                                             kwargs["padding"], 1, kwargs["groups"], "zeros")
            assert conv.plan.forward.name == "direct"
            results.append(fastconv.conv2d(x, weight, bias, **kwargs))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    return results[0]


@needs_direct
@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_matches_reference_and_blas(rng, case):
    x, weight, bias, kwargs = _case(rng, case)
    ours = _direct(x, weight, bias, kwargs)
    wanted = conv2d_ref(x, weight, bias, stride=_stride(kwargs["stride"]),
                        pads=_pads(kwargs["padding"]), groups=kwargs["groups"])
    assert_close(ours, wanted)
    with use_paths(forward="blas"):
        assert_close(ours, fastconv.conv2d(x, weight, bias, **kwargs))


@needs_direct
@pytest.mark.parametrize("case", CASES[:3], ids=["c0", "c1", "c2"])
def test_matches_torch(rng, torch, case):
    x, weight, bias, kwargs = _case(rng, case)
    theirs = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                        torch.from_numpy(bias), **kwargs).numpy()
    assert_close(_direct(x, weight, bias, kwargs), theirs)


@needs_direct
@pytest.mark.parametrize("special", [np.inf, np.nan])
def test_non_finite_weight_meets_the_padding(rng, special):
    """An inf or NaN weight times the padded zeros is NaN, as in the loop reference: the
    gathered planes hold the padding's zeros and every tap is kept."""
    x, weight, bias, kwargs = _case(rng, (2, 4, 6, 7, 16, 2, 1, 1))
    weight[3, 2, 0, 0] = special
    ours = _direct(x, weight, bias, kwargs)
    wanted = conv2d_ref(x, weight, bias, stride=(2, 2), pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(wanted))
    finite = np.isfinite(wanted)
    assert_close(ours[finite], wanted[finite])


def _grad_weight(grad_output, x, weight, kwargs, paths):
    """The weight gradient on ``paths`` (use_paths' grad_weight) on 1 thread, after checking 2
    and 3 give the same bits."""
    results = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads), use_paths(grad_weight=paths):
            results.append(fastconv.conv2d_backward(grad_output, x, weight, **kwargs,
                                                    need=("weight",))[1])
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    return results[0]


def _plan(x, weight, kwargs):
    conv, _ = fastconv.conv._prepare(x, weight, None, kwargs["stride"], kwargs["padding"], 1,
                                     kwargs["groups"], "zeros")
    return conv.plan


# the sub-plan's paths: its own choice, then each forced (those that apply)
@pytest.mark.parametrize("inner", [(), ("direct",), ("packed",), ("blas",)])
@pytest.mark.parametrize("case", [c for c in CASES if c[5] != 1 or c[6] != 0],
                         ids=["c0", "c1", "c2", "c3", "c5"])
def test_points_weight_matches_reference_and_blas(rng, case, inner):
    x, weight, bias, kwargs = _case(rng, case)
    plan = _plan(x, weight, kwargs)
    assert plan.points is not None and plan.points.geometry.pointwise
    grad_output = rng.standard_normal((x.shape[0], weight.shape[0], plan.out_h, plan.out_w)
                                      ).astype(np.float32)
    ours = _grad_weight(grad_output, x, weight, kwargs, ("points",) + inner)
    wanted = conv2d_backward_ref(grad_output, x, weight, stride=_stride(kwargs["stride"]),
                                 pads=_pads(kwargs["padding"]), groups=kwargs["groups"])[1]
    assert_grad_close(ours, wanted)
    assert_grad_close(ours, _grad_weight(grad_output, x, weight, kwargs, "blas"))


def test_points_weight_matches_torch(rng, torch):
    x, weight, _, kwargs = _case(rng, (3, 32, 15, 13, 64, 2, 0, 1))
    grad_output = rng.standard_normal((3, 64, 8, 7)).astype(np.float32)
    theirs = torch.nn.grad.conv2d_weight(torch.from_numpy(x), weight.shape,
                                         torch.from_numpy(grad_output), stride=2).numpy()
    assert_grad_close(_grad_weight(grad_output, x, weight, kwargs, "points"), theirs)


def test_points_weight_taken_by_strided_shortcuts_only(rng):
    """A strided 1x1 (float32) takes it; a padded stride-1 one may (override) but does not pay;
    pointwise, larger kernels and float64 have no compact planes."""
    def plan(case, dtype=np.float32, kernel=(1, 1)):
        n, cin, h, w, cout, stride, padding, groups = case
        x = np.zeros((n, cin, h, w), dtype)
        weight = np.zeros((cout, cin // groups) + kernel, dtype)
        return _plan(x, weight, dict(stride=stride, padding=padding, groups=groups))
    shortcut = (2, 32, 28, 28, 64, 2, 0, 1)
    assert plan(shortcut).grad_weight.name == "points"
    assert plan((2, 4, 7, 9, 48, 1, 1, 1)).grad_weight.name != "points"
    assert plan((2, 4, 7, 9, 48, 1, 1, 1)).points is not None
    assert plan((2, 32, 28, 28, 64, 1, 0, 1)).points is None
    assert plan(shortcut, kernel=(3, 3)).points is None
    assert plan(shortcut, np.float64).points is None
    assert _paths.names("grad_weight").index("points") < _paths.names("grad_weight").index(
        "direct")


GATHER_SCRIPT = """
import sys
import numpy as np
import fastconv
from fastconv import _conv
rng = np.random.default_rng(3)
arrays = []
for shape, stride, padding in [((2, 6, 13, 37), (2, 2), (0, 0)), ((2, 4, 9, 40), (3, 2), (1, 2)),
                               ((1, 3, 7, 50), (2, 3), (0, 1))]:
    x = rng.standard_normal(shape).astype(np.float32)
    weight = np.zeros((16, shape[1], 1, 1), np.float32)
    conv, _ = fastconv.conv._prepare(x, weight, None, stride, padding, 1, 1, "zeros")
    g = conv.plan.geometry
    out = np.full((shape[0], shape[1], g.out_h, g.out_w), np.nan, np.float32)
    _conv.gather_points(x, out, g, 1, 2)
    arrays.append(out)
print(_conv.STAGE_COPY)
np.savez(sys.argv[1], *arrays)
"""


def test_gathered_planes_at_every_isa(tmp_path):
    """gather_points (src/_stage.h fc_gather_rows: the plain loop, the AVX-512 permutes at
    stride 2 and the masked gather at stride 3; rows of 13-25 columns, so whole vectors and
    tails) writes every element, the same bits at every FASTCONV_ISA level, equal to NumPy's
    strided slice of the zero-padded input."""
    from helpers import outputs_at_isas

    results = outputs_at_isas(GATHER_SCRIPT, str(tmp_path), ("generic", "avx512"))
    assert results["generic"][0] == "generic"
    assert results["generic"][1] == results["avx512"][1]
    rng = np.random.default_rng(3)
    for (shape, stride, padding), got in zip(
            [((2, 6, 13, 37), (2, 2), (0, 0)), ((2, 4, 9, 40), (3, 2), (1, 2)),
             ((1, 3, 7, 50), (2, 3), (0, 1))], results["generic"][1]):
        x = rng.standard_normal(shape).astype(np.float32)
        padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
        wanted = np.ascontiguousarray(padded[:, :, ::stride[0], ::stride[1]])
        assert got == wanted.tobytes()
