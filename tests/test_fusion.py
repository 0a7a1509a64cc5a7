"""Fused epilogues (conv2d(activation='relu')) and nn.Sequential's fusion and prepared plans:
every fused result must be bit for bit the unfused one (the same sums, then numpy.maximum)."""

import copy
import weakref

import numpy as np
import pytest

import fastconv
from fastconv import _fusion, _paths, models, nn, optim
from fastconv import conv as conv_module
from fastconv._plan import use_paths
from helpers import assert_close, assert_isa_capped, bits, run_at_isa
from reference.conv import conv2d_ref

# (batch, C_in, H, W, C_out, kernel, stride, pads, dilation, groups): one of each family
CASES = {
    "depthwise16": (2, 16, 9, 10, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16),
    "depthwise-mult": (2, 3, 9, 10, 6, (3, 3), (2, 1), (1, 1, 0, 2), (1, 1), 3),
    "dense16": (2, 3, 9, 10, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "tutorial": (3, 1, 28, 28, 16, (5, 5), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "odd": (2, 4, 11, 7, 7, (3, 2), (1, 2), (2, 0, 1, 1), (2, 1), 1),
    "pointwise": (2, 8, 5, 6, 32, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "grouped": (1, 4, 12, 12, 34, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
}


def _case(rng, geometry, dtype, special=True):
    batch, cin, h, w, cout, kernel, stride, pads, dilation, groups = geometry
    x = rng.standard_normal((batch, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, cin // groups) + kernel).astype(dtype)
    bias = rng.standard_normal(cout).astype(dtype)
    if special:
        # a NaN and an inf in the input (ReLU keeps NaN, as numpy.maximum), a zero weight
        # filter with a -0 bias (a -0 sum: ReLU makes it +0, as numpy.maximum)
        x[0, 0, 1, 1] = np.nan
        x[-1, -1, -2, -1] = np.inf
        weight[0] = 0
        bias[0] = -0.0
    kwargs = dict(stride=stride, padding=((pads[0], pads[1]), (pads[2], pads[3])),
                  dilation=dilation, groups=groups)
    return x, weight, bias, kwargs


def _forward_path(x, weight, bias, kwargs):
    conv, _ = conv_module._prepare(x, weight, bias, kwargs["stride"], kwargs["padding"],
                                   kwargs["dilation"], kwargs["groups"], "zeros")
    return conv.plan.forward.name


def test_relu_rule_is_numpys(dtype):
    """The fused epilogue's ReLU (applied by the paths that fuse nothing) is numpy.maximum's,
    bit for bit: NaN kept with its payload, -0 made +0, inf kept."""
    values = np.array([1.5, -2.0, 0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan,
                       np.finfo(dtype).tiny, -np.finfo(dtype).tiny], dtype=dtype)
    values = np.tile(values, 7)  # past a vector's width, with a tail
    expected = np.maximum(values, 0)
    got = values.copy()
    _paths.relu_inplace(got)
    assert np.array_equal(bits(got), bits(expected))



@pytest.mark.parametrize("threads", [1, 2, 3])
def test_residual_add_is_numpys(rng, dtype, threads):
    """_paths.add_inplace (a residual block's two input gradients, models.BasicBlock) is
    NumPy's ``+=`` bit for bit, on any thread count, special values included; arrays it does
    not take (another dtype, a strided view, overlapping operands) go to NumPy's ``+=``."""
    n = (1 << 15) * threads + 37  # a second and third thread's share, with a tail
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30], dtype=dtype)
    a = rng.standard_normal(n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    a[:7], b[:7] = special, special[::-1]
    a[-7:], b[-7:] = special[::-1], -special
    with np.errstate(invalid="ignore"):  # inf + -inf: NumPy warns, the kernel does not
        expected = a + b
    got = a.copy()
    with fastconv.threads(threads):
        _paths.add_inplace(got, b)
    assert np.array_equal(bits(got), bits(expected))
    with np.errstate(invalid="ignore"):
        _fallbacks(a, b)


def _fallbacks(a, b):
    """add_inplace on what it hands to NumPy equals NumPy's ``+=``."""
    strided = a.copy()[::2]
    fallback = strided.copy()
    _paths.add_inplace(strided, b[::2])
    fallback += b[::2]
    assert np.array_equal(bits(strided), bits(fallback))
    other = b.astype(np.float64 if a.dtype == np.float32 else np.float32)
    mixed = a.copy()
    _paths.add_inplace(mixed, other)
    by_numpy = a.copy()
    by_numpy += other
    assert np.array_equal(bits(mixed), bits(by_numpy))
    overlap = a.copy()
    _paths.add_inplace(overlap[1:], overlap[:-1])
    by_numpy = a.copy()
    by_numpy[1:] += by_numpy[:-1]
    assert np.array_equal(bits(overlap), bits(by_numpy))


@pytest.mark.parametrize("bias", [True, False])
def test_every_forward_path_fuses_relu_bit_for_bit(rng, dtype, bias):
    """Each forward path, asked for through the override where it applies: conv2d(...,
    activation='relu') is bit for bit numpy.maximum(conv2d(...), 0), and matches the
    reference."""
    ran = set()
    for name in _paths.names("forward"):
        for geometry in CASES.values():
            x, weight, b, kwargs = _case(rng, geometry, dtype)
            b = b if bias else None
            with use_paths(forward=name):
                if _forward_path(x, weight, b, kwargs) != name:
                    continue  # does not apply to this case
                ran.add(name)
                plain = fastconv.conv2d(x, weight, b, **kwargs)
                fused = fastconv.conv2d(x, weight, b, activation="relu", **kwargs)
            assert fused.dtype == plain.dtype and fused.shape == plain.shape
            assert np.array_equal(bits(fused), bits(np.maximum(plain, 0))), (name, geometry)
            # and against the reference, away from the non-finite inputs
            xf, wf, bf, _ = _case(np.random.default_rng(1), geometry, dtype, special=False)
            bf = bf if bias else None
            with use_paths(forward=name):
                fused = fastconv.conv2d(xf, wf, bf, activation="relu", **kwargs)
            batch, cin, h, w, cout, kernel, stride, pads, dilation, groups = geometry
            expected = np.maximum(conv2d_ref(xf, wf, bf, stride, pads, dilation, groups), 0)
            assert_close(fused, expected)
    expected_paths = set(_paths.names("forward"))
    if not (_paths._DIRECT and dtype == np.float32):
        expected_paths -= {"direct", "depthwise-direct"}
    if not _paths._PACKED_GEMM:
        expected_paths.discard("packed")
    assert ran == expected_paths


def test_a_path_that_does_not_fuse_gets_relu_after_its_kernel(rng, monkeypatch):
    """run_forward applies the ReLU after the kernel of a path without fuses_relu (a new path
    need not know about it): the same bits."""
    x, weight, bias, kwargs = _case(rng, CASES["odd"], np.float32)
    with use_paths(forward="blas"):
        plain = fastconv.conv2d(x, weight, bias, **kwargs)
    blas = _paths.Blas
    calls = []
    original = blas.forward

    def forward(self, plan, x, weight, bias, out, **options):
        calls.append(options)
        original(self, plan, x, weight, bias, out, **options)

    monkeypatch.setattr(blas, "fuses_relu", False)
    monkeypatch.setattr(blas, "forward", forward)
    with use_paths(forward="blas"):
        fused = fastconv.conv2d(x, weight, bias, activation="relu", **kwargs)
    assert calls == [{}]  # called without relu=
    assert np.array_equal(bits(fused), bits(np.maximum(plain, 0)))


def test_activation_argument(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fastconv.conv2d(x, w)
    assert np.array_equal(fastconv.conv2d(x, w, activation=None), y)
    for bad in ("ReLU", "sigmoid", "", 1, True):
        with pytest.raises(ValueError, match="activation must be one of"):
            fastconv.conv2d(x, w, activation=bad)
    # into out=, unbatched, and with no input channels (the bias alone, ReLU'd)
    out = np.empty_like(y)
    assert fastconv.conv2d(x, w, activation="relu", out=out) is out
    assert np.array_equal(out, np.maximum(y, 0))
    assert np.array_equal(fastconv.conv2d(x[0], w, activation="relu"), np.maximum(y[0], 0))
    empty = fastconv.conv2d(np.ones((1, 0, 4, 4)), np.ones((2, 0, 3, 3)), np.array([-1.0, 2.0]),
                            activation="relu")
    assert np.array_equal(empty, np.broadcast_to([[[[0.0]], [[2.0]]]], (1, 2, 2, 2)))
    # a non-zero padding mode pads explicitly first: still fused
    y = fastconv.conv2d(x, w, padding=1, padding_mode="reflect")
    assert np.array_equal(fastconv.conv2d(x, w, padding=1, padding_mode="reflect",
                                          activation="relu"), np.maximum(y, 0))


def test_fused_result_does_not_depend_on_the_thread_count(rng):
    for geometry in CASES.values():
        x, weight, bias, kwargs = _case(rng, geometry, np.float32)
        results = []
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                results.append(fastconv.conv2d(x, weight, bias, activation="relu", **kwargs))
        for result in results[1:]:
            assert np.array_equal(bits(result), bits(results[0]))


def test_fused_conv_matches_torch(rng, torch):
    for geometry in CASES.values():
        x, weight, bias, kwargs = _case(rng, geometry, np.float32, special=False)
        batch, cin, h, w, cout, kernel, stride, pads, dilation, groups = geometry
        xt = torch.nn.functional.pad(torch.from_numpy(x), (pads[2], pads[3], pads[0], pads[1]))
        expected = torch.relu(torch.nn.functional.conv2d(
            xt, torch.from_numpy(weight), torch.from_numpy(bias), stride, 0, dilation,
            groups)).numpy()
        got = fastconv.conv2d(x, weight, bias, activation="relu", **kwargs)
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


# ---- nn.Sequential ---------------------------------------------------------------------------

def _layerwise(model, x):
    """The unfused forward pass: every layer's own forward, one after the other."""
    for layer in model:
        x = layer(x)
    return x


def _layerwise_backward(model, grad):
    for layer in reversed(list(model)):
        grad = layer.backward(grad)
    return grad


def _models(dtype):
    rng = np.random.default_rng(3)
    yield models.tutorial_net(seed=0, dtype=dtype)
    yield models.lenet5(seed=0, dtype=dtype)
    yield nn.Sequential(  # depthwise, reflect padding, Conv -> ReLU -> MaxPool with padding
        nn.Conv2d(1, 16, 3, padding=1, padding_mode="reflect", dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(16, 32, 3, bias=False, dtype=dtype, seed=rng),
        nn.ReLU(),
        nn.Dropout(0.25, seed=1),
        nn.Flatten(),
        nn.Linear(None, 10, dtype=dtype, seed=rng),
    )


def test_sequential_groups_conv_with_the_relu_after_it():
    layers = [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.Sigmoid(),
              nn.Conv2d(2, 2, 1), nn.ReLU()]
    assert _fusion.fused_groups(layers) == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 7)]

    class MyReLU(nn.ReLU):  # a subclass may do anything: never fused
        pass

    assert _fusion.fused_groups([nn.Conv2d(1, 2, 3), MyReLU()]) == [(0, 1), (1, 2)]
    hooked = nn.ReLU()
    hooked.forward = lambda x: x  # a forward set on the instance runs as such
    assert _fusion.fused_groups([nn.Conv2d(1, 2, 3), hooked]) == [(0, 1), (1, 2)]
    model = nn.Sequential(nn.Conv2d(1, 2, 3, seed=0), hooked).eval()
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5)).astype(np.float32)
    assert np.array_equal(model(x), model[0](x)) and model(x).min() < 0
    assert _fusion.prepared(model) is None


def test_sequential_training_is_unchanged_by_fusion(dtype):
    """Training with the fused Sequential gives the unfused layers' outputs, gradients and
    parameters bit for bit, step after step (ReLU's backward reads the fused output)."""
    for fused in _models(dtype):
        unfused = copy.deepcopy(fused)
        rng = np.random.default_rng(7)
        opt_f = optim.SGD(fused.parameters(), lr=0.05, momentum=0.9)
        opt_u = optim.SGD(unfused.parameters(), lr=0.05, momentum=0.9)
        for step in range(3):
            x = rng.standard_normal((4, 1, 28, 28)).astype(dtype)
            y_f = fused(x)
            y_u = _layerwise(unfused, x)
            assert np.array_equal(bits(y_f), bits(y_u))
            grad = rng.standard_normal(y_f.shape).astype(dtype)
            opt_f.zero_grad()
            opt_u.zero_grad()
            gx_f = fused.backward(grad)
            gx_u = _layerwise_backward(unfused, grad)
            assert np.array_equal(bits(gx_f), bits(gx_u))
            for p_f, p_u in zip(fused.parameters(), unfused.parameters()):
                assert np.array_equal(bits(p_f.grad), bits(p_u.grad))
            opt_f.step()
            opt_u.step()
            for p_f, p_u in zip(fused.parameters(), unfused.parameters()):
                assert np.array_equal(bits(p_f.data), bits(p_u.data))


def test_sequential_eval_plan_matches_the_layers(dtype):
    """Evaluation mode runs a prepared plan: the unfused layers' bits, new output arrays every
    call, the state each layer's backward needs (an eval-mode backward, a saliency map, gives
    the unfused model's input gradient)."""
    for model in _models(dtype):
        reference = copy.deepcopy(model)
        model.eval()
        reference.eval()
        rng = np.random.default_rng(11)
        for batch in (1, 3, 3, 5):
            x = rng.standard_normal((batch, 1, 28, 28)).astype(dtype)
            first = model(x)  # (a lazy layer is sized by the layer-by-layer path first)
            kept = first.copy()
            second = model(x)
            assert _fusion.prepared(model) is not None  # the plan ran
            assert second is not first and np.array_equal(first, kept)
            expected = _layerwise(reference, x)
            assert np.array_equal(bits(second), bits(expected))
            grad = rng.standard_normal(expected.shape).astype(dtype)
            assert np.array_equal(bits(model.backward(grad)),
                                  bits(_layerwise_backward(reference, grad)))


def test_sequential_eval_plan_follows_changes(rng):
    model = models.tutorial_net(seed=0).eval()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    plan = _fusion.prepared(model)
    model(x)
    assert _fusion.prepared(model) is plan  # reused
    # weights changed in place: read at each call, the plan kept
    model[0].weight.data *= 2
    assert np.array_equal(model(x), _layerwise(model, x))
    assert _fusion.prepared(model) is plan
    # a parameter array replaced (another dtype even): a new plan, or the layers' own path
    model[4].weight.data = model[4].weight.data.astype(np.float64)
    assert np.array_equal(model(x), _layerwise(model, x))
    model[4].weight.data = model[4].weight.data.astype(np.float32)
    assert np.array_equal(model(x), _layerwise(model, x))
    # a hyper-parameter reassigned
    model[0].stride = (1, 1)
    setattr(model, "4", nn.Linear(16 * 12 * 12, 20, seed=0))  # a layer replaced
    assert model(x).shape == (2, 10)
    assert np.array_equal(model(x), _layerwise(model, x))
    # another thread count, another path override, an appended layer, training mode
    with fastconv.threads(1):
        assert np.array_equal(model(x), _layerwise(model, x))
    with use_paths(forward="blas"):
        assert np.array_equal(model(x), _layerwise(model, x))
    model.append(nn.ReLU())
    assert np.array_equal(model(x), _layerwise(model, x))
    assert model(x).min() >= 0
    model.train()
    model(x)
    assert model[0]._input is x
    # inputs the plan does not take: lists, float64 into a float32 model, empty batches,
    # non-contiguous arrays
    model.eval()
    for other in (x.tolist(), x.astype(np.float64), x[:0], np.asfortranarray(x)):
        assert np.array_equal(model(other), _layerwise(model, other))


def _raised(call, x):
    with pytest.raises((ValueError, TypeError)) as info:
        call(x)
    return type(info.value), str(info.value)


def test_inputs_a_plan_was_not_made_for_are_checked_as_the_layers_check_them(rng):
    """A prepared plan checks nothing itself: an input of another shape, dtype or layout
    than the plan's is checked again by the layers (or a new plan) and refused with the very
    errors the layers raise one by one, and a plan serves the model's inputs again after
    them."""
    for model in (models.lenet5(seed=0), models.tutorial_net(seed=0)):
        model.eval()
        reference = copy.deepcopy(model)
        x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
        model(x)
        assert _fusion.prepared(model) is not None
        bad = [np.zeros((2, 3, 28, 28), np.float32),            # channels
               np.zeros((2, 1, 20, 20), np.float32),            # spatial size
               np.zeros((1, 28, 28), np.float32),               # no batch axis
               np.zeros((2, 3, 28, 28), np.float32).transpose(0, 1, 3, 2),  # not contiguous
               np.zeros((2, 1, 28, 28), np.complex64)]          # dtype refused
        for other in bad:
            assert _raised(model, other) == _raised(lambda v: _layerwise(reference, v), other)
        # taken, by the layers or a plan of their own: another dtype, not contiguous
        other = rng.standard_normal((2, 1, 28, 56))[..., ::2]
        assert np.array_equal(bits(model(other)), bits(_layerwise(reference, other)))
        model(x)
        assert np.array_equal(bits(model(x)), bits(_layerwise(reference, x)))
        assert _fusion.prepared(model) is not None  # (remade: a model keeps its last plan)


def test_copies_and_pickles_of_a_model_carry_no_plan(rng):
    """A copy of an evaluated model runs its own layers (a plan's steps hold the layers they
    were made for), and pickles."""
    import pickle

    model = models.tutorial_net(seed=0).eval()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model(x)
    model(x)
    twin = copy.deepcopy(model)
    clone = pickle.loads(pickle.dumps(model))
    model[0].weight.data *= -1
    expected = _layerwise(twin, x)
    assert not np.array_equal(model(x), expected)
    assert np.array_equal(twin(x), expected) and np.array_equal(clone(x), expected)
    assert _fusion.prepared(twin) is not _fusion.prepared(model)


def test_sequential_with_unknown_layers_falls_back():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, seed=0), nn.ReLU(), nn.Sigmoid(),
                          nn.Sequential(nn.Conv2d(4, 4, 3, seed=1), nn.ReLU()), nn.Flatten())
    model.eval()
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = model(x)
    assert _fusion.prepared(model) is None
    assert _fusion.prepared(model[3]) is not None  # the inner one has its own
    h = x
    for layer in (model[0], model[1], model[2], model[3][0], model[3][1], model[4]):
        h = layer(h)
    assert np.array_equal(y, h)


_CHILD = """
import sys
import numpy as np
import fastconv
from fastconv import _paths
from fastconv._plan import use_paths
rng = np.random.default_rng(5)
checked = []
for dtype in (np.float32, np.float64):
    for shape, wshape, kwargs in [((2, 3, 11, 9), (16, 3, 3, 3), dict(padding=1)),
                                  ((2, 1, 28, 28), (16, 1, 5, 5), dict(stride=2)),
                                  ((2, 5, 9, 9), (7, 5, 3, 2), dict(padding=(2, 1))),
                                  ((2, 16, 9, 9), (16, 1, 3, 3), dict(groups=16))]:
        x = rng.standard_normal(shape).astype(dtype)
        x[0, 0, 1, 1] = np.nan
        w = rng.standard_normal(wshape).astype(dtype)
        b = rng.standard_normal(wshape[0]).astype(dtype)
        for name in _paths.names("forward"):
            with use_paths(forward=name):
                plain = fastconv.conv2d(x, w, b, **kwargs)
                fused = fastconv.conv2d(x, w, b, activation="relu", **kwargs)
            assert np.maximum(plain, 0).tobytes() == fused.tobytes(), (name, shape)
            checked.append(name)
print(len(checked), fastconv._conv.ISA)
"""


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_lesser_kernels_fuse_bit_for_bit(isa, tmp_path):
    """Under the instruction sets this CPU would not pick (FASTCONV_ISA caps every kernel
    family at import, in a child process), the fused ReLU is still numpy.maximum of the
    unfused result. (On a CPU below the cap the child runs what it has: the test still holds.)"""
    count, level = run_at_isa(_CHILD, isa, tmp_path).split()
    assert int(count) == 2 * 4 * len(_paths.names("forward"))
    assert_isa_capped(level, isa)


def test_winograd_layer_fuses_and_plans_with_its_own_algorithm(rng):
    """A Conv2d with algorithm='winograd' keeps it inside a fused Sequential and its prepared
    eval plan: Winograd's bits (not the default path's), ReLU'd, in training and in eval."""
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, algorithm="winograd", seed=0),
                          nn.ReLU())
    conv = model[0]
    winograd = fastconv.conv2d(x, conv.weight.data, conv.bias.data, padding=1,
                               algorithm="winograd")
    default = fastconv.conv2d(x, conv.weight.data, conv.bias.data, padding=1)
    expected = np.maximum(winograd, 0)
    assert not np.array_equal(bits(expected), bits(np.maximum(default, 0)))  # tells them apart
    assert np.array_equal(bits(model(x)), bits(expected))  # training: fused, Winograd
    model.eval()
    for _ in range(2):
        assert np.array_equal(bits(model(x)), bits(expected))
    assert _fusion.prepared(model) is not None


