"""Whether this process may run Intel AMX tile instructions, asking Linux for them once.

Invariant: ``amx_usable()`` is true only when the CPU reports ``amx_tile`` and ``amx_int8`` and
the kernel has granted this process the AMX tile data state; code built for AMX (the ``amx``
row of ``tvm_kernels``) runs only then. Without the grant the first tile instruction raises
SIGILL, so the request comes before any AMX library is built or loaded (``tvm_build`` asks when
it makes the host target, ``tvm_backend.TvmProgram`` before it runs one). The grant is
per process and covers all its threads (TVM's pool included).

Linux (5.16+) gives the state on ``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``.
"""

from __future__ import annotations

import ctypes
import platform
from functools import cache
from pathlib import Path

SYS_ARCH_PRCTL = 158
"""x86-64 Linux syscall number of ``arch_prctl``."""
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
FLAGS = ("amx_tile", "amx_int8")
"""``/proc/cpuinfo`` flags the kernel needs."""
LLVM_FEATURES = ("+amx-tile", "+amx-int8")
"""What a host LLVM target adds to its ``mattr`` when AMX is usable."""


@cache
def amx_usable(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """The CPU has AMX int8 and Linux granted this process its tile state (asked once)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    try:
        flags = next((line.split(":", 1)[1].split() for line in
                      cpuinfo.read_text().splitlines() if line.startswith("flags")), [])
    except OSError:
        return False
    if not all(flag in flags for flag in FLAGS):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0


__all__ = ["LLVM_FEATURES", "amx_usable"]
