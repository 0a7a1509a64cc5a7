"""Issue 16's layers and composition blocks: PyTorch equality (float64 tight, float32
normal), finite differences, state dicts both ways, train/eval, a user's own Module."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import nn
from reference.nn import numerical_gradient

TIGHT = {"rtol": 1e-10, "atol": 1e-12}
NORMAL = {"rtol": 2e-4, "atol": 2e-5}


def _twin(layer, torch):
    """The torch.nn module equivalent to one of the new layers."""
    tnn = torch.nn
    if isinstance(layer, nn.BatchNorm2d):
        return tnn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine,
                               layer.track_running_stats)
    if isinstance(layer, nn.ConvTranspose2d):
        return tnn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                   layer.stride, layer.padding, layer.output_padding,
                                   layer.groups, layer.bias is not None, layer.dilation)
    if isinstance(layer, nn.AdaptiveAvgPool2d):
        return tnn.AdaptiveAvgPool2d(layer.output_size)
    if isinstance(layer, nn.AdaptiveMaxPool2d):
        return tnn.AdaptiveMaxPool2d(layer.output_size)
    if isinstance(layer, nn.LeakyReLU):
        return tnn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, nn.Identity):
        return tnn.Identity()
    raise TypeError(type(layer).__name__)


def _cases():
    return [
        ("batchnorm", lambda d: nn.BatchNorm2d(3, dtype=d), (4, 3, 5, 6)),
        ("batchnorm-momentum-none", lambda d: nn.BatchNorm2d(3, eps=1e-3, momentum=None,
                                                             dtype=d), (2, 3, 4, 4)),
        ("batchnorm-no-affine", lambda d: nn.BatchNorm2d(2, affine=False, dtype=d),
         (3, 2, 3, 5)),
        ("batchnorm-untracked", lambda d: nn.BatchNorm2d(2, track_running_stats=False,
                                                         dtype=d), (3, 2, 3, 5)),
        ("convtranspose", lambda d: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1,
                                                       output_padding=1, dtype=d, seed=1),
         (2, 3, 4, 5)),
        ("convtranspose-groups-dilation", lambda d: nn.ConvTranspose2d(
            4, 6, (2, 3), stride=(1, 2), padding=(0, 1), groups=2, dilation=2, bias=False,
            dtype=d, seed=2), (2, 4, 3, 4)),
        ("adaptive-avg", lambda d: nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
        ("adaptive-max", lambda d: nn.AdaptiveMaxPool2d((2, 4)), (2, 3, 7, 5)),
        ("leaky-relu", lambda d: nn.LeakyReLU(0.2), (3, 4, 2)),
        ("identity", lambda d: nn.Identity(54, unused=True), (3, 4)),
    ]


CASES = _cases()
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layer_matches_torch(case, torch, rng, dtype):
    _, factory, shape = case
    layer = factory(dtype)
    twin = _twin(layer, torch).to(torch.float64 if dtype == np.float64 else torch.float32)
    if layer.state_dict():
        twin.load_state_dict({k: torch.from_numpy(np.asarray(v))
                              for k, v in layer.state_dict().items()})
    tolerance = TIGHT if dtype == np.float64 else NORMAL
    for step, training in enumerate((True, True, False)):
        layer.train(training)
        twin.train(training)
        layer.zero_grad()
        twin.zero_grad()
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        output = layer(x)
        grad_output = rng.standard_normal(output.shape).astype(dtype)
        grad_input = layer.backward(grad_output)
        x_t = torch.from_numpy(x).requires_grad_()
        output_t = twin(x_t)
        output_t.backward(torch.from_numpy(grad_output))
        assert output.dtype == dtype
        np.testing.assert_allclose(output, output_t.detach().numpy(), **tolerance)
        np.testing.assert_allclose(grad_input, x_t.grad.numpy(),
                                   rtol=tolerance["rtol"] * 10, atol=tolerance["atol"] * 10)
        theirs = dict(twin.named_parameters())
        for name, parameter in layer.named_parameters():
            np.testing.assert_allclose(parameter.grad, theirs[name].grad.numpy(),
                                       rtol=tolerance["rtol"] * 10,
                                       atol=tolerance["atol"] * 10 * max(1, shape[0] * 10))
        for key, value in twin.state_dict().items():  # running statistics too
            np.testing.assert_allclose(layer.state_dict()[key], value.numpy(), **tolerance)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layer_finite_differences(case, rng):
    _, factory, shape = case
    layer = factory(np.float64)
    x = rng.standard_normal(shape)
    weights = rng.standard_normal(layer(x).shape)
    # evaluation mode for the finite differences: a training batch norm would move its
    # running statistics at every probe (they do not enter its output, but keep it simple)
    for training in (True, False):
        layer.train(training)

        def objective():
            return float(np.sum(layer(x) * weights))

        objective()
        layer.zero_grad()
        grad_input = layer.backward(weights)
        indices, numeric = numerical_gradient(objective, x, count=20, rng=rng)
        np.testing.assert_allclose(grad_input.reshape(-1)[indices], numeric, rtol=1e-5,
                                   atol=1e-7)
        for name, parameter in layer.named_parameters():
            objective()
            indices, numeric = numerical_gradient(objective, parameter.data, count=12, rng=rng)
            np.testing.assert_allclose(parameter.grad.reshape(-1)[indices], numeric, rtol=1e-5,
                                       atol=1e-7, err_msg=name)


@settings(max_examples=15)
@given(batch=st.integers(2, 4), channels=st.integers(1, 4), height=st.integers(1, 5),
       width=st.integers(1, 5), momentum=st.sampled_from([0.1, 0.5, None]),
       seed=st.integers(0, 2**32 - 1))
def test_batchnorm_running_statistics_over_geometries(batch, channels, height, width, momentum,
                                                      seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    layer = nn.BatchNorm2d(channels, momentum=momentum, dtype=np.float64)
    twin = torch.nn.BatchNorm2d(channels, momentum=momentum).double()
    for _ in range(3):
        x = rng.standard_normal((batch, channels, height, width)) * 2 + 1
        np.testing.assert_allclose(layer(x), twin(torch.from_numpy(x)).detach().numpy(),
                                   **TIGHT)
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(layer.state_dict()[key], value.numpy(), **TIGHT)
    layer.eval()
    twin.eval()
    x = rng.standard_normal((batch, channels, height, width))
    np.testing.assert_allclose(layer(x), twin(torch.from_numpy(x)).detach().numpy(), **TIGHT)


def test_batchnorm_state_dict_round_trip_with_torch(torch, rng):
    layer = nn.BatchNorm2d(4)
    for _ in range(2):
        layer(rng.standard_normal((3, 4, 5, 5)).astype(np.float32))
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var",
                           "num_batches_tracked"]
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 2
    twin = torch.nn.BatchNorm2d(4)
    twin.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    twin.running_mean.mul_(2)
    twin.num_batches_tracked.add_(5)
    back = nn.BatchNorm2d(4)
    back.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    np.testing.assert_array_equal(back.running_mean.data, twin.running_mean.numpy())
    assert int(back.num_batches_tracked.data) == 7
    assert len(back.parameters()) == 2  # the buffers are not trained


def test_fused_batchnorm_relu_matches_separate_layers(rng):
    x = rng.standard_normal((4, 3, 5, 5))
    fused, plain, relu = nn.BatchNorm2d(3, dtype=np.float64), nn.BatchNorm2d(
        3, dtype=np.float64), nn.ReLU()
    fused.fused_relu = True
    grad_output = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(fused(x), relu(plain(x)))
    np.testing.assert_allclose(fused.backward(grad_output),
                               plain.backward(relu.backward(grad_output)), **TIGHT)
    np.testing.assert_allclose(fused.weight.grad, plain.weight.grad, **TIGHT)


def test_maxpool_indices_and_unpool(torch, rng):
    x = rng.standard_normal((2, 3, 6, 7))
    pool, unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
    output, indices = pool(x)
    restored = unpool(output, indices, output_size=x.shape)
    t_pool = torch.nn.MaxPool2d(2, return_indices=True)
    t_unpool = torch.nn.MaxUnpool2d(2)
    x_t = torch.from_numpy(x).requires_grad_()
    output_t, indices_t = t_pool(x_t)
    restored_t = t_unpool(output_t, indices_t, output_size=x.shape)
    np.testing.assert_array_equal(indices, indices_t.numpy())
    np.testing.assert_array_equal(restored, restored_t.detach().numpy())
    grad = rng.standard_normal(restored.shape)
    restored_t.backward(torch.from_numpy(grad))
    np.testing.assert_allclose(pool.backward(unpool.backward(grad)), x_t.grad.numpy(), **TIGHT)
    out, idx = nn.AdaptiveMaxPool2d(3, return_indices=True)(x)
    assert out.shape == idx.shape == (2, 3, 3, 3)


def _torch_residual(torch):
    class Residual(torch.nn.Module):
        def __init__(self, body, shortcut=None):
            super().__init__()
            self.body = body
            self.shortcut = shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    class Concat(torch.nn.Module):
        def __init__(self, *branches):
            super().__init__()
            for index, branch in enumerate(branches):
                self.add_module(str(index), branch)

        def forward(self, x):
            return torch.cat([branch(x) for branch in self.children()], dim=1)

    return Residual, Concat


def _blocks(dtype):
    def conv(i, o, k, **kw):
        return nn.Conv2d(i, o, k, dtype=dtype, seed=k + o, **kw)

    residual = nn.Residual(nn.Sequential(conv(3, 3, 3, padding=1), nn.BatchNorm2d(3, dtype=dtype),
                                         nn.ReLU(), conv(3, 3, 3, padding=1)))
    projected = nn.Residual(nn.Sequential(conv(3, 5, 3, stride=2, padding=1), nn.LeakyReLU()),
                            nn.Sequential(conv(3, 5, 1, stride=2),
                                          nn.BatchNorm2d(5, dtype=dtype)))
    inception = nn.Concat(conv(3, 2, 1), nn.Sequential(conv(3, 2, 1), nn.ReLU(),
                                                       conv(2, 3, 3, padding=1)),
                          nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv(3, 2, 1)),
                          nn.Identity())
    return {"residual": residual, "projected": projected, "inception": inception,
            "nested": nn.Sequential(nn.Residual(inception, conv(3, 10, 1)), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())}


def _torch_block(block, torch):
    Residual, Concat = _torch_residual(torch)
    if isinstance(block, nn.Sequential):
        return torch.nn.Sequential(*[_torch_block(child, torch) for child in block])
    if isinstance(block, nn.Residual):
        return Residual(_torch_block(block.body, torch),
                        None if block.shortcut is None else _torch_block(block.shortcut, torch))
    if isinstance(block, nn.Concat):
        return Concat(*[_torch_block(child, torch) for child in block._modules.values()])
    if isinstance(block, nn.Conv2d):
        return torch.nn.Conv2d(block.in_channels, block.out_channels, block.kernel_size,
                               block.stride, block.padding, bias=block.bias is not None)
    if isinstance(block, nn.MaxPool2d):
        return torch.nn.MaxPool2d(block.kernel_size, block.stride, block.padding)
    if isinstance(block, nn.ReLU):
        return torch.nn.ReLU()
    if isinstance(block, nn.Flatten):
        return torch.nn.Flatten()
    return _twin(block, torch)


@pytest.mark.parametrize("name", ["residual", "projected", "inception", "nested"])
def test_composition_blocks_match_torch(name, torch, rng, dtype):
    block = _blocks(dtype)[name]
    twin = _torch_block(block, torch).to(torch.float64 if dtype == np.float64 else torch.float32)
    state = block.state_dict()
    assert set(state) == set(twin.state_dict())
    twin.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    output = block(x)
    grad_output = rng.standard_normal(output.shape).astype(dtype)
    grad_input = block.backward(grad_output)
    x_t = torch.from_numpy(x).requires_grad_()
    output_t = twin(x_t)
    output_t.backward(torch.from_numpy(grad_output))
    tolerance = TIGHT if dtype == np.float64 else {"rtol": 1e-3, "atol": 1e-4}
    np.testing.assert_allclose(output, output_t.detach().numpy(), **tolerance)
    np.testing.assert_allclose(grad_input, x_t.grad.numpy(), **tolerance)
    theirs = dict(twin.named_parameters())
    for key, parameter in block.named_parameters():
        np.testing.assert_allclose(parameter.grad, theirs[key].grad.numpy(), **tolerance,
                                   err_msg=key)


@pytest.mark.parametrize("name", ["residual", "inception"])
def test_composition_blocks_finite_differences(name, rng):
    block = _blocks(np.float64)[name].eval()
    x = rng.standard_normal((2, 3, 5, 5))
    weights = rng.standard_normal(block(x).shape)

    def objective():
        return float(np.sum(block(x) * weights))

    objective()
    grad_input = block.backward(weights)
    indices, numeric = numerical_gradient(objective, x, count=25, rng=rng)
    np.testing.assert_allclose(grad_input.reshape(-1)[indices], numeric, rtol=1e-5, atol=1e-7)


class ScaledSkip(nn.Module):
    """The recipe of docs/custom_modules.md: a user's own Module with forward and backward."""

    def __init__(self, channels, seed=0):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, dtype=np.float64, seed=seed)
        self.scale = nn.Parameter(np.array([0.5]))
        self._kept = None

    def forward(self, x):
        y = self.conv(x)
        self._kept = y
        return x + self.scale.data * y

    def backward(self, grad_output):
        y = self._kept
        self.scale.grad += np.sum(grad_output * y, keepdims=True).reshape(1)
        return grad_output + self.conv.backward(self.scale.data * grad_output)


