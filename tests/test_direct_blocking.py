"""The direct path's blockings (src/conv/direct.pxi): the forward pass's spans of tiles with
one block of channels over all their pixels and its weights packed in parallel; the weight
gradient's units (a block of channels by a run of taps) summed over chunks, segments and
pieces of the batch (taken for results past DIRECT_WEIGHT_PARTIAL_MAX_BYTES; forced here on
small ones), and its chunks of (sample, tile) pairs for small results. Every one against the NumPy reference, and the same bits on 1, 2 and 3
threads."""

import json

import numpy as np
import pytest
from helpers import assert_close, assert_grad_close, run_at_isa
from reference.conv import conv2d_backward_ref, conv2d_ref

import fastconv
from fastconv import _conv, _paths
from fastconv._plan import use_paths

needs_direct = pytest.mark.skipif(not _conv.DIRECT,
                                  reason="no direct kernels on this CPU (AVX-512)")

# (N, C_in, H, W, C_out, kernel, stride, padding, groups)
BLOCKING_CASES = [
    # 17 blocks of 16 channels (odd: units split unevenly over 2 and 3 threads), k = 288 in
    # runs of 24 taps, 78K weights (packed in parallel)
    (6, 32, 7, 7, 272, (3, 3), 1, 1, 1),
    # 50 x 49 pixels: two segments of the weight gradient's samples
    (50, 16, 7, 7, 48, (3, 3), 1, 1, 1),
    # 900-pixel planes: two pieces per plane; tiles of 64 pixels starting mid-row
    (3, 24, 30, 30, 32, (3, 3), 1, 1, 1),
    # 19 blocks of 16, k = 27 in runs of 13 and 14 taps; strides and groups
    (3, 3, 11, 13, 304, (3, 3), 2, 1, 1),
    (4, 12, 10, 9, 64, (3, 2), (2, 1), (1, 0), 2),
    # vgg-like: k = 576 in runs of 12 taps of 32 channels
    (2, 64, 14, 14, 64, (3, 3), 1, 1, 1),
    # a 288 x 1152 result (1.3 MB): the units on the usual path too; 9 blocks of 32
    (2, 128, 5, 6, 288, (3, 3), 1, 1, 1),
    # pointwise (x read in place), 512 channels (forward runs of 128 pixels)
    (3, 16, 12, 12, 512, (1, 1), 1, 0, 1),
]


def _case(rng, geometry, dtype=np.float32):
    n, cin, h, w, cout, kernel, stride, padding, groups = geometry
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, cin // groups) + kernel).astype(dtype)
    bias = rng.standard_normal(cout).astype(dtype)
    return x, weight, bias, dict(stride=stride, padding=padding, groups=groups)


def _reference(x, weight, bias, gy, kwargs):
    ref = _reference_kwargs(kwargs)
    return conv2d_ref(x, weight, bias, **ref), conv2d_backward_ref(gy, x, weight, **ref)


def _all_threads(x, weight, bias, gy, kwargs):
    """(y, grads) on 1 thread, after checking 2 and 3 threads give the same bits."""
    results = []
    for n in (1, 2, 3):
        with fastconv.threads(n):
            results.append((fastconv.conv2d(x, weight, bias, **kwargs),
                            fastconv.conv2d_backward(gy, x, weight, **kwargs)))
    for y, grads in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        for a, b in zip(grads, results[0][1]):
            np.testing.assert_array_equal(a, b)
    return results[0]


@needs_direct
@pytest.mark.parametrize("geometry", BLOCKING_CASES,
                         ids=[f"b{i}" for i in range(len(BLOCKING_CASES))])
@pytest.mark.parametrize("mode", ["usual", "units", "units-chunk-per-sample"])
def test_direct_blockings_match_reference(rng, monkeypatch, geometry, mode):
    if mode != "usual":  # the weight gradient by units, whatever the result's size
        monkeypatch.setattr(_paths, "DIRECT_WEIGHT_PARTIAL_MAX_BYTES", 0)
    if mode == "units-chunk-per-sample":  # the batch cut into one-sample chunks
        monkeypatch.setattr(_paths, "DIRECT_WEIGHT_CHUNK_BYTES", 1)
    x, weight, bias, kwargs = _case(rng, geometry)
    with use_paths(forward="direct", grad_weight="direct"):
        conv, _ = fastconv.conv._prepare(x, weight, None, kwargs["stride"],
                                         kwargs["padding"], 1, kwargs["groups"], "zeros")
        assert conv.plan.forward.name == conv.plan.grad_weight.name == "direct"
        gy = rng.standard_normal(fastconv.conv2d(x, weight, bias, **kwargs).shape
                                 ).astype(np.float32)
        y, grads = _all_threads(x, weight, bias, gy, kwargs)
    y_ref, grads_ref = _reference(x, weight, bias, gy, kwargs)
    assert_close(y, y_ref)
    for actual, wanted in zip(grads, grads_ref):
        assert_grad_close(actual, wanted)


