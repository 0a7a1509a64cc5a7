"""One rule, one message: every argument rule shared by a function and its layer lives in
fastconv._args, so the function (at call) and the layer (at construction) refuse the same
values with the same exception type and the same message, and accept the same edge values."""

import numpy as np
import pytest

import fastconv
from fastconv import _args, nn
from fastconv.adaptive import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    max_unpool2d,
)
from fastconv.norm import batch_norm
from fastconv.pool import avg_pool2d, avg_pool2d_backward, max_pool2d
from fastconv.transposed import conv_transpose2d

RNG = np.random.default_rng(0)
X2 = RNG.standard_normal((2, 2, 7, 7))  # 2 channels
X3 = RNG.standard_normal((1, 3, 7, 7))  # 3 channels
X4 = RNG.standard_normal((1, 4, 7, 7))  # 4 channels
W_2_2 = RNG.standard_normal((2, 2, 3, 3))  # conv2d: 2 -> 2 channels


def _conv(**kwargs):
    return lambda: fastconv.conv2d(X2, W_2_2, **kwargs)


def _conv_layer(**kwargs):
    return lambda: nn.Conv2d(2, 2, 3, **kwargs)


def _pooled_indices():
    return max_pool2d(X2, 2, return_indices=True)


# id: (the function call, the layer construction); each must raise the same error
BAD = {
    # int-but-not-bool and >= 1 (kernel_size, stride, dilation)
    "conv stride=True": (_conv(stride=True), _conv_layer(stride=True)),
    "conv stride=0": (_conv(stride=0), _conv_layer(stride=0)),
    "conv stride=-1": (_conv(stride=-1), _conv_layer(stride=-1)),
    "conv stride=(1, 0)": (_conv(stride=(1, 0)), _conv_layer(stride=(1, 0))),
    "conv stride=1.5": (_conv(stride=1.5), _conv_layer(stride=1.5)),
    "conv stride=np.bool_": (_conv(stride=np.True_), _conv_layer(stride=np.True_)),
    "conv stride=(1, 2, 3)": (_conv(stride=(1, 2, 3)), _conv_layer(stride=(1, 2, 3))),
    "conv dilation=0": (_conv(dilation=0), _conv_layer(dilation=0)),
    "conv dilation=(True, 1)": (_conv(dilation=(True, 1)), _conv_layer(dilation=(True, 1))),
    # padding forms
    "conv padding=-1": (_conv(padding=-1), _conv_layer(padding=-1)),
    "conv padding=((0, -1), (0, 0))": (_conv(padding=((0, -1), (0, 0))),
                                       _conv_layer(padding=((0, -1), (0, 0)))),
    "conv padding=1.0": (_conv(padding=1.0), _conv_layer(padding=1.0)),
    "conv padding='full'": (_conv(padding="full"), _conv_layer(padding="full")),
    "conv padding='SAME'": (_conv(padding="SAME"), _conv_layer(padding="SAME")),
    # padding modes
    "conv padding_mode='mirror'": (_conv(padding_mode="mirror"),
                                   _conv_layer(padding_mode="mirror")),
    "conv padding_mode='edge'": (_conv(padding_mode="edge"), _conv_layer(padding_mode="edge")),
    "conv padding_mode=None": (_conv(padding_mode=None), _conv_layer(padding_mode=None)),
    # groups
    "conv groups=True": (_conv(groups=True), _conv_layer(groups=True)),
    "conv groups=2.0": (_conv(groups=2.0), _conv_layer(groups=2.0)),
    "conv groups=0": (_conv(groups=0), _conv_layer(groups=0)),
    "conv groups=-2": (_conv(groups=-2), _conv_layer(groups=-2)),
    "conv groups not dividing in": (
        lambda: fastconv.conv2d(X3, RNG.standard_normal((4, 1, 3, 3)), groups=2),
        lambda: nn.Conv2d(3, 4, 3, groups=2)),
    "conv groups not dividing out": (
        lambda: fastconv.conv2d(X4, RNG.standard_normal((3, 2, 3, 3)), groups=2),
        lambda: nn.Conv2d(4, 3, 3, groups=2)),
    "conv groups dividing neither": (
        lambda: fastconv.conv2d(X3, RNG.standard_normal((3, 1, 3, 3)), groups=2),
        lambda: nn.Conv2d(3, 3, 3, groups=2)),
    # transposed convolution
    "conv_transpose groups=True": (
        lambda: conv_transpose2d(X2, RNG.standard_normal((2, 1, 3, 3)), groups=True),
        lambda: nn.ConvTranspose2d(2, 2, 3, groups=True)),
    "conv_transpose groups=0": (
        lambda: conv_transpose2d(X2, RNG.standard_normal((2, 1, 3, 3)), groups=0),
        lambda: nn.ConvTranspose2d(2, 2, 3, groups=0)),
    "conv_transpose groups not dividing in": (
        lambda: conv_transpose2d(X3, RNG.standard_normal((3, 1, 3, 3)), groups=2),
        lambda: nn.ConvTranspose2d(3, 2, 3, groups=2)),
    "conv_transpose output_padding >= stride": (
        lambda: conv_transpose2d(X2, RNG.standard_normal((2, 2, 3, 3)), stride=2,
                                 output_padding=2),
        lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)),
    "conv_transpose stride=0": (
        lambda: conv_transpose2d(X2, RNG.standard_normal((2, 2, 3, 3)), stride=0),
        lambda: nn.ConvTranspose2d(2, 2, 3, stride=0)),
    # max pooling
    "max_pool kernel_size=0": (lambda: max_pool2d(X2, 0), lambda: nn.MaxPool2d(0)),
    "max_pool kernel_size=True": (lambda: max_pool2d(X2, True), lambda: nn.MaxPool2d(True)),
    "max_pool stride=0": (lambda: max_pool2d(X2, 2, 0), lambda: nn.MaxPool2d(2, 0)),
    "max_pool stride=(1, -1)": (lambda: max_pool2d(X2, 2, (1, -1)),
                                lambda: nn.MaxPool2d(2, (1, -1))),
    "max_pool dilation=0": (lambda: max_pool2d(X2, 2, dilation=0),
                            lambda: nn.MaxPool2d(2, dilation=0)),
    "max_pool padding=-1": (lambda: max_pool2d(X2, 3, padding=-1),
                            lambda: nn.MaxPool2d(3, padding=-1)),
    "max_pool padding > kernel/2": (lambda: max_pool2d(X2, 3, padding=2),
                                    lambda: nn.MaxPool2d(3, padding=2)),
    "max_pool padding > kernel//2 (dilated)": (
        lambda: max_pool2d(X2, 3, padding=2, dilation=2),
        lambda: nn.MaxPool2d(3, padding=2, dilation=2)),
    "max_pool padding ((0, 2), (0, 0))": (
        lambda: max_pool2d(X2, 3, padding=((0, 2), (0, 0))),
        lambda: nn.MaxPool2d(3, padding=((0, 2), (0, 0)))),
    # average pooling
    "avg_pool kernel_size=0": (lambda: avg_pool2d(X2, 0), lambda: nn.AvgPool2d(0)),
    "avg_pool stride=0": (lambda: avg_pool2d(X2, 2, 0), lambda: nn.AvgPool2d(2, 0)),
    "avg_pool stride=True": (lambda: avg_pool2d(X2, 2, True), lambda: nn.AvgPool2d(2, True)),
    "avg_pool padding > kernel/2": (lambda: avg_pool2d(X2, 2, padding=2),
                                    lambda: nn.AvgPool2d(2, padding=2)),
    "avg_pool divisor_override=0": (lambda: avg_pool2d(X2, 2, divisor_override=0),
                                    lambda: nn.AvgPool2d(2, divisor_override=0)),
    "avg_pool divisor_override=True": (lambda: avg_pool2d(X2, 2, divisor_override=True),
                                       lambda: nn.AvgPool2d(2, divisor_override=True)),
    "avg_pool divisor_override=2.0": (lambda: avg_pool2d(X2, 2, divisor_override=2.0),
                                      lambda: nn.AvgPool2d(2, divisor_override=2.0)),
    "avg_pool divisor_override=2**63": (lambda: avg_pool2d(X2, 2, divisor_override=2**63),
                                        lambda: nn.AvgPool2d(2, divisor_override=2**63)),
    # adaptive pooling
    "adaptive_avg output_size=0": (lambda: adaptive_avg_pool2d(X2, 0),
                                   lambda: nn.AdaptiveAvgPool2d(0)),
    "adaptive_avg output_size=-1": (lambda: adaptive_avg_pool2d(X2, -1),
                                    lambda: nn.AdaptiveAvgPool2d(-1)),
    "adaptive_avg output_size=True": (lambda: adaptive_avg_pool2d(X2, True),
                                      lambda: nn.AdaptiveAvgPool2d(True)),
    "adaptive_avg output_size=(None, 0)": (lambda: adaptive_avg_pool2d(X2, (None, 0)),
                                           lambda: nn.AdaptiveAvgPool2d((None, 0))),
    "adaptive_avg output_size=(2, 1.5)": (lambda: adaptive_avg_pool2d(X2, (2, 1.5)),
                                          lambda: nn.AdaptiveAvgPool2d((2, 1.5))),
    "adaptive_avg output_size=((2, 2), 1)": (lambda: adaptive_avg_pool2d(X2, ((2, 2), 1)),
                                             lambda: nn.AdaptiveAvgPool2d(((2, 2), 1))),
    "adaptive_max output_size=(1, 2, 3)": (lambda: adaptive_max_pool2d(X2, (1, 2, 3)),
                                           lambda: nn.AdaptiveMaxPool2d((1, 2, 3))),
    "adaptive_max output_size=0": (lambda: adaptive_max_pool2d(X2, 0),
                                   lambda: nn.AdaptiveMaxPool2d(0)),
    # max unpooling
    "max_unpool kernel_size=0": (lambda: max_unpool2d(*_pooled_indices(), 0),
                                 lambda: nn.MaxUnpool2d(0)),
    "max_unpool stride=0": (lambda: max_unpool2d(*_pooled_indices(), 2, 0),
                            lambda: nn.MaxUnpool2d(2, 0)),
    "max_unpool padding=-1": (lambda: max_unpool2d(*_pooled_indices(), 2, padding=-1),
                              lambda: nn.MaxUnpool2d(2, padding=-1)),
    "max_unpool asymmetric padding": (
        lambda: max_unpool2d(*_pooled_indices(), 2, padding=((0, 1), (0, 0))),
        lambda: nn.MaxUnpool2d(2, padding=((0, 1), (0, 0)))),
    # batch norm
    "batch_norm eps=-1": (lambda: batch_norm(X2, None, None, training=True, eps=-1.0),
                          lambda: nn.BatchNorm2d(2, eps=-1.0)),
    "batch_norm eps=True": (lambda: batch_norm(X2, None, None, training=True, eps=True),
                            lambda: nn.BatchNorm2d(2, eps=True)),
    "batch_norm eps=nan": (lambda: batch_norm(X2, None, None, training=True, eps=float("nan")),
                           lambda: nn.BatchNorm2d(2, eps=float("nan"))),
    "batch_norm momentum='0.1'": (
        lambda: batch_norm(X2, None, None, training=True, momentum="0.1"),
        lambda: nn.BatchNorm2d(2, momentum="0.1")),
}