def test_custom_module_recipe(torch, rng):
    model = nn.Sequential(ScaledSkip(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3,
                                                                           dtype=np.float64))
    assert list(model.state_dict()) == ["0.scale", "0.conv.weight", "0.conv.bias", "3.weight",
                                        "3.bias"]

    class TorchScaledSkip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
            self.conv = torch.nn.Conv2d(2, 2, 3, padding=1).double()

        def forward(self, x):
            return x + self.scale * self.conv(x)

    twin = torch.nn.Sequential(TorchScaledSkip(), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(18, 3).double())
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = rng.standard_normal((4, 2, 3, 3))
    loss = nn.CrossEntropyLoss()
    labels = np.array([0, 2, 1, 2])
    value = loss(model(x), labels)
    model.backward(loss.backward())
    x_t = torch.from_numpy(x)
    value_t = torch.nn.functional.cross_entropy(twin(x_t), torch.from_numpy(labels))
    value_t.backward()
    assert value == pytest.approx(value_t.item(), rel=1e-12)
    theirs = dict(twin.named_parameters())
    for key, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.grad, theirs[key].grad.numpy(), **TIGHT)


def test_dropout_and_batchnorm_follow_eval(rng):
    model = nn.Sequential(nn.BatchNorm2d(2, dtype=np.float64), nn.Dropout(0.5, seed=0))
    x = rng.standard_normal((3, 2, 4, 4))
    model(x)
    assert int(model[0].num_batches_tracked.data) == 1
    model.eval()
    first, second = model(x), model(x)
    np.testing.assert_array_equal(first, second)
    assert int(model[0].num_batches_tracked.data) == 1
    np.testing.assert_allclose(
        first, (x - model[0].running_mean.data.reshape(1, -1, 1, 1))
        / np.sqrt(model[0].running_var.data.reshape(1, -1, 1, 1) + 1e-5), **TIGHT)


