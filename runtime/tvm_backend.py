"""Running a TVM-built lowbit program: a ``TvmExecutable`` or a library exported to a file.

Invariant: ``run_tvm`` returns what ``run_graph`` returns for the program it was built from,
keyed by the graph's output names. Names, order, dtypes and device come from the module's
own ``lowbit_signature`` function, so a library file runs without its graph. TVM is imported
on first use only (it takes seconds), never by ``import lowbit``.

``run_library`` runs a library file built for a named TVM target (``tvm_build.TARGETS``) on
this machine, by the row of ``PLATFORMS`` for that target: in process on the CPU or the GPU,
or, for an aarch64 library on another architecture, under qemu-aarch64 (``lowbit.runtime.aarch64``).
A machine that cannot run it gets a ``LowbitError`` saying why.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.compiler.errors import InputError, LowbitError
from lowbit.runtime.amx import amx_usable
from lowbit.runtime.tvm_threads import claim_physical_cores

ALIGNMENT = 64
"""Bytes from which TVM takes a tensor's data by DLPack (``tvm::ffi::Tensor::FromDLPack``)."""
STAGED_BYTES = 1 << 16
"""CPU inputs up to this size are copied into a kept aligned buffer rather than imported."""
STAGED_SHAPES = 16
"""Kept buffers per program (one per input shape seen; all dropped when this is reached)."""
ModuleOrPath = Any  # lowbit.compiler.codegen.tvm_build.TvmExecutable | str | os.PathLike


