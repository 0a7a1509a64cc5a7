"""The input gradient of a strided convolution by phases (fastconv._paths.StridedPhases):
each phase of grad_input a stride-1 forward pass of grad_output with a sub-kernel of the
transposed weights, interleaved into grad_input (src/conv/interleave.pxi)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _paths
from fastconv import conv as conv_module
from fastconv._plan import use_paths
from helpers import assert_grad_close
from reference.conv import conv2d_backward_ref


def _grad_input(grad_output, x, weight, stride, padding, dilation=1, groups=1, **paths):
    with use_paths(**paths):
        return fastconv.conv2d_backward(grad_output, x, weight, stride, padding, dilation,
                                        groups=groups, need=("input",))[0]


def _pairs(padding):
    """((top, bottom), (left, right)) of (p_h, p_w) or of the pairs themselves."""
    return tuple(p if isinstance(p, tuple) else (p, p) for p in padding)


def _out_size(size, kernel, stride, pads, dil):
    return (size + sum(pads) - dil * (kernel - 1) - 1) // stride + 1


def _case(rng, dtype, batch, in_channels, out_channels, size, kernel, stride, padding,
          dilation=(1, 1), groups=1):
    x = rng.standard_normal((batch, in_channels) + size).astype(dtype)
    weight = rng.standard_normal((out_channels, in_channels // groups) + kernel).astype(dtype)
    out = tuple(_out_size(*args)
                for args in zip(size, kernel, stride, _pairs(padding), dilation))
    grad_output = rng.standard_normal((batch, out_channels) + out).astype(dtype)
    return grad_output, x, weight


def _reference(grad_output, x, weight, stride, padding, dilation=(1, 1), groups=1):
    (top, bottom), (left, right) = _pairs(padding)
    return conv2d_backward_ref(grad_output, x, weight, stride=stride,
                               pads=(top, bottom, left, right), dilation=dilation,
                               groups=groups)[0]


def _first(x_shape, weight_shape, stride, padding, dilation=1, groups=1, dtype=np.float32):
    conv, _ = conv_module._prepare(np.zeros(x_shape, dtype), np.zeros(weight_shape, dtype),
                                   None, stride, padding, dilation, groups, "zeros")
    return conv.plan.grad_input[0].name


def test_the_resnet_downsampling_layers_take_it():
    """The small ResNet's stride-2 3x3 layers (batch 32) take the path where their phases
    run on the direct kernels (float32 on AVX-512); float64, a small batch, tiny phases or
    stride 1 keep the other paths (StridedPhases.pays)."""
    taken = "strided-phases" if _paths._DIRECT else "packed"
    assert _first((32, 32, 28, 28), (64, 32, 3, 3), 2, 1) == taken
    assert _first((32, 64, 14, 14), (128, 64, 3, 3), 2, 1) == taken
    assert _first((32, 64, 14, 14), (128, 64, 3, 3), 2, 1, dtype=np.float64) != "strided-phases"
    assert _first((4, 64, 14, 14), (128, 64, 3, 3), 2, 1) != "strided-phases"
    assert _first((32, 128, 7, 7), (256, 128, 3, 3), 2, 1) != "strided-phases"
    assert _first((32, 64, 14, 14), (64, 64, 3, 3), 1, 1) != "strided-phases"


def test_padding_beyond_the_reach_does_not_apply():
    """A phase whose first tap lies past the padding would need negative padding."""
    x, weight = np.zeros((2, 3, 9, 9)), np.zeros((4, 3, 1, 1))
    with use_paths(grad_input="strided-phases"):
        padded, _ = conv_module._prepare(x, weight, None, 2, 2, 1, 1, "zeros")
        reached, _ = conv_module._prepare(x, weight, None, 2, 0, 1, 1, "zeros")
    assert padded.plan.phases is None and padded.plan.grad_input[0].name != "strided-phases"
    assert reached.plan.grad_input[0].name == "strided-phases"


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 2), in_g=st.integers(1, 4), out_g=st.integers(1, 4),
       groups=st.sampled_from([1, 2]), height=st.integers(1, 12), width=st.integers(1, 12),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 4), st.integers(1, 4)).filter(lambda s: s != (1, 1)),
       padding=st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                         st.tuples(st.integers(0, 3), st.integers(0, 3))),
       dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_matches_reference_over_strided_geometries(batch, in_g, out_g, groups, height, width,
                                                   kernel, stride, padding, dilation, dtype):
    """Any stride, kernel, padding (uneven too) and dilation (empty phases, pixels nothing
    reaches, the far rows past the last window), both dtypes, groups: equal to the loop
    reference."""
    size = (height, width)
    out = [_out_size(*args) for args in zip(size, kernel, stride, padding, dilation)]
    if min(out) < 1:
        return
    rng = np.random.default_rng(height * 1000 + width * 10 + kernel[0])
    grad_output, x, weight = _case(rng, dtype, batch, in_g * groups, out_g * groups, size,
                                   kernel, stride, padding, dilation, groups)
    conv, _ = conv_module._prepare(x, weight, None, stride, padding, dilation, groups, "zeros")
    ours = _grad_input(grad_output, x, weight, stride, padding, dilation, groups,
                       grad_input="strided-phases")
    wanted = _reference(grad_output, x, weight, stride, padding, dilation, groups)
    assert_grad_close(ours, wanted)
    if conv.plan.phases is None:  # padding beyond the kernel's reach: another path ran
        return
    with use_paths(grad_input="strided-phases"):
        conv, _ = conv_module._prepare(x, weight, None, stride, padding, dilation, groups,
                                       "zeros")
    assert conv.plan.grad_input[0].name == "strided-phases"


@pytest.mark.parametrize("forward", ["direct", "packed", "blas"])
def test_resnet_shape_every_forward_path(rng, forward):
    """A ResNet-like 3x3 stride-2 layer with the phases' forward passes on each dense path
    (the direct kernels where float32 on AVX-512 takes them), equal to the reference."""
    grad_output, x, weight = _case(rng, np.float32, 2, 16, 32, (12, 11), (3, 3), (2, 2),
                                   (1, 1))
    ours = _grad_input(grad_output, x, weight, 2, 1, grad_input="strided-phases",
                       forward=forward)
    assert_grad_close(ours, _reference(grad_output, x, weight, (2, 2), (1, 1)))


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_non_finite_weights_take_the_scatter(rng, special):
    """A padded zero times an inf/NaN weight would be NaN where PyTorch has no product: such
    weights take the next path, whose NaNs are the reference's."""
    grad_output, x, weight = _case(rng, np.float64, 2, 4, 6, (9, 9), (3, 3), (2, 2), (1, 1))
    weight[3, 2, 0, 1] = special
    ours = _grad_input(grad_output, x, weight, 2, 1, grad_input="strided-phases")
    wanted = _reference(grad_output, x, weight, (2, 2), (1, 1))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(wanted))
    finite = np.isfinite(wanted)
    np.testing.assert_allclose(ours[finite], wanted[finite], rtol=1e-10, atol=1e-12)


