"""Model files: a model's state dict as a NumPy ``.npz`` archive (one array per key).

The keys are PyTorch's (``'0.weight'``, ``'0.bias'``, ...), so a file saved here loads into the
PyTorch model of the same structure with
``torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in numpy.load(path).items()})``.
"""

from __future__ import annotations

import os
import uuid
import zipfile
import zlib
from collections.abc import Mapping
from typing import IO, TypeVar, Union

import numpy as np

from ._typing import ArrayLike, StrPath
from .nn import Module

_ModuleT = TypeVar("_ModuleT", bound=Module)
_Target = TypeVar("_Target", bound=Union[StrPath, IO[bytes]])

__all__ = ["save", "load", "NotAModelFileError"]


class NotAModelFileError(ValueError):
    """The file is not a fastconv model file (a ``.npz`` archive of arrays): corrupt, truncated,
    a single ``.npy`` array, or something else altogether."""


def _write_npz(target, state):
    # np.savez(file, **state) would clash with its own parameter names for a key such as
    # 'file'; writing the members directly gives the same archive for any key.
    with zipfile.ZipFile(target, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for key, value in state.items():
            with archive.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def save(model: Module | Mapping[str, ArrayLike], path: _Target) -> _Target:
    """Save ``model.state_dict()`` to ``path`` as ``.npz``.

    Parameters
    ----------
    model : fastconv.nn.Module or dict
        A model, or a state dict (name -> array).
    path : str, os.PathLike or a writable binary file
        Written exactly as given (no suffix is added); a file is replaced atomically.

    Returns
    -------
    path

    Examples
    --------
    >>> import fastconv
    >>> from fastconv import models
    >>> fastconv.save(models.tutorial_net(seed=0), "seed.npz")   # doctest: +SKIP
    """
    state = model.state_dict() if isinstance(model, Module) else dict(model)
    if hasattr(path, "write"):
        _write_npz(path, state)
        return path
    target = os.fspath(path)  # type: ignore[arg-type]  # (a file was written above)
    # A temporary name beside the target (same file system, so the rename is atomic), made
    # with open() rather than mkstemp so that the file gets the usual umask permissions.
    partial = f"{target}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        _write_npz(partial, state)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def load(model: _ModuleT, path: StrPath | IO[bytes], strict: bool = True) -> _ModuleT:
    """Load parameters saved by :func:`save` (or ``numpy.savez``) into ``model``, in place.

    Parameters
    ----------
    model : fastconv.nn.Module
    path : str, os.PathLike or a readable binary file
    strict : bool, default True
        Refuse missing and unexpected keys.

    Returns
    -------
    fastconv.nn.Module
        ``model``.

    Raises
    ------
    NotAModelFileError
        (a ValueError) The file is not a model file: not a ``.npz`` archive (a ``.npy``
        array, a corrupt or truncated archive, anything else) or a member is not a plain array.
    KeyError, ValueError
        The file does not match the model (keys or shapes).
    OSError
        The file cannot be opened (missing, permissions).

    After any error the model is unchanged.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a fastconv.nn.Module, got {type(model).__name__}")
    shown = getattr(path, "name", path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, EOFError, UnicodeError) as exc:
        raise NotAModelFileError(
            f"{shown} is not a fastconv model file (a .npz archive of arrays): {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise NotAModelFileError(
            f"{shown} is not a fastconv model file: it holds a single array (.npy), not a .npz "
            "archive of named arrays (save one with fastconv.save)")
    try:
        with archive:
            state = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error) as exc:
        raise NotAModelFileError(
            f"{shown} is not a fastconv model file: a member cannot be read ({exc})") from None
    model.load_state_dict(state, strict=strict)
    return model
