"""optim.SGD: the torch.optim.SGD update, step for step, and its argument checks."""

import numpy as np
import pytest

from fastconv import nn, optim

CONFIGS = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"weight_decay": 0.01},
    {"momentum": 0.8, "weight_decay": 0.05},
    {"momentum": 0.9, "weight_decay": 0.05, "nesterov": True},
    {"momentum": 0.5, "dampening": 0.3},
    {"momentum": 0.9, "maximize": True},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in
                                                                    c.items()) or "plain")
def test_sgd_matches_torch_step_for_step(config, torch, rng):
    shapes = [(3, 4), (4,), (2, 1, 3, 3)]
    ours = [nn.Parameter(rng.standard_normal(shape)) for shape in shapes]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in ours]
    optimizer = optim.SGD(ours, 0.1, **config)
    reference = torch.optim.SGD(theirs, lr=0.1, **config)
    for _ in range(6):
        for parameter, twin in zip(ours, theirs):
            grad = rng.standard_normal(parameter.data.shape)
            parameter.grad[...] = grad
            twin.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        reference.step()
        for parameter, twin in zip(ours, theirs):
            np.testing.assert_allclose(parameter.data, twin.detach().numpy(), rtol=1e-13,
                                       atol=1e-14)


def test_sgd_keeps_dtype_and_does_not_touch_grads(rng):
    layer = nn.Linear(3, 2, seed=0)
    layer.weight.grad[...] = 1.0
    before = layer.weight.grad.copy()
    optimizer = optim.SGD(layer, lr=0.5, momentum=0.9, weight_decay=0.1)
    optimizer.step()
    assert layer.weight.data.dtype == np.float32
    np.testing.assert_array_equal(layer.weight.grad, before)
    optimizer.zero_grad()
    assert not layer.weight.grad.any()


def test_sgd_with_lazy_parameters(rng):
    model = nn.Sequential(nn.Linear(None, 2, seed=0))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.step()  # nothing to do yet
    model(rng.random((4, 3)))
    model[0].weight.grad[...] = 1.0
    before = model[0].weight.data.copy()
    optimizer.step()
    np.testing.assert_allclose(model[0].weight.data, before - 0.1, rtol=1e-6)


def test_sgd_state_dict(rng):
    params = [nn.Parameter(rng.standard_normal(3))]
    optimizer = optim.SGD(params, lr=0.1, momentum=0.9)
    params[0].grad[...] = 1.0
    optimizer.step()
    state = optimizer.state_dict()
    copy = optim.SGD(params, lr=0.2)
    copy.load_state_dict(state)
    assert copy.momentum == 0.9 and copy.lr == 0.1
    np.testing.assert_array_equal(copy._buffers[0], optimizer._buffers[0])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    ({"lr": 0.1, "momentum": -0.5}, ValueError, "Invalid momentum value"),
    ({"lr": 0.1, "weight_decay": -1}, ValueError, "Invalid weight_decay value"),
    ({"lr": 0.1, "nesterov": True}, ValueError, "Nesterov momentum requires a momentum"),
    ({"lr": 0.1, "momentum": 0.9, "nesterov": True, "dampening": 0.1}, ValueError,
     "zero dampening"),
    ({"lr": float("nan")}, ValueError, "learning rate"),
    ({"lr": "fast"}, TypeError, "lr"),
])
def test_sgd_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        optim.SGD([nn.Parameter(np.zeros(2))], **kwargs)


def test_sgd_parameter_list_errors():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="params\\[0\\]"):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="single Parameter"):
        optim.SGD(nn.Parameter(np.zeros(2)), lr=0.1)


def closed_form(base_lr, eta_min, t, T):
    return eta_min + (base_lr - eta_min) * (1 + np.cos(np.pi * t / T)) / 2


@pytest.mark.parametrize("T_max, eta_min", [(1, 0.0), (4, 0.0), (7, 0.01), (10, 0.002)])
def test_cosine_schedule_follows_the_cosine(T_max, eta_min, rng):
    optimizer = optim.SGD([nn.Parameter(rng.standard_normal(3))], lr=0.1)
    schedule = optim.CosineAnnealingLR(optimizer, T_max, eta_min=eta_min)
    assert optimizer.lr == 0.1 and schedule.get_last_lr() == [0.1]
    rates = []
    for _ in range(3 * T_max + 2):  # past T_max: back up again, as PyTorch
        schedule.step()
        rates.append(optimizer.lr)
    expected = [closed_form(0.1, eta_min, t, T_max) for t in range(1, 3 * T_max + 3)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=1e-15)
    assert rates[T_max - 1] == pytest.approx(eta_min, abs=1e-15)
    assert schedule.get_last_lr() == [rates[-1]]


@pytest.mark.parametrize("T_max, eta_min", [(3, 0.0), (10, 0.001), (938, 0.0)])
def test_cosine_schedule_matches_torch_bit_for_bit(T_max, eta_min, torch, rng):
    parameter = nn.Parameter(rng.standard_normal(3))
    optimizer = optim.SGD([parameter], lr=0.05, momentum=0.9)
    schedule = optim.CosineAnnealingLR(optimizer, T_max, eta_min=eta_min)
    twin = torch.nn.Parameter(torch.from_numpy(parameter.data.copy()))
    reference = torch.optim.SGD([twin], lr=0.05, momentum=0.9)
    reference_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max,
                                                                    eta_min=eta_min)
    for _ in range(min(2 * T_max + 3, 1000)):
        grad = rng.standard_normal(3)
        parameter.grad[...] = grad
        twin.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        reference.step()
        schedule.step()
        reference_schedule.step()
        assert schedule.get_last_lr() == reference_schedule.get_last_lr()
    np.testing.assert_allclose(parameter.data, twin.detach().numpy(), rtol=1e-13, atol=1e-14)


def test_cosine_schedule_state_dict(rng):
    optimizer = optim.SGD([nn.Parameter(rng.standard_normal(3))], lr=0.2)
    schedule = optim.CosineAnnealingLR(optimizer, 8, eta_min=0.01)
    for _ in range(3):
        schedule.step()
    state = schedule.state_dict()
    resumed_optimizer = optim.SGD([nn.Parameter(rng.standard_normal(3))], lr=optimizer.lr)
    resumed = optim.CosineAnnealingLR(resumed_optimizer, 1)
    resumed.load_state_dict(state)
    for _ in range(4):
        schedule.step()
        resumed.step()
        assert resumed_optimizer.lr == optimizer.lr
    assert "T_max=8" in repr(resumed)


@pytest.mark.parametrize("args, error, match", [
    ((0,), ValueError, "T_max must be >= 1"),
    ((2.5,), TypeError, "T_max must be an int"),
    ((True,), TypeError, "T_max must be an int"),
    ((5, -0.1), ValueError, "eta_min"),
])
def test_cosine_schedule_argument_errors(args, error, match, rng):
    optimizer = optim.SGD([nn.Parameter(rng.standard_normal(3))], lr=0.1)
    with pytest.raises(error, match=match):
        optim.CosineAnnealingLR(optimizer, *args)
    with pytest.raises(TypeError, match="'lr' attribute"):
        optim.CosineAnnealingLR(object(), 5)
