"""Running an aarch64 TVM library on a non-Arm Linux host under qemu-aarch64 user-mode emulation.

Invariant: ``run_aarch64(library, arrays)`` returns what the library's Relax ``main`` returns on
an aarch64 machine, in output order, bit for bit: the arrays travel as ``.npy`` files to the
C++ runner (``runner.cc``), which TVM's own aarch64 runtime executes under qemu with Debian's
aarch64 C library as the sysroot. Timings under emulation mean nothing.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.runtime.aarch64.toolchain import QEMU, SYSROOT, runner

TIMEOUT_S = 1800


def run_aarch64(library: str | os.PathLike[str], arrays: Sequence[np.ndarray]
                ) -> list[np.ndarray]:
    """The outputs of ``main(*arrays)`` from the aarch64 ``library``, run under emulation."""
    executable = runner()
    with tempfile.TemporaryDirectory(prefix="lowbit-aarch64-") as scratch:
        inputs = []
        for index, array in enumerate(arrays):
            inputs.append(Path(scratch) / f"in_{index}.npy")
            np.save(inputs[-1], np.ascontiguousarray(array), allow_pickle=False)
        command = [QEMU, "-L", str(SYSROOT), str(executable), str(Path(library).resolve()),
                   scratch, *map(str, inputs)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise LowbitError(f"the aarch64 run under {QEMU} took over {TIMEOUT_S} s",
                              file=str(library)) from None
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise LowbitError(f"the aarch64 run under {QEMU} failed: {reason}",
                              file=str(library))
        outputs = sorted(Path(scratch).glob("out_*.npy"), key=lambda p: int(p.stem[4:]))
        return [np.load(path, allow_pickle=False) for path in outputs]


__all__ = ["run_aarch64"]
