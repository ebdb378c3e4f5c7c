"""NPU target descriptions: a JSON file listing the ops an NPU runs, their bit widths and limits.

Invariant: a ``NpuSpec`` only exists for a file that validated completely; any problem (no such
file, bad JSON, an unknown key or op, a value of the wrong type) is a ``LowbitError`` naming the
file and the offending entry. Nothing here imports TVM.

Format (``format: "lowbit-npu-spec"``, ``version: 1``)::

    {"format": "lowbit-npu-spec", "version": 1, "name": "...", "description": "...",
     "accumulator": "int32",
     "ops": {"conv2d": {"input": ["int8"], "weight": ["int8"], "output": ["int8", "int16"],
                        "kernel_sizes": [[3, 3]], "strides": [[1, 1]], "max_channels": 1024},
             ...}}

An op the file does not list runs on the host. Per op, ``input``/``weight``/``output`` are the
allowed dtypes of activations, weights and results (``output`` defaults to ``input``; an op
with weights and no ``weight`` list runs none); ``kernel_sizes`` and ``strides`` (lists of
``[h, w]``) and ``max_channels`` are limits, absent meaning unlimited. Op names are the rows of
``lowbit.compiler.codegen.npu.kinds.NPU_KINDS``. ``spec`` arguments name a bundled file
(``reference-int8``, in ``specs/``) or give a path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.compiler.errors import LowbitError

FORMAT = "lowbit-npu-spec"
VERSION = 1
BUNDLED_DIR = Path(__file__).with_name("specs")
ACCUMULATORS = ("int32",)
DTYPES = ("int8", "uint8", "int16", "int32")
OP_NAMES = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "max_pool2d",
            "global_avg_pool2d")

Pair = tuple[int, int]


@dataclass(frozen=True)
class OpLimits:
    """What the NPU allows for one op: dtypes and (``None`` = unlimited) shape limits."""

    input: frozenset[str]
    weight: frozenset[str] = frozenset()
    output: frozenset[str] = frozenset()
    kernel_sizes: frozenset[Pair] | None = None
    strides: frozenset[Pair] | None = None
    max_channels: int | None = None


@dataclass(frozen=True)
class NpuSpec:
    name: str
    description: str
    accumulator: str
    ops: dict[str, OpLimits]
    source: str
    """The file the spec was read from."""


def bundled_specs() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.json"))


def spec_path(spec: str) -> Path:
    """The file of a bundled spec name, else ``spec`` as a path."""
    bundled = BUNDLED_DIR / f"{spec}.json"
    return bundled if "/" not in spec and bundled.is_file() else Path(spec)


def load_spec(spec: str) -> NpuSpec:
    path = spec_path(spec)
    if not path.is_file():
        raise LowbitError(f"no such NPU spec file (bundled specs: {bundled_specs()})",
                          file=str(path))
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LowbitError(f"cannot read the NPU spec: {err}", file=str(path)) from None
    try:
        return _parse(data, str(path))
    except _Invalid as err:
        raise LowbitError(f"invalid NPU spec: {err}", file=str(path)) from None


class _Invalid(ValueError):
    pass


_TOP_KEYS = {"format", "version", "name", "description", "accumulator", "ops"}
_OP_KEYS = {"input", "weight", "output", "kernel_sizes", "strides", "max_channels"}


def _parse(data: Any, source: str) -> NpuSpec:
    _require(isinstance(data, dict), "the top level must be a JSON object")
    _known(data, _TOP_KEYS, "top level")
    _require(data.get("format") == FORMAT, f"'format' must be {FORMAT!r}")
    _require(data.get("version") == VERSION, f"'version' must be {VERSION}")
    name, description = data.get("name"), data.get("description", "")
    _require(isinstance(name, str) and name != "", "'name' must be a non-empty string")
    _require(isinstance(description, str), "'description' must be a string")
    accumulator = data.get("accumulator", "int32")
    _require(accumulator in ACCUMULATORS, f"'accumulator' must be one of {list(ACCUMULATORS)}")
    ops = data.get("ops")
    _require(isinstance(ops, dict), "'ops' must be an object keyed by op name")
    _known(ops, set(OP_NAMES), "ops")
    return NpuSpec(name, description, accumulator,
                   {op: _limits(op, entry) for op, entry in ops.items()}, source)


def _limits(op: str, entry: Any) -> OpLimits:
    _require(isinstance(entry, dict), f"ops.{op} must be an object")
    _known(entry, _OP_KEYS, f"ops.{op}")
    _require("input" in entry, f"ops.{op} needs 'input' dtypes")
    channels = entry.get("max_channels")
    _require(channels is None or (type(channels) is int and channels > 0),
             f"ops.{op}.max_channels must be a positive integer")
    return OpLimits(_dtypes(op, entry, "input"), _dtypes(op, entry, "weight"),
                    _dtypes(op, entry, "output"), _pairs(op, entry, "kernel_sizes"),
                    _pairs(op, entry, "strides"), channels)


def _dtypes(op: str, entry: dict[str, Any], key: str) -> frozenset[str]:
    values = entry.get(key, [])
    _require(isinstance(values, list) and all(v in DTYPES for v in values),
             f"ops.{op}.{key} must be a list of dtypes from {list(DTYPES)}")
    return frozenset(values)


def _pairs(op: str, entry: dict[str, Any], key: str) -> frozenset[Pair] | None:
    if key not in entry:
        return None
    values = entry[key]
    ok = isinstance(values, list) and all(
        isinstance(v, list) and len(v) == 2 and all(type(i) is int and i > 0 for i in v)
        for v in values)
    _require(ok, f"ops.{op}.{key} must be a list of [h, w] pairs of positive integers")
    return frozenset((v[0], v[1]) for v in values)


def _known(entry: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    _require(not unknown, f"unknown key(s) {unknown} in {where}; expected {sorted(allowed)}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _Invalid(message)


__all__ = ["BUNDLED_DIR", "NpuSpec", "OP_NAMES", "OpLimits", "bundled_specs", "load_spec",
           "spec_path"]
