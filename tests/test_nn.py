"""Layers and losses: PyTorch equality, finite differences, state dicts, initialisation, errors."""

import io as stdlib_io

import numpy as np
import pytest

import fastconv
import fastconv.io
from fastconv import models, nn
from helpers import assert_close
from reference.nn import numerical_gradient, torch_layer, torch_twin

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _layer_cases():
    """(id, factory, input shape) for every layer, float64."""
    f64 = np.float64
    return [
        ("conv", lambda: nn.Conv2d(3, 4, 3, dtype=f64, seed=1), (2, 3, 7, 8)),
        ("conv-stride-pad", lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2),
                                              dtype=f64, seed=2), (2, 3, 7, 8)),
        ("conv-dilation-groups", lambda: nn.Conv2d(4, 6, 3, dilation=2, groups=2, dtype=f64,
                                                   seed=3), (2, 4, 9, 9)),
        ("conv-nobias-same", lambda: nn.Conv2d(2, 3, 3, padding="same", bias=False, dtype=f64,
                                               seed=4), (2, 2, 6, 5)),
        ("conv-reflect", lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect",
                                           dtype=f64, seed=5), (2, 2, 6, 5)),
        ("conv-circular", lambda: nn.Conv2d(2, 2, 3, padding=2, padding_mode="circular",
                                            dtype=f64, seed=6), (1, 2, 5, 6)),
        ("conv-replicate", lambda: nn.Conv2d(2, 2, 2, stride=2, padding=1,
                                             padding_mode="replicate", dtype=f64, seed=7),
         (1, 2, 5, 6)),
        ("maxpool", lambda: nn.MaxPool2d(2), (2, 3, 6, 6)),
        ("maxpool-overlap", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
         (2, 2, 7, 6)),
        ("maxpool-dilation", lambda: nn.MaxPool2d(2, stride=1, dilation=2), (1, 2, 6, 6)),
        ("avgpool", lambda: nn.AvgPool2d(2), (2, 3, 6, 6)),
        ("avgpool-pad", lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                             count_include_pad=False), (2, 2, 7, 6)),
        ("linear", lambda: nn.Linear(5, 3, dtype=f64, seed=8), (4, 5)),
        ("linear-nobias-3d", lambda: nn.Linear(5, 3, bias=False, dtype=f64, seed=9),
         (2, 4, 5)),
        ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
        ("relu", lambda: nn.ReLU(), (3, 4)),
        ("sigmoid", lambda: nn.Sigmoid(), (3, 4)),
        ("tanh", lambda: nn.Tanh(), (3, 4)),
    ]


CASES = _layer_cases()
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layer_matches_torch(case, torch, rng):
    _, factory, shape = case
    layer = factory()
    x = rng.standard_normal(shape)
    grad_output_shape = layer(x).shape
    grad_output = rng.standard_normal(grad_output_shape)

    output = layer(x)
    grad_input = layer.backward(grad_output)

    twin = torch_layer(layer, torch).double()
    if layer.parameters():
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x_t = torch.from_numpy(x).requires_grad_()
    output_t = twin(x_t)
    output_t.backward(torch.from_numpy(grad_output))

    np.testing.assert_allclose(output, output_t.detach().numpy(), **TIGHT)
    np.testing.assert_allclose(grad_input, x_t.grad.numpy(), **TIGHT)
    theirs = dict(twin.named_parameters())
    for name, parameter in layer.named_parameters():
        np.testing.assert_allclose(parameter.grad, theirs[name].grad.numpy(), **TIGHT)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layer_finite_differences(case, rng):
    """backward agrees with central differences of sum(layer(x) * r) (float64)."""
    _, factory, shape = case
    layer = factory()
    x = rng.standard_normal(shape)
    weights = rng.standard_normal(layer(x).shape)

    def objective():
        return float(np.sum(layer(x) * weights))

    objective()
    layer.zero_grad()
    grad_input = layer.backward(weights)
    indices, numeric = numerical_gradient(objective, x, count=20, rng=rng)
    np.testing.assert_allclose(grad_input.reshape(-1)[indices], numeric, rtol=1e-5, atol=1e-7)
    for name, parameter in layer.named_parameters():
        indices, numeric = numerical_gradient(objective, parameter.data, count=12, rng=rng)
        np.testing.assert_allclose(parameter.grad.reshape(-1)[indices], numeric, rtol=1e-5,
                                   atol=1e-7, err_msg=name)


