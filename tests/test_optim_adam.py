"""Adam, AdamW and StepLR against torch.optim, step for step."""

import numpy as np
import pytest

import fastconv
from fastconv import _optim, nn, optim
from helpers import adam_reference_step

SHAPES = [(4, 3, 3, 3), (4,), (10, 7)]


def _run(ours_factory, theirs_factory, dtype, torch, steps=100, schedule=None, seed=0):
    rng = np.random.default_rng(seed)
    params = [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]
    tensors = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    ours, theirs = ours_factory(params), theirs_factory(tensors)
    ours_schedule = theirs_schedule = None
    if schedule is not None:
        ours_schedule = optim.StepLR(ours, **schedule)
        theirs_schedule = torch.optim.lr_scheduler.StepLR(theirs, **schedule)
    for _ in range(steps):
        for p, t in zip(params, tensors):
            grad = (rng.standard_normal(p.data.shape) * 0.1 + p.data * 0.05).astype(dtype)
            p.grad[...] = grad
            t.grad = torch.from_numpy(grad.copy())
        ours.step()
        theirs.step()
        if schedule is not None:
            ours_schedule.step()
            theirs_schedule.step()
            assert ours_schedule.get_last_lr() == theirs_schedule.get_last_lr()
    return params, tensors


CONFIGS = [
    ("adam", {}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("adam", {"lr": 0.003, "amsgrad": True}),
    ("adam", {"lr": 0.003, "maximize": True, "betas": (0.3, 0.9)}),
    ("adamw", {}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
]


@pytest.mark.parametrize("name, kwargs", CONFIGS,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_hundred_steps_equal_torch(name, kwargs, dtype, torch):
    ours_class = optim.Adam if name == "adam" else optim.AdamW
    theirs_class = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    params, tensors = _run(lambda p: ours_class(p, **kwargs),
                           lambda t: theirs_class(t, foreach=False, **kwargs), dtype, torch)
    tolerance = {"rtol": 1e-12, "atol": 1e-13} if dtype == np.float64 else {"rtol": 1e-5,
                                                                             "atol": 1e-6}
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p.data, t.detach().numpy(), **tolerance)


@pytest.mark.parametrize("name, kwargs", CONFIGS,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_compiled_step_equals_numpy_reference_bits(name, kwargs, dtype):
    """The compiled update (fastconv._optim.adam_step) gives the reference's bits at 1, 2 and
    3 threads: a parameter of several of the kernel's blocks, a non-contiguous one (updated
    through a copy), a NaN and an inf in the gradients."""
    rng = np.random.default_rng(3)
    shapes = [(4, 3, 3, 3), (3, 2 * _optim.BLOCK + 5), (5, 8)]
    initial = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    runs = {}
    for threads in (1, 2, 3):
        params = [nn.Parameter(value.copy()) for value in initial]
        params[2].data = np.asfortranarray(params[2].data)  # a user's own, non-contiguous
        opt = (optim.Adam if name == "adam" else optim.AdamW)(params, **kwargs)
        grad_rng = np.random.default_rng(4)
        for _ in range(6):
            for p in params:
                p.grad[...] = grad_rng.standard_normal(p.data.shape).astype(dtype)
            params[1].grad[0, 7] = np.nan
            params[1].grad[2, -1] = np.inf
            with fastconv.threads(threads):
                opt.step()
        runs[threads] = [p.data.copy() for p in params]
    reference = [value.copy() for value in initial]
    state = {}
    grad_rng = np.random.default_rng(4)
    for step in range(1, 7):
        grads = [grad_rng.standard_normal(value.shape).astype(dtype) for value in reference]
        grads[1][0, 7] = np.nan
        grads[1][2, -1] = np.inf
        with np.errstate(invalid="ignore"):  # the NaN and inf
            adam_reference_step(reference, grads, state, step, decoupled=name == "adamw",
                            **({"weight_decay": 0.01} if name == "adamw" else {}) | kwargs)
    for threads, values in runs.items():
        for ours, theirs in zip(values, reference):
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{threads} thread(s)")
    assert np.isnan(runs[1][1][0, 7]) and not np.isnan(runs[1][1][1]).any()


def test_step_lr_with_adam_equals_torch(torch):
    params, tensors = _run(lambda p: optim.Adam(p, lr=0.05),
                           lambda t: torch.optim.Adam(t, lr=0.05, foreach=False), np.float64,
                           torch, steps=40, schedule={"step_size": 7, "gamma": 0.3})
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-13)


def test_adam_state_dict_resumes_exactly(rng):
    layer = nn.Linear(3, 2, dtype=np.float64, seed=0)
    twin = nn.Linear(3, 2, dtype=np.float64, seed=0)
    first, second = optim.Adam(layer, lr=0.1, amsgrad=True), optim.Adam(twin, lr=0.1,
                                                                        amsgrad=True)
    grads = [rng.standard_normal((2, 3)) for _ in range(6)]
    for index, grad in enumerate(grads):
        if index == 3:
            second.load_state_dict(first.state_dict())
            twin.load_state_dict(layer.state_dict())
        for target in (layer, twin):
            target.weight.grad[...] = grad
        first.step()
        if index >= 3:
            second.step()
    np.testing.assert_array_equal(layer.weight.data, twin.weight.data)


def test_adam_skips_uninitialised_parameters_and_zero_grad(rng):
    model = nn.Sequential(nn.Linear(None, 2, seed=0))
    opt = optim.Adam(model.parameters())
    opt.step()  # nothing to update yet
    model(np.ones((1, 3), dtype=np.float32))
    model[0].weight.grad[...] = 1.0
    opt.step()
    opt.zero_grad()
    assert not model[0].weight.grad.any()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"lr": -1.0}, ValueError, "learning rate"),
    ({"betas": (1.0, 0.9)}, ValueError, "beta parameter at index 0"),
    ({"betas": 0.9}, TypeError, "pair"),
    ({"eps": -1e-8}, ValueError, "epsilon"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay"),
])
def test_adam_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        optim.Adam(nn.Linear(2, 1, seed=0).parameters(), **kwargs)


def test_step_lr_errors():
    opt = optim.SGD(nn.Linear(2, 1, seed=0).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, 0)
    with pytest.raises(TypeError, match="lr"):
        optim.StepLR(object(), 3)


def test_adam_follows_arrays_replaced_between_steps(rng):
    """Adam keeps each parameter's kernel arguments while its arrays stay the same objects
    and the thread count the same: a replaced data or gradient array (a new object, a
    Fortran-ordered one), a reloaded state and a changed thread count are all honoured."""
    shapes = [(3, 4), (2, 3, 5)]
    initial = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    plain = [nn.Parameter(value.copy()) for value in initial]
    changed = [nn.Parameter(value.copy()) for value in initial]
    first, second = optim.Adam(plain, lr=0.1), optim.Adam(changed, lr=0.1)
    for step in range(6):
        grads = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
        for p, grad in zip(plain, grads):
            p.grad[...] = grad
        for p, grad in zip(changed, grads):
            p.grad[...] = grad
        if step == 2:
            changed[0].grad = np.asfortranarray(grads[0])
            changed[1].data = changed[1].data.copy()
        elif step == 4:
            changed[0].grad = grads[0].copy()
            second.load_state_dict(second.state_dict())
        first.step()
        with fastconv.threads(1 + step % 2):
            second.step()
        for ours, theirs in zip(changed, plain):
            np.testing.assert_array_equal(ours.data, theirs.data)
