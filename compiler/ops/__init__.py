"""The op table. Importing this package fills ``OP_TABLE`` with every row."""

from lowbit.compiler.ops import elementwise, integer, linalg, nn, reduce, shape  # noqa: F401
from lowbit.compiler.ops.spec import OP_TABLE, REQUIRED, OpSpec, register

__all__ = ["OP_TABLE", "REQUIRED", "OpSpec", "register"]