@needs_direct
@pytest.mark.parametrize("geometry", BLOCKING_CASES[:3], ids=["b0", "b1", "b2"])
def test_direct_blockings_match_torch(torch, monkeypatch, geometry):
    monkeypatch.setattr(_paths, "DIRECT_WEIGHT_PARTIAL_MAX_BYTES", 0)
    rng = np.random.default_rng(14)
    x, weight, bias, kwargs = _case(rng, geometry)
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    tw = torch.from_numpy(weight.astype(np.float64)).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(bias.astype(np.float64)),
                                    **kwargs)
    gy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(gy.astype(np.float64)))
    with use_paths(forward="direct", grad_weight="direct"):
        assert_close(fastconv.conv2d(x, weight, bias, **kwargs), ty.detach().numpy())
        _, grad_weight, _ = fastconv.conv2d_backward(gy, x, weight, **kwargs,
                                                     need=("weight",))
    assert_grad_close(grad_weight, tw.grad.numpy())


@needs_direct
@pytest.mark.parametrize("chunks", [1, 2, 3, 8])
def test_direct_weight_chunks_sum_as_numpy(rng, chunks):
    """The small results' chunks (grad_weight_direct_chunks): each chunk's row of partials
    zeroed by the kernel (they start as NaN here), then added in chunk order into the weights'
    layout with the bits of np.add.reduce over the chunks and the transpose it replaced; inf
    and NaN in x and an all-zero channel of grad_output; the same on 1, 2 and 3 threads. Two
    groups, 48 channels a group, k = 144 (runs of 16 taps: 9)."""
    geometry = (5, 32, 7, 6, 96, (3, 3), 1, 1, 2)
    x, weight, _, kwargs = _case(rng, geometry)
    x[0, 3, 2, 2], x[4, 20, 0, 5] = np.inf, np.nan
    gy = rng.standard_normal((5, 96, 7, 6)).astype(np.float32)
    gy[:, 7] = 0.0
    conv, _ = fastconv.conv._prepare(x, weight, None, 1, 1, 1, 2, "zeros")
    plan = conv.plan
    results = []
    for threads in (1, 2, 3):
        partials = np.full((chunks, weight.size), np.nan, dtype=np.float32)
        grad_weight = np.full(weight.shape, np.nan, dtype=np.float32)
        _conv.grad_weight_direct_chunks(
            gy, x, grad_weight, partials,
            np.full((threads, _conv.direct_wgrad_workspace_floats(plan.geometry)), np.nan,
                    dtype=np.float32),
            np.full((threads, _conv.SUM_CHUNKS_FLOATS), np.nan, dtype=np.float32),
            np.empty(_conv.direct_wgrad_taps_size(plan.geometry), dtype=np.intp),
            plan.geometry, 2, threads)
        results.append((partials, grad_weight))
    partials, grad_weight = results[0]
    for other_partials, other in results[1:]:
        np.testing.assert_array_equal(other_partials.view(np.uint32), partials.view(np.uint32))
        np.testing.assert_array_equal(other.view(np.uint32), grad_weight.view(np.uint32))
    with np.errstate(invalid="ignore", over="ignore"):
        summed = np.add.reduce(partials, axis=0)
    wanted = summed.reshape(2, -1, 48).transpose(0, 2, 1).reshape(weight.shape)
    np.testing.assert_array_equal(grad_weight.view(np.uint32), wanted.view(np.uint32))
    assert np.isnan(grad_weight).any() and np.isfinite(grad_weight).any()
    # against the reference where no inf or NaN reached the sums
    finite = np.isfinite(grad_weight)
    assert_grad_close(grad_weight[finite], conv2d_backward_ref(
        gy, np.nan_to_num(x, posinf=0.0), weight, **_reference_kwargs(kwargs))[1][finite])


