"""The .pyi stubs of the compiled kernels agree with the built extensions (no mypy needed).

Every public name of the compiled modules (``fastconv._conv``, ``_pool``, ``_optim``, ...)
must be in its stub, and every name in a stub must exist; each function's parameters (names, order, which
have defaults) must be the compiled function's, read with ``inspect.signature`` (Cython's
``binding`` gives every ``def`` a real signature). A fused kernel (``floating``) is stubbed as
a variable whose Protocol has ``__call__`` and ``__getitem__``; it must be fused at run time,
and so must nothing else, and its ``["float"]`` / ``["double"]`` versions must have the same
parameters. tests/test_typing.py also runs mypy's stubtest on them when mypy is installed.
"""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

MODULES = ("_conv", "_pool", "_pad", "_openmp", "_norm", "_adaptive", "_optim")
STUB_DIR = Path(__file__).resolve().parent.parent / "fastconv"
# what Cython adds to every module or cdef class, not fastconv's interface
CYTHON_NAMES = {"__test__", "__reduce_cython__", "__setstate_cython__"}


def _decorator_names(node):
    return {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in node.decorator_list}


def _params(function):
    """[(name, has_default)] of an ast function, without self and positional-only markers."""
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [False] * (len(positional) - len(args.defaults)) + [True] * len(args.defaults)
    params = [(arg.arg, has) for arg, has in zip(positional, defaults)]
    if args.vararg:
        params.append(("*" + args.vararg.arg, False))
    params += [(arg.arg, default is not None)
               for arg, default in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        params.append(("**" + args.kwarg.arg, False))
    return params[1:] if params and params[0][0] in ("self", "cls") else params


def _runtime_params(obj):
    params = []
    for parameter in inspect.signature(obj).parameters.values():
        name = parameter.name
        if parameter.kind is parameter.VAR_POSITIONAL:
            name = "*" + name
        elif parameter.kind is parameter.VAR_KEYWORD:
            name = "**" + name
        params.append((name, parameter.default is not parameter.empty))
    return params[1:] if params and params[0][0] in ("self", "cls") else params


def _stub(module_name):
    """name -> ('function', params) | ('fused', params) | ('class', {method: params})
    | ('variable', None), for the stub's public names."""
    tree = ast.parse((STUB_DIR / f"{module_name}.pyi").read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    entries = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            entries[node.name] = ("function", _params(node))
        elif isinstance(node, ast.ClassDef) and "type_check_only" not in _decorator_names(node):
            methods = {item.name: _params(item) for item in node.body
                       if isinstance(item, ast.FunctionDef)}
            entries[node.name] = ("class", methods)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            annotation = node.annotation
            if isinstance(annotation, ast.Name) and annotation.id == "TypeAlias":
                continue  # a name for the type checker only
            protocol = classes.get(annotation.id) if isinstance(annotation, ast.Name) else None
            if protocol is None:
                entries[name] = ("variable", None)
                continue
            methods = {item.name: item for item in protocol.body
                       if isinstance(item, ast.FunctionDef)}
            assert "__call__" in methods, f"{module_name}.{name}: protocol without __call__"
            kind = "fused" if "__getitem__" in methods else "function"
            entries[name] = (kind, _params(methods["__call__"]))
    return entries


def _public_runtime_names(module):
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value)}


@pytest.mark.parametrize("module_name", MODULES)
def test_stub_names_match_the_extension(module_name):
    module = importlib.import_module(f"fastconv.{module_name}")
    stub = {name for name in _stub(module_name) if not name.startswith("_")}
    runtime = _public_runtime_names(module)
    assert runtime - stub == set(), f"in fastconv.{module_name} but not in its stub"
    assert stub - runtime == set(), f"in the stub but not in fastconv.{module_name}"


@pytest.mark.parametrize("module_name", MODULES)
def test_stub_signatures_match_the_extension(module_name):
    module = importlib.import_module(f"fastconv.{module_name}")
    for name, (kind, detail) in _stub(module_name).items():
        obj = getattr(module, name)
        where = f"fastconv.{module_name}.{name}"
        fused = hasattr(obj, "__signatures__")
        if kind == "variable":
            assert not callable(obj), f"{where} is callable but stubbed as a variable"
            continue
        if kind == "class":
            assert inspect.isclass(obj), f"{where} is not a class"
            runtime_methods = {m for m in vars(obj) if not m.startswith("__")} - CYTHON_NAMES
            assert runtime_methods - set(detail) == set(), f"{where}: methods not stubbed"
            for method, params in detail.items():
                assert hasattr(obj, method), f"{where}.{method} is not in the extension"
                if method not in ("__init__",):
                    assert _runtime_params(getattr(obj, method)) == params, f"{where}.{method}"
            continue
        assert (kind == "fused") == fused, (
            f"{where}: stubbed as {'fused' if kind == 'fused' else 'a plain function'}, "
            f"but it is {'fused' if fused else 'not fused'} at run time")
        assert _runtime_params(obj) == detail, where
        if fused:
            assert sorted(obj.__signatures__) == ["double", "float"], where
            for signature in ("float", "double"):
                assert _runtime_params(obj[signature]) == detail, f"{where}[{signature!r}]"


def test_the_checker_sees_drift(tmp_path, monkeypatch):
    """A renamed parameter and a missing function are caught (the checker is not vacuous)."""
    text = (STUB_DIR / "_conv.pyi").read_text()
    drifted = text.replace("def direct_run_pixels(geometry:", "def direct_run_pixels(geo:")
    drifted = drifted.replace("def stage_size(geometry: _Geometry) -> int: ...\n", "")
    assert drifted.count("def direct_run_pixels(geo:") == 1 and "def stage_size" not in drifted
    (tmp_path / "_conv.pyi").write_text(drifted)
    monkeypatch.setitem(globals(), "STUB_DIR", tmp_path)
    with pytest.raises(AssertionError, match="not in its stub"):
        test_stub_names_match_the_extension("_conv")
    with pytest.raises(AssertionError, match="direct_run_pixels"):
        test_stub_signatures_match_the_extension("_conv")