def _raised(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", list(BAD))
def test_function_and_layer_refuse_alike(case):
    function_call, layer_call = BAD[case]
    function_error = _raised(function_call)
    assert function_error[1], "a message that names the argument"
    assert _raised(layer_call) == function_error


# id: (function result, the same computed by the layer); each must run and agree
def _layer_vs_function(layer, function, x=X2):
    return lambda: (layer(x), function(x))


GOOD = {
    "conv stride=np.int64(2)": (
        lambda: nn.Conv2d(2, 2, 3, stride=np.int64(2), seed=0),
        lambda layer, x: fastconv.conv2d(x, layer.weight.data, layer.bias.data,
                                         stride=np.int64(2))),
    "conv groups=np.int32(2) (depthwise)": (
        lambda: nn.Conv2d(2, 4, 3, groups=np.int32(2), seed=0),
        lambda layer, x: fastconv.conv2d(x, layer.weight.data, layer.bias.data,
                                         groups=np.int32(2))),
    "conv padding='same'": (
        lambda: nn.Conv2d(2, 2, 3, padding="same", seed=0),
        lambda layer, x: fastconv.conv2d(x, layer.weight.data, layer.bias.data,
                                         padding="same")),
    "conv padding='valid'": (
        lambda: nn.Conv2d(2, 2, 3, padding="valid", seed=0),
        lambda layer, x: fastconv.conv2d(x, layer.weight.data, layer.bias.data,
                                         padding="valid")),
    "conv padding=((0, 1), (2, 0))": (
        lambda: nn.Conv2d(2, 2, 3, padding=((0, 1), (2, 0)), seed=0),
        lambda layer, x: fastconv.conv2d(x, layer.weight.data, layer.bias.data,
                                         padding=((0, 1), (2, 0)))),
    **{f"conv padding_mode={mode!r}": (
        lambda mode=mode: nn.Conv2d(2, 2, 3, padding=1, padding_mode=mode, seed=0),
        lambda layer, x, mode=mode: fastconv.conv2d(x, layer.weight.data, layer.bias.data,
                                                    padding=1, padding_mode=mode))
       for mode in ("zeros", "reflect", "replicate", "circular")},
    "conv_transpose groups=2, output_padding=1": (
        lambda: nn.ConvTranspose2d(2, 4, 3, stride=2, output_padding=1, groups=2, seed=0),
        lambda layer, x: conv_transpose2d(x, layer.weight.data, layer.bias.data, stride=2,
                                          output_padding=1, groups=2)),
    "conv_transpose output_padding < dilation": (
        lambda: nn.ConvTranspose2d(2, 2, 3, output_padding=1, dilation=2, seed=0),
        lambda layer, x: conv_transpose2d(x, layer.weight.data, layer.bias.data,
                                          output_padding=1, dilation=2)),
    "max_pool padding = kernel//2": (
        lambda: nn.MaxPool2d(3, 2, padding=1),
        lambda layer, x: max_pool2d(x, 3, 2, padding=1)),
    "max_pool padding ((0, 1), (1, 0)), dilation 2": (
        lambda: nn.MaxPool2d(3, padding=((0, 1), (1, 0)), dilation=2),
        lambda layer, x: max_pool2d(x, 3, padding=((0, 1), (1, 0)), dilation=2)),
    "max_pool kernel np.int64, stride None": (
        lambda: nn.MaxPool2d(np.int64(2)),
        lambda layer, x: max_pool2d(x, np.int64(2))),
    **{f"avg_pool divisor_override={divisor}": (
        lambda divisor=divisor: nn.AvgPool2d(2, divisor_override=divisor),
        lambda layer, x, divisor=divisor: avg_pool2d(x, 2, divisor_override=divisor))
       for divisor in (-2, -1, 1, 3, np.int64(-5), 2**63 - 1, -2**63)},
    "avg_pool padding 1, ceil_mode": (
        lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True),
        lambda layer, x: avg_pool2d(x, 3, 2, padding=1, ceil_mode=True)),
    "adaptive_avg output_size=(None, 2)": (
        lambda: nn.AdaptiveAvgPool2d((None, 2)),
        lambda layer, x: adaptive_avg_pool2d(x, (None, 2))),
    "adaptive_avg output_size=np.int64(1)": (
        lambda: nn.AdaptiveAvgPool2d(np.int64(1)),
        lambda layer, x: adaptive_avg_pool2d(x, np.int64(1))),
    "adaptive_max output_size=(3, None)": (
        lambda: nn.AdaptiveMaxPool2d((3, None)),
        lambda layer, x: adaptive_max_pool2d(x, (3, None))),
    "batch_norm eps=0, momentum=1": (
        lambda: nn.BatchNorm2d(2, eps=0.0, momentum=1.0),
        lambda layer, x: batch_norm(x, np.zeros(2), np.ones(2), layer.weight.data,
                                    layer.bias.data, training=True, momentum=1.0, eps=0.0)),
}


