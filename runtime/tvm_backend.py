"""Running a TVM-built lowbit program: a ``TvmExecutable`` or a library exported to a file.

Invariant: ``run_tvm`` returns what ``run_graph`` returns for the program it was built from,
keyed by the graph's output names. Names, order, dtypes and device come from the module's
own ``lowbit_signature`` function, so a library file runs without its graph. TVM is imported
on first use only (it takes seconds), never by ``import lowbit``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from lowbit.compiler.errors import InputError, LowbitError

ModuleOrPath = Any  # lowbit.compiler.codegen.tvm_build.TvmExecutable | str | os.PathLike


class TvmProgram:
    """A loaded module on its device: the Relax VM and the program's signature."""

    def __init__(self, module: Any, device: str | None = None) -> None:
        import tvm
        from tvm import relax

        from lowbit.compiler.codegen.tvm_emit import SIGNATURE

        self.device = tvm.device(device or device_of(module), 0)
        self.vm = relax.VirtualMachine(module, self.device)
        self.signature: dict[str, Any] = json.loads(bytes(self.vm[SIGNATURE]().numpy()))
        self.inputs = [entry["name"] for entry in self.signature["inputs"]]
        self.outputs = [entry["name"] for entry in self.signature["outputs"]]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tvm

        arrays = self._checked(feeds)
        try:
            result = self.vm["main"](*[tvm.runtime.tensor(a, self.device) for a in arrays])
        except (ValueError, RuntimeError) as err:
            raise InputError(f"the TVM module rejected the inputs: {err}") from None
        values = [result] if len(self.outputs) == 1 else list(result)
        return {name: value.numpy() for name, value in zip(self.outputs, values, strict=True)}

    def _checked(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise InputError(f"missing input(s) {missing}; the program takes {self.inputs}")
        extra = sorted(set(feeds) - set(self.inputs))
        if extra:
            raise InputError(f"unknown input(s) {extra}; the program takes {self.inputs}")
        arrays = []
        for entry in self.signature["inputs"]:
            array = np.ascontiguousarray(feeds[entry["name"]])
            if str(array.dtype) != entry["dtype"] or array.ndim != len(entry["shape"]):
                raise InputError(f"input {entry['name']!r} is {array.dtype}{list(array.shape)}, "
                                 f"expected {entry['dtype']}{entry['shape']}")
            arrays.append(array)
        return arrays


def device_of(module: Any) -> str:
    """``cuda`` when the module (or one it imports) holds CUDA kernels, else ``cpu``."""
    pending = [module]
    while pending:
        current = pending.pop()
        if current.kind == "cuda":
            return "cuda"
        pending.extend(current.imports)
    return "cpu"


def load_tvm(module_or_path: ModuleOrPath, device: str | None = None) -> TvmProgram:
    """A runnable program from a ``TvmExecutable`` or an exported library file."""
    import tvm

    if isinstance(module_or_path, (str, os.PathLike)):
        if not os.path.isfile(module_or_path):
            raise LowbitError("no such TVM library", file=str(module_or_path))
        return TvmProgram(tvm.runtime.load_module(str(module_or_path)), device)
    executable = getattr(module_or_path, "module", module_or_path)  # a TvmExecutable's
    return TvmProgram(getattr(executable, "mod", executable), device)


def run_tvm(module_or_path: ModuleOrPath | TvmProgram, feeds: Mapping[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
    """Outputs keyed by graph output name. Pass a ``TvmProgram`` (``load_tvm``) to run many
    times without loading the module again."""
    program = module_or_path if isinstance(module_or_path, TvmProgram) else \
        load_tvm(module_or_path)
    return program(feeds)


__all__ = ["TvmProgram", "device_of", "load_tvm", "run_tvm"]
