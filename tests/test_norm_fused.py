"""The fused batch-norm paths (ReLU, residual sum, the residual's gradient) at the function
level: NumPy reference over row lengths that exercise the vector loops and their tails,
PyTorch, finite differences in float64, the ReLU's edge values, thread counts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import batch_norm
from fastconv.norm import batch_norm_backward_fused
from helpers import assert_close, assert_grad_close
from reference.networks import (
    batch_norm_backward_reference,
    batch_norm_reference,
    batch_statistics_reference,
)


def _fused_reference(x, weight, bias, residual, grad_output, eps, mask):
    """relu(bn(x) + residual) and its gradients, from the unfused references: the ReLU's
    gradient (grad_output where ``mask``: the units on) then batch norm's backward; the
    residual's gradient is the masked grad_output."""
    mean, var = batch_statistics_reference(x)
    pre = batch_norm_reference(x, mean, var, weight, bias, eps)
    if residual is not None:
        pre = pre + residual
    out = np.maximum(pre, 0)
    masked = np.where(mask, np.asarray(grad_output, np.float64), 0.0)
    grad_input, grad_weight, grad_bias = batch_norm_backward_reference(masked, x, weight, eps)
    return out, grad_input, grad_weight, grad_bias, masked


# rows of 1..40 elements: below, at and past each vector width (8 and 16 floats, 4 and 8
# doubles; blocks of 16 sums) and their tails
shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 40))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), with_residual=st.booleans())
def test_fused_relu_and_residual_match_reference(shape, seed, with_residual):
    if shape[0] * shape[2] * shape[3] < 2:
        shape = (2,) + shape[1:]
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        weight = rng.standard_normal(shape[1]).astype(dtype)
        bias = rng.standard_normal(shape[1]).astype(dtype)
        residual = rng.standard_normal(shape).astype(dtype) if with_residual else None
        grad_output = rng.standard_normal(shape).astype(dtype)
        out, mean, var = batch_norm(x, None, None, weight, bias, training=True, eps=1e-3,
                                    return_stats=True, relu=True, residual=residual)
        # the ReLU's gradient at our output (a value within rounding of 0 could fall on
        # the other side in the reference)
        ref_out, ref_input, ref_weight, ref_bias, ref_residual = _fused_reference(
            x, weight, bias, residual, grad_output, 1e-3, out > 0)
        assert_close(out, ref_out, dtype)
        grad_input, grad_weight, grad_bias, grad_residual = batch_norm_backward_fused(
            grad_output, x, mean, var, weight, eps=1e-3, output=out,
            need_residual=with_residual)
        assert_grad_close(grad_input, ref_input, dtype)
        assert_grad_close(grad_weight, ref_weight, dtype)
        assert_grad_close(grad_bias, ref_bias, dtype)
        if with_residual:
            np.testing.assert_array_equal(grad_residual, ref_residual.astype(dtype))
        else:
            assert grad_residual is None


@pytest.mark.parametrize("with_residual", [False, True])
def test_fused_matches_torch(torch, dtype, rng, with_residual):
    x = rng.standard_normal((4, 3, 5, 7)).astype(dtype) * 2 + 0.5
    weight, bias = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    skip = rng.standard_normal(x.shape).astype(dtype)
    grad_output = rng.standard_normal(x.shape).astype(dtype)
    tx, tskip = torch.tensor(x, requires_grad=True), torch.tensor(skip, requires_grad=True)
    tw, tb = torch.tensor(weight, requires_grad=True), torch.tensor(bias, requires_grad=True)
    pre = torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True, eps=1e-4)
    t_out = torch.relu(pre + tskip if with_residual else pre)
    t_out.backward(torch.from_numpy(grad_output))
    out, mean, var = batch_norm(x, None, None, weight, bias, training=True, eps=1e-4,
                                return_stats=True, relu=True,
                                residual=skip if with_residual else None)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12,
                                                                     "atol": 1e-12}
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol)
    grads = batch_norm_backward_fused(grad_output, x, mean, var, weight, eps=1e-4, output=out,
                                      need_residual=with_residual)
    theirs = (tx.grad, tw.grad, tb.grad, tskip.grad if with_residual else None)
    for ours, reference in zip(grads, theirs):
        if reference is None:
            assert ours is None
        else:
            np.testing.assert_allclose(ours, reference.numpy(), rtol=tol["rtol"] * 10,
                                       atol=tol["atol"] * 10)


