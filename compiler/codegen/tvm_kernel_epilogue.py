"""Elementwise epilogues of the int8 GEMM kernel: the requantization that follows a product,
computed on the kernel's register tile instead of by a separate kernel over an int32 tensor.

Invariant: the fused kernel computes, for every input, the values the chain of Relax ops it
absorbs computes from the kernel's int32 result. Each absorbed op is elementwise with a
constant that is one value, or one value per output column (a per-channel constant of a
convolution or linear), so it commutes with any reshape that keeps the last axis; the TIR
expression of each op is the one TVM's legalization gives it (``+ - *`` on the same integer
dtype, ``>>`` the arithmetic shift, ``max``/``min``, a cast).

``absorb_epilogues(builder, kernels, rebuild)`` walks each Relax function's dataflow: from a
call of a GEMM kernel (``kernels`` maps its ``GlobalVar`` to its key), through values used
exactly once (an optional reshape keeping the last axis, then ``ABSORBED`` ops with such a
constant, and casts), and replaces the end of the chain by one call of the kernel rebuilt with
the chain as its epilogue (``rebuild(key, steps)``), reshaped as the chain was. A value used
twice ends the chain, so no product is computed twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.dpl import rewrite_call, wildcard

ABSORBED: dict[str, Callable[[tirx.PrimExpr, tirx.PrimExpr], tirx.PrimExpr]] = {
    "relax.add": lambda v, c: v + c,
    "relax.subtract": lambda v, c: v - c,
    "relax.multiply": lambda v, c: v * c,
    "relax.right_shift": lambda v, c: v >> c,
    "relax.maximum": tirx.max,
    "relax.minimum": tirx.min,
}
"""Relax op name to its TIR expression on (value, constant)."""
CAST = "relax.astype"
INTEGER = ("int8", "int16", "int32", "int64", "uint8")


@dataclass(frozen=True)
class EpilogueStep:
    """One absorbed op: its Relax name, its result dtype and, for a binary op, whether its
    constant has one value per column (else one value, a one-element parameter)."""

    op: str
    dtype: str
    per_column: bool = False


Epilogue = tuple[EpilogueStep, ...]


def epilogue_params(steps: Epilogue, columns: int) -> list[tuple[int, str]]:
    """(length, dtype) of each constant parameter the epilogue reads, in order."""
    dtype, params = "int32", []
    for step in steps:
        if step.op != CAST:
            params.append((columns if step.per_column else 1, dtype))
        dtype = step.dtype
    return params


def apply_epilogue(value: tirx.PrimExpr, column: tirx.PrimExpr, steps: Epilogue,
                   params: list) -> tirx.PrimExpr:  # te tensors
    """The epilogue on one int32 ``value`` of output column ``column``."""
    constants = iter(params)
    for step in steps:
        if step.op == CAST:
            value = value.astype(step.dtype)
            continue
        constant = next(constants)
        value = ABSORBED[step.op](value, constant[column if step.per_column else 0])
    return value


@dataclass
class _Chain:
    start: relax.Call
    steps: list[EpilogueStep]
    constants: list[np.ndarray]
    shape: relax.Expr | None = None
    """The reshape's target shape, when the chain went through one."""


def absorb_epilogues(builder: relax.BlockBuilder, kernels: dict[relax.GlobalVar, tuple],
                     rebuild: Callable[[tuple, Epilogue], relax.GlobalVar]) -> None:
    """Fuses every maximal chain of each Relax function of ``builder`` into its kernel."""
    for gv, func in builder.get().functions_items():
        if not isinstance(func, relax.Function):
            continue
        ends = _chains(func, kernels)
        if not ends:
            continue

        def replace(call: relax.Expr, _matches: dict, ends: dict = ends) -> relax.Expr:
            chain = ends.get(call)
            return call if chain is None else _fused(chain, kernels, rebuild)

        builder.update_func(gv, rewrite_call(wildcard(), replace, func))


