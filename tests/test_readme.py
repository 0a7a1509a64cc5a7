"""README.md's Python blocks run as written: each block on its own, in a fresh namespace.

Every block is self-contained (its own imports and data), so a reader can paste any one of
them. They run in a temporary directory (the blocks write model files and pictures). Blocks
that read Fashion-MNIST skip when it is not on this machine (the tests never download);
CI installs Debian's dataset-fashion-mnist, so there they all run.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from fastconv import datasets

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    if not README.is_file():  # an installed copy of the tests without the project around it
        return []
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(pytest.param(match.group(1), id=f"README.md:{line}"))
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_its_blocks():
    if not README.is_file():
        pytest.skip("README.md is not beside the tests")
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("source", BLOCKS)
def test_block_runs(source, tmp_path, monkeypatch):
    if "load_fashion_mnist" in source and datasets.find_data("fashion-mnist") is None:
        pytest.skip("Fashion-MNIST is not on this machine (apt-get install dataset-fashion-mnist)")
    if "plot." in source:
        pytest.importorskip("matplotlib")
        monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 - our own README
    check = CHECKS.get(_key(source))
    if check is not None:
        check(namespace, tmp_path)


def _key(source):
    for key in CHECKS:
        if key in source:
            return key
    return None


def _recipe(namespace, tmp_path):
    # The README promises about 84% -> about 86.5% after one epoch.
    assert 0.82 < namespace["plain"] < 0.87, namespace["plain"]
    assert 0.85 < namespace["recipe"] < 0.89, namespace["recipe"]
    assert namespace["recipe"] > namespace["plain"]


def _first_training(namespace, tmp_path):
    assert (tmp_path / "seed.npz").is_file()
    assert namespace["history"][0]["val_accuracy"] > 0.8


def _edges(namespace, tmp_path):
    np.testing.assert_allclose(namespace["conv"].weight.data.reshape(2), [1, -1], atol=0.05)


def _plots(namespace, tmp_path):
    assert os.path.getsize(tmp_path / "edges.png") > 0
    assert os.path.getsize(tmp_path / "first-layer.png") > 0


CHECKS = {
    "plain, recipe = one_epoch": _recipe,
    'fastconv.save(model, "seed.npz")': _first_training,
    "for _ in range(30):": _edges,
    "plot.feature_maps(": _plots,
}
