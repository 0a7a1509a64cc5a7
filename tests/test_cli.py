"""The command line: info, train on tiny idx files written here, bench delegation, errors."""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

import fastconv
import fastconv.io
import fastconv.train
from fastconv import datasets, models
from fastconv.__main__ import main


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    def refuse(url, destination):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(datasets, "_fetch", refuse)
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def tiny_fashion(directory, train=192, test=64, seed=0):
    """Two easy classes (a bright square or not) as Fashion-MNIST idx files."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 2, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
        images[labels == 1, 8:20, 8:20] += 150
        datasets.write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images)
        datasets.write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), labels)
    return directory


def test_info(capsys):
    assert main(["info"]) == 0
    assert fastconv.__version__ in capsys.readouterr().out


def test_python_m_fastconv_info():
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "fastconv", "info"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert fastconv.__version__ in result.stdout


def test_train_saves_a_model(tmp_path, capsys):
    data = tiny_fashion(tmp_path / "data")
    threads_before = fastconv.get_num_threads()
    status = main(["train", "--data", str(data), "--epochs", "2", "--batch-size", "32",
                   "--threads", "1", "--seed", "3", "--save", str(tmp_path / "m.npz"),
                   "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    assert "192 training and 64 test images" in out
    assert "epoch 1/2: loss" in out and "epoch 2/2: loss" in out
    assert "test accuracy" in out and f"saved model to {tmp_path / 'm.npz'}" in out
    model = fastconv.io.load(models.tutorial_net(seed=99), tmp_path / "m.npz")
    (_, _), (X_test, y_test) = datasets.load_fashion_mnist(data)
    accuracy = fastconv.train.evaluate(model, X_test, y_test)
    assert f"test accuracy {100 * accuracy:.2f}%" in out
    assert fastconv.get_num_threads() == threads_before  # --threads only inside the command


def test_train_lenet_from_environment_with_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTCONV_DATA", str(tiny_fashion(tmp_path / "env")))
    assert main(["train", "--model", "lenet", "--limit", "64", "--lr", "0.01"]) == 0
    captured = capsys.readouterr()
    assert "64 training" in captured.out and "AvgPool2d" in captured.out
    assert "epoch 1/1: loss" in captured.err  # progress goes to stderr
    assert (tmp_path / "fastconv-lenet.npz").is_file()  # the default --save


def test_train_without_saving(tmp_path, capsys):
    data = tiny_fashion(tmp_path / "data", train=32, test=8)
    assert main(["train", "--data", str(data), "--save", "", "--quiet"]) == 0
    assert "saved" not in capsys.readouterr().out
    assert not list(tmp_path.glob("*.npz"))


def test_train_missing_data(tmp_path, capsys):
    status = main(["train", "--data", str(tmp_path / "nothing"), "--quiet"])
    assert status == 1
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and str(tmp_path / "nothing") in err


@pytest.mark.parametrize("argv", [[], ["train", "--epochs", "0"], ["train", "--lr", "-1"],
                                  ["train", "--model", "resnet"], ["frobnicate"]])
def test_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--epochs", "--batch-size", "--lr", "--momentum", "--threads",
                   "--seed", "--save", "--data"):
        assert option in out


def test_bench_delegates(monkeypatch):
    calls = []
    fake = types.ModuleType("fastconv.benchmark")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fastconv.benchmark", fake)
    monkeypatch.setattr(fastconv, "benchmark", fake, raising=False)
    assert main(["bench", "--quick", "-h"]) == 0
    assert calls == [["--quick", "-h"]]


def test_train_schedule_and_standardisation_flags(tmp_path, capsys):
    data = tiny_fashion(tmp_path / "data", train=64, test=16)
    assert main(["train", "--data", str(data), "--save", "", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "inputs standardised: (x/255 - " in out and "cosine decay" in out
    assert main(["train", "--data", str(data), "--save", "", "--quiet", "--schedule",
                 "constant", "--no-standardize"]) == 0
    out = capsys.readouterr().out
    assert "standardised" not in out and "cosine" not in out and "SGD lr=0.05 momentum" in out