def test_dropout(rng):
    layer = nn.Dropout(0.25, seed=0)
    x = rng.standard_normal((200, 50))
    out = layer(x)
    kept = out != 0
    assert 0.70 < kept.mean() < 0.80
    np.testing.assert_allclose(out[kept], x[kept] / 0.75)
    grad = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(grad), np.where(kept, grad / 0.75, 0))
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(grad), grad)
    layer.train()
    assert np.count_nonzero(nn.Dropout(1.0)(x)) == 0
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)


# --------------------------------------------------------------------------- losses

def test_cross_entropy_matches_torch(torch, rng):
    logits = rng.standard_normal((6, 5)) * 3
    target = rng.integers(0, 5, 6)
    loss = nn.CrossEntropyLoss()
    value = loss(logits, target)
    grad = loss.backward()
    logits_t = torch.from_numpy(logits).requires_grad_()
    value_t = torch.nn.CrossEntropyLoss()(logits_t, torch.from_numpy(target))
    value_t.backward()
    assert value == pytest.approx(value_t.item(), rel=1e-12)
    np.testing.assert_allclose(grad, logits_t.grad.numpy(), **TIGHT)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_variants_match_torch(torch, rng, reduction):
    loss = nn.CrossEntropyLoss(reduction=reduction)
    loss_t = torch.nn.CrossEntropyLoss(reduction=reduction)
    cases = [
        (rng.standard_normal((3, 4, 2, 2)), rng.integers(0, 4, (3, 2, 2))),  # K-dimensional
        (rng.standard_normal(4), np.int64(2)),                                 # unbatched
        (rng.standard_normal((3, 4)), rng.dirichlet(np.ones(4), 3)),           # probabilities
    ]
    for logits, target in cases:
        value = loss(logits, target)
        logits_t = torch.from_numpy(np.array(logits)).requires_grad_()
        value_t = loss_t(logits_t, torch.as_tensor(target))
        value_t.backward()
        assert value == pytest.approx(value_t.item(), rel=1e-12)
        np.testing.assert_allclose(loss.backward(), logits_t.grad.numpy(), **TIGHT)


def test_cross_entropy_is_stable():
    loss = nn.CrossEntropyLoss()
    value = loss(np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]]), np.array([0, 2]))
    assert value == pytest.approx(1e4 / 2)
    grad = loss.backward()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[0, 0, 0], [0, 0.5, -0.5]])
    value32 = loss(np.array([[100.0, 0.0]], dtype=np.float32), np.array([1]))
    assert value32 == pytest.approx(100.0)
    assert loss.backward().dtype == np.float32


def test_mse_matches_torch(torch, rng):
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    for reduction in ("mean", "sum"):
        loss = nn.MSELoss(reduction=reduction)
        value = loss(pred, target)
        pred_t = torch.from_numpy(pred).requires_grad_()
        value_t = torch.nn.MSELoss(reduction=reduction)(pred_t, torch.from_numpy(target))
        value_t.backward()
        assert value == pytest.approx(value_t.item(), rel=1e-12)
        np.testing.assert_allclose(loss.backward(), pred_t.grad.numpy(), **TIGHT)


@pytest.mark.parametrize("which", ["cross-entropy", "cross-entropy-soft", "mse"])
def test_loss_finite_differences(which, rng):
    pred = rng.standard_normal((4, 5))
    if which == "cross-entropy":
        loss, target = nn.CrossEntropyLoss(), rng.integers(0, 5, 4)
    elif which == "cross-entropy-soft":
        loss, target = nn.CrossEntropyLoss(), rng.dirichlet(np.ones(5), 4)
    else:
        loss, target = nn.MSELoss(), rng.standard_normal((4, 5))
    loss(pred, target)
    grad = loss.backward()
    _, numeric = numerical_gradient(lambda: loss(pred, target), pred)
    np.testing.assert_allclose(grad.reshape(-1), numeric, rtol=1e-6, atol=1e-9)
    loss(pred, target)
    np.testing.assert_allclose(loss.backward(2.0), 2 * grad)


