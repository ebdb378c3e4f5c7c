"""Code generators: lowbit integer programs to compiled modules (Apache TVM, via Relax).

Importing this package is cheap; TVM itself (about 4 s to import) loads on first use of a
name below. ``TVM_EMITTERS`` and ``to_relax`` are in ``tvm_emit``; ``TARGETS``, ``build`` and
``export_library`` in ``tvm_build``; ``lowbit.runtime.tvm_backend.run_tvm`` runs the result.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TVM_EMITTERS": "tvm_emit", "to_relax": "tvm_emit",
    "TARGETS": "tvm_build", "TvmExecutable": "tvm_build", "build": "tvm_build",
    "export_library": "tvm_build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
