"""models.resnet18 / small_resnet / nin: torchvision's state-dict layout, forward and backward
equal to a PyTorch ResNet-18 built here by hand (torchvision is not a dependency)."""

import numpy as np
import pytest

from fastconv import models, nn, optim
from reference.torch_resnet import torch_resnet


def _compare(model, twin, torch, x, rng, tolerance):
    state = model.state_dict()
    theirs = twin.state_dict()
    assert list(state) == list(theirs)
    assert {k: np.shape(v) for k, v in state.items()} == {k: tuple(v.shape)
                                                          for k, v in theirs.items()}
    dtype = x.dtype
    twin.to(torch.float64 if dtype == np.float64 else torch.float32)
    twin.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    for training in (True, False):
        model.train(training)
        twin.train(training)
        model.zero_grad()
        twin.zero_grad()
        output = model(x)
        grad_output = rng.standard_normal(output.shape).astype(dtype)
        grad_input = model.backward(grad_output)
        x_t = torch.from_numpy(x).requires_grad_()
        output_t = twin(x_t)
        output_t.backward(torch.from_numpy(grad_output))
        np.testing.assert_allclose(output, output_t.detach().numpy(), **tolerance)
        scale = float(np.abs(x_t.grad.numpy()).max())
        np.testing.assert_allclose(grad_input, x_t.grad.numpy(), rtol=tolerance["rtol"],
                                   atol=tolerance["atol"] * scale)
        parameters = dict(twin.named_parameters())
        for name, parameter in model.named_parameters():
            expected = parameters[name].grad.numpy()
            np.testing.assert_allclose(parameter.grad, expected, rtol=tolerance["rtol"],
                                       atol=tolerance["atol"] * max(1.0, np.abs(expected).max()),
                                       err_msg=name)
        for name, value in twin.state_dict().items():  # running statistics after the step
            np.testing.assert_allclose(model.state_dict()[name], value.numpy(), **tolerance,
                                       err_msg=name)


def test_resnet18_forward_and_backward_equal_torch_float64(torch, rng):
    model = models.resnet18(num_classes=10, in_channels=3, dtype=np.float64, seed=0)
    twin = torch_resnet(torch, [2, 2, 2, 2], [64, 128, 256, 512], 3, 10, "imagenet")
    x = rng.standard_normal((2, 3, 64, 64))
    _compare(model, twin, torch, x, rng, {"rtol": 1e-9, "atol": 1e-10})


def test_resnet18_float32_and_torchvision_keys(torch, rng):
    model = models.resnet18(seed=1)
    state = model.state_dict()
    for key, shape in [("conv1.weight", (64, 3, 7, 7)), ("bn1.running_mean", (64,)),
                       ("bn1.num_batches_tracked", ()), ("layer1.0.conv1.weight", (64, 64, 3, 3)),
                       ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
                       ("layer4.1.bn2.running_var", (512,)), ("fc.weight", (1000, 512)),
                       ("fc.bias", (1000,))]:
        assert state[key].shape == shape, key
    assert len(state) == 122  # as torchvision's resnet18().state_dict()
    model = models.resnet18(num_classes=7, in_channels=1, seed=2)
    twin = torch_resnet(torch, [2, 2, 2, 2], [64, 128, 256, 512], 1, 7, "imagenet")
    x = rng.standard_normal((2, 1, 64, 64)).astype(np.float32)
    _compare(model, twin, torch, x, rng, {"rtol": 2e-3, "atol": 2e-4})


