"""Importing a distribution whose top-level name is also a folder of this checkout.

Invariant: after ``import_distribution(name)``, ``sys.modules[name]`` is the installed
distribution's module (where one is installed), never the checkout's folder of that name.

Why: the repository root is also the ``lowbit`` package root, so its ``kernels/`` folder
(``lowbit.kernels``) is importable as plain ``kernels`` whenever the root is on ``sys.path``:
under ``python -m ...`` run from a checkout, and under pytest (the tests import ``tests.*``).
transformers 5 imports the Hugging Face ``kernels`` distribution, and would get lowbit's
folder instead and fail. So the distribution is imported first, with the checkout's root
left out of ``sys.path`` for that one import.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
"""The folder that holds this checkout's ``kernels/``, ``models/``, ... (the package root)."""


def import_distribution(name: str) -> None:
    """Puts the installed ``name`` into ``sys.modules`` (nothing where none is installed)."""
    loaded = sys.modules.get(name)
    if loaded is not None and not _in_checkout(getattr(loaded, "__file__", None) or ""):
        return
    sys.modules.pop(name, None)
    saved = sys.path[:]
    sys.path[:] = [entry for entry in saved if not _is_checkout(entry)]
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    finally:
        sys.path[:] = saved


def _is_checkout(entry: str) -> bool:
    try:
        return Path(entry or os.getcwd()).resolve() == CHECKOUT
    except OSError:
        return False


def _in_checkout(path: str) -> bool:
    return bool(path) and Path(path).resolve().is_relative_to(CHECKOUT)


__all__ = ["import_distribution"]
