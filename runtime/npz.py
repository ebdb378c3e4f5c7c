"""npz files keyed by graph input/output names: reading with clear errors, atomic writing."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.fileio import write_atomically


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise LowbitError("file not found", file=where) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise LowbitError(f"not a readable .npz file ({err})", file=where) from None


def save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    write_atomically(path, lambda handle: np.savez(handle, **arrays))
