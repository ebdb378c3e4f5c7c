"""``build_npu``: a lowbit integer program partitioned between an NPU and the host, compiled.

Invariant: the built module gives the outputs of ``run_graph`` bit for bit. The NPU regions run
the reference NPU's C kernels (``c_kernels``), everything else runs through the ``llvm`` host
pipeline of ``tvm_build``; both follow the interpreter's integer semantics.

Steps: ``kinds.plan`` decides, node by node, what the spec admits (and why the rest stays on
the host); ``to_relax_traced`` emits the whole program; ``FuseOpsByPattern`` with the spec's
patterns (``patterns.Matcher``) makes one composite function per admitted group;
``MergeCompositeFunctions`` groups neighbouring composites into regions annotated for the
``lowbit_npu`` codegen; ``RunCodegen`` replaces each region by a call to the C source module
of ``c_codegen``; ``tvm.compile`` builds the host part and links the rest. A group the spec
admits but whose Relax form no pattern matched stays on the host with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tvm
from tvm import relax

from lowbit.compiler.codegen.npu.c_codegen import kernels_option
from lowbit.compiler.codegen.npu.c_kernels import Kernel, kernel
from lowbit.compiler.codegen.npu.kinds import Group, plan
from lowbit.compiler.codegen.npu.patterns import CODEGEN, NODES_ATTR, Matcher
from lowbit.compiler.codegen.npu.report import NpuReport, report
from lowbit.compiler.codegen.npu.spec import load_spec
from lowbit.compiler.codegen.tvm_build import TvmExecutable, cpu_requirements, target_spec
from lowbit.compiler.codegen.tvm_emit import to_relax_traced
from lowbit.compiler.ir import Graph

HOST = "llvm"
UNMATCHED = "admitted by the spec, but no NPU pattern matched its Relax form"


@dataclass(frozen=True)
class NpuBuild:
    """The compiled program (host target ``llvm`` plus the NPU's C module) and its report."""

    executable: TvmExecutable
    report: NpuReport

    def report_markdown(self) -> str:
        return self.report.markdown()

    def report_json(self) -> dict[str, Any]:
        return self.report.as_json()


def build_npu(graph: Graph, spec: str) -> NpuBuild:
    """Partition and build ``graph`` for the NPU ``spec`` (a bundled spec's name, such as
    ``reference-int8``, or the path of a spec file)."""
    npu = load_spec(spec)
    decided = plan(graph, npu)
    host = target_spec(HOST)
    target = host.make()
    module, origins = to_relax_traced(graph, "cpu", cpu_requirements(target))
    module = relax.transform.FuseOpsByPattern(Matcher(graph, decided, npu, origins).patterns(),
                                              bind_constants=True)(module)
    module = relax.transform.MergeCompositeFunctions()(module)
    by_nodes = {_key(g): g for g in decided.groups}
    regions = [(symbol, [by_nodes[nodes] for nodes in composite_nodes])
               for symbol, composite_nodes in _regions(module)]
    kernels: dict[str, Kernel] = {}
    for _, groups in regions:
        for group in groups:
            kernels[_key(group)] = kernel(group, graph, f"npu_kernel_{len(kernels)}")
    module = relax.transform.RunCodegen({CODEGEN: {"kernels": kernels_option(kernels)}})(module)
    executable = tvm.compile(module, target, relax_pipeline=host.pipeline(target))
    reasons = dict(decided.reasons)
    reasons.update({n.name: UNMATCHED for g in decided.groups if _key(g) not in kernels
                    for n in g.nodes})
    return NpuBuild(TvmExecutable(executable, HOST),
                    report(graph, npu.name, npu.source, reasons, regions))


def _regions(module: tvm.IRModule) -> list[tuple[str, list[str]]]:
    """Each NPU region's global symbol and its composites' node lists (in binding order), in
    the order ``main`` calls the regions."""
    found = []
    for binding in (b for block in module["main"].body.blocks for b in block.bindings):
        callee = getattr(binding.value, "op", None)
        if not isinstance(callee, tvm.ir.GlobalVar):
            continue
        attrs = module[callee].attrs
        if attrs is None or "Codegen" not in attrs or str(attrs["Codegen"]) != CODEGEN:
            continue
        composites = [b.value for block in module[callee].body.blocks for b in block.bindings
                      if isinstance(b.value, relax.Function)]
        found.append((str(attrs["global_symbol"]),
                      [str(c.attrs[NODES_ATTR]) for c in composites]))
    return found


def _key(group: Group) -> str:
    return ",".join(n.name for n in group.nodes)


__all__ = ["NpuBuild", "build_npu"]
