"""The compile directory: everything ``lowbit compile`` produces, written all at once.

Layout: ``manifest.json`` (inputs, outputs, boundary quantization, options, versions, files),
``float.lowbit`` (the float graph after clean-up passes), ``integer.lowbit`` (the integer
program), ``calibration.json`` and ``report.md``; backends add their own files (``model.onnx``).
The directory is assembled beside the target and renamed into place, so a failed or killed
compile never leaves a half-written DIR, and an existing DIR is replaced (swapped atomically)
only on success.
"""

from __future__ import annotations

import ctypes
import errno
import glob
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


STAGING = ".staging-"
RETIRED = ".retired-"
_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths atomically


def write_directory(target: str | os.PathLike[str], fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp)`` to populate a fresh folder, then move it to ``target``.

    An existing ``target`` is swapped with the new folder in one ``renameat2(RENAME_EXCHANGE)``
    so that, whenever the process is killed, ``target`` is the previous complete output or the
    new one. Staging folders of killed runs (named with their process id) are removed first.
    """
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}{STAGING}",
                                    dir=final.parent))
    try:
        fill(staging)
        if not (final.exists() or final.is_symlink()):
            os.replace(staging, final)
        elif _exchange(staging, final):
            _remove(staging)  # it now holds the previous output
        else:  # no atomic exchange here: a kill between the renames leaves no target
            retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}{RETIRED}",
                                            dir=final.parent))
            os.replace(final, retired / final.name)
            os.replace(staging, final)
            _remove(retired)
    except BaseException:
        _remove(staging)
        raise
    return final


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove ``.<name>.<pid>.staging-*`` / ``.retired-*`` folders beside ``target`` whose
    process is gone (a compile killed with SIGKILL); returns what was removed."""
    removed = []
    prefix = f".{target.name}."
    for path in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid, _, rest = path.name[len(prefix):].partition(".")
        if pid.isdigit() and rest.startswith((STAGING[1:], RETIRED[1:])) \
                and not _alive(int(pid)):
            _remove(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the system cannot (then nothing changed)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_cwd = -100
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
