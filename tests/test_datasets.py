"""Data set loaders on small idx files written here; the download path over file:// URLs only."""

import gzip
import hashlib
import os

import numpy as np
import pytest

from fastconv import datasets

DEBIAN = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Tests never download, never read the real cache, never see the caller's FASTCONV_DATA."""
    real_fetch = datasets._fetch

    def local_only(url, destination):
        if not url.startswith("file:"):
            raise AssertionError(f"a test tried to download {url}")
        return real_fetch(url, destination)

    monkeypatch.setattr(datasets, "_fetch", local_only)
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_fake_mnist(directory, train=12, test=5, seed=0, compress=True):
    """Four small idx files in ``directory``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        datasets.write_idx(os.path.join(directory, stem + (".gz" if compress else "")), array)
    return arrays


def check_loaded(loaded, arrays):
    (X_train, y_train), (X_test, y_test) = loaded
    assert X_train.dtype == np.uint8 and y_train.dtype == np.int64
    np.testing.assert_array_equal(X_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(X_test, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def test_idx_format_by_hand(tmp_path):
    """The header is big-endian: zero, zero, type 0x08 (ubyte), ndim, then each size."""
    payload = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + \
        (3).to_bytes(4, "big") + bytes(range(12))
    with gzip.open(tmp_path / "images.gz", "wb") as handle:
        handle.write(payload)
    array = datasets.read_idx(tmp_path / "images.gz")
    np.testing.assert_array_equal(array, np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    datasets.write_idx(tmp_path / "again.gz", array)
    assert gzip.decompress((tmp_path / "again.gz").read_bytes()) == payload
    wide = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    datasets.write_idx(tmp_path / "wide", wide)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "wide"), wide)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_load_from_path(tmp_path, compress):
    arrays = write_fake_mnist(tmp_path / "data", compress=compress)
    check_loaded(datasets.load_fashion_mnist(tmp_path / "data"), arrays)
    check_loaded(datasets.load_mnist(str(tmp_path / "data")), arrays)


def test_environment_variable_and_subdirectory(tmp_path, monkeypatch):
    fashion = write_fake_mnist(tmp_path / "data" / "fashion-mnist", seed=1)
    digits = write_fake_mnist(tmp_path / "data" / "mnist", seed=2)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "data"))
    check_loaded(datasets.load_fashion_mnist(download=False), fashion)
    check_loaded(datasets.load_mnist(download=False), digits)
    flat = write_fake_mnist(tmp_path / "flat", seed=3)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "flat"))
    check_loaded(datasets.load_mnist(download=False), flat)


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load_fashion_mnist(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message and "FASTCONV_DATA" in message

    monkeypatch.setitem(datasets._SOURCES, "fashion-mnist",
                        (["file:///nonexistent/"],) + datasets._SOURCES["fashion-mnist"][1:2]
                        + (str(tmp_path / "no-debian"), "dataset-fashion-mnist"))
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "empty"))
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load_fashion_mnist(download=False)
    message = str(info.value)
    for place in (tmp_path / "empty", tmp_path / "no-debian", tmp_path / "cache"):
        assert str(place) in message
    with pytest.raises(datasets.DatasetNotFoundError, match="could not download"):
        datasets.load_fashion_mnist()


@pytest.mark.parametrize("damage", ["truncated-gzip", "not-gzip-not-idx", "short-data",
                                    "label-count"])
def test_corrupt_files(tmp_path, damage):
    write_fake_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    if damage == "truncated-gzip":
        images.write_bytes(images.read_bytes()[:200])
        match = "not a readable gzip file"
    elif damage == "not-gzip-not-idx":
        images.write_bytes(b"<html>404</html>")
        match = "not an idx file"
    elif damage == "short-data":
        datasets.write_idx(tmp_path / "raw", np.zeros((12, 28, 28), np.uint8))
        images.write_bytes(gzip.compress((tmp_path / "raw").read_bytes()[:-5]))
        match = "truncated or corrupt"
    else:
        datasets.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
        match = "labels for 12 images"
    with pytest.raises(datasets.CorruptDatasetError, match=match) as info:
        datasets.load_fashion_mnist(tmp_path)
    assert str(tmp_path) in str(info.value)


def _offline_source(monkeypatch, tmp_path, checksums=None):
    """Point the download at file:// URLs of a local 'server' directory."""
    server = tmp_path / "server"
    arrays = write_fake_mnist(server, seed=4)
    sums = {name: hashlib.md5((server / name).read_bytes()).hexdigest()
            for name in os.listdir(server)}
    sums.update(checksums or {})
    monkeypatch.setitem(datasets._SOURCES, "fashion-mnist",
                        ([server.as_uri() + "/"], sums, str(tmp_path / "no-debian"), None))
    return arrays


def test_download_into_cache_with_checksums(tmp_path, monkeypatch):
    arrays = _offline_source(monkeypatch, tmp_path)
    check_loaded(datasets.load_fashion_mnist(), arrays)
    cache = tmp_path / "cache" / "fastconv" / "fashion-mnist"
    assert sorted(os.listdir(cache)) == sorted(os.listdir(tmp_path / "server"))
    check_loaded(datasets.load_fashion_mnist(download=False), arrays)  # found in the cache


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    _offline_source(monkeypatch, tmp_path, {"t10k-labels-idx1-ubyte.gz": "0" * 32})
    with pytest.raises(datasets.DatasetNotFoundError, match="checksum mismatch"):
        datasets.load_fashion_mnist()
    cache = tmp_path / "cache" / "fastconv" / "fashion-mnist"
    assert "t10k-labels-idx1-ubyte.gz" not in os.listdir(cache)
    assert not [name for name in os.listdir(cache) if name.endswith(".part")]


@pytest.mark.skipif(not os.path.isdir(DEBIAN), reason="dataset-fashion-mnist not installed")
def test_debian_package():
    (X_train, y_train), (X_test, y_test) = datasets.load_fashion_mnist(download=False)
    assert X_train.shape == (60000, 28, 28) and X_test.shape == (10000, 28, 28)
    assert X_train.dtype == np.uint8 and y_test.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 1000))