class TvmProgram:
    """A loaded module on its device: the Relax VM and the program's signature.

    A call costs microseconds of Python (checks, DLPack, the output copy), as much as the
    kernels of a small model at batch 1, so the per-input checks are precomputed and small CPU
    inputs are copied into aligned buffers kept from call to call (a copy of a few KiB is
    cheaper than a DLPack import, and inputs need not be aligned). Like the Relax VM it holds,
    one program serves one thread at a time."""

    def __init__(self, module: Any, device: str | None = None) -> None:
        import tvm
        import tvm_ffi
        from tvm import relax

        from lowbit.compiler.codegen.tvm_emit import SIGNATURE

        claim_physical_cores()
        self.device = tvm.device(device or device_of(module), 0)
        self.vm = relax.VirtualMachine(module, self.device)
        self.signature: dict[str, Any] = json.loads(bytes(self.vm[SIGNATURE]().numpy()))
        # asks Linux for the AMX tile state before a kernel can use it (runtime.amx)
        if "amx" in self.signature.get("requires", []) and not amx_usable():
            raise LowbitError("this TVM library runs Intel AMX tile instructions (it was built "
                              "on an AMX host), which this CPU or process cannot run; build "
                              "it for this machine")
        self.inputs = [entry["name"] for entry in self.signature["inputs"]]
        self.outputs = [entry["name"] for entry in self.signature["outputs"]]
        self._main = self.vm["main"]
        self._on_cpu = self.device.dlpack_device_type() == tvm.cpu().dlpack_device_type()
        self._expected = [(entry["name"], np.dtype(entry["dtype"]), len(entry["shape"]))
                          for entry in self.signature["inputs"]]
        self._copy_to_device = tvm.runtime.tensor
        self._from_dlpack = tvm_ffi.from_dlpack
        self._staging: dict[tuple[int, tuple[int, ...], np.dtype], tuple[np.ndarray, Any]] = {}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = self._checked(feeds)
        try:
            result = self._main(*[self._tensor(i, a) for i, a in enumerate(arrays)])
        except (ValueError, RuntimeError) as err:
            raise InputError(f"the TVM module rejected the inputs: {err}") from None
        values = [result] if len(self.outputs) == 1 else list(result)
        # a copy either way (an output may be a constant of the module, or an input); on the CPU
        # through DLPack, which is cheaper than TVM's own copy
        return {name: np.from_dlpack(value).copy() if self._on_cpu else value.numpy()
                for name, value in zip(self.outputs, values, strict=True)}

    def _tensor(self, position: int, array: np.ndarray) -> Any:
        """The input on the device; on the CPU a small one staged (``_staged``), a large one by
        DLPack, without a copy where it is aligned."""
        if not self._on_cpu or array.ndim == 0 or array.size == 0:  # DLPack mangles those
            return self._copy_to_device(array, self.device)
        if array.nbytes <= STAGED_BYTES:
            return self._staged(position, array)
        tensor = self._from_dlpack(array)
        if tensor.data_ptr() % ALIGNMENT:  # cheaper than require_alignment's exception
            tensor = self._from_dlpack(aligned(array))
        return tensor

    def _staged(self, position: int, array: np.ndarray) -> Any:
        """``array`` copied into this program's aligned buffer for the input at ``position``
        with its shape and dtype (each input its own: two may have the same shape)."""
        key = (position, array.shape, array.dtype)
        staged = self._staging.get(key)
        if staged is None:
            if len(self._staging) >= STAGED_SHAPES:
                self._staging.clear()
            buffer = aligned(np.empty(array.shape, array.dtype))
            staged = self._staging[key] = (buffer, self._from_dlpack(buffer))
        np.copyto(staged[0], array)
        return staged[1]

    def _checked(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if len(feeds) != len(self._expected) or not all(name in feeds for name in self.inputs):
            self._name_error(feeds)
        arrays = []
        for name, dtype, rank in self._expected:
            array = np.ascontiguousarray(feeds[name])
            if array.dtype != dtype or array.ndim != rank:
                entry = self.signature["inputs"][self.inputs.index(name)]
                raise InputError(f"input {name!r} is {array.dtype}{list(array.shape)}, "
                                 f"expected {entry['dtype']}{entry['shape']}")
            arrays.append(array)
        return arrays

    def _name_error(self, feeds: Mapping[str, np.ndarray]) -> None:
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise InputError(f"missing input(s) {missing}; the program takes {self.inputs}")
        extra = sorted(set(feeds) - set(self.inputs))
        raise InputError(f"unknown input(s) {extra}; the program takes {self.inputs}")


def aligned(array: np.ndarray) -> np.ndarray:
    """``array``, or a copy of it, starting on an ``ALIGNMENT``-byte boundary: TVM takes only
    such data by DLPack (its kernels assume the alignment)."""
    if array.ctypes.data % ALIGNMENT == 0:
        return array
    raw = np.empty(array.nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


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
    # Executable.jit compiles and links what is not runnable as built (the NPU's C source
    # module) and returns the module itself when everything is.
    runnable = executable.jit() if hasattr(executable, "jit") else \
        getattr(executable, "mod", executable)
    return TvmProgram(runnable, device)


def run_tvm(module_or_path: ModuleOrPath | TvmProgram, feeds: Mapping[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
    """Outputs keyed by graph output name. Pass a ``TvmProgram`` (``load_tvm``) to run many
    times without loading the module again."""
    program = module_or_path if isinstance(module_or_path, TvmProgram) else \
        load_tvm(module_or_path)
    return program(feeds)


LibraryRun = Callable[[Path, Mapping[str, np.ndarray], Sequence[str], Sequence[str]],
                     dict[str, np.ndarray]]
ARM_MACHINES = ("aarch64", "arm64")


def _run_on_cpu(library: Path, feeds: Mapping[str, np.ndarray], inputs: Sequence[str],
                outputs: Sequence[str]) -> dict[str, np.ndarray]:
    del inputs, outputs  # the module's signature names them
    return run_tvm(library, feeds)


def _run_on_gpu(library: Path, feeds: Mapping[str, np.ndarray], inputs: Sequence[str],
                outputs: Sequence[str]) -> dict[str, np.ndarray]:
    import tvm

    if not (tvm.runtime.enabled("cuda") and tvm.cuda(0).exist):
        raise LowbitError("this library is built for CUDA and needs an NVIDIA GPU; this "
                          "machine has none that TVM can use", file=str(library))
    return _run_on_cpu(library, feeds, inputs, outputs)


def _run_on_arm(library: Path, feeds: Mapping[str, np.ndarray], inputs: Sequence[str],
                outputs: Sequence[str]) -> dict[str, np.ndarray]:
    if platform.machine().lower() in ARM_MACHINES:
        return _run_on_cpu(library, feeds, inputs, outputs)
    from lowbit.runtime.aarch64.qemu import run_aarch64

    results = run_aarch64(library, [feeds[name] for name in inputs])
    if len(results) != len(outputs):
        raise LowbitError(f"the aarch64 library returned {len(results)} outputs, the program "
                          f"has {len(outputs)}", file=str(library))
    return dict(zip(outputs, results, strict=True))


PLATFORMS: dict[str, LibraryRun] = {"llvm": _run_on_cpu, "cuda": _run_on_gpu,
                                    "aarch64": _run_on_arm}


def run_library(library: str | os.PathLike[str], target: str, feeds: Mapping[str, np.ndarray],
                inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Outputs keyed by name of the ``target`` library file run here on ``feeds`` (already
    checked against the program's inputs; ``inputs`` and ``outputs`` are its names in order)."""
    path = Path(library)
    if not path.is_file():
        raise LowbitError("no such TVM library", file=str(path))
    if target not in PLATFORMS:
        raise LowbitError(f"unknown TVM target {target!r}; expected one of {sorted(PLATFORMS)}",
                          file=str(path))
    return PLATFORMS[target](path, feeds, inputs, outputs)


__all__ = ["PLATFORMS", "TvmProgram", "device_of", "load_tvm", "run_library", "run_tvm"]
