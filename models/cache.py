"""On-disk cache of trained weights: a `.npz` state dict plus a JSON record per model.

Files live in `$LOWBIT_CACHE_DIR` (default `~/.cache/lowbit`). Nothing is pickled: weights are
plain arrays read back with `np.load(allow_pickle=False)` and the record is JSON. Each file is
written under a temporary name in the same directory and moved into place with `os.replace`; the
record carries the SHA-256 of the weights file, so a torn or mismatched pair reads as a miss.
"""

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

CACHE_DIR_ENV = "LOWBIT_CACHE_DIR"


def cache_dir() -> Path:
    """The cache directory: `$LOWBIT_CACHE_DIR`, else `~/.cache/lowbit`."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "lowbit"


def config_hash(config: Mapping[str, object]) -> str:
    """A stable SHA-256 of a JSON-serialisable training configuration."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _paths(name: str) -> tuple[Path, Path]:
    directory = cache_dir()
    return directory / f"{name}.npz", directory / f"{name}.json"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def store(
    name: str, state: Mapping[str, torch.Tensor], key: str, info: Mapping[str, object]
) -> Path:
    """Write `state` and a record of `info` under config hash `key`; returns the weights path."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.detach().cpu().numpy() for k, v in state.items()})
    weights = buffer.getvalue()
    record = {**info, "config_hash": key, "weights_sha256": hashlib.sha256(weights).hexdigest()}
    weights_path, record_path = _paths(name)
    _write_atomic(weights_path, weights)
    _write_atomic(record_path, json.dumps(record, indent=2, sort_keys=True).encode())
    return weights_path


def load(name: str, key: str) -> tuple[dict[str, torch.Tensor], dict[str, object]] | None:
    """The cached state dict and record of `name`, or None when absent, stale or corrupt."""
    weights_path, record_path = _paths(name)
    try:
        record = json.loads(record_path.read_text())
        weights = weights_path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("config_hash") != key:
        return None
    if record.get("weights_sha256") != hashlib.sha256(weights).hexdigest():
        return None
    with np.load(io.BytesIO(weights), allow_pickle=False) as arrays:
        state = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    return state, record
