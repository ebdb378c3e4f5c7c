"""The Python API for plug-in use: capture, run one pass, compile, run.

Every function works on the one graph IR (``lowbit.compiler.Graph``) and takes the same
MODEL forms as the CLI (an ``.onnx`` or ``.lowbit`` path, a compile directory, a bundled
model's name) plus, for ``capture``, a ``torch.nn.Module`` with example inputs::

    import lowbit
    graph = lowbit.capture(module, {"x": example})         # torch.export -> IR
    graph = lowbit.run_pass("equalize", graph)               # any pass, alone
    result = lowbit.compile(graph, calibration, bits=8)      # integer-only program
    outputs = lowbit.run(result.integer_graph, {"x": batch})

Imports are deferred to each call, so ``import lowbit`` stays light (no torch, no TVM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lowbit.compiler.ir import Graph
    from lowbit.passes.quantize.pipeline import CompileResult

Arrays = Mapping[str, np.ndarray]


def capture(model: Any, example_inputs: Arrays | None = None, *, name: str | None = None,
            output_names: Sequence[str] | None = None) -> Graph:
    """The IR of ``model``: a path or bundled name, or a torch module exported with
    ``example_inputs`` (keyed by input name; the batch axis is captured as dynamic)."""
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        from lowbit.compiler.importers import capture as capture_source

        return capture_source(str(model))
    if example_inputs is None:
        raise TypeError("capturing a torch module needs example_inputs keyed by input name")
    from lowbit.compiler.importers.torch_export import capture_module

    return capture_module(model, example_inputs, name=name or type(model).__name__,
                          output_names=output_names)


def run_pass(name: str, graph: Graph, calibration: Arrays | None = None,
             **options: Any) -> Graph:
    """``graph`` after the registered pass ``name`` (``lowbit pass --list``); the input graph is
    left as it was, and provenance is checked by the pass manager."""
    from lowbit.passes.manager import PassManager
    from lowbit.passes.registry import PassInputs, make_passes

    passes = make_passes([name], PassInputs(calibration, options))
    return PassManager(passes).run(graph)[0]


def compile(model: Any, calibration: Arrays, *, bits: int = 8, activation_bits: int = 8,
            passes: Sequence[str] | None = None, **options: Any) -> CompileResult:
    """Clean-up and chosen passes, calibration, integer lowering and range proof of ``model``
    (a Graph or anything ``capture`` takes); ``options`` are further ``CompileOptions``."""
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

    graph = model if hasattr(model, "nodes") else capture(model)
    chosen = None if passes is None else tuple(passes)
    return compile_graph(graph, calibration,
                         CompileOptions(bits=bits, activation_bits=activation_bits,
                                        passes=chosen, progress=options.pop("progress", False),
                                        **options))


def run(model: Any, feeds: Arrays) -> dict[str, np.ndarray]:
    """Outputs of ``model`` (a Graph or anything ``capture`` takes) in the reference
    interpreter, keyed by output name."""
    from lowbit.runtime.interpreter import run_graph

    graph = model if hasattr(model, "nodes") else capture(model)
    return run_graph(graph, feeds)