def test_small_resnet_matches_torch_and_weights_move_both_ways(torch, rng, tmp_path):
    model = models.build("resnet", seed=3, dtype=np.float64)
    twin = torch_resnet(torch, [1, 1, 1], list(models.SMALL_RESNET_WIDTHS), 1, 10, "small",
                         pool_size=2)
    x = rng.standard_normal((3, 1, 28, 28))
    _compare(model, twin, torch, x, rng, {"rtol": 1e-9, "atol": 1e-10})
    # torch -> fastconv after torch trains a step (running statistics included)
    twin.train()
    twin(torch.from_numpy(x * 2 + 1))
    fresh = models.build("resnet", seed=4, dtype=np.float64)
    fresh.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    fresh.eval()
    twin.eval()
    np.testing.assert_allclose(fresh(x), twin(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-10)
    import fastconv
    fastconv.save(fresh, tmp_path / "model.npz")
    again = models.build("resnet", seed=5, dtype=np.float64)
    fastconv.load(again, tmp_path / "model.npz")
    np.testing.assert_array_equal(again.eval()(x), fresh(x))


def test_small_resnet_gradient_by_finite_differences(rng):
    model = models.small_resnet(seed=0, dtype=np.float64).eval()
    x = rng.standard_normal((2, 1, 28, 28))
    weights = rng.standard_normal((2, 10))
    model(x)
    grad_input = model.backward(weights)
    from reference.nn import numerical_gradient
    indices, numeric = numerical_gradient(lambda: float(np.sum(model(x) * weights)), x,
                                          count=10, rng=rng)
    np.testing.assert_allclose(grad_input.reshape(-1)[indices], numeric, rtol=1e-5, atol=1e-7)
    assert model.backward(weights, need_input_grad=False) is None


def test_small_resnet_learns(rng):
    """A few Adam steps on a separable toy problem reduce the loss (the pieces fit)."""
    model = models.small_resnet(seed=0)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    labels = (x[:, 0, :14].mean(axis=(1, 2)) > 0).astype(np.int64)
    loss = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    values = []
    for _ in range(8):
        values.append(loss(model(x), labels))
        opt.zero_grad()
        model.backward(loss.backward(), need_input_grad=False)
        opt.step()
    assert values[-1] < values[0] * 0.7


def test_nin_matches_torch_structure(torch):
    model = models.nin(seed=0)
    keys = list(model.state_dict())
    assert keys[:2] == ["0.0.weight", "0.0.bias"] and keys[-1] == "7.4.bias"
    assert model.state_dict()["7.4.weight"].shape == (10, 10, 1, 1)
    x = np.random.default_rng(0).standard_normal((1, 1, 224, 224)).astype(np.float32)
    out = model.eval()(x)
    assert out.shape == (1, 10)
    tnn = torch.nn

    def block(i, o, k, s, p):
        return tnn.Sequential(tnn.Conv2d(i, o, k, s, p), tnn.ReLU(), tnn.Conv2d(o, o, 1),
                              tnn.ReLU(), tnn.Conv2d(o, o, 1), tnn.ReLU())

    twin = tnn.Sequential(block(1, 96, 11, 4, 0), tnn.MaxPool2d(3, 2), block(96, 256, 5, 1, 2),
                          tnn.MaxPool2d(3, 2), block(256, 384, 3, 1, 1), tnn.MaxPool2d(3, 2),
                          tnn.Dropout(0.5), block(384, 10, 3, 1, 1),
                          tnn.AdaptiveAvgPool2d((1, 1)), tnn.Flatten()).eval()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    np.testing.assert_allclose(out, twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-3,
                               atol=1e-5)


def test_build_resnet_by_name():
    model = models.build("resnet", seed=7)
    assert isinstance(model, models.ResNet)
    assert "resnet" in models.MODELS
    with pytest.raises(ValueError, match="resnet"):
        models.build("nope")


def test_small_resnet_winograd_algorithm(rng):
    """build('resnet', algorithm='winograd') gives the blocks' 3x3 layers Winograd (the stem
    and the 1x1 shortcuts keep 'auto'); the same weights, and the output and gradients (eval
    mode: training-mode batch norm over 4 samples would magnify the rounding) within
    Winograd's float32 error of the usual paths'."""
    usual = models.build("resnet", seed=3)
    winograd = models.build("resnet", seed=3, algorithm="winograd")
    algorithms = {name: module.algorithm for name, module in winograd.named_modules()
                  if isinstance(module, nn.Conv2d)}
    assert algorithms["conv1"] == "auto"
    assert algorithms["layer1.0.conv1"] == algorithms["layer3.0.conv2"] == "winograd"
    for key, value in usual.state_dict().items():
        np.testing.assert_array_equal(value, winograd.state_dict()[key])
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    weights = rng.standard_normal((4, 10)).astype(np.float32)
    outputs, grads = [], []
    for model in (usual.eval(), winograd.eval()):
        outputs.append(model(x))
        grads.append(model.backward(weights))
    scale = np.abs(outputs[0]).max()
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-3 * scale)
    np.testing.assert_allclose(grads[1], grads[0], atol=1e-3 * np.abs(grads[0]).max())
    with pytest.raises(ValueError, match="resnet"):
        models.build("lenet", algorithm="winograd")