def _chains(func: relax.Function, kernels: dict[relax.GlobalVar, tuple]
            ) -> dict[relax.Expr, _Chain]:
    """The value bound at the end of each chain (a key by identity) and its chain."""
    bindings = [b for block in func.body.blocks for b in block.bindings
                if isinstance(b, relax.VarBinding)]
    uses: Counter = Counter(_operands(func.body.body))  # the function's results
    consumer: dict[relax.Var, relax.VarBinding] = {}
    for binding in bindings:
        for arg in _operands(binding.value):
            uses[arg] += 1
            consumer[arg] = binding
    ends: dict[relax.Expr, _Chain] = {}
    for binding in bindings:
        if not _is_kernel_call(binding.value, kernels):
            continue
        chain, var, end = _Chain(binding.value, [], []), binding.var, None
        while uses[var] == 1 and var in consumer and _extend(chain, consumer[var], var):
            var, end = consumer[var].var, consumer[var].value
        if end is not None and chain.steps:
            ends[end] = chain
    return ends


def _operands(value: relax.Expr) -> list[relax.Var]:
    """The variables ``value`` reads, each occurrence (call arguments, tuple fields)."""
    if isinstance(value, relax.Var):
        return [value]
    if isinstance(value, relax.Tuple):
        return [v for field in value.fields for v in _operands(field)]
    if isinstance(value, relax.Call):
        return [v for arg in value.args for v in _operands(arg)]
    if isinstance(value, relax.TupleGetItem):
        return _operands(value.tuple_value)
    return []


def _extend(chain: _Chain, binding: relax.VarBinding, source: relax.Var) -> bool:
    """Adds the op of ``binding`` (which reads ``source``) to the chain where it qualifies."""
    value = binding.value
    if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
        return False
    name, dtype = value.op.name, str(value.ty.dtype)
    if dtype not in INTEGER:
        return False
    if name == "relax.reshape" and chain.shape is None and not chain.steps:
        old, new = source.ty.shape.values, value.ty.shape.values
        if not tvm.sym.Analyzer().can_prove_equal(old[-1], new[-1]):
            return False
        chain.shape = value.args[1]
        return True
    if name == CAST:
        chain.steps.append(EpilogueStep(CAST, dtype))
        return True
    if name not in ABSORBED or len(value.args) != 2 or not value.args[0].same_as(source):
        return False
    constant = value.args[1]
    if not isinstance(constant, tvm.ir.expr.Constant) or str(constant.ty.dtype) != dtype:
        return False
    array = constant.value.numpy()
    columns = int(source.ty.shape.values[-1])
    if array.size == 1:
        per_column = False
    elif array.shape[-1:] == (columns,) and array.size == columns:
        per_column = True
    else:
        return False
    chain.steps.append(EpilogueStep(name, dtype, per_column))
    chain.constants.append(array.reshape(-1))
    return True


def _is_kernel_call(value: relax.Expr, kernels: dict[relax.GlobalVar, tuple]) -> bool:
    return (isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_tir"))
            and value.args[0] in kernels)


def _fused(chain: _Chain, kernels: dict[relax.GlobalVar, tuple],
           rebuild: Callable[[tuple, Epilogue], relax.GlobalVar]) -> relax.Expr:
    callee, args = chain.start.args[0], list(chain.start.args[1].fields)
    steps = tuple(chain.steps)
    rows, columns = chain.start.ty.shape.values
    constants = [relax.const(c, str(c.dtype)) for c in chain.constants]
    call = relax.call_tir(rebuild(kernels[callee], steps), args + constants,
                          relax.TensorType([rows, columns], steps[-1].dtype))
    return call if chain.shape is None else relax.op.reshape(call, chain.shape)


__all__ = ["ABSORBED", "Epilogue", "EpilogueStep", "absorb_epilogues", "apply_epilogue",
           "epilogue_params"]