def test_eval_plan_pools_in_the_convolution_store(dtype):
    """The tutorial net's Conv2d -> ReLU -> MaxPool2d(2, 2) is one step of the eval plan
    (the few-channel path pools in its store): the unfused layers' bits, forward and
    backward (the ReLU output recomputed for it), at any thread count."""
    model = models.tutorial_net(seed=0, dtype=dtype).eval()
    reference = copy.deepcopy(model)
    rng = np.random.default_rng(5)
    for batch in (1, 4, 33):
        x = rng.standard_normal((batch, 1, 28, 28)).astype(dtype)
        x[0, 0, 10, 10] = np.nan  # reaches the pooled outputs as the unfused layers' NaN
        expected = _layerwise(reference, x)
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                got = model(x)
                plan = _fusion.prepared(model)
                assert [step.__name__ for step in plan.steps] == [
                    "convolve_pool", "flatten", "linear_relu", "linear"]
                assert np.array_equal(bits(got), bits(expected))
        grad = rng.standard_normal(expected.shape).astype(dtype)
        assert np.array_equal(bits(model.backward(grad)),
                              bits(_layerwise_backward(reference, grad)))
        # the state the backward needed was recomputed: the unfused layers' own
        assert np.array_equal(bits(model[1]._output), bits(reference[1]._output))
    # weights changed in place after the forward pass: the state the backward recomputes is
    # still the forward pass's (the input gradient itself reads the current weights, as the
    # layers' own backward does)
    x = rng.standard_normal((3, 1, 28, 28)).astype(dtype)
    model(x)
    _layerwise(reference, x)
    model[0].weight.data *= 3
    model.backward(rng.standard_normal((3, 10)).astype(dtype))
    assert np.array_equal(bits(model[1]._output), bits(reference[1]._output))


