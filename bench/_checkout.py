"""Which fastconv the bench scripts run: this checkout when its extensions are built in place
(a developer's ``python setup.py build_ext --inplace``), otherwise the installed one
(``pip install .``, whose checkout holds no compiled modules)."""

import importlib.machinery
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def built_checkout():
    """This checkout's root if its extensions are built in place, else ''."""
    built = any(os.path.exists(os.path.join(ROOT, "fastconv", "_conv" + suffix))
                for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    return ROOT if built else ""


def use_built_checkout():
    """Put this checkout first on sys.path when it is built in place."""
    root = built_checkout()
    if root and root not in sys.path:
        sys.path.insert(0, root)
