"""NPU partitions: a spec file says what an NPU runs; the integer program is split between
NPU regions (TVM's pattern-based BYOC flow, an external C code generator for the reference
NPU) and host fallback, with a report of what was offloaded and why the rest was not.

Importing this package is cheap; TVM loads on first use of ``build_npu`` or ``NpuBuild``.
``load_spec`` and the bundled spec names need no TVM.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from lowbit.compiler.codegen.npu.spec import NpuSpec, bundled_specs, load_spec

_LAZY = {"build_npu": "build", "NpuBuild": "build", "NpuReport": "report"}

__all__ = ["NpuBuild", "NpuReport", "NpuSpec", "build_npu", "bundled_specs", "load_spec"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