def test_same_padding_stride_two(rng):
    """'same' at stride 2: the odd padding row and column at the bottom and right."""
    grad_output, x, weight = _case(rng, np.float64, 2, 5, 6, (10, 9), (3, 4), (2, 2),
                                   ((0, 1), (1, 2)))
    with use_paths(grad_input="strided-phases"):
        conv, _ = conv_module._prepare(x, weight, None, 2, "same", 1, 1, "zeros")
        ours = fastconv.conv2d_backward(grad_output, x, weight, 2, "same", need=("input",))[0]
    assert conv.plan.pads == (0, 1, 1, 2) and conv.plan.grad_input[0].name == "strided-phases"
    assert_grad_close(ours, _reference(grad_output, x, weight, (2, 2), ((0, 1), (1, 2))))


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
def test_padding_modes(rng, mode):
    """The other padding modes pad explicitly: the phases of the padded input's gradient,
    folded back (conv2d_backward), equal to the reference's."""
    grad_output, x, weight = _case(rng, np.float64, 2, 4, 6, (11, 10), (3, 3), (2, 2), (1, 1))
    with use_paths(grad_input="strided-phases"):
        conv, _ = conv_module._prepare(x, weight, None, 2, 1, 1, 1, mode)
        ours = fastconv.conv2d_backward(grad_output, x, weight, 2, 1, padding_mode=mode,
                                        need=("input",))[0]
    assert conv.plan.grad_input[0].name == "strided-phases"
    wanted = conv2d_backward_ref(grad_output, x, weight, stride=(2, 2), pads=(1, 1, 1, 1),
                                 mode=mode)[0]
    assert_grad_close(ours, wanted)


