"""Helpers shared by the tests: tolerances and array views."""

import numpy as np

# Tolerances for comparing a kernel with the float64 NumPy reference: float32 results are
# rounded sums of O(100) products, float64 ones agree to a few ulps of the magnitudes involved.
TOLERANCE = {
    np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-4},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-10},
}


def assert_close(actual, expected, dtype=None):
    """Compare with the dtype's tolerance (dtype defaults to ``actual``'s)."""
    dtype = np.dtype(dtype if dtype is not None else actual.dtype)
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


def bits(array):
    """The bytes of ``array`` (C order): equal exactly when the results are the same bits,
    NaN payloads and signed zeros included."""
    return np.ascontiguousarray(array).view(np.uint8)


def conv_case(rng, shape, dtype, bias=True):
    """(x, weight, bias, conv2d keyword arguments) of random data for ``shape`` = (batch,
    C_in, H, W, C_out, kernel, stride, pads (top, bottom, left, right), dilation)."""
    batch, cin, h, w, cout, kernel, stride, pads, dilation = shape
    x = rng.standard_normal((batch, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, cin) + kernel).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype) if bias else None
    kwargs = dict(stride=stride, padding=((pads[0], pads[1]), (pads[2], pads[3])),
                  dilation=dilation)
    return x, weight, b, kwargs


def conv_plan(x, weight, bias, kwargs):
    """The plan conv2d makes for these arguments (one group, zeros padding)."""
    from fastconv import conv as conv_module

    conv, _ = conv_module._prepare(x, weight, bias, kwargs["stride"], kwargs["padding"],
                                   kwargs["dilation"], 1, "zeros")
    return conv.plan


def non_contiguous(array):
    """The same values as ``array`` in a view with negative, non-unit strides."""
    padded = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), dtype=array.dtype)
    padded[..., ::2] = array[..., ::-1]
    view = padded[..., 2 * (array.shape[-1] - 1)::-2] if array.shape[-1] else padded
    assert not view.flags.c_contiguous or array.shape[-1] <= 1 or array.size == 0
    np.testing.assert_array_equal(view, array)
    return view


def assert_grad_close(actual, expected, dtype=None):
    """Gradients sum over more terms than a forward pass: ten times the forward tolerance,
    the absolute part scaled by the largest magnitude."""
    dtype = np.dtype(dtype if dtype is not None else actual.dtype)
    scale = max(1.0, float(np.abs(expected).max())) if np.size(expected) else 1.0
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE[dtype]["rtol"] * 10,
                               atol=TOLERANCE[dtype]["atol"] * 10 * scale)


ISA_LEVELS = ("generic", "avx2", "avx512")


def assert_isa_capped(level, cap):
    """A child process started with FASTCONV_ISA=cap reports ``level``: at most the cap, and
    exactly min(cap, this CPU's level) when this process runs uncapped (its own level is then
    the CPU's; a capped parent only bounds it)."""
    import os

    from fastconv import _conv

    assert ISA_LEVELS.index(level) <= ISA_LEVELS.index(cap), (level, cap)
    if "FASTCONV_ISA" not in os.environ:
        assert level == ISA_LEVELS[min(ISA_LEVELS.index(cap), ISA_LEVELS.index(_conv.ISA))]


