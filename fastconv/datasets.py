"""Fashion-MNIST and MNIST from the official idx files.

Where the files are looked for, in order:

1. the ``path=`` argument, when given (and only there);
2. ``$FASTCONV_DATA`` (the directory itself, or its ``fashion-mnist/`` / ``mnist/``
   sub-directory, so one variable can serve both data sets);
3. ``/usr/share/datasets/fashion-mnist/`` (Debian's ``dataset-fashion-mnist`` package);
4. the user cache, ``$XDG_CACHE_HOME/fastconv/<name>/`` (``~/.cache/fastconv/<name>/``).

When none has all four files, they are downloaded from the official source into the cache and
their MD5 checksums verified (``download=False`` turns that off). Files may be gzip-compressed
(``train-images-idx3-ubyte.gz``, as distributed) or plain (``train-images-idx3-ubyte``).

Examples
--------
>>> from fastconv import datasets
>>> (X_train, y_train), (X_test, y_test) = datasets.load_fashion_mnist()  # doctest: +SKIP
>>> X_train.shape, X_train.dtype, y_train.dtype                           # doctest: +SKIP
((60000, 28, 28), dtype('uint8'), dtype('int64'))
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import io
import urllib.request
import zlib
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from ._typing import ArrayLike, StrPath

# ((train images, train labels), (test images, test labels)): uint8 (N, 28, 28), int64 (N,)
_Split: TypeAlias = "tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]"
_Splits: TypeAlias = "tuple[_Split, _Split]"

__all__ = [
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "write_idx",
    "find_data",
    "cache_dir",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "FASHION_MNIST_CLASSES",
]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# name -> (mirrors, {file.gz: md5 of the official compressed file}, Debian directory, package)
_SOURCES = {
    "fashion-mnist": (
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "/usr/share/datasets/fashion-mnist",
        "dataset-fashion-mnist",
    ),
    "mnist": (
        ["https://ossci-datasets.s3.amazonaws.com/mnist/",
         "http://yann.lecun.com/exdb/mnist/"],
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "/usr/share/datasets/mnist",
        None,
    ),
}

# idx type codes (the third byte of the magic number) -> big-endian dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetNotFoundError(FileNotFoundError):
    """The data set's files are in none of the places looked at (and were not downloaded)."""


class CorruptDatasetError(ValueError):
    """A data set file is truncated, not gzip, not idx, or disagrees with its partner file."""


def cache_dir() -> str:
    """The user cache directory fastconv downloads into (created on demand).

    ``$XDG_CACHE_HOME/fastconv`` or ``~/.cache/fastconv`` (``%LOCALAPPDATA%\\fastconv`` on
    Windows, ``~/Library/Caches/fastconv`` on macOS).
    """
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fastconv")


def _file_in(directory, stem):
    """The path of ``stem`` (compressed or not) in ``directory``, or None."""
    for candidate in (stem + ".gz", stem):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _candidates(name, path):
    if path is not None:
        path = os.fspath(path)
        return [path, os.path.join(path, name)]
    places = []
    env = os.environ.get("FASTCONV_DATA")
    if env:
        places += [os.path.join(env, name), env]
    places.append(_SOURCES[name][2])
    places.append(os.path.join(cache_dir(), name))
    return places


def _how_to_get(name):
    package = _SOURCES[name][3]
    hints = []
    if package:
        hints.append(f"install Debian's package ('apt-get install {package}')")
    hints.append("set FASTCONV_DATA to a directory holding the four idx files "
                 f"({', '.join(stem + '.gz' for stem in _FILES.values())})")
    hints.append("or pass path=")
    return "; ".join(hints)


def find_data(name: Literal["fashion-mnist", "mnist"] = "fashion-mnist",
              path: StrPath | None = None) -> tuple[str, dict[str, str]] | None:
    """The directory and the four file paths for data set ``name``, or None when not found.

    Parameters
    ----------
    name : {'fashion-mnist', 'mnist'}
    path : str or os.PathLike, optional
        Look only here (and in ``path/name``).

    Returns
    -------
    (str, dict) or None
        The directory and ``{'train_images': ..., 'train_labels': ..., 'test_images': ...,
        'test_labels': ...}``.
    """
    if name not in _SOURCES:
        raise ValueError(f"name must be one of {sorted(_SOURCES)}, got {name!r}")
    for directory in _candidates(name, path):
        files = {key: _file_in(directory, stem) for key, stem in _FILES.items()}
        if all(files.values()):
            return directory, files
    return None