def test_matches_torch(rng, torch, dtype):
    grad_output, x, weight = _case(rng, dtype, 3, 32, 64, (14, 14), (3, 3), (2, 2), (1, 1))
    ours = _grad_input(grad_output, x, weight, 2, 1)
    theirs = torch.nn.grad.conv2d_input(x.shape, torch.from_numpy(weight),
                                        torch.from_numpy(grad_output), stride=2,
                                        padding=1).numpy()
    assert_grad_close(ours, theirs)
    # an odd size: the last row and column of the input get nothing from a 2x2 kernel
    grad_output, x, weight = _case(rng, dtype, 2, 8, 16, (9, 9), (2, 2), (2, 2), (0, 0))
    ours = _grad_input(grad_output, x, weight, 2, 0, grad_input="strided-phases")
    theirs = torch.nn.grad.conv2d_input(x.shape, torch.from_numpy(weight),
                                        torch.from_numpy(grad_output), stride=2).numpy()
    assert_grad_close(ours, theirs)
    assert not ours[:, :, 8].any() and not ours[:, :, :, 8].any()


def test_results_do_not_depend_on_thread_count(dtype):
    rng = np.random.default_rng(7)
    grad_output, x, weight = _case(rng, dtype, 5, 32, 64, (15, 14), (3, 3), (2, 2), (1, 1))
    results = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            results.append(_grad_input(grad_output, x, weight, 2, 1,
                                       grad_input="strided-phases"))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_gradient_by_finite_differences(rng):
    """float64: the input gradient equals the central differences of the forward pass."""
    grad_output, x, weight = _case(rng, np.float64, 2, 3, 4, (7, 8), (3, 2), (2, 3), (1, 1),
                                   (1, 2))
    kwargs = dict(stride=(2, 3), padding=(1, 1), dilation=(1, 2))
    ours = _grad_input(grad_output, x, weight, kwargs["stride"], kwargs["padding"],
                       kwargs["dilation"], grad_input="strided-phases")
    eps = 1e-6
    flat = x.reshape(-1)
    for index in rng.choice(flat.size, size=25, replace=False):
        saved = flat[index]
        flat[index] = saved + eps
        plus = float((fastconv.conv2d(x, weight, **kwargs) * grad_output).sum())
        flat[index] = saved - eps
        minus = float((fastconv.conv2d(x, weight, **kwargs) * grad_output).sum())
        flat[index] = saved
        np.testing.assert_allclose(ours.reshape(-1)[index], (plus - minus) / (2 * eps),
                                   rtol=1e-6, atol=1e-7)


def test_listed_before_the_scatter_paths():
    names = _paths.names("grad_input")
    assert names.index("strided-phases") < names.index("packed") < names.index("blas")


@pytest.mark.skipif(not _paths._DIRECT, reason="the direct kernels need AVX-512")
@pytest.mark.parametrize("case", [((5, 32, 15, 14), (64, 32, 3, 3), 2, 1, 1),
                                  ((3, 32, 13, 12), (32, 16, 5, 5), 2, 2, 2),
                                  ((3, 16, 16, 17), (32, 16, 3, 3), 3, 0, 1)])
def test_one_call_matches_the_composition(case):
    """Every phase on the direct kernels: _conv.strided_phases_direct (one call, the
    sub-kernels packed from the weights) gives the bits of the phases' forward passes with
    _transposed_weight's copies, then interleaved, on 1, 2 and 3 threads (odd sizes, groups,
    a 5x5 kernel, stride 3 with its nine phases)."""
    x_shape, weight_shape, stride, padding, groups = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal(weight_shape).astype(np.float32)
    with use_paths(grad_input="strided-phases"):
        conv, _ = conv_module._prepare(x, weight, None, stride, padding, 1, groups, "zeros")
    plan = conv.plan
    assert _paths.StridedPhases._one_call_sizes(plan, 1)  # the one call runs
    grad_output = rng.standard_normal(
        (x_shape[0], weight_shape[0], plan.geometry.out_h, plan.geometry.out_w)
    ).astype(np.float32)
    size, offsets, runs = _paths.StridedPhases._layout(plan)
    phases = np.empty(size, np.float32)
    for phase, sub, part, shape in runs:
        sub.forward.forward(sub, grad_output,
                            _paths._transposed_weight(weight, groups, phase.taps_h,
                                                      phase.taps_w),
                            None, phases[part].reshape(shape))
    wanted = np.full(x_shape, np.nan, np.float32)
    _paths._interleave(plan, phases, offsets, wanted)
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            ours = np.full(x_shape, np.nan, np.float32)
            _paths.StridedPhases().grad_input(plan, grad_output, weight, ours)
        np.testing.assert_array_equal(ours, wanted)