def test_loss_errors():
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="class index 5"):
        loss(np.zeros((2, 5)), np.array([0, 5]))
    with pytest.raises(ValueError, match="target has shape"):
        loss(np.zeros((2, 5)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="median")
    with pytest.raises(ValueError, match="target has shape"):
        nn.MSELoss()(np.zeros(3), np.zeros(4))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.MSELoss().backward()


# --------------------------------------------------------------------------- whole models

@pytest.mark.parametrize("build", [models.tutorial_net, models.lenet5], ids=["seed", "lenet"])
def test_model_matches_torch(build, torch, rng):
    model = build(seed=3, dtype=np.float64)
    twin = torch_twin(model, torch)
    x = rng.random((5, 1, 28, 28))
    y = rng.integers(0, 10, 5)
    loss = nn.CrossEntropyLoss()

    value = loss(model(x), y)
    grad_input = model.backward(loss.backward())

    x_t = torch.from_numpy(x).requires_grad_()
    value_t = torch.nn.functional.cross_entropy(twin(x_t), torch.from_numpy(y))
    value_t.backward()
    assert value == pytest.approx(value_t.item(), rel=1e-12)
    np.testing.assert_allclose(grad_input, x_t.grad.numpy(), **TIGHT)
    theirs = dict(twin.named_parameters())
    assert [name for name, _ in model.named_parameters()] == list(theirs)
    for name, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.grad, theirs[name].grad.numpy(), **TIGHT,
                                   err_msg=name)


def test_model_float32(rng):
    model = models.tutorial_net(seed=0)
    x = rng.random((3, 1, 28, 28)).astype(np.float32)
    out = model(x)
    assert out.dtype == np.float32 and out.shape == (3, 10)
    loss = nn.CrossEntropyLoss()
    loss(out, np.array([1, 2, 3]))
    assert model.backward(loss.backward()).dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in model.parameters())
    reference = models.tutorial_net(seed=0, dtype=np.float64)
    assert_close(out, reference(x.astype(np.float64)), np.float32)


def test_first_layer_can_skip_input_gradient(rng):
    model = models.tutorial_net(seed=0, dtype=np.float64)
    x = rng.random((2, 1, 28, 28))
    grad = rng.standard_normal((2, 10))
    model(x)
    full = model.backward(grad)
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model(x)
    assert model.backward(grad, need_input_grad=False) is None
    for before, parameter in zip(grads, model.parameters()):
        np.testing.assert_array_equal(parameter.grad, before)
    assert full.shape == x.shape


def test_gradients_accumulate_and_zero_grad(rng):
    layer = nn.Linear(4, 2, dtype=np.float64, seed=0)
    x, grad = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    layer(x)
    layer.backward(grad)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(grad)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_edge_kernel_is_learned():
    """The tutorial exercise: recover the [1, -1] edge detector from an image and its edges."""
    X = np.ones((6, 8))
    X[:, 2:6] = 0
    Y = X[:, :-1] - X[:, 1:]  # corr2d(X, [[1, -1]])
    X, Y = X.reshape(1, 1, 6, 8), Y.reshape(1, 1, 6, 7)
    conv = nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False, dtype=np.float64, seed=0)
    loss = nn.MSELoss(reduction="sum")
    for _ in range(30):
        loss(conv(X), Y)
        conv.zero_grad()
        conv.backward(loss.backward())
        conv.weight.data -= 3e-2 * conv.weight.grad
    np.testing.assert_allclose(conv.weight.data.reshape(2), [1.0, -1.0], atol=0.02)
    assert loss(conv(X), Y) < 1e-3


# --------------------------------------------------------------------------- state and init