def test_construction_and_forward_errors(rng):
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.ConvTranspose2d(3, 2, 3, groups=2)
    with pytest.raises(ValueError, match="4-D"):
        nn.BatchNorm2d(3)(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm2d(3)(np.ones((2, 4, 4, 4)))
    with pytest.raises(TypeError, match="Module"):
        nn.Residual(lambda x: x)
    with pytest.raises(ValueError, match="shortcut"):
        nn.Residual(nn.Conv2d(2, 3, 1))(np.ones((1, 2, 3, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.BatchNorm2d(2).backward(np.ones((1, 2, 2, 2)))
    layer = nn.ConvTranspose2d(2, 2, 3, stride=2, seed=0)
    assert layer(np.ones((1, 2, 4, 4)), output_size=(10, 10)).shape == (1, 2, 10, 10)
    with pytest.raises(ValueError, match="not reachable"):
        layer(np.ones((1, 2, 4, 4)), output_size=(12, 12))


def test_batchnorm_forward_residual_matches_separate_ops(rng, dtype):
    x = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
    skip = rng.standard_normal(x.shape).astype(dtype)
    fused, plain = nn.BatchNorm2d(3, dtype=dtype), nn.BatchNorm2d(3, dtype=dtype)
    output = fused.forward_residual(x, skip)
    summed = plain(x) + skip
    np.testing.assert_allclose(output, np.maximum(summed, 0), **NORMAL)
    grad_output = rng.standard_normal(x.shape).astype(dtype)
    grad_input, grad_skip = fused.backward_residual(grad_output)
    masked = np.where(output > 0, grad_output, 0)
    np.testing.assert_array_equal(grad_skip, masked)
    np.testing.assert_allclose(grad_input, plain.backward(masked), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fused.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="forward_residual"):
        plain.backward_residual(grad_output)