@needs_direct
@pytest.mark.parametrize("mode", ["chunks", "units", "depthwise-direct"])
def test_direct_weight_gradient_writes_every_element(rng, mode):
    """writes_all_weight of Direct and DepthwiseDirect: conv2d_backward hands the path an
    unzeroed result (here a recycled-array maker giving NaN-filled arrays, as the layers'
    Recycler gives old ones) and gets the bits of a fresh zeroed one, by Direct's chunks
    (small results) and units, and by DepthwiseDirect."""
    groups = 16 if mode == "depthwise-direct" else 1
    path = "depthwise-direct" if mode == "depthwise-direct" else "direct"
    x, weight, bias, kwargs = _case(rng, (3, 16, 6, 7, 16 if groups > 1 else 32, (3, 3), 1, 1,
                                          groups))
    gy = rng.standard_normal((3, weight.shape[0], 6, 7)).astype(np.float32)

    def stale(shape, dtype):
        return np.full(shape, np.nan, dtype=dtype)

    with pytest.MonkeyPatch.context() as patch, use_paths(grad_weight=path):
        if mode == "units":
            patch.setattr(_paths, "DIRECT_WEIGHT_PARTIAL_MAX_BYTES", 0)
        conv, _ = fastconv.conv._prepare(x, weight, None, 1, 1, 1, groups, "zeros")
        assert conv.plan.grad_weight.name == path
        assert conv.plan.grad_weight.writes_all_weight(conv.plan)
        fresh = fastconv.conv2d_backward(gy, x, weight, **kwargs, need=("weight",))[1]
        reused = fastconv.conv2d_backward(gy, x, weight, **kwargs, need=("weight",),
                                          _buffers=stale)[1]
    np.testing.assert_array_equal(reused.view(np.uint32), fresh.view(np.uint32))
    assert_grad_close(fresh, _reference(x, weight, bias, gy, kwargs)[1][1])


# (N, C_in, H, W, C_out, kernel, stride, padding, dilation): the forward pass's tap lists
# per output row (direct_tap_lists) and the runs at the edges of the rows where padding is
# reached
PADDING_CASES = [
    (2, 16, 7, 7, 32, (3, 3), 1, 1, 1),     # the small ResNet's 7x7: top and bottom rows
    (2, 8, 6, 9, 16, (3, 3), 2, 1, 1),      # stride 2: the top row only
    (1, 8, 9, 8, 48, (5, 3), 1, (2, 1), 1),  # two rows of each edge, 16 + 32 channels
    (1, 8, 3, 10, 32, (5, 5), 1, 2, 1),     # 3 rows: each reaches both paddings
    (1, 8, 1, 12, 32, (3, 3), 1, 1, 1),     # one row: only its middle kernel row
    (2, 8, 8, 8, 32, (3, 3), 1, 2, 2),      # dilation 2
    (1, 8, 4, 6, 32, (3, 3), 1, 3, 1),      # rows that reach no input row at all
    (1, 8, 5, 30, 16, (3, 3), 1, 1, 1),     # rows of two runs (16 channels: at most 24)
    (1, 8, 4, 1, 32, (3, 3), 1, 2, 1),      # a tap on the padding of both ends of a row
    (1, 4, 30, 30, 32, (3, 3), 1, 1, 1),    # tiles that start mid-row
]


@needs_direct
@pytest.mark.parametrize("geometry", PADDING_CASES,
                         ids=[f"p{i}" for i in range(len(PADDING_CASES))])
