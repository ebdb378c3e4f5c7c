"""Backends of ``lowbit run``: one entry per name, each running a model on npz-style feeds.

``interp`` runs any graph (a ``.lowbit`` file, an ONNX file, a bundled model or a compile
directory's integer program) in the reference interpreter. ``onnx`` runs a compile directory's
exported integer ONNX program in onnxruntime, ``tvm`` its TVM library (``lowbit compile
--target``) for the target its manifest records. Inputs are validated against the graph's
declared types first, so every backend rejects a bad array with the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from lowbit.compiler.artifact import read_manifest
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.importers import capture
from lowbit.runtime.interpreter import check_inputs, run_graph
from lowbit.runtime.references import run_onnxruntime
from lowbit.runtime.tvm_backend import run_library

ONNX_PROGRAM = "model.onnx"

Backend = Callable[[str, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def run_interpreter(model: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return run_graph(capture(model), feeds)


def run_onnx_program(model: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    program = Path(model) / ONNX_PROGRAM
    if not program.is_file():
        raise LowbitError(f"no {ONNX_PROGRAM} here: the onnx backend runs a compile directory",
                          file=model)
    graph = capture(model)
    check_inputs(graph, feeds)
    outputs = run_onnxruntime(str(program), feeds)
    return {name: outputs[name] for name in graph.outputs}


def run_tvm_library(model: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    library = read_manifest(model).get("tvm")
    if not library:
        raise LowbitError("this compile directory has no TVM library (compile it with --target "
                          "llvm, cuda, aarch64 or npu:SPEC)", file=model)
    graph = capture(model)
    check_inputs(graph, feeds)
    outputs = run_library(Path(model) / library["library"], library["module_target"], feeds,
                          graph.inputs, graph.outputs)
    return {name: outputs[name] for name in graph.outputs}


BACKENDS: dict[str, Backend] = {"interp": run_interpreter, "onnx": run_onnx_program,
                                "tvm": run_tvm_library}
