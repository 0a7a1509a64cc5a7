"""batch_norm and batch_norm_backward: NumPy reference, PyTorch, finite differences, running
statistics, threads, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import batch_norm, batch_norm_backward
from helpers import assert_close, assert_grad_close
from reference.networks import (
    batch_norm_backward_reference,
    batch_norm_reference,
    batch_statistics_reference,
)


def _numerical_gradient(loss, x, step=1e-6):
    grad = np.zeros_like(x)
    flat, grad_flat = x.reshape(-1), grad.reshape(-1)
    for index in range(flat.size):
        saved = flat[index]
        flat[index] = saved + step
        upper = loss(x)
        flat[index] = saved - step
        lower = loss(x)
        flat[index] = saved
        grad_flat[index] = (upper - lower) / (2 * step)
    return grad


shapes = st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6))


@given(shape=shapes, seed=st.integers(0, 2**32 - 1), use_affine=st.booleans())
def test_training_forward_and_backward_match_reference(shape, seed, use_affine):
    if shape[0] * shape[2] * shape[3] < 2:
        shape = (2,) + shape[1:]
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
        weight = rng.standard_normal(shape[1]).astype(dtype) if use_affine else None
        bias = rng.standard_normal(shape[1]).astype(dtype) if use_affine else None
        out, mean, var = batch_norm(x, None, None, weight, bias, training=True, eps=1e-3,
                                    return_stats=True)
        ref_mean, ref_var = batch_statistics_reference(x)
        ones, zeros = np.ones(shape[1]), np.zeros(shape[1])
        expected = batch_norm_reference(x, ref_mean, ref_var,
                                        ones if weight is None else weight,
                                        zeros if bias is None else bias, 1e-3)
        assert out.dtype == dtype and out.shape == x.shape
        assert_close(out, expected, dtype)
        assert_close(mean, ref_mean, dtype)
        assert_close(var, ref_var, dtype)
        grad_output = rng.standard_normal(shape).astype(dtype)
        grad_input, grad_weight, grad_bias = batch_norm_backward(
            grad_output, x, mean, var, weight, eps=1e-3)
        ref_input, ref_weight, ref_bias = batch_norm_backward_reference(
            grad_output, x, ones if weight is None else weight, 1e-3)
        assert_grad_close(grad_input, ref_input, dtype)
        assert_grad_close(grad_bias, ref_bias, dtype)
        if use_affine:
            assert_grad_close(grad_weight, ref_weight, dtype)
        else:
            assert grad_weight is None


def test_matches_torch_training_and_eval(torch, dtype, rng):
    x = rng.standard_normal((4, 3, 5, 7)).astype(dtype) * 2 + 0.5
    weight, bias = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    running_mean, running_var = np.zeros(3, dtype), np.ones(3, dtype)
    t_mean, t_var = torch.zeros(3, dtype=torch.from_numpy(x).dtype), torch.ones(
        3, dtype=torch.from_numpy(x).dtype)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12,
                                                                     "atol": 1e-12}
    for training in (True, True, False):
        tx = torch.tensor(x, requires_grad=True)
        tw, tb = torch.tensor(weight, requires_grad=True), torch.tensor(bias, requires_grad=True)
        t_out = torch.nn.functional.batch_norm(tx, t_mean, t_var, tw, tb, training=training,
                                               momentum=0.2, eps=1e-4)
        out, mean, var = batch_norm(x, running_mean, running_var, weight, bias,
                                    training=training, momentum=0.2, eps=1e-4,
                                    return_stats=True)
        np.testing.assert_allclose(out, t_out.detach().numpy(), **tol)
        np.testing.assert_allclose(running_mean, t_mean.numpy(), **tol)
        np.testing.assert_allclose(running_var, t_var.numpy(), **tol)
        grad_output = rng.standard_normal(x.shape).astype(dtype)
        t_out.backward(torch.from_numpy(grad_output))
        grads = batch_norm_backward(grad_output, x, mean, var, weight, eps=1e-4,
                                    training=training)
        for ours, theirs in zip(grads, (tx.grad, tw.grad, tb.grad)):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=tol["rtol"] * 10,
                                       atol=tol["atol"] * 10)
        x = x * 0.5 + 1  # different statistics at the next step


@pytest.mark.parametrize("training", [True, False])
def test_gradients_by_finite_differences(training, rng):
    x = rng.standard_normal((3, 2, 3, 2))
    weight, bias = rng.standard_normal(2), rng.standard_normal(2)
    running_mean, running_var = rng.standard_normal(2), rng.random(2) + 0.5
    coefficients = rng.standard_normal(x.shape)

    def loss_of(x_, weight_=weight, bias_=bias):
        out = batch_norm(x_, running_mean.copy(), running_var.copy(), weight_, bias_,
                         training=training, eps=1e-3)
        return float(np.sum(out * coefficients))

    out, mean, var = batch_norm(x, running_mean.copy(), running_var.copy(), weight, bias,
                                training=training, eps=1e-3, return_stats=True)
    grad_input, grad_weight, grad_bias = batch_norm_backward(
        coefficients, x, mean, var, weight, eps=1e-3, training=training)
    np.testing.assert_allclose(grad_input, _numerical_gradient(loss_of, x.copy()), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(
        grad_weight, _numerical_gradient(lambda w: loss_of(x, w), weight.copy()), rtol=1e-6,
        atol=1e-7)
    np.testing.assert_allclose(
        grad_bias, _numerical_gradient(lambda b: loss_of(x, weight, b), bias.copy()),
        rtol=1e-6, atol=1e-7)


def test_fused_relu_and_other_ranks(rng):
    x = rng.standard_normal((5, 3, 4))
    plain = batch_norm(x, None, None, training=True)
    np.testing.assert_array_equal(batch_norm(x, None, None, training=True, relu=True),
                                  np.maximum(plain, 0))
    two_d = rng.standard_normal((6, 4))
    mean, var = batch_statistics_reference(two_d)
    assert_close(batch_norm(two_d, None, None, training=True),
                 batch_norm_reference(two_d, mean, var, np.ones(4), np.zeros(4), 1e-5))


def test_results_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((16, 8, 24, 24)).astype(np.float32)
    grad_output = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for count in (1, 2, 3):
        with fastconv.threads(count):
            out, mean, var = batch_norm(x, None, None, training=True, return_stats=True)
            results.append((out, mean, var) + batch_norm_backward(grad_output, x, mean, var))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            if a is not None:
                np.testing.assert_array_equal(a, b)


def test_errors(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm(x[:1, :, :1, :1], None, None, training=True)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="shape \\(3,\\)"):
        batch_norm(x, None, None, np.ones(4), training=True)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        batch_norm(np.ones(3), None, None, training=True)
    with pytest.raises(ValueError, match="must agree"):
        batch_norm_backward(np.ones((2, 3, 4, 3)), x, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="need may only name"):
        batch_norm_backward(x, x, np.zeros(3), np.ones(3), need=("bogus",))


@pytest.mark.parametrize("training", [True, False])
def test_returned_statistics_are_the_callers(training, rng):
    # return_stats hands out arrays nothing else holds: in evaluation a copy of float64
    # running estimates (not the buffers themselves), in training the batch's statistics,
    # new at every call; and the running estimates move exactly as without return_stats
    x = rng.standard_normal((4, 3, 2, 2))
    running = [rng.standard_normal(3), rng.random(3) + 0.5]
    expected = [array.copy() for array in running]
    batch_norm(x, *expected, training=training)
    out, mean, var = batch_norm(x, *running, training=training, return_stats=True)
    for array, wanted in zip(running, expected):
        np.testing.assert_array_equal(array, wanted)
    _, mean_again, var_again = batch_norm(x, None, None, training=True, return_stats=True)
    for stat in (mean, var):
        assert not any(np.shares_memory(stat, other) for other in running + [mean_again,
                                                                             var_again])
    before = [array.copy() for array in running]
    mean[...] = var[...] = 7.0
    for array, wanted in zip(running, before):
        np.testing.assert_array_equal(array, wanted)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_running_statistics_updated_in_the_kernel_as_by_numpy(dtype, rng):
    # C-contiguous running estimates of x's dtype move in the forward kernel, others by the
    # NumPy statements: the same operations, rounded alike, so the same bits (strided views
    # take the NumPy statements; the reference is those statements written out here)
    channels = 5
    kernel = [np.zeros(channels, dtype), np.ones(channels, dtype)]
    strided = [np.zeros(2 * channels, dtype)[::2], np.ones(2 * channels, dtype)[::2]]
    reference = [array.copy() for array in kernel]
    for factor in (0.1, 1 / 3, 0.9, 1.0):
        x = (rng.standard_normal((3, channels, 4, 5)) * 3 + 2).astype(dtype)
        _, mean, var = batch_norm(x, *kernel, training=True, momentum=factor,
                                  return_stats=True)
        batch_norm(x, *strided, training=True, momentum=factor)
        count = x.size // channels
        for array, moved in zip(reference, (factor * mean,
                                            factor * var * (count / (count - 1)))):
            array *= 1 - factor
            array += moved.astype(dtype)
        for array, other, wanted in zip(kernel, strided, reference):
            for got in (array, other):  # (bit patterns: -0.0 is not 0.0)
                np.testing.assert_array_equal(np.ascontiguousarray(got).view(np.uint8),
                                              wanted.view(np.uint8))


def test_batchnorm_layer_equals_the_functions_step_after_step(rng):
    # the layer's repeated calls skip batch_norm's checks (nn.BatchNorm2d._remember_checked):
    # the same bits as the functions, parameter gradients accumulated as by +=; arrays
    # replaced by the user (a float64 weight, a strided gradient) take the checked path
    from fastconv import nn
    from fastconv.norm import batch_norm_backward_fused

    layer = nn.BatchNorm2d(3, momentum=None)
    running = [np.zeros(3, np.float32), np.ones(3, np.float32)]
    weight = np.ones(3, np.float32)
    bias = np.zeros(3, np.float32)
    grads = [np.zeros(3, np.float32), np.zeros(3, np.float32)]
    for step in range(1, 6):
        if step == 4:  # the user's arrays: new objects, checked again
            layer.weight.data = weight = (weight * 1.5).astype(np.float64)
            layer.bias.grad = np.zeros(6, np.float32)[::2]
            grads[1] = np.zeros(3, np.float32)
        x = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
        residual = rng.standard_normal(x.shape).astype(np.float32)
        grad_output = rng.standard_normal(x.shape).astype(np.float32)
        out = layer.forward_residual(x, residual)
        grad_x, grad_residual = layer.backward_residual(grad_output)
        wanted, mean, var = batch_norm(x, *running, weight, bias, training=True,
                                       momentum=1.0 / step, return_stats=True, relu=True,
                                       residual=residual)
        wanted_x, grad_weight, grad_bias, wanted_residual = batch_norm_backward_fused(
            grad_output, x, mean, var, weight, output=wanted, need_residual=True)
        grads[0] += grad_weight
        grads[1] += grad_bias
        for got, expected in ((out, wanted), (grad_x, wanted_x),
                              (grad_residual, wanted_residual),
                              (layer.running_mean.data, running[0]),
                              (layer.running_var.data, running[1]),
                              (layer.weight.grad, grads[0]), (layer.bias.grad, grads[1])):
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)
    assert int(layer.num_batches_tracked.data) == 5
