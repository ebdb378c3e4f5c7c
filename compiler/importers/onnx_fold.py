"""Evaluating ONNX shape computations at import time, with the symbolic batch size.

Exported models compute reshape targets at run time: ``Shape`` of an activation, then
``Gather``/``Concat``/``Mul``/``Div``/``Equal``/``Where`` on the result. The importer evaluates
those chains itself ("known values"). A known value is a numpy array; when an element depends
on the batch size it is a :class:`~lowbit.compiler.dims.Sym` and the array has dtype ``object``
(Python ints and ``Sym`` elements). Arrays without ``Sym`` always have a real numpy dtype.

Arithmetic on ``Sym`` is exact or refused (``ValueError``): lowbit dimensions are ``k*N`` for a
positive integer ``k`` and ``N >= 1``, nothing else. Comparisons use only what that implies
(``k*N >= k``) and refuse to guess otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lowbit.compiler.dims import Sym, divide, multiply


def has_sym(array: np.ndarray) -> bool:
    return array.dtype == object and any(isinstance(x, Sym) for x in array.flat)


def as_object(array: np.ndarray) -> np.ndarray:
    """Elements as Python ints / floats / Sym (``astype(object)`` turns numpy ints into ints)."""
    return array if array.dtype == object else array.astype(object)


def settle(array: Any, dtype: str) -> np.ndarray:
    """A fold result as an array: object dtype only while it still holds a ``Sym``."""
    result = np.asarray(array) if not isinstance(array, Sym) else np.array(array, dtype=object)
    if result.dtype == object and has_sym(result):
        return result
    return result if str(result.dtype) == dtype else result.astype(dtype)


def _sym_or_int(coeff: int, what: str) -> int | Sym:
    if coeff == 0:
        return 0
    if coeff < 0:
        raise ValueError(f"{what} is negative; lowbit dimensions are positive multiples of N")
    return Sym(coeff)


def _unrepresentable(a: Any, op: str, b: Any) -> ValueError:
    return ValueError(f"cannot represent {a} {op} {b}: lowbit dimensions are multiples k*N "
                      "of the batch size N")


def sym_add(a: Any, b: Any) -> Any:
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        return a + b
    if isinstance(a, Sym) and isinstance(b, Sym):
        return _sym_or_int(a.coeff + b.coeff, f"{a} + {b}")
    if a == 0 or b == 0:
        return b if a == 0 else a
    raise _unrepresentable(a, "+", b)


def sym_sub(a: Any, b: Any) -> Any:
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        return a - b
    if isinstance(a, Sym) and isinstance(b, Sym):
        return _sym_or_int(a.coeff - b.coeff, f"{a} - {b}")
    if b == 0:
        return a
    raise _unrepresentable(a, "-", b)


def sym_mul(a: Any, b: Any) -> Any:
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        return a * b
    if a == 0 or b == 0:
        return 0
    sym, other = (a, b) if isinstance(a, Sym) else (b, a)
    if isinstance(other, Sym) or other != int(other) or other < 0:
        raise _unrepresentable(a, "*", b)
    return multiply(sym, int(other))


def sym_div(a: Any, b: Any) -> Any:
    """Integer division truncating toward zero (ONNX ``Div`` on ints); exact for ``Sym``."""
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
            quotient = abs(int(a)) // abs(int(b))
            return quotient if (a >= 0) == (b > 0) else -quotient
        return a / b
    if a == 0:
        return 0
    return divide(a, b if isinstance(b, Sym) else int(b))


def _low(x: Any) -> Any:
    """The least value ``x`` can take (``k*N >= k`` as ``N >= 1``)."""
    return x.coeff if isinstance(x, Sym) else x


def _undecided(a: Any, op: str, b: Any) -> ValueError:
    return ValueError(f"cannot decide {a} {op} {b} at import time: it depends on the batch size")


def sym_less(a: Any, b: Any) -> bool:
    if isinstance(a, Sym) and isinstance(b, Sym):
        return a.coeff < b.coeff
    if isinstance(a, Sym):  # k*N < b
        if b <= a.coeff:
            return False
        raise _undecided(a, "<", b)
    if isinstance(b, Sym):  # a < k*N
        if a < b.coeff:
            return True
        raise _undecided(a, "<", b)
    return bool(a < b)


def sym_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Sym) and isinstance(b, Sym):
        return a.coeff == b.coeff
    if isinstance(a, Sym) or isinstance(b, Sym):
        s, c = (a, b) if isinstance(a, Sym) else (b, a)
        if c < s.coeff or c != int(c) or int(c) % s.coeff:
            return False
        raise _undecided(a, "==", b)
    return bool(a == b)


def sym_max(a: Any, b: Any) -> Any:
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        return max(a, b)
    if sym_less(a, b):
        return b
    return a


def sym_min(a: Any, b: Any) -> Any:
    if not isinstance(a, Sym) and not isinstance(b, Sym):
        return min(a, b)
    if sym_less(a, b):
        return a
    return b


def sym_neg(a: Any) -> Any:
    if isinstance(a, Sym):
        raise _unrepresentable("", "-", a)
    return -a


def elementwise(fn: Callable[..., Any], arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Apply a scalar function with numpy broadcasting over object arrays."""
    ufunc = np.frompyfunc(fn, len(arrays), 1)
    result = ufunc(*[as_object(np.asarray(a)) for a in arrays])
    return result if isinstance(result, np.ndarray) else np.array(result, dtype=object)


# Lowbit ops whose kernels do arithmetic: on arrays holding a Sym they run these instead.
SYMBOLIC_ARITHMETIC: dict[str, Callable[..., Any]] = {
    "add": sym_add,
    "sub": sym_sub,
    "mul": sym_mul,
    "div": sym_div,
    "maximum": sym_max,
    "minimum": sym_min,
    "neg": sym_neg,
}

# Lowbit ops whose kernels only move elements: they run unchanged on object arrays.
DATA_MOVEMENT = frozenset({"reshape", "transpose", "slice", "concat", "gather", "expand", "where"})

_INT_DTYPES = frozenset({"int8", "uint8", "int16", "int32", "int64"})


def fold_symbolic(op: str, arrays: Sequence[np.ndarray | None], attrs: dict[str, Any],
                  run: Callable[[], Any]) -> np.ndarray:
    """Evaluate lowbit ``op`` on known values of which at least one holds a ``Sym``."""
    if op in SYMBOLIC_ARITHMETIC:
        return elementwise(SYMBOLIC_ARITHMETIC[op], [a for a in arrays if a is not None])
    if op == "cast":
        if attrs["to"] not in _INT_DTYPES:
            raise ValueError(f"cannot cast the batch size N to {attrs['to']}")
        return arrays[0]  # type: ignore[return-value]
    if op in DATA_MOVEMENT:
        return run()
    raise ValueError(f"cannot evaluate {op} on a value that depends on the batch size")


__all__ = [
    "DATA_MOVEMENT", "SYMBOLIC_ARITHMETIC", "as_object", "elementwise", "fold_symbolic",
    "has_sym", "settle", "sym_add", "sym_div", "sym_equal", "sym_less", "sym_max", "sym_min",
    "sym_mul", "sym_neg", "sym_sub",
]
