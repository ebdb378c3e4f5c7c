"""The compile directory: everything ``lowbit compile`` produces, written all at once.

Layout: ``manifest.json`` (inputs, outputs, boundary quantization, options, versions, files),
``float.lowbit`` (the float graph after clean-up passes), ``integer.lowbit`` (the integer
program), ``calibration.json`` and ``report.md``; backends add their own files (``model.onnx``).
The directory is assembled beside the target and renamed into place, so a failed compile
never leaves a half-written DIR, and an existing DIR is replaced only on success.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph
from lowbit.compiler.serialize import load_graph

MANIFEST = "manifest.json"
INTEGER_GRAPH = "integer.lowbit"
FLOAT_GRAPH = "float.lowbit"


def write_directory(target: str | os.PathLike[str], fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp)`` to populate a fresh folder, then move it to ``target``."""
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(staging)
        if final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.replace(final, retired / final.name)
            os.replace(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise LowbitError("not a lowbit compile directory (no manifest.json)", file=str(directory))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LowbitError(f"unreadable manifest ({err})", file=str(path)) from None


def load_program(directory: str | os.PathLike[str]) -> Graph:
    read_manifest(directory)
    return load_graph(Path(directory) / INTEGER_GRAPH)
