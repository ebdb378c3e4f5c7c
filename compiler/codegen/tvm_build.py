"""Building the Relax module of a lowbit program for a TVM target, and exporting it.

Targets are made from dicts (TVM 0.27 refuses ``"llvm -mcpu=..."`` strings):

- ``llvm``: this host, with the CPU LLVM reports (``Target.from_device``); the default CPU
  Relax pipeline (legalize, fold constants, fuse, lower), after ``tvm_kernels.int8_gemm``
  puts int8 x constant-int8 products and ungrouped convolutions (im2col) on a GEMM kernel
  tensorized for the CPU's dot-product instructions (VNNI, AVX2, aarch64 sdot) and attention
  products on a scheduled batched kernel; every other fused kernel gets the default CPU
  schedule of ``tvm_schedule_cpu`` (inlined, vectorized, parallel for large calls).
- ``cuda``: ``sm_90`` with an LLVM host. The CUDA default pipeline minus dlight's
  ``gpu.Matmul`` rule, which fails on integer matmuls with requantization epilogues (block
  inlining errors, tensor-core fragment errors at 256^3); GEMV, Reduction, GeneralReduction
  and Fallback schedule every kernel. Building needs neither a GPU nor nvcc: the module
  holds CUDA source, compiled when it is loaded on a GPU.
- ``aarch64``: 64-bit Arm Linux with NEON, cross-compiled; ``export_library`` links it with
  ``aarch64-linux-gnu-gcc``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm import relax

from lowbit.compiler.codegen.tvm_emit import to_relax
from lowbit.compiler.codegen.tvm_schedule_cpu import scheduled_passes
from lowbit.compiler.codegen.tvm_store_order import canonical_store_order
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph
from lowbit.runtime.amx import LLVM_FEATURES, amx_usable

AARCH64_CC = "aarch64-linux-gnu-gcc"


@dataclass(frozen=True)
class TargetSpec:
    """One row of ``TARGETS``: how to make the target, its pipeline and where it runs."""

    make: Callable[[], tvm.target.Target]
    pipeline: Callable[[tvm.target.Target], tvm.transform.Pass]
    device: str
    """``cpu`` or ``cuda``: the device the built module runs on."""
    cross_compiler: str | None = None
    """The C compiler ``export_library`` links with, for a target that is not this host."""


def _host_target() -> tvm.target.Target:
    """This CPU as LLVM names it, plus the AMX features where this process may use them
    (``runtime.amx``): LLVM names some AMX hosts by a model without AMX."""
    try:
        target = tvm.target.Target.from_device(tvm.cpu())
    except (ValueError, RuntimeError):
        return tvm.target.Target({"kind": "llvm"})
    if not amx_usable():
        return target
    attrs = dict(target.attrs)
    attrs["mattr"] = [*attrs.get("mattr", []), *LLVM_FEATURES]
    return tvm.target.Target({"kind": "llvm", **attrs})


def _cuda_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "cuda", "arch": "sm_90"}, host={"kind": "llvm"})


def _aarch64_target() -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                              "mattr": ["+neon"]})


def _cpu_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    # int8 products onto the target's tensorized GEMM kernel first (tvm_kernels), then TVM's
    # CPU pipeline with the other fused kernels scheduled (tvm_schedule_cpu) before lowering.
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="LowbitCpuPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(
                scheduled_passes(target) + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target))(mod)

    return pipeline


def _cuda_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    passes = [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        dl.ApplyDefaultSchedule(dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                dl.gpu.Fallback()),
    ]

    @tvm.transform.module_pass(opt_level=0, name="LowbitCudaPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(
                cuda.library_dispatch_passes(target) + passes
                + cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target))(mod)

    return pipeline


TARGETS: dict[str, TargetSpec] = {
    "llvm": TargetSpec(_host_target, _cpu_pipeline, "cpu"),
    "cuda": TargetSpec(_cuda_target, _cuda_pipeline, "cuda"),
    "aarch64": TargetSpec(_aarch64_target, _cpu_pipeline, "cpu", cross_compiler=AARCH64_CC),
}


@dataclass(frozen=True)
class TvmExecutable:
    """A built program: the Relax VM executable and the ``TARGETS`` name it was built for."""

    module: relax.VMExecutable
    target: str


def target_spec(name: str) -> TargetSpec:
    if name not in TARGETS:
        raise LowbitError(f"unknown TVM target {name!r}; expected one of {sorted(TARGETS)}")
    return TARGETS[name]


def build(graph: Graph, target: str = "llvm") -> TvmExecutable:
    """Compile ``graph`` for the named target (a ``TARGETS`` key)."""
    spec = target_spec(target)
    tvm_target = spec.make()
    module = to_relax(graph, spec.device, cpu_requirements(tvm_target))
    pipeline = tvm.transform.Sequential([spec.pipeline(tvm_target), canonical_store_order()])
    executable = tvm.compile(module, tvm_target, relax_pipeline=pipeline)
    return TvmExecutable(executable, target)


def cpu_requirements(target: tvm.target.Target) -> tuple[str, ...]:
    """CPU extensions code built for ``target`` may use that a loader must check: ``amx``
    (its tile instructions need the CPU and Linux's grant, ``runtime.amx``)."""
    mattr = [str(feature) for feature in target.attrs.get("mattr", [])]
    return ("amx",) if all(feature in mattr for feature in LLVM_FEATURES) else ()


def require_linker(target: str) -> TargetSpec:
    """The target's row, once its cross compiler (if it needs one) is known to be on PATH."""
    spec = target_spec(target)
    if spec.cross_compiler is not None and shutil.which(spec.cross_compiler) is None:
        raise LowbitError(f"exporting for {target} needs the cross compiler "
                          f"{spec.cross_compiler}, which is not on PATH (Debian: apt-get install "
                          "gcc-aarch64-linux-gnu)")
    return spec


def export_library(executable: TvmExecutable, path: str | os.PathLike[str],
                   target: str | None = None) -> Path:
    """Write the built program as a shared library loadable by ``tvm.runtime.load_module``
    (and ``lowbit.runtime.tvm_backend.run_tvm``); returns the path written.

    ``target`` defaults to the one the executable was built for; a cross-compiled target is
    linked with its cross compiler, which must be installed."""
    spec = require_linker(target or executable.target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.cross_compiler is None:
        executable.module.export_library(str(path))
        return path
    from tvm.support import cc

    try:
        executable.module.export_library(str(path),
                                         fcompile=cc.cross_compiler(spec.cross_compiler))
    except RuntimeError as err:  # the linker's own message, e.g. a missing sysroot
        raise LowbitError(f"linking with {spec.cross_compiler} failed: {err} (Debian: "
                          "apt-get install libc6-dev-arm64-cross)", file=str(path)) from None
    return path


def device_source(executable: TvmExecutable, kind: str = "cuda") -> str:
    """The generated source of the ``kind`` device modules the executable imports ("" if it
    has none); CUDA modules hold source until they are loaded on a GPU."""
    sources, pending = [], [executable.module.mod]
    while pending:
        module = pending.pop()
        if module.kind == kind:
            sources.append(module.inspect_source(kind))
        pending.extend(module.imports)
    return "\n".join(sources)


__all__ = ["AARCH64_CC", "TARGETS", "TargetSpec", "TvmExecutable", "build", "cpu_requirements",
           "device_source",
           "export_library", "require_linker", "target_spec"]