def test_fused_gradients_by_finite_differences(rng):
    # float64; values kept away from the ReLU's kink so that the differences see one side
    x = rng.standard_normal((3, 2, 3, 5))
    weight, bias = rng.standard_normal(2), rng.standard_normal(2)
    skip = rng.standard_normal(x.shape)
    coefficients = rng.standard_normal(x.shape)
    # the residual moved half a unit away from the kink: no unit within a step of 0
    out = batch_norm(x, None, None, weight, bias, training=True, eps=1e-3, relu=True,
                     residual=skip)
    skip = np.where(out > 0, skip + 0.5, skip - 0.5)

    def loss(x_=x, weight_=weight, bias_=bias, skip_=skip):
        result = batch_norm(x_, None, None, weight_, bias_, training=True, eps=1e-3,
                            relu=True, residual=skip_)
        return float(np.sum(result * coefficients))

    def numerical(function, value, step=1e-6):
        grad = np.zeros_like(value)
        flat, grad_flat = value.reshape(-1), grad.reshape(-1)
        for index in range(flat.size):
            saved = flat[index]
            flat[index] = saved + step
            upper = function(value)
            flat[index] = saved - step
            lower = function(value)
            flat[index] = saved
            grad_flat[index] = (upper - lower) / (2 * step)
        return grad

    out, mean, var = batch_norm(x, None, None, weight, bias, training=True, eps=1e-3,
                                return_stats=True, relu=True, residual=skip)
    grad_input, grad_weight, grad_bias, grad_skip = batch_norm_backward_fused(
        coefficients, x, mean, var, weight, eps=1e-3, output=out, need_residual=True)
    for ours, wrt, value in ((grad_input, "x_", x), (grad_weight, "weight_", weight),
                             (grad_bias, "bias_", bias), (grad_skip, "skip_", skip)):
        expected = numerical(lambda v, wrt=wrt: loss(**{wrt: v}), value.copy())
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_edge_values(dtype):
    # -0.0, NaN and values that cancel to 0 come out as +0; an inf or NaN gradient where the
    # unit is off becomes 0, as PyTorch's ReLU backward (9 elements per row: vector + tail)
    x = np.zeros((2, 1, 1, 9), dtype=dtype)
    x[0, 0, 0] = [-4, -3, -2, -1, 0, 1, 2, 3, 4]
    x[1, 0, 0] = [4, 3, 2, 1, 0, -1, -2, -3, -4]
    residual = np.zeros_like(x)
    residual[0, 0, 0, 0] = np.nan
    residual[1, 0, 0, 4] = -0.0
    out, mean, var = batch_norm(x, None, None, training=True, eps=0.0, return_stats=True,
                                relu=True, residual=residual)
    assert not np.isnan(out).any()
    assert not np.signbit(out).any()
    expected = np.maximum(x / np.sqrt(np.mean(x * x)), 0)
    expected[0, 0, 0, 0] = 0
    assert_close(out, expected, dtype)
    grad_output = np.full_like(x, np.inf)
    grad_output[out > 0] = 1.0
    _, _, grad_bias, grad_residual = batch_norm_backward_fused(
        grad_output, x, mean, var, eps=0.0, output=out, need_residual=True, need=("bias",))
    np.testing.assert_array_equal(grad_residual, np.where(out > 0, 1.0, 0.0).astype(dtype))
    assert grad_bias[0] == np.count_nonzero(out > 0)


def test_fused_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((16, 8, 13, 13)).astype(np.float32)
    skip = rng.standard_normal(x.shape).astype(np.float32)
    grad_output = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for count in (1, 2, 3):
        with fastconv.threads(count):
            for residual in (None, skip):
                out, mean, var = batch_norm(x, None, None, training=True, return_stats=True,
                                            relu=True, residual=residual)
                results.append((out, mean, var) + batch_norm_backward_fused(
                    grad_output, x, mean, var, output=out,
                    need_residual=residual is not None))
    for index in range(2, len(results)):
        for a, b in zip(results[index % 2], results[index]):
            if a is not None:
                np.testing.assert_array_equal(a, b)
