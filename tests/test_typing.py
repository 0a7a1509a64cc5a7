"""Type checking as CI runs it: the public API seen from a user's script, the package itself, and
the stubs of the compiled kernels against the built extensions (mypy's stubtest).

Skipped when mypy is not installed (it is in the ``test`` extra). The runs share one mypy
cache, so the module takes about half a minute cold and a few seconds warm.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

import fastconv  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
USER_SCRIPT = ROOT / "tests" / "typing" / "user_script.py"
ASSERT_TYPES = ROOT / "tests" / "typing" / "assert_types.py"
ALLOWLIST = ROOT / "tests" / "typing" / "stubtest-allowlist.txt"
PACKAGE = Path(fastconv.__file__).resolve().parent
STUBBED = ("_conv", "_pool", "_pad", "_openmp", "_norm", "_adaptive", "_optim")


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(*args, cache, cwd=ROOT, env=None):
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(cache), *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    return result.returncode, result.stdout + result.stderr


def test_user_code_is_clean_under_strict(mypy_cache):
    """A user's script passes ``mypy --strict``, and every public result has exactly the type
    tests/typing/assert_types.py pins (``assert_type``: an ``Any`` fails). fastconv is
    followed silently, as an installed typed package is (its own errors are not the user's)."""
    code, output = _mypy("--strict", "--follow-imports=silent", str(USER_SCRIPT),
                         str(ASSERT_TYPES), cache=mypy_cache)
    assert code == 0, output


def test_user_script_results_are_not_any(mypy_cache):
    """No result the script unpacks or assigns without an annotation is ``Any``: with
    --disallow-any-expr, mypy may only object that an expression *contains* Any
    (``np.ndarray`` is ``ndarray[tuple[Any, ...], dtype[Any]]``), never that one *is* Any.
    (An annotated assignment lets an Any through: assert_types.py covers those.)"""
    code, output = _mypy("--strict", "--follow-imports=silent", "--disallow-any-expr",
                         str(USER_SCRIPT), cache=mypy_cache)
    errors = [line for line in output.splitlines() if ": error:" in line]
    assert errors, output  # ndarray's own Any parameters: the check did run
    is_any = [line for line in errors if 'Expression has type "Any"' in line
              or not re.search(r'Expression type contains "Any"', line)]
    assert is_any == [], "\n".join(is_any)


def test_package_is_clean(mypy_cache):
    """``mypy fastconv`` with the project's settings (pyproject.toml [tool.mypy])."""
    code, output = _mypy("-p", "fastconv", cache=mypy_cache)
    assert code == 0, output


def test_stubs_match_the_compiled_extensions(tmp_path):
    """mypy's stubtest on the four extensions. The stubs are checked on their own (a stub-only
    copy of the package on MYPYPATH), so an error elsewhere in fastconv cannot hide them; the
    run imports the very extensions this test session imported."""
    stubs = tmp_path / "stubs" / "fastconv"
    stubs.mkdir(parents=True)
    (stubs / "__init__.pyi").write_text("")
    for name in STUBBED:
        shutil.copy(PACKAGE / f"{name}.pyi", stubs / f"{name}.pyi")
    env = dict(os.environ, MYPYPATH=str(stubs.parent), PYTHONPATH=str(PACKAGE.parent))
    command = [sys.executable, "-m", "mypy.stubtest", "--allowlist", str(ALLOWLIST),
               *(f"fastconv.{name}" for name in STUBBED)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout, result.stdout
