"""The table of float graph passes selectable by name (``lowbit compile --passes``,
``lowbit pass NAME``): one row per pass, registered by the pass's own module.

A row says what the pass needs and promises: ``make(inputs)`` builds the pass from
calibration inputs (``None`` for passes that need none) and options; ``equivalence`` passes
leave float outputs unchanged to float tolerance, the others are measured transformations.
``PASS_MODULES`` lists the modules whose import registers rows; they are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.passes.manager import Pass


@dataclass(frozen=True)
class PassInputs:
    """What a pass may be built from: calibration inputs keyed by graph input name (first
    axis = samples) and free-form options."""

    calibration: Mapping[str, np.ndarray] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassEntry:
    name: str
    summary: str
    make: Callable[[PassInputs], Pass]
    needs_calibration: bool = False
    equivalence: bool = True


PASS_MODULES: tuple[str, ...] = ("lowbit.passes.fold_batch_norm", "lowbit.passes.dead_code",
                                 "lowbit.passes.equalize", "lowbit.passes.smooth_quant",
                                 "lowbit.passes.awq", "lowbit.passes.repq_vit_layernorm",
                                 "lowbit.passes.repq_vit_softmax",
                                 "lowbit.passes.rearrange_channels",
                                 "lowbit.passes.equalize_attention")
_ENTRIES: dict[str, PassEntry] = {}


def register_pass(entry: PassEntry) -> None:
    _ENTRIES[entry.name] = entry


def registered_passes() -> dict[str, PassEntry]:
    for module in PASS_MODULES:
        importlib.import_module(module)
    return dict(_ENTRIES)


def make_passes(names: list[str] | tuple[str, ...], inputs: PassInputs) -> list[Pass]:
    """The named passes in order; an unknown name or missing calibration is a user error."""
    table = registered_passes()
    passes = []
    for name in names:
        if name not in table:
            raise LowbitError(f"unknown pass {name!r}; expected one of {', '.join(sorted(table))}")
        entry = table[name]
        if entry.needs_calibration and inputs.calibration is None:
            raise LowbitError(f"pass {name!r} needs calibration inputs (--calib CALIB.npz)")
        passes.append(entry.make(inputs))
    return passes
