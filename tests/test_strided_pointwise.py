"""The input gradient of a strided 1x1 convolution (a ResNet's downsampling shortcut) as a
pointwise forward pass over grad_output (fastconv._paths.StridedPointwise)."""

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


def _grad_input(grad_output, x, weight, stride, groups, **paths):
    with use_paths(**paths):
        return fastconv.conv2d_backward(grad_output, x, weight, stride, groups=groups,
                                        need=("input",))[0]


def _case(rng, dtype, batch, in_channels, out_channels, height, width, stride, groups):
    x = rng.standard_normal((batch, in_channels, height, width)).astype(dtype)
    weight = rng.standard_normal((out_channels, in_channels // groups, 1, 1)).astype(dtype)
    out_h, out_w = -(-height // stride[0]), -(-width // stride[1])
    grad_output = rng.standard_normal((batch, out_channels, out_h, out_w)).astype(dtype)
    return grad_output, x, weight


def test_the_shortcuts_take_it():
    """The small ResNet's shortcuts (and any strided unpadded 1x1) take the path; a padded
    or stride-1 one does not."""
    def first(stride, padding):
        x = np.zeros((2, 32, 28, 28), np.float32)
        conv, _ = conv_module._prepare(x, np.zeros((64, 32, 1, 1), np.float32), None, stride,
                                       padding, 1, 1, "zeros")
        return conv.plan.grad_input[0].name
    assert first(2, 0) == first((1, 3), 0) == "strided-pointwise"
    assert first(1, 0) != "strided-pointwise" and first(2, 1) != "strided-pointwise"


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), in_g=st.integers(1, 5), out_g=st.integers(1, 5),
       groups=st.sampled_from([1, 2]), height=st.integers(1, 11), width=st.integers(1, 11),
       stride=st.tuples(st.integers(1, 4), st.integers(1, 4)).filter(lambda s: s != (1, 1)),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_matches_reference_and_blas(batch, in_g, out_g, groups, height, width, stride, dtype):
    rng = np.random.default_rng(height * 100 + width)
    grad_output, x, weight = _case(rng, dtype, batch, in_g * groups, out_g * groups, height,
                                   width, stride, groups)
    ours = _grad_input(grad_output, x, weight, stride, groups, grad_input="strided-pointwise")
    wanted = conv2d_backward_ref(grad_output, x, weight, stride=stride, groups=groups)[0]
    assert_grad_close(ours, wanted)
    scatter = _grad_input(grad_output, x, weight, stride, groups, grad_input="blas")
    assert_grad_close(ours, scatter)


@pytest.mark.parametrize("forward", ["direct", "blas"])
def test_sixteen_channels_and_both_forward_paths(rng, forward):
    """Channel counts the direct kernels take (float32 on AVX-512) and BLAS's, equal to
    the reference; the pixels no output reads are exact zeros."""
    grad_output, x, weight = _case(rng, np.float32, 3, 32, 48, 13, 12, (2, 2), 1)
    ours = _grad_input(grad_output, x, weight, (2, 2), 1, grad_input="strided-pointwise",
                       forward=forward)
    assert_grad_close(ours, conv2d_backward_ref(grad_output, x, weight, stride=(2, 2))[0])
    assert not ours[:, :, 1::2].any() and not ours[:, :, :, 1::2].any()


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_non_finite_weights_reach_only_the_pixels_they_touch(rng, special):
    """No sum over padding here: an inf or NaN weight spreads to the pixels it multiplies,
    as in the loop reference, and the others stay 0 (not NaN)."""
    grad_output, x, weight = _case(rng, np.float64, 2, 8, 8, 9, 9, (2, 2), 1)
    weight[3, 5, 0, 0] = special
    ours = _grad_input(grad_output, x, weight, (2, 2), 1)
    wanted = conv2d_backward_ref(grad_output, x, weight, stride=(2, 2))[0]
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(wanted))
    finite = np.isfinite(wanted)
    np.testing.assert_allclose(ours[finite], wanted[finite], rtol=1e-10, atol=1e-12)
    assert not ours[:, :, 1::2].any()


def test_matches_torch(rng, torch, dtype):
    grad_output, x, weight = _case(rng, dtype, 4, 32, 64, 14, 14, (2, 2), 1)
    ours = _grad_input(grad_output, x, weight, (2, 2), 1)
    theirs = torch.nn.grad.conv2d_input(x.shape, torch.from_numpy(weight),
                                        torch.from_numpy(grad_output), stride=2).numpy()
    assert_grad_close(ours, theirs)


def test_results_do_not_depend_on_thread_count(dtype):
    rng = np.random.default_rng(5)
    grad_output, x, weight = _case(rng, dtype, 5, 32, 64, 15, 14, (2, 2), 1)
    results = []
    for threads in (1, 2, 3):
        with fastconv.threads(threads):
            results.append(_grad_input(grad_output, x, weight, (2, 2), 1))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_listed_before_the_scatter_paths():
    names = _paths.names("grad_input")
    assert names.index("strided-pointwise") < names.index("packed") < names.index("blas")
