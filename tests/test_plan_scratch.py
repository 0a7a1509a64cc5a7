"""Per-call costs cut for small convolutions: the plan key's common case and the scratch arrays
kept per plan and Python thread (fastconv._paths.thread_scratch).

A kept scratch array may only be reused by later calls of the same Python thread, never shared
by two threads that run the same plan at once, and only when small; a call with arguments the
key cannot vouch for takes the full checks, as before.
"""

import threading

import numpy as np
import pytest

import fastconv
from fastconv import _paths
from fastconv import conv as conv_module
from fastconv._plan import clear_plans
from helpers import bits, conv_case
from reference.conv import conv2d_ref

TINY = (1, 1, 6, 8, 1, (1, 2), 1, (0, 0, 0, 0), 1)  # benchmark.py's "tiny"


def _plan(x, weight, bias):
    """The cached plan conv2d(x, weight, bias) runs (stride 1, no padding)."""
    return conv_module._prepare(x, weight, bias, 1, 0, 1, 1, "zeros")[0].plan


def _scratch_entries(plan):
    return {key: value for key, value in plan.memo.items() if key[0] == "scratch"}


def test_small_scratch_is_kept_and_reused_by_the_same_thread(rng):
    clear_plans()
    x, weight, bias, _ = conv_case(rng, TINY, np.float32)
    first = fastconv.conv2d(x, weight, bias)
    plan = _plan(x, weight, bias)
    assert plan.forward.name == "few-channels"
    kept = _scratch_entries(plan)
    assert len(kept) == 1
    (key, scratch), = kept.items()
    assert key[-1] == threading.get_ident()
    second = fastconv.conv2d(x, weight, bias)
    assert _scratch_entries(plan)[key] is scratch  # the same arrays again
    np.testing.assert_array_equal(bits(first), bits(second))
    np.testing.assert_allclose(second, conv2d_ref(x, weight, bias, (1, 1), (0, 0, 0, 0)),
                               rtol=1e-5, atol=1e-5)
    # another thread count is another layout: its own scratch
    with fastconv.threads(1):
        fastconv.conv2d(x, weight, bias)
    assert len(_scratch_entries(plan)) == 2


def test_large_scratch_is_made_per_call(rng):
    clear_plans()
    # 1 -> 16 channels 5x5 on 8 samples of 96x96: phase planes of tens of KB per thread
    x, weight, bias, _ = conv_case(rng, (8, 1, 96, 96, 16, (5, 5), 1, (0, 0, 0, 0), 1),
                                   np.float32)
    fastconv.conv2d(x, weight, bias)
    plan = _plan(x, weight, bias)
    assert plan.forward.name == "few-channels"
    assert _scratch_entries(plan) == {}


def test_threads_running_one_plan_at_once_keep_their_own_scratch(rng):
    clear_plans()
    inputs = [conv_case(rng, TINY, np.float32) for _ in range(4)]
    weight, bias = inputs[0][1], inputs[0][2]
    expected = [fastconv.conv2d(x, weight, bias) for x, *_ in inputs]
    failures = []
    start = threading.Barrier(len(inputs))

    def run(index):
        start.wait()
        for _ in range(300):
            got = fastconv.conv2d(inputs[index][0], weight, bias)
            if bits(got).tobytes() != bits(expected[index]).tobytes():
                failures.append(index)
                return

    workers = [threading.Thread(target=run, args=(index,)) for index in range(len(inputs))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    plan = _plan(inputs[0][0], weight, bias)
    idents = {key[-1] for key in _scratch_entries(plan)}
    assert {worker.ident for worker in workers} <= idents


@pytest.mark.parametrize("variant", ["bool stride", "float padding", "float64 bias",
                                     "non-contiguous x", "list stride"])
def test_arguments_the_key_cannot_vouch_for_take_the_full_checks(variant, rng):
    x, weight, bias, _ = conv_case(rng, TINY, np.float32)
    stride, padding = 1, 0
    if variant == "bool stride":
        stride = True
    elif variant == "float padding":
        padding = 0.0
    elif variant == "float64 bias":
        bias = bias.astype(np.float64)
    elif variant == "non-contiguous x":
        x = np.asfortranarray(np.repeat(x, 2, axis=0))[:1]
        assert not x.flags.c_contiguous
    elif variant == "list stride":
        stride = [1, 1]
    assert conv_module._plan_key(x, weight, bias, stride, padding, 1, 1, "zeros", ()) is None
    if variant in ("bool stride", "float padding"):
        with pytest.raises(TypeError):
            fastconv.conv2d(x, weight, bias, stride, padding)
    else:
        got = fastconv.conv2d(x, weight, bias, stride, padding)
        np.testing.assert_allclose(got, conv2d_ref(x, weight, bias, (1, 1), (0, 0, 0, 0)),
                                   rtol=1e-5, atol=1e-5)


def test_the_common_case_has_a_key(rng):
    x, weight, bias, _ = conv_case(rng, TINY, np.float32)
    key = conv_module._plan_key(x, weight, bias, 1, 0, 1, 1, "zeros", ())
    assert key is not None and key[0] == x.shape and key[2] == "f"
    # grad_output as an extra array of the same dtype, pairs of ints, no bias: keyed too
    gy = np.ones((1, 1, 6, 7), np.float32)
    assert conv_module._plan_key(x, weight, None, (1, 1), (0, 0), 1, 1, "zeros",
                                 (("grad_output", gy),)) is not None
    assert conv_module._plan_key(x, weight, None, 1, 0, 1, 1, "zeros",
                                 (("grad_output", gy.astype(np.float64)),)) is None
    assert _paths.SCRATCH_KEEP_BYTES > 0
