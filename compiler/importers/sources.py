"""Where a graph comes from: an ONNX file, a saved ``.lowbit`` graph or a bundled model name.

One table maps a source kind to its loader, so the CLI and the library accept the same
MODEL argument everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph

CAPTURE_BATCH = 2


def _from_onnx(path: Path) -> Graph:
    from lowbit.compiler.importers.onnx_import import import_onnx

    return import_onnx(path)


def _from_saved(path: Path) -> Graph:
    from lowbit.compiler.serialize import load_graph

    return load_graph(path)


FILE_LOADERS: dict[str, Callable[[Path], Graph]] = {".onnx": _from_onnx, ".lowbit": _from_saved}


def capture_bundled(name: str) -> Graph:
    """The bundled model's captured graph; torch.export runs once per process, each caller
    gets its own copy."""
    return _capture_bundled_once(name).copy()


@functools.lru_cache(maxsize=None)
def _capture_bundled_once(name: str) -> Graph:
    from lowbit.compiler.importers.torch_export import capture_module
    from lowbit.models import get_model

    model = get_model(name)
    sample = model.sample_inputs(CAPTURE_BATCH, "calib")
    graph = capture_module(model.load(), sample, name=model.name,
                           output_names=model.output_names)
    graph.metadata["bundled_model"] = model.name
    return graph


def capture(source: str) -> Graph:
    """Capture MODEL: an ``.onnx`` or ``.lowbit`` file, a compile directory (its integer
    program) or a bundled model's name."""
    path = Path(source)
    if path.is_dir():
        from lowbit.compiler.artifact import load_program

        return load_program(path)
    loader = FILE_LOADERS.get(path.suffix.lower())
    if loader is not None:
        if not path.is_file():
            raise LowbitError("file not found", file=source)
        return loader(path)
    from lowbit.models import model_names

    if source in model_names():
        return capture_bundled(source)
    raise LowbitError(f"not a model file ({', '.join(FILE_LOADERS)}) nor a bundled model "
                      f"({', '.join(model_names())})", file=source)