@pytest.mark.parametrize("weights", ["finite", "inf", "nan"])
def test_direct_padding_changes_no_bit(rng, geometry, weights):
    """With finite weights the forward pass leaves out the products with the stage's padding
    (the taps of kernel rows that read only padding rows, direct_tap_lists, and those of a
    row's first and last pixels on padding columns), and with a finite grad_output the weight
    gradient's chunks (taps blocked by kernel position, direct_wgrad_blocks) those outside
    each block's window of rows and columns: the same bits as the whole chains, which the same
    convolution of the input zero-padded by hand (no padding to leave out) computes; with an
    inf or NaN weight (here in the last block of channels, on the first kernel row and
    column) or in grad_output (at the first pixel) every product stays, and those with padded
    zeros are NaN as there. On 1, 2 and 3 threads."""
    n, cin, h, w, cout, kernel, stride, padding, dilation = geometry
    pad_h, pad_w = padding if isinstance(padding, tuple) else (padding, padding)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    weight = rng.standard_normal((cout, cin) + kernel).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    kwargs = dict(stride=stride, dilation=dilation)
    gy = rng.standard_normal(fastconv.conv2d(x, weight, **kwargs, padding=padding).shape
                             ).astype(np.float32)
    if weights != "finite":
        weight[-1, 1, 0, 0] = gy[-1, 1, 0, 0] = np.inf if weights == "inf" else np.nan
    padded = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    results = []
    with use_paths(forward="direct", grad_weight="direct"), np.errstate(invalid="ignore"):
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                for data, pads in ((x, padding), (padded, 0)):
                    results.append((
                        fastconv.conv2d(data, weight, bias, **kwargs, padding=pads),
                        fastconv.conv2d_backward(gy, data, weight, **kwargs, padding=pads,
                                                 need=("weight",))[1]))
    for y, grad_weight in results[1:]:
        np.testing.assert_array_equal(y.view(np.uint32), results[0][0].view(np.uint32))
        np.testing.assert_array_equal(grad_weight.view(np.uint32),
                                      results[0][1].view(np.uint32))
    y, grad_weight = results[0]
    if weights == "finite":
        ref = dict(pads=(pad_h, pad_h, pad_w, pad_w), stride=(stride, stride),
                   dilation=(dilation, dilation))
        assert_close(y, conv2d_ref(x, weight, bias, **ref))
        assert_grad_close(grad_weight, conv2d_backward_ref(gy, x, weight, **ref)[1])
    else:
        assert np.isnan(y[:, -1]).any() and np.isnan(grad_weight[1]).any()