def test_initialisation_follows_pytorch_rule():
    conv = nn.Conv2d(4, 8, 3, groups=2, seed=0)
    bound = 1 / np.sqrt(2 * 3 * 3)
    assert conv.weight.shape == (8, 2, 3, 3) and conv.weight.dtype == np.float32
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    big = nn.Linear(400, 300, seed=1)
    bound = 1 / np.sqrt(400)
    assert np.abs(big.weight.data).max() <= bound
    assert big.weight.data.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    np.testing.assert_array_equal(nn.Linear(3, 2, seed=5).weight.data,
                                  nn.Linear(3, 2, seed=5).weight.data)
    assert not np.array_equal(nn.Linear(3, 2, seed=5).weight.data,
                              nn.Linear(3, 2, seed=6).weight.data)
    one = models.tutorial_net(seed=0).state_dict()
    two = models.tutorial_net(seed=0).state_dict()
    assert all(np.array_equal(one[key], two[key]) for key in one)


def test_lazy_in_channels(rng):
    conv = nn.Conv2d(None, 4, 3, seed=0)
    assert conv.weight.data is None
    with pytest.raises(ValueError, match="not initialised"):
        conv.state_dict()
    out = conv(rng.random((2, 5, 6, 6)).astype(np.float32))
    assert conv.in_channels == 5 and conv.weight.shape == (4, 5, 3, 3)
    assert out.shape == (2, 4, 4, 4)
    # a state dict can also size a lazy layer
    lazy = nn.Sequential(nn.Conv2d(None, 4, 3), nn.Flatten(), nn.Linear(None, 2))
    eager = nn.Sequential(nn.Conv2d(5, 4, 3, seed=1), nn.Flatten(), nn.Linear(64, 2, seed=1))
    lazy.load_state_dict(eager.state_dict())
    x = rng.random((1, 5, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(lazy(x), eager(x))


def test_state_dict_names_and_round_trip(tmp_path, rng):
    model = models.lenet5(seed=0)
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias",
                           "9.weight", "9.bias", "11.weight", "11.bias"]
    state["0.weight"][...] = 0  # a copy: the model is unchanged
    assert model[0].weight.data.any()

    other = models.lenet5(seed=1)
    path = tmp_path / "lenet.npz"
    assert fastconv.io.save(model, path) == path
    fastconv.io.load(other, path)
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(other(x), model(x))
    with np.load(path) as archive:
        assert sorted(archive.files) == sorted(model.state_dict())

    buffer = stdlib_io.BytesIO()
    fastconv.io.save(model, buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(fastconv.io.load(models.lenet5(seed=2), buffer)(x), model(x))


def test_state_dict_moves_to_torch_and_back(torch, rng):
    model = models.tutorial_net(seed=0)
    twin = torch_layer(model, torch)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = rng.random((2, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        assert_close(model(x), twin(torch.from_numpy(x)).numpy())
        for parameter in twin.parameters():
            parameter.mul_(0.5)
    model.load_state_dict(twin.state_dict())
    with torch.no_grad():
        assert_close(model(x), twin(torch.from_numpy(x)).numpy())


def test_load_state_dict_errors():
    model = models.tutorial_net(seed=0)
    state = model.state_dict()
    before = model[0].weight.data.copy()
    with pytest.raises(KeyError, match="missing keys \\['6.bias'\\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "6.bias"})
    bad = dict(state, **{"0.weight": np.zeros((16, 1, 3, 3)), "6.bias": state["6.bias"] + 1})
    with pytest.raises(ValueError, match="0.weight"):
        model.load_state_dict(bad)
    np.testing.assert_array_equal(model[0].weight.data, before)  # nothing written
    with pytest.raises(KeyError, match="unexpected keys \\['extra'\\]"):
        model.load_state_dict(dict(state, extra=np.zeros(1)))
    model.load_state_dict(dict(state, extra=np.zeros(1)), strict=False)


def test_module_structure():
    model = models.tutorial_net(seed=0)
    assert len(model) == 7
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[-1], nn.Linear)
    head = model[:3]
    assert isinstance(head, nn.Sequential) and len(head) == 3 and head[0] is model[0]
    assert len(model.parameters()) == 6
    model.eval()
    assert not any(module.training for module in model.modules())
    assert model.train() is model and all(module.training for module in model.modules())
    assert "Conv2d(1, 16, kernel_size=(5, 5), stride=(2, 2))" in repr(model)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(3, 2, seed=0))
            self.head = nn.Linear(2, 1, seed=0)

    assert list(Custom().state_dict()) == ["features.0.weight", "features.0.bias",
                                           "head.weight", "head.bias"]
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), "not a layer")


@pytest.mark.parametrize("factory, error, match", [
    (lambda: nn.Conv2d(3, 4, 0), ValueError, "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), ValueError, "stride"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), ValueError, "padding"),
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), ValueError, "padding"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "in_channels must be divisible"),
    (lambda: nn.Conv2d(4, 3, 3, groups=2), ValueError, "out_channels must be divisible"),
    (lambda: nn.Conv2d(3, 0, 3), ValueError, "out_channels"),
    (lambda: nn.Conv2d(3.0, 4, 3), TypeError, "in_channels"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
    (lambda: nn.Conv2d(3, 4, 3, dtype=np.int32), TypeError, "dtype"),
    (lambda: nn.Conv2d(3, 4, 3, seed="x"), TypeError, "seed"),
    (lambda: nn.Linear(0, 3), ValueError, "in_features"),
    (lambda: nn.Linear(3, 2, bias="yes"), TypeError, "bias"),
    (lambda: nn.MaxPool2d(0), ValueError, "kernel_size"),
    (lambda: nn.AvgPool2d(2, stride=(1, 0)), ValueError, "stride"),
    (lambda: nn.Dropout(1.5), ValueError, "between 0 and 1"),
])
def test_construction_errors(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_forward_errors(rng):
    with pytest.raises(ValueError, match="in_features=5"):
        nn.Linear(5, 2)(np.zeros((3, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Conv2d(1, 1, 2).backward(np.zeros((1, 1, 2, 2)))
    with pytest.raises(TypeError):
        nn.ReLU()(np.array(["a"]))


def test_plot_feature_maps(tmp_path, rng):
    pytest.importorskip("matplotlib")
    from fastconv import plot

    image = np.zeros((20, 20))
    image[5:15, 5:15] = 1.0
    vertical = np.array([[-1.0, 0.0, 1.0]] * 3)
    conv = nn.Conv2d(1, 2, 3, bias=False, dtype=np.float64)
    conv.weight.data[:, 0] = [vertical, vertical.T]
    path = plot.layer_feature_maps(conv, image, tmp_path / "edges.png",
                                   titles=["vertical", "horizontal"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.feature_maps(rng.random((3, 4, 4)), tmp_path / "maps.png").stat().st_size > 0


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    import builtins

    from fastconv import plot

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(ImportError, match="pip install fastconv\\[plot\\]"):
        plot.feature_maps(np.zeros((1, 3, 3)), tmp_path / "x.png")


def test_activations_at_extremes(torch):
    x = np.array([-800.0, -40.0, -1.0, 0.0, 1.0, 40.0, 800.0, np.nan, np.inf, -np.inf])
    x_t = torch.from_numpy(x)
    np.testing.assert_allclose(nn.Sigmoid()(x), torch.sigmoid(x_t).numpy(), rtol=1e-15)
    np.testing.assert_allclose(nn.Tanh()(x), torch.tanh(x_t).numpy(), rtol=1e-15)
    np.testing.assert_array_equal(nn.ReLU()(x), torch.relu(x_t).numpy())


def _relu_backward_reference(output, grad):
    """np.where(output <= 0, +0, grad), bit for bit: the gradient's bits (NaN payloads, -0)
    where the unit is on (output > 0 or NaN), +0 where it is off."""
    kind = np.dtype(f"u{output.dtype.itemsize}")
    on = ~(output <= 0)
    return np.where(on, grad.view(kind), kind.type(0)).view(output.dtype)


@pytest.mark.parametrize("size", [1, 3, 4, 7, 37, 40000])
def test_relu_backward_bits_and_threads(dtype, size):
    """ReLU.backward's one-pass kernel (its vectors and its tail, one or several threads) is
    the reference's bits: NaN outputs pass the gradient, +-0 and negative outputs give +0,
    NaN payloads and -0 gradients pass unchanged where the unit is on."""
    kind = np.dtype(f"u{np.dtype(dtype).itemsize}")
    payload = np.array([np.nan], dtype=dtype).view(kind) | kind.type(5)
    special = np.concatenate([
        np.array([np.nan, -np.nan, 0.0, -0.0, 1.0, -2.5, np.inf, -np.inf,
                  np.finfo(dtype).tiny, -np.finfo(dtype).tiny], dtype=dtype),
        payload.view(dtype)])
    rng = np.random.default_rng(size)
    output = rng.choice(special, size)
    grad = rng.choice(special, size)
    grad[::3] = rng.standard_normal(grad[::3].shape)
    expected = _relu_backward_reference(output, grad)
    for threads in (1, 2, 3):
        layer = nn.ReLU()
        layer._output = output
        with fastconv.threads(threads):
            got = layer.backward(grad)
        assert got.dtype == np.dtype(dtype) and got.shape == output.shape
        assert np.array_equal(got.view(kind), expected.view(kind))


def test_relu_backward_non_finite_like_torch(torch, dtype):
    x = np.array([np.nan, -1.0, 0.0, 2.0, 3.0, -0.0], dtype=dtype)
    grad = np.array([5.0, np.inf, np.nan, 3.0, -np.inf, 1.0], dtype=dtype)
    layer = nn.ReLU()
    layer(x)
    ours = layer.backward(grad)
    x_t = torch.from_numpy(x).requires_grad_()
    torch.relu(x_t).backward(torch.from_numpy(grad))
    assert ours.dtype == dtype
    np.testing.assert_array_equal(ours, x_t.grad.numpy())


def test_conv2d_layer_repeated_calls_follow_what_their_checks_depend_on(rng):
    # a layer's repeated calls skip conv2d's checks (nn.Conv2d._checked): what the checked
    # plan depends on, changed between two calls with the same input (the weight array, a
    # setting, the path override, the input's dtype), is honoured: conv2d's bits
    import contextlib

    from fastconv._plan import use_paths

    layer = nn.Conv2d(3, 4, 3, padding=1, seed=0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    winograd = {"forward": "winograd", "grad_input": "winograd"}  # (other bits)
    cases = [("plain", None, {}, lambda: None),
             ("new weight", None, {}, lambda: setattr(
                 layer.weight, "data", (layer.weight.data * 2).astype(np.float32))),
             ("override", None, winograd, lambda: None),
             ("float64", np.float64, {}, lambda: None),
             ("float32 again", None, {}, lambda: None),
             ("stride", None, {}, lambda: setattr(layer, "stride", (2, 2))),
             ("no bias", None, {}, lambda: setattr(layer, "bias", None))]
    for name, dtype, paths, change in cases:
        layer(x)  # (the call that the next one may repeat)
        change()
        inputs = x if dtype is None else x.astype(dtype)
        with use_paths(**paths) if paths else contextlib.nullcontext():
            layer.weight.grad[...] = 0
            out = layer(inputs)
            grad_output = rng.standard_normal(out.shape).astype(out.dtype)
            grad_x = layer.backward(grad_output)
            bias = None if layer.bias is None else layer.bias.data
            wanted = fastconv.conv2d(inputs, layer.weight.data, bias, layer.stride, 1)
            grads = fastconv.conv2d_backward(grad_output, inputs, layer.weight.data,
                                             layer.stride, 1)
        np.testing.assert_array_equal(out, wanted, err_msg=name)
        np.testing.assert_array_equal(grad_x, grads[0], err_msg=name)
        np.testing.assert_array_equal(layer.weight.grad, grads[1].astype(np.float32),
                                      err_msg=name)