def run_at_isa(script, isa, cwd, *args, timeout=300):
    """``python -c script *args`` in a child process started with FASTCONV_ISA=isa; returns
    its standard output, and fails the test with its standard error if it fails.

    The child imports the fastconv this process imported (PYTHONPATH names its parent) and
    runs in ``cwd``, which should be an empty directory: ``python -c`` puts the working
    directory first on sys.path, and a clone's root holds an unbuilt copy of fastconv/."""
    import os
    import subprocess
    import sys

    import fastconv

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = dict(os.environ, FASTCONV_ISA=isa,
               PYTHONPATH=os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def outputs_at_isas(script, cwd, isas=("generic", "avx2", "avx512")):
    """For each level in ``isas``: ``script`` run by :func:`run_at_isa` with the path of an
    ``.npz`` file to write (``np.savez(path, *arrays)``); returns {isa: (its standard output
    stripped, the bytes of each array in the order saved)}. Every NaN is first made one NaN:
    the sign and payload of a NaN that arithmetic makes or carries are the compiler's choice
    of operand order, which neither C nor PyTorch fixes; where NaNs are, and every other
    bit, stay compared exactly."""
    import os

    results = {}
    for isa in isas:
        target = os.path.join(cwd, f"{isa}.npz")
        used = run_at_isa(script, isa, cwd, target).strip()
        with np.load(target) as archive:
            arrays = [np.array(archive[key]) for key in
                      sorted(archive.files, key=lambda key: int(key[4:]))]
        for array in arrays:
            if array.dtype.kind == "f":
                array[np.isnan(array)] = np.nan
        results[isa] = (used, [array.tobytes() for array in arrays])
    return results


def steps_kept_by_the_caller(layer, inputs, rng):
    """Run ``layer`` forward and backward on each of ``inputs`` (random grad_output), keep
    every output and input gradient as a caller would, and assert that none of them changed
    afterwards (a layer that reuses its arrays must never write into one still held).
    Returns (outputs, gradients)."""
    outputs, copies, grads, grad_copies = [], [], [], []
    for x in inputs:
        out = layer(x)
        outputs.append(out)
        copies.append(out.copy())
        grad = layer.backward(rng.standard_normal(out.shape).astype(np.float32))
        grads.append(grad)
        grad_copies.append(grad.copy())
    for out, kept in zip(outputs, copies):
        np.testing.assert_array_equal(out, kept)
    for grad, kept in zip(grads, grad_copies):
        np.testing.assert_array_equal(grad, kept)
    return outputs, grads


def adam_reference_step(params, grads, state, step, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                        weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False):
    """One Adam step (number ``step``, from 1) of the arrays ``params`` in place, in NumPy, one
    operation at a time, each rounded to the dtype: the order of operations of
    fastconv.optim.Adam's docstring (PyTorch's single-tensor Adam). ``state`` (a dict, empty
    at first) keeps the moments between steps."""
    beta1, beta2 = betas
    for index, (p, grad) in enumerate(zip(params, grads)):
        kind = p.dtype.type
        m, v, vmax = state.setdefault(index, [np.zeros_like(p) for _ in range(3)])
        g = -grad if maximize else grad
        if weight_decay and decoupled:
            p *= kind(1 - lr * weight_decay)
        elif weight_decay:
            g = g + kind(weight_decay) * p
        weight = 1 - beta1
        if weight < 0.5:
            m += kind(weight) * (g - m)
        else:
            m[...] = g - (g - m) * kind(1 - weight)
        v *= kind(beta2)
        v += kind(1 - beta2) * (g * g)
        if amsgrad:
            np.maximum(vmax, v, out=vmax)
        second = vmax if amsgrad else v
        denominator = np.sqrt(second) / kind(np.sqrt(1 - beta2 ** step)) + kind(eps)
        p -= kind(lr / (1 - beta1 ** step)) * (m / denominator)


# ---- the few-input-channel paths (test_fewchan.py, test_fewchan_lanes.py) -------------------

def check_conv_path_random_shape(path, batch, cin, h, w, cout, kh, kw, sh, sw, dh, dw, pad,
                                 seed):
    """One drawn geometry (hypothesis) run on forward path ``path``, float32 and float64,
    against the NumPy reference; geometries whose kernel does not fit are skipped."""
    import fastconv
    from fastconv._plan import use_paths
    from reference.conv import conv2d_ref

    rng = np.random.default_rng(seed)
    if h + 2 * pad < dh * (kh - 1) + 1 or w + 2 * pad < dw * (kw - 1) + 1:
        return
    shape = (batch, cin, h, w, cout, (kh, kw), (sh, sw), (pad, pad, pad, pad), (dh, dw))
    for dtype in (np.float32, np.float64):
        x, weight, b, kwargs = conv_case(rng, shape, dtype)
        with use_paths(forward=path):
            y = fastconv.conv2d(x, weight, b, **kwargs)
        assert_close(y, conv2d_ref(x, weight, b, (sh, sw), (pad,) * 4, (dh, dw), 1))


# run_at_isa's script for a few-channel path, with arguments: the path's name, its class in
# fastconv._paths, the (batch, C_in, H, W, C_out, kernel, stride, padding, dilation) shapes
# (a Python literal) and the path whose bits it must equal ('' for none). At the capped
# level, for float32 and float64 and an input holding a NaN: close to BLAS, the fused ReLU
# and the pooled store bit for bit, the same bits on 1, 2 and 3 threads. Prints the count of
# cases checked and the level the kernels ran at.
FEW_CHANNELS_ISA_CHILD = r"""
import ast
import sys
import numpy as np
import fastconv
from fastconv import _paths
from fastconv import conv as conv_module
from fastconv._plan import use_paths

path, kind, shapes, same_as = sys.argv[1], sys.argv[2], ast.literal_eval(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
checked = 0
for dtype in (np.float32, np.float64):
    for shape in shapes:
        n, c, h, w, k, ks, s, p, d = shape
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        x[0, 0, 4, 4] = np.nan
        wt = rng.standard_normal((k, c, ks, ks)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        with use_paths(forward=path):
            y = fastconv.conv2d(x, wt, b, stride=s, padding=p, dilation=d)
            fused = fastconv.conv2d(x, wt, b, stride=s, padding=p, dilation=d,
                                    activation="relu")
        if same_as:
            with use_paths(forward=same_as):
                same = fastconv.conv2d(x, wt, b, stride=s, padding=p, dilation=d)
            assert y.tobytes() == same.tobytes(), shape
        with use_paths(forward="blas"):
            ref = fastconv.conv2d(x, wt, b, stride=s, padding=p, dilation=d)
        tol = 2e-4 if dtype == np.float32 else 1e-10
        assert np.allclose(y, ref, rtol=tol, atol=tol, equal_nan=True), shape
        assert np.maximum(y, 0).tobytes() == fused.tobytes(), shape
        conv, _ = conv_module._prepare(x, wt, b, s, p, d, 1, "zeros")
        plan = conv.plan
        out = np.empty((n, k, plan.out_h // 2, plan.out_w // 2), dtype=dtype)
        getattr(_paths, kind)().forward_pooled(plan, x, wt, b, out, (2, 2), relu=True)
        assert fastconv.max_pool2d(np.maximum(y, 0), 2).tobytes() == out.tobytes(), shape
        for threads in (1, 2, 3):
            with fastconv.threads(threads), use_paths(forward=path):
                other = fastconv.conv2d(x, wt, b, stride=s, padding=p, dilation=d)
            assert other.tobytes() == y.tobytes(), (shape, threads)
        checked += 1
print(checked, fastconv._conv.ISA)
"""


def check_few_channels_at_isa(isa, cwd, path, kind, shapes, same_as=""):
    """FEW_CHANNELS_ISA_CHILD under FASTCONV_ISA=isa: every case checked, at that level."""
    count, level = run_at_isa(FEW_CHANNELS_ISA_CHILD, isa, cwd, path, kind, repr(shapes),
                              same_as).split()
    assert int(count) == 2 * len(shapes)
    assert_isa_capped(level, isa)


def few_channels_pooled(path, x, weight, b, kwargs, pool, relu=True):
    """``path.forward_pooled`` (a few-channel ConvPath instance) called directly on the plan
    conv2d makes for these arguments, which it must be able to pool."""
    plan = conv_plan(x, weight, b, kwargs)
    assert path.pools(plan, pool)
    out = np.empty((plan.batch, plan.out_channels, plan.out_h // pool[0],
                    plan.out_w // pool[1]), dtype=x.dtype)
    path.forward_pooled(plan, x, weight, b, out, pool, relu=relu)
    return out


def check_pooled_store(path, shapes, rng, dtype, pool):
    """Pooling in ``path``'s store, for each of ``shapes`` (an input holding a NaN), ReLU'd or
    not: the max (pooling's rule: NaN, then the greater, scan order) of the very sums the
    unpooled path stores, bit for bit; and the pooling reference agrees."""
    import fastconv
    from fastconv._plan import use_paths
    from reference.pool import max_pool2d_reference

    for shape in shapes:
        x, weight, b, kwargs = conv_case(rng, shape, dtype)
        x[0, 0, x.shape[2] // 2, x.shape[3] // 2] = np.nan
        with use_paths(forward=path.name):
            plain = fastconv.conv2d(x, weight, b, **kwargs)
        if plain.shape[2] < pool[0] or plain.shape[3] < pool[1]:
            continue
        for relu in (True, False):
            full = np.maximum(plain, 0) if relu else plain
            expected = fastconv.max_pool2d(full, pool)
            got = few_channels_pooled(path, x, weight, b, kwargs, pool, relu)
            assert np.array_equal(bits(got), bits(expected)), (shape, pool, relu)
            reference = max_pool2d_reference(full, pool, pool, (0, 0, 0, 0))[0]
            assert np.array_equal(np.isnan(got), np.isnan(reference))
            finite = ~np.isnan(reference)
            assert np.array_equal(got[finite], reference[finite])


def check_pooled_store_threads(path, shapes, rng):
    """``path``'s pooled store gives the same bits on 1, 2 and 5 threads (float32)."""
    import fastconv

    for shape in shapes:
        x, weight, b, kwargs = conv_case(rng, shape, np.float32)
        outs = []
        for threads in (1, 2, 5):
            with fastconv.threads(threads):
                outs.append(few_channels_pooled(path, x, weight, b, kwargs, (2, 2)))
        for out in outs[1:]:
            assert np.array_equal(bits(out), bits(outs[0]))
