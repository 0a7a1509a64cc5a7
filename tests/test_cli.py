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
                                  ["train", "--model", "nope"], ["frobnicate"],
                                  ["train", "--seed", "-1"], ["train", "--lr", "nan"],
                                  ["train", "--save-on-interrupt", "--save", ""],
                                  ["train", "--optimizer", "adam", "--momentum", "0.5"],
                                  ["train", "--optimizer", "adam", "--nesterov"],
                                  ["train", "--optimizer", "rmsprop"]])
def test_bad_arguments(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()


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


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastconv {fastconv.__version__}"


def test_bench_unknown_case_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown case(s) 'nope'" in err and "resnet" in err


def _fail_if_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started although the save path is unusable")

    monkeypatch.setattr(fastconv.train, "fit", refuse)


@pytest.mark.parametrize("where", ["missing-dir", "directory", "proc"])
def test_save_path_is_checked_before_training(where, tmp_path, capsys, monkeypatch):
    data = tiny_fashion(tmp_path / "data", train=32, test=8)
    target = {"missing-dir": str(tmp_path / "nowhere" / "m.npz"), "directory": str(tmp_path),
              "proc": "/proc/fastconv-m.npz"}[where]
    _fail_if_training(monkeypatch)
    status = main(["train", "--data", str(data), "--save", target, "--quiet"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastconv: --save") and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_save_path_read_only_directory(tmp_path, capsys, monkeypatch):
    data = tiny_fashion(tmp_path / "data", train=32, test=8)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    _fail_if_training(monkeypatch)
    try:
        assert main(["train", "--data", str(data), "--save", str(locked / "m.npz")]) == 2
    finally:
        locked.chmod(0o700)
    assert "cannot write" in capsys.readouterr().err


def _idx_set(directory, images_train, labels_train, images_test=None, labels_test=None):
    os.makedirs(directory, exist_ok=True)
    images_test = images_train if images_test is None else images_test
    labels_test = labels_train if labels_test is None else labels_test
    for prefix, images, labels in (("train", images_train, labels_train),
                                   ("t10k", images_test, labels_test)):
        datasets.write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"),
                           np.asarray(images, np.uint8))
        datasets.write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"),
                           np.asarray(labels, np.uint8))
    return directory


@pytest.mark.parametrize("case, message", [
    ("not-28x28", "the training images are 32x32; the models take 28x28"),
    ("empty", "the training set is empty"),
    ("all-zero", "cannot be standardised; pass --no-standardize"),
    ("labels", "the test labels range over 12..12; the models have 10 classes"),
])
def test_bad_data_sets_end_in_one_line(case, message, tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 28, 28))
    labels = rng.integers(0, 10, 16)
    if case == "not-28x28":
        data = _idx_set(tmp_path / case, rng.integers(0, 255, (16, 32, 32)), labels)
    elif case == "empty":
        data = _idx_set(tmp_path / case, np.zeros((0, 28, 28)), np.zeros(0), images, labels)
    elif case == "all-zero":
        data = _idx_set(tmp_path / case, np.zeros((16, 28, 28)), labels)
    else:
        data = _idx_set(tmp_path / case, images, labels, images, np.full(16, 12))
    status = main(["train", "--data", str(data), "--quiet", "--save", ""])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and message in err, err


def _cli(*args, **kwargs):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "fastconv", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_output_into_a_closed_pipe_ends_quietly():
    process = _cli("info")
    process.stdout.close()  # the reader is gone before anything is written, as with `| head`
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert err == ""


@pytest.mark.parametrize("keep", [False, True], ids=["default", "save-on-interrupt"])
def test_interrupted_training_never_replaces_the_model(keep, tmp_path):
    import signal

    data = tiny_fashion(tmp_path / "data", train=60000, test=64)
    target = tmp_path / "model.npz"
    good = models.tutorial_net(seed=5)
    fastconv.io.save(good, target)
    before = target.read_bytes()
    args = ["train", "--data", str(data), "--epochs", "3", "--threads", "1",
            "--save", str(target)] + (["--save-on-interrupt"] if keep else [])
    process = _cli(*args, cwd=tmp_path)
    lines = []
    for line in process.stderr:  # plain progress lines: stderr is not a terminal
        lines.append(line)
        if line.startswith("epoch 1/3:") and "images" in line:
            process.send_signal(signal.SIGINT)
            break
    out, rest = process.communicate(timeout=300)
    err = "".join(lines) + rest
    assert process.returncode == 130, err
    assert target.read_bytes() == before  # the good model is untouched
    assert "Traceback" not in err
    assert "training interrupted after" in err and "complete epoch(s)" in err
    assert "test accuracy" not in out
    partial = tmp_path / "model.interrupted.npz"
    if keep:
        assert partial.is_file() and "saved the partial model" in err
        fastconv.io.load(models.tutorial_net(seed=0), partial)
    else:
        assert not partial.exists() and "model not saved" in err


def test_train_with_adam(tmp_path, capsys):
    data = tiny_fashion(tmp_path / "data", train=64, test=16)
    assert main(["train", "--data", str(data), "--save", str(tmp_path / "m.npz"), "--quiet",
                 "--optimizer", "adam", "--schedule", "constant"]) == 0
    out = capsys.readouterr().out
    assert "Adam lr=0.002 weight_decay=0.0," in out and "momentum" not in out
    # the saved model is what Adam trained: the same run by hand gives the same weights
    model = models.tutorial_net(seed=0)
    (X, y), _ = datasets.load_fashion_mnist(data)
    X, _, _ = fastconv.train.standardize(X)
    fastconv.train.fit(model, X, y, optimizer=fastconv.optim.Adam(model.parameters(), lr=0.002),
                       epochs=1, batch_size=64, seed=0, progress=False)
    saved = fastconv.io.load(models.tutorial_net(seed=1), tmp_path / "m.npz")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(saved.state_dict()[key], value)