@pytest.mark.parametrize("case", list(GOOD))
def test_function_and_layer_accept_alike(case):
    make_layer, function = GOOD[case]
    layer = make_layer()
    x = X2.astype(np.float32) if getattr(layer, "dtype", None) == np.float32 else X2
    np.testing.assert_array_equal(layer(x), function(layer, x))


def test_max_unpool_accepts_symmetric_pair_of_pairs_in_both():
    """nn.MaxUnpool2d took only an int or a pair where max_unpool2d takes any symmetric
    padding form; both now take what the function takes."""
    padding = ((1, 1), (1, 1))
    out, indices = max_pool2d(X2[:, :, :6, :6], 2, padding=padding, return_indices=True)
    expected = max_unpool2d(out, indices, 2, padding=padding)
    assert expected.shape == (2, 2, 6, 6)
    layer = nn.MaxUnpool2d(2, padding=padding)
    assert layer.padding == (1, 1)
    np.testing.assert_array_equal(layer(out, indices), expected)


@pytest.mark.parametrize("divisor", [-2, -3, 5])
def test_negative_divisor_override_as_torch(divisor):
    """The disagreement issue #13 found: nn.AvgPool2d refused divisor_override=-2, which
    avg_pool2d (and PyTorch's function and layer) accept; now the layer does too."""
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((2, 3, 6, 6))
    layer = nn.AvgPool2d(2, divisor_override=divisor)
    ours = layer(x)
    theirs = torch.nn.AvgPool2d(2, divisor_override=divisor)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(ours, avg_pool2d(x, 2, divisor_override=divisor))
    grad = layer.backward(np.ones_like(ours))
    np.testing.assert_array_equal(grad, avg_pool2d_backward(np.ones_like(ours), x.shape, 2,
                                                            divisor_override=divisor))
    np.testing.assert_allclose(grad, np.full(x.shape, 1 / divisor), rtol=1e-15)


