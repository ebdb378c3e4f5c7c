"""The TVM library of a compile directory: ``lowbit compile --target KIND[:ARGUMENT]``.

Invariant: ``model.so`` in a compile directory is that directory's integer program built by
TVM for the target its manifest records, so ``lowbit run DIR --backend tvm`` gives the
interpreter's outputs bit for bit. The manifest's ``tvm`` entry names the target as given,
the TVM target the module was built for (``module_target``, which decides how it runs), the
library file, the TVM versions and the build time; ``none`` builds nothing and records null.

``LIBRARY_TARGETS`` has one row per target kind. TVM (seconds to import) and the NPU code
generator are imported only when a row builds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lowbit.compiler.ir import Graph

LIBRARY_FILE = "model.so"
NO_TARGET = "none"
DEFAULT_TARGET = "llvm"


@dataclass(frozen=True)
class Built:
    """What a row's builder returns: the ``TvmExecutable`` and the builder's own report."""

    executable: Any  # lowbit.compiler.codegen.tvm_build.TvmExecutable
    report_markdown: str = ""
    report_json: dict[str, Any] | None = None


@dataclass(frozen=True)
class LibraryTarget:
    """One row of ``LIBRARY_TARGETS``: how to build for this kind of target."""

    summary: str
    build: Callable[[Graph, str | None], Built]
    argument: str | None = None
    """The name of the argument after ``KIND:`` the kind requires (None: it takes none)."""


@dataclass(frozen=True)
class Library:
    """What ``write_library`` added to a compile directory: manifest fields and report text."""

    manifest: dict[str, Any]
    report_markdown: str = ""


def _tvm_target(name: str) -> Callable[[Graph, str | None], Built]:
    def build(graph: Graph, argument: str | None) -> Built:
        del argument  # these kinds take none (parse_target checked)
        from lowbit.compiler.codegen.tvm_build import build as tvm_build, require_linker

        require_linker(name)  # a missing cross compiler fails before the build, not after
        return Built(tvm_build(graph, name))
    return build


def _npu(graph: Graph, spec: str | None) -> Built:
    from lowbit.compiler.codegen.npu import build_npu

    result = build_npu(graph, str(spec))
    return Built(result.executable, result.report_markdown(), result.report_json())


LIBRARY_TARGETS: dict[str, LibraryTarget] = {
    "llvm": LibraryTarget("this host's CPU, with the features LLVM reports", _tvm_target("llvm")),
    "cuda": LibraryTarget("NVIDIA sm_90; CUDA source, compiled when loaded on a GPU",
                          _tvm_target("cuda")),
    "aarch64": LibraryTarget("64-bit Arm Linux with NEON, cross-compiled",
                             _tvm_target("aarch64")),
    "npu": LibraryTarget("NPU partitions from the target description SPEC, host fallback",
                         _npu, argument="SPEC"),
}


def target_names() -> str:
    """The accepted ``--target`` forms, for help and error text."""
    forms = [kind if row.argument is None else f"{kind}:{row.argument}"
             for kind, row in LIBRARY_TARGETS.items()]
    return "|".join(forms + [NO_TARGET])


def parse_target(text: str) -> tuple[str, str | None] | None:
    """``KIND[:ARGUMENT]`` as (kind, argument), None for ``none``; an ``argparse`` type."""
    if text == NO_TARGET:
        return None
    kind, colon, argument = text.partition(":")
    row = LIBRARY_TARGETS.get(kind)
    if row is None or bool(colon) != (row.argument is not None) or (colon and not argument):
        raise argparse.ArgumentTypeError(f"{text!r} is not a target; expected {target_names()}")
    return kind, argument or None


def write_library(graph: Graph, target: tuple[str, str | None] | None, folder: Path) -> Library:
    """Build ``graph`` for ``target`` (from ``parse_target``) and write the library into
    ``folder``; errors are ``LowbitError``s from the builder or the linker."""
    if target is None:
        return Library({"tvm": None})
    from lowbit.compiler.codegen.tvm_build import export_library, target_spec

    kind, argument = target
    given = kind if argument is None else f"{kind}:{argument}"
    with tqdm(total=2, desc=f"TVM build for {given}", unit="step", file=sys.stderr,
              disable=None, leave=False) as bar:
        started = time.perf_counter()
        built = LIBRARY_TARGETS[kind].build(graph, argument)
        bar.update()
        export_library(built.executable, folder / LIBRARY_FILE)
        bar.update()
        seconds = time.perf_counter() - started
    module_target = built.executable.target
    entry: dict[str, Any] = {
        "target": given, "module_target": module_target, "library": LIBRARY_FILE,
        "device": target_spec(module_target).device,
        "tvm_target": json.loads(str(target_spec(module_target).make())),
        "tvm": metadata.version("apache-tvm"), "tvm_ffi": metadata.version("apache-tvm-ffi"),
        "build_seconds": round(seconds, 2)}
    if built.report_json is not None:
        report = f"{kind}-report.json"
        (folder / report).write_text(json.dumps(built.report_json, indent=1, default=str))
        entry["report"] = report
    size = (folder / LIBRARY_FILE).stat().st_size
    markdown = "\n".join([
        "", "## TVM library", "",
        f"`{LIBRARY_FILE}` ({size / 1024:.0f} KiB): the integer program built by TVM "
        f"{entry['tvm']} for `{given}` ({LIBRARY_TARGETS[kind].summary}) in {seconds:.1f} s; "
        "`lowbit run DIR --backend tvm` runs it.", ""])
    if built.report_markdown:
        markdown += "\n" + built.report_markdown.strip() + "\n"
    return Library({"tvm": entry}, markdown)


__all__ = ["DEFAULT_TARGET", "LIBRARY_FILE", "LIBRARY_TARGETS", "Library", "LibraryTarget",
           "NO_TARGET", "parse_target", "target_names", "write_library"]