def _open_idx(path: str) -> io.BufferedIOBase:
    """The file, decompressed on the fly when it starts with gzip's magic bytes."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def read_idx(path: StrPath) -> np.ndarray:
    """Read one idx file (gzip-compressed or not) into an ndarray.

    The header is read first and then exactly the data it announces (and one byte more, to
    tell a longer file): a compressed file is never decompressed beyond that, however far its
    stream goes on.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    numpy.ndarray
        With the file's shape; unsigned bytes come back as uint8, other types native-endian.

    Raises
    ------
    CorruptDatasetError
        Not gzip/idx, an unknown type code, or a size that disagrees with the header.
    """
    path = os.fspath(path)
    try:
        with _open_idx(path) as handle:
            magic = handle.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise CorruptDatasetError(
                    f"{path} is not an idx file (bad magic number {magic!r})")
            ndim = magic[3]
            sizes = handle.read(4 * ndim)
            if ndim == 0 or len(sizes) < 4 * ndim:
                raise CorruptDatasetError(f"{path} has a truncated idx header")
            shape = tuple(int.from_bytes(sizes[4 * i: 4 * i + 4], "big") for i in range(ndim))
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            data = handle.read(expected)
            extra = handle.read(1)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise CorruptDatasetError(f"{path} is not a readable gzip file: {exc}") from None
    if len(data) != expected or extra:
        found = f"{len(data)}" if not extra else f"more than {expected}"
        raise CorruptDatasetError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes of "
            f"data), file has {found}"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: StrPath, array: ArrayLike) -> None:
    """Write ``array`` as an idx file, gzip-compressed when ``path`` ends in ``.gz``.

    The inverse of :func:`read_idx`; used to make small test data sets.
    """
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise TypeError(f"idx cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[native], array.ndim])
    header += b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    payload = header + array.astype(np.dtype(_IDX_DTYPES[codes[native]])).tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url, destination):
    """Copy ``url`` to ``destination`` (the one place that touches the network)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out)


def _download(name, directory):
    """Download the four files of ``name`` into ``directory``, verifying their MD5 sums."""
    mirrors, checksums, _, _ = _SOURCES[name]
    os.makedirs(directory, exist_ok=True)
    for filename, md5 in checksums.items():
        target = os.path.join(directory, filename)
        if os.path.isfile(target) and _md5(target) == md5:
            continue
        errors = []
        for mirror in mirrors:
            url = mirror + filename
            handle, partial = tempfile.mkstemp(prefix=filename + ".", suffix=".part",
                                               dir=directory)
            os.close(handle)
            try:
                print(f"fastconv: downloading {url}", file=sys.stderr)
                _fetch(url, partial)
                got = _md5(partial)
                if got != md5:
                    raise CorruptDatasetError(f"checksum mismatch for {url}: MD5 {got}, "
                                              f"expected {md5}")
                os.replace(partial, target)
                break
            except (OSError, CorruptDatasetError) as exc:
                errors.append(f"{url}: {exc}")
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
        else:
            raise DatasetNotFoundError(
                f"could not download {filename} of {name} into {directory}:\n  "
                + "\n  ".join(errors) + "\nTo get the data without downloading: "
                + _how_to_get(name)
            )


def _load(name, path, download):
    found = find_data(name, path)
    if found is None and download and path is None:
        _download(name, os.path.join(cache_dir(), name))
        found = find_data(name, path)
    if found is None:
        places = _candidates(name, path)
        tried = "\n  ".join(places)
        downloaded = "" if path is not None or not download else " (and downloading failed)"
        raise DatasetNotFoundError(
            f"{name} not found{downloaded}: looked for "
            f"{', '.join(stem + '[.gz]' for stem in _FILES.values())} in\n  {tried}\n"
            f"To get the data: {_how_to_get(name)}."
        )
    directory, files = found
    arrays = {}
    for key, file_path in files.items():
        try:
            arrays[key] = read_idx(file_path)
        except CorruptDatasetError as exc:
            raise CorruptDatasetError(
                f"{exc}\n(found in {directory}; replace the file: {_how_to_get(name)})"
            ) from None
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise CorruptDatasetError(
                f"{files[split + '_images']} should hold uint8 images (N, H, W), got "
                f"{images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise CorruptDatasetError(
                f"{files[split + '_labels']} has {labels.shape} labels for "
                f"{images.shape[0]} images in {files[split + '_images']}"
            )
    return ((arrays["train_images"], arrays["train_labels"].astype(np.int64)),
            (arrays["test_images"], arrays["test_labels"].astype(np.int64)))


def load_fashion_mnist(path: StrPath | None = None, *, download: bool = True) -> _Splits:
    """Load Fashion-MNIST: 60,000 training and 10,000 test 28x28 grey images in 10 classes.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Directory holding the four idx files (``train-images-idx3-ubyte.gz``, ...). Without
        it: ``$FASTCONV_DATA``, ``/usr/share/datasets/fashion-mnist/`` (Debian package
        ``dataset-fashion-mnist``), then the user cache (see :func:`cache_dir`).
    download : bool, default True
        When ``path`` is not given and no place has the files, download them into the cache
        from the official source and verify their MD5 checksums.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        Images uint8 of shape (N, 28, 28) with values 0..255; labels int64 in 0..9 (names in
        :data:`FASHION_MNIST_CLASSES`). :func:`fastconv.train.fit` scales the images to
        float32 [0, 1] and adds the channel axis.

    Raises
    ------
    DatasetNotFoundError
        The files are nowhere (the message lists where it looked and how to get them).
    CorruptDatasetError
        A file is truncated or not idx.
    """
    return _load("fashion-mnist", path, download)


def load_mnist(path: StrPath | None = None, *, download: bool = True) -> _Splits:
    """Load MNIST (handwritten digits), same format and lookup as :func:`load_fashion_mnist`.

    The places looked in are ``path``, ``$FASTCONV_DATA`` (or its ``mnist/``),
    ``/usr/share/datasets/mnist/`` and the user cache; the download comes from the official
    mirrors with MD5 verification.
    """
    return _load("mnist", path, download)