@needs_direct
@pytest.mark.parametrize("geometry", [
    (2, 32, 7, 7, 64, (3, 3), 1),       # 2 blocks of 32 input channels, k = 576
    (1, 64, 6, 9, 48, (3, 2), 2),       # 2 groups, 24 -> 32 channels each, a 3x2 kernel
    (1, 272, 5, 5, 32, (3, 3), 1),      # 272 -> 32: packed in parallel (78K weights)
])
def test_direct_packs_the_transposed_weights(rng, geometry):
    """The Transposed input gradient's Direct forward packs the convolution's own weights
    transposed and flipped (forward_direct's ``transposed``): the bits of the forward pass
    of the transposed copy (_transposed_weight) it replaces, on 1, 2 and 3 threads, and the
    reference's input gradient."""
    n, cin, h, w, cout, kernel, groups = geometry
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    weight = rng.standard_normal((cout, cin // groups) + kernel).astype(np.float32)
    pads = (kernel[0] // 2, kernel[1] // 2)
    gy = rng.standard_normal(fastconv.conv2d(x, weight, padding=pads, groups=groups).shape
                             ).astype(np.float32)
    with use_paths(forward="direct", grad_input="transposed"):
        conv, _ = fastconv.conv._prepare(x, weight, None, 1, pads, 1, groups, "zeros")
        sub = conv.plan.transposed
        assert conv.plan.grad_input[0].name == "transposed" and sub.forward.name == "direct"
        results = []
        for threads in (1, 2, 3):
            with fastconv.threads(threads):
                for transposed in (True, False):
                    out = np.full(x.shape, np.nan, np.float32)
                    sub.forward.forward(sub, gy, weight if transposed else
                                        _paths._transposed_weight(weight, groups), None, out,
                                        transposed=transposed)
                    results.append(out)
                results.append(fastconv.conv2d_backward(gy, x, weight, padding=pads,
                                                        groups=groups, need=("input",))[0])
    for other in results[1:]:
        np.testing.assert_array_equal(other.view(np.uint32), results[0].view(np.uint32))
    assert_grad_close(results[0], conv2d_backward_ref(
        gy, x, weight, pads=(pads[0], pads[0], pads[1], pads[1]), groups=groups)[0])


def test_numpy_sums_chunks_row_by_row():
    """What sum_chunks_transposed mirrors: np.add.reduce over axis 0 of a C-contiguous
    (chunks, row) array adds the rows to 0.0 in order (no pairwise summation across rows): a
    sum that pairwise order would change, and -0.0 rows summing to +0.0."""
    big, tiny = np.float32(2.0 ** 24), np.float32(1.0)
    column = np.array([big, tiny, tiny, tiny, tiny, tiny, tiny, tiny, tiny], np.float32)
    partials = np.tile(column[:, None], (1, 40))
    total = column[0]
    for value in column[1:]:
        total = np.float32(total + value)
    assert total == big  # each 2**24 + 1 rounds back: in order, the ones are lost
    np.testing.assert_array_equal(np.add.reduce(partials, axis=0), np.full(40, total))
    negative = np.full((3, 5), -0.0, np.float32)
    assert not np.signbit(np.add.reduce(negative, axis=0)).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("out_channels", [1, 15, 16, 17, 48, 100, 272, 300])
def test_any_channel_count_on_the_usual_paths(rng, dtype, out_channels):
    """Output channels from 1 to 300, multiples of the direct blocks or not (those take the
    other paths), both dtypes: the reference, and the same bits on 1, 2 and 3 threads."""
    x, weight, bias, kwargs = _case(rng, (3, 18, 9, 8, out_channels, (3, 3), 1, 1, 1), dtype)
    gy = rng.standard_normal((3, out_channels, 9, 8)).astype(dtype)
    y, grads = _all_threads(x, weight, bias, gy, kwargs)
    y_ref, grads_ref = _reference(x, weight, bias, gy, kwargs)
    assert_close(y, y_ref)
    for actual, wanted in zip(grads, grads_ref):
        assert_grad_close(actual, wanted)


_ISA_SCRIPT = """
import json, sys
import numpy as np
import fastconv
from fastconv import _conv
inputs = np.load(sys.argv[1])
out = {}
for i, (stride, padding, groups) in enumerate(json.loads(sys.argv[3])):
    x, w, b, gy = (inputs[f"{i}_{name}"] for name in ("x", "w", "b", "gy"))
    for n in (1, 2, 3):
        with fastconv.threads(n):
            y = fastconv.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
            grads = fastconv.conv2d_backward(gy, x, w, stride=stride, padding=padding,
                                             groups=groups)
        for name, value in zip(("y", "gx", "gw", "gb"), (y,) + grads):
            out[f"{i}_{n}_{name}"] = value
np.savez(sys.argv[2], **out)
print(json.dumps({"direct": bool(_conv.DIRECT)}))
"""


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_blocking_cases_at_lower_isa_levels(tmp_path, isa):
    """Where the direct kernels do not run (FASTCONV_ISA below avx512), the same shapes take
    the other paths and still match the reference, the same bits on 1, 2 and 3 threads."""
    rng = np.random.default_rng(7)
    inputs, expected, cases = {}, {}, []
    for i, geometry in enumerate([BLOCKING_CASES[0], BLOCKING_CASES[4]]):
        x, weight, bias, kwargs = _case(rng, geometry)
        y_ref = conv2d_ref(x, weight, bias, **_reference_kwargs(kwargs))
        gy = rng.standard_normal(y_ref.shape).astype(np.float32)
        inputs.update({f"{i}_x": x, f"{i}_w": weight, f"{i}_b": bias, f"{i}_gy": gy})
        expected[i] = _reference(x, weight, bias, gy, kwargs)
        cases.append([kwargs["stride"], kwargs["padding"], kwargs["groups"]])
    np.savez(tmp_path / "inputs.npz", **inputs)
    work = tmp_path / "run"
    work.mkdir()
    report = json.loads(run_at_isa(_ISA_SCRIPT, isa, work, tmp_path / "inputs.npz",
                                   tmp_path / "out.npz", json.dumps(cases)
                                   ).strip().splitlines()[-1])
    assert not report["direct"]
    with np.load(tmp_path / "out.npz") as results:
        for i, (y_ref, grads_ref) in expected.items():
            for n in (2, 3):
                for name in ("y", "gx", "gw", "gb"):
                    np.testing.assert_array_equal(results[f"{i}_{n}_{name}"],
                                                  results[f"{i}_1_{name}"])
            assert_close(results[f"{i}_1_y"], y_ref)
            for name, wanted in zip(("gx", "gw", "gb"), grads_ref):
                assert_grad_close(results[f"{i}_1_{name}"], wanted)


def _reference_kwargs(kwargs):
    stride, padding = kwargs["stride"], kwargs["padding"]
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    return dict(stride=(stride, stride) if np.isscalar(stride) else stride,
                pads=(ph, ph, pw, pw), groups=kwargs["groups"])
