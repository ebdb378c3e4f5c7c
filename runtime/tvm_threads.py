"""How many threads TVM's CPU thread pool gets: one per physical core this process may run on.

Invariant: a ``TVM_NUM_THREADS`` the user set is never changed; otherwise it is set, before the
pool exists, to the physical cores in this process's CPU affinity set.

Why: without ``TVM_NUM_THREADS`` the TVM runtime sizes its pool at half the logical CPUs, on the
assumption that every core runs two hardware threads. On a machine or container whose CPUs
are one thread per core (this project's 2-core CI and test machines, most cloud VMs) that
halves the pool: 2 CPUs gave one thread, and every parallel loop ran serially (MiniLM's FFN
GEMM at batch 32: 125 us with the default, 62 us with 2 threads). The pool reads the variable
once, when it is created on the first parallel call, so ``claim_physical_cores`` is called
before a module is loaded (``tvm_backend.TvmProgram``, the GEMM micro-benchmark); code that
runs TVM kernels itself before that keeps TVM's default. The value is inherited by child
processes, like any environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "TVM_NUM_THREADS"
TOPOLOGY = Path("/sys/devices/system/cpu")


def physical_cores(cpus: set[int] | None = None, topology: Path = TOPOLOGY) -> int:
    """Distinct cores among ``cpus`` (default: this process's affinity set), a core being the
    set of hardware threads sysfs lists as siblings (``thread_siblings_list``; unlike
    ``core_id`` it does not repeat across packages or Arm clusters); the number of CPUs where
    the topology cannot be read. A cgroup CPU quota is not consulted."""
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else \
            set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        try:
            siblings = (topology / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text()
        except OSError:
            return max(len(cpus), 1)
        cores.add(siblings.strip())
    return max(len(cores), 1)


def claim_physical_cores() -> None:
    """Set ``TVM_NUM_THREADS`` to ``physical_cores()`` unless it is set already."""
    if VARIABLE not in os.environ:
        os.environ[VARIABLE] = str(physical_cores())


__all__ = ["claim_physical_cores", "physical_cores"]