@pytest.mark.parametrize("pool", [
    dict(kernel_size=2, stride=1),               # overlapping windows
    dict(kernel_size=2, padding=1),              # padding
    dict(kernel_size=2, ceil_mode=True),         # ceil mode
    dict(kernel_size=2, dilation=2),             # dilation
    dict(kernel_size=3),                         # 3x3 windows: fused
])
def test_eval_plan_pools_in_the_store_only_where_it_can(rng, pool):
    model = nn.Sequential(nn.Conv2d(2, 5, 3, seed=0), nn.ReLU(), nn.MaxPool2d(**pool),
                          nn.Flatten()).eval()
    reference = copy.deepcopy(model)
    x = rng.standard_normal((2, 2, 15, 14)).astype(np.float32)
    got = model(x)
    fused = len(_fusion.prepared(model).steps) == 2
    assert fused == (pool == dict(kernel_size=3))
    assert np.array_equal(bits(got), bits(_layerwise(reference, x)))
    grad = rng.standard_normal(got.shape).astype(np.float32)
    assert np.array_equal(bits(model.backward(grad)),
                          bits(_layerwise_backward(reference, grad)))


def test_eval_plan_pools_in_the_store_only_on_the_few_channel_path(rng):
    """A convolution on another path (many input channels, or forced) keeps its pooling
    step."""
    model = nn.Sequential(nn.Conv2d(8, 16, 3, seed=0), nn.ReLU(), nn.MaxPool2d(2)).eval()
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    model(x)
    assert len(_fusion.prepared(model).steps) == 2
    tutorial = models.tutorial_net(seed=0).eval()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    with use_paths(forward="blas"):
        got = tutorial(x)
        assert [step.__name__ for step in _fusion.prepared(tutorial).steps] == [
            "convolve", "pool", "flatten", "linear_relu", "linear"]
    assert np.allclose(got, tutorial(x), rtol=1e-5, atol=1e-5)


