"""bench/bench_ab.py, the A/B tool of two checkouts: run with BEFORE = AFTER = this checkout it
must find every result identical (--bits) and time a case on both sides; its comparison must
catch a one-bit difference, a NaN moved, a signed zero, a shape, a dtype, an exception.

Runs only where this checkout is built in place (the tool runs checkouts, not installed
copies); the installed-wheel CI run skips it. Timings themselves are never asserted.
"""

import argparse
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
TOOL = os.path.join(BENCH, "bench_ab.py")
BUILT = any(os.path.exists(os.path.join(ROOT, "fastconv", "_conv" + suffix))
            for suffix in importlib.machinery.EXTENSION_SUFFIXES)

pytestmark = pytest.mark.skipif(not (BUILT and os.path.exists(TOOL)),
                                reason="needs a checkout built in place (bench/bench_ab.py "
                                       "A/Bs checkouts, not installed copies)")


@pytest.fixture(scope="module")
def tool():
    sys.path.insert(0, BENCH)
    try:
        import bench_ab
        yield bench_ab
    finally:
        sys.path.remove(BENCH)


def run_tool(*args, cwd):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_bits_of_a_checkout_against_itself_are_identical(tmp_path):
    path = tmp_path / "bits.json"
    # a bench case of each kind and edge cases of each family, float32/float64, 1/2 threads
    result = run_tool("--bits", ROOT, ROOT, "tiny", "max-k2-12", "avg-k2", "e-stride-hw",
                      "e-reflect", "e-dw-24", "e-dw-inf-w", "e-nonfinite", "e-max-nan-3",
                      "e-avg-excl", "e-pad-crop", "e-batch0", "--json", str(path),
                      cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all identical bit for bit" in result.stdout
    # each worker imported this checkout's fastconv, and says so
    init = os.path.join(os.path.realpath(ROOT), "fastconv", "__init__.py")
    assert result.stdout.count(f"from {init}") == 2
    report = json.loads(path.read_text())
    assert report["differences"] == []
    assert report["dtypes"] == ["float32", "float64"] and report["threads"] == [1, 2]
    # 12 cases x 2 dtypes x 2 thread counts; tiny alone has conv2d + 3 gradients
    assert report["results_compared"] > 12 * 4 * 3
    assert all(w["file"] == init for w in report["workers"])


def test_one_case_timing_of_a_checkout_against_itself(tmp_path):
    path = tmp_path / "timing.json"
    result = run_tool(ROOT, ROOT, "tiny", "--repeats", "1", "--per-block", "1",
                      "--min-seconds", "0", "--settle", "0", "--threads", "1",
                      "--json", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if commit:
        assert result.stdout.count(commit[:12]) == 2
    assert "1 threads" in result.stdout
    report = json.loads(path.read_text())
    rows = report["rows"]
    assert [(row["case"], row["op"]) for row in rows] == [("tiny", "conv2d"),
                                                          ("tiny", "conv2d_backward")]
    for row in rows:
        assert row["before_ms"] > 0 and row["after_ms"] > 0 and row["rounds"] == 1
        assert row["after_over_before"] == pytest.approx(row["after_ms"] / row["before_ms"])
        # one round of one call per side: the round's ratio is the overall one
        assert row["round_ratios"] == [pytest.approx(row["after_over_before"])]
        assert row["round_ratio_q1"] == row["round_ratio_q3"] == row["round_ratios"][0]
        assert len(row["before_seconds"]) == len(row["after_seconds"]) == 1
        assert row["min_after_over_before"] == pytest.approx(row["after_over_before"])
    assert "load average" in result.stdout
    assert report["env"]["OMP_NUM_THREADS"] == "1"


def test_a_difference_is_reported_and_fails_the_run(tmp_path):
    # AFTER: a copy of this checkout's package whose pad2d moves its first element by one ulp
    after = tmp_path / "after"
    shutil.copytree(os.path.join(ROOT, "fastconv"), after / "fastconv",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(after / "fastconv" / "pad.py", "a") as handle:
        handle.write(
            "\n_exact_pad2d = pad2d\n\n\n"
            "def pad2d(*args, **kwargs):  # type: ignore[no-redef]\n"
            "    out = _exact_pad2d(*args, **kwargs)\n"
            "    out.reshape(-1)[0] = np.nextafter(out.reshape(-1)[0], np.inf)\n"
            "    return out\n")
    result = run_tool("--bits", ROOT, str(after), "e-pad-constant", "e-stride2", "--dtype",
                      "float64", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    differs = [line for line in result.stdout.splitlines() if line.startswith("DIFFERS")]
    assert len(differs) == 1, result.stdout
    assert "e-pad-constant float64 1t" in differs[0] and " pad2d " in differs[0]
    assert "1 of 720 elements differ; max abs diff 2.22e-16 at (0, 0, 0, 0)" in differs[0]
    assert "1 differ" in result.stdout.splitlines()[-1]


def test_unknown_case_is_refused(tool):
    parser = argparse.ArgumentParser()
    with pytest.raises(SystemExit):
        tool.select(["no-such-case"], {"tiny": {}}, {"edge": ["e-pad-plane"]}, parser)
    assert tool.select(["edge", "tiny", "e-pad-plane"], {"tiny": {}, "e-pad-plane": {}},
                       {"edge": ["e-pad-plane"]}, parser) == ["e-pad-plane", "tiny"]


def test_a_folder_without_a_build_is_refused(tool, tmp_path):
    (tmp_path / "fastconv").mkdir()
    with pytest.raises(SystemExit, match="no compiled extensions"):
        tool.checkout_info(str(tmp_path))
    with pytest.raises(SystemExit, match="not a fastconv checkout"):
        tool.checkout_info(str(tmp_path / "fastconv"))


def test_compare_sees_every_kind_of_difference(tool):
    a = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert tool.compare(a, a.copy()) is None
    one_ulp = a.copy()
    one_ulp[1, 2] = np.nextafter(one_ulp[1, 2], np.float32(2))
    message = tool.compare(a, one_ulp)
    assert "1 of 12 elements differ" in message and "(1, 2)" in message
    signed_zero = np.zeros(3)
    assert "1 of 3" in tool.compare(signed_zero, np.array([0.0, -0.0, 0.0]))
    moved_nan = a.copy()
    moved_nan[0, 0] = np.nan
    assert "NaN placement differs at 1" in tool.compare(a, moved_nan)
    both_nan = moved_nan.copy()
    assert tool.compare(moved_nan, both_nan) is None
    other_payload = moved_nan.copy()
    other_payload.view(np.uint32)[0, 0] ^= 1  # still a NaN, other bits
    assert "1 of 12" in tool.compare(moved_nan, other_payload)
    assert "float64" in tool.compare(a, a.astype(np.float64))
    assert "(4, 3)" in tool.compare(a, a.reshape(4, 3))
    assert "C-contiguous" in tool.compare(a, np.asfortranarray(a))
    indices = np.arange(6, dtype=np.int64)
    assert "max abs diff 3" in tool.compare(indices, indices + np.array([0, 0, 3, 0, 0, 0]))
    error = ("error", "ValueError", "bad")
    assert tool.compare(error, ("error", "ValueError", "worded otherwise")) is None
    assert "raises ValueError" in tool.compare(error, a)
    assert "TypeError" in tool.compare(error, ("error", "TypeError", "bad"))
    assert tool.compare(None, None) is None and tool.compare(None, a) is not None