@pytest.mark.parametrize("backward", [
    lambda shape: avg_pool2d_backward(np.ones((1, 2, 3, 3)), shape, 2),
    lambda shape: adaptive_avg_pool2d_backward(np.ones((1, 2, 3, 3)), shape),
], ids=["avg_pool2d_backward", "adaptive_avg_pool2d_backward"])
@pytest.mark.parametrize("shape", [(1, 2, 6, True), (1.0, 2, 6, 6), "1266", None])
def test_input_shape_rule_is_shared(backward, shape):
    """Both backwards take input_shape by one rule (ints, bool refused) and one message."""
    with pytest.raises(TypeError, match=r"input_shape must be a sequence of ints"):
        backward(shape)


@pytest.mark.parametrize("value, expected", [
    (3, True), (np.int64(3), True), (np.uint8(3), True), (-1, True),
    (True, False), (np.True_, False), (3.0, False), (np.array(3), False), ("3", False),
    (None, False),
])
def test_is_int(value, expected):
    assert _args.is_int(value) is expected


def test_thread_count_follows_the_int_rule():
    with pytest.raises(TypeError, match="n must be an int, got True"):
        fastconv.set_num_threads(True)
    with pytest.raises(TypeError, match="n must be an int"):
        fastconv.set_num_threads(np.True_)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        with fastconv.threads(0):
            pass
    with fastconv.threads(np.int64(1)) as count:
        assert count == 1 and fastconv.get_num_threads() == 1