def test_pooled_step_state_gives_way_to_later_forward_passes(rng):
    """A training step after an evaluation-mode call (a prediction between epochs): the
    backward uses the training forward's state, not the eval call's recomputed one."""
    model = models.tutorial_net(seed=0)
    reference = copy.deepcopy(model)
    model.eval()
    model(rng.standard_normal((1, 1, 28, 28)).astype(np.float32))
    model.train()
    reference.train()
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    grad = rng.standard_normal((4, 10)).astype(np.float32)
    assert np.array_equal(bits(model(x)), bits(reference(x)))
    assert np.array_equal(bits(model.backward(grad)), bits(reference.backward(grad)))
    # and a layer-by-layer pass after an eval call
    model.eval()
    reference.eval()
    model(x[:1])
    _layerwise(model, x)
    _layerwise(reference, x)
    assert np.array_equal(bits(model.backward(grad)), bits(reference.backward(grad)))


def _address(array):
    return array.__array_interface__["data"][0]


def test_eval_plan_reuses_only_arrays_nobody_holds(dtype):
    """A prepared plan hands a step's output array out again once nothing but the plan holds
    it (fastconv._buffers.Recycler), so evaluation passes do not fault in fresh pages each
    call; an array the caller or a layer still holds is never written again."""
    reused = 0
    for model in _models(dtype):
        model.eval()
        reference = copy.deepcopy(model)
        rng = np.random.default_rng(5)
        xs = [rng.standard_normal((4, 1, 28, 28)).astype(dtype) for _ in range(6)]
        model(xs[0])  # a lazy layer is sized layer by layer first
        # kept by the caller: every output and every activation stays as it was made
        outputs, activations = [], []
        for x in xs:
            outputs.append(model(x))
            activations.append(model[1]._output)  # the first ReLU's (the fused step's)
        assert _fusion.prepared(model) is not None
        for x, output, activation in zip(xs, outputs, activations):
            assert np.array_equal(bits(output), bits(_layerwise(reference, x)))
            if activation is not None:  # (None: the pooled step stores no ReLU output)
                assert np.array_equal(bits(activation), bits(reference[1]._output))
        if activations[0] is not None:
            assert len({_address(a) for a in activations}) == len(xs)
        # held by nobody: one array serves every call (the layers let go of the previous
        # call's as a call starts); weak references tell the objects apart without holding
        # them
        del outputs, activations, output, activation
        objects = []
        for x in xs:
            result = model(x)
            assert np.array_equal(bits(result), bits(_layerwise(reference, x)))
            activation = model[1]._output
            if activation is not None and not any(ref() is activation for ref in objects):
                objects.append(weakref.ref(activation))
            del activation
        assert len(objects) <= 1
        reused += len(objects)
    assert reused >= 2  # LeNet-5's and the third model's (the tutorial net pools in the store)


@pytest.mark.parametrize("include_pad", [True, False])
def test_eval_plan_stride1_average_pooling_takes_the_box_kernel(dtype, include_pad):
    """A stride-1 AvgPool2d in a prepared plan runs the 'box' kernels (fastconv.pool), with
    the layers' bits."""
    rng = np.random.default_rng(7)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, dtype=dtype, seed=rng), nn.ReLU(),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=include_pad),
        nn.Flatten(), nn.Linear(8 * 13 * 11, 5, dtype=dtype, seed=rng)).eval()
    reference = copy.deepcopy(model)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 1, 13, 11)).astype(dtype)
        x[0, 0, 2, 3] = np.nan
        result = model(x)
        plan = _fusion.prepared(model)
        assert plan is not None and [getattr(step, "path", None) for step in plan.steps][1] == "box"
        assert np.array_equal(bits(result), bits(_layerwise(reference, x)))
