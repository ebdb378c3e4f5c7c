"""lowbit's own rows: the float interpreter on the captured graph, and the compiled
integer-only programs (INT8, W4A8) run by the numpy reference interpreter."""

from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import BundledModel
from lowbit.models.bundled import ArrayDict, PredictFn
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
from lowbit.runtime import run_graph


def lowbit_float(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """The captured float graph under lowbit's interpreter (checks capture, not quantization)."""
    del calib  # the float graph needs no calibration
    graph = capture_bundled(model.name)
    return lambda feeds: run_graph(graph, feeds)


def _integer(model: BundledModel, calib: ArrayDict, options: CompileOptions) -> PredictFn:
    result = compile_graph(capture_bundled(model.name), calib, options)
    return lambda feeds: run_graph(result.integer_graph, feeds)


def lowbit_int8(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """Default `compile_graph` (8 bits, min/max, asymmetric activations) on `calib`."""
    return _integer(model, calib, CompileOptions(progress=False))


def lowbit_w4a8(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """`compile_graph` with 4-bit weights and 8-bit activations (`lowbit compile --bits w4a8`),
    every other option at its default, on `calib`."""
    return _integer(model, calib, CompileOptions(bits=4, activation_bits=8, progress=False))
