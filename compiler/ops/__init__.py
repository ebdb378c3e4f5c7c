"""The op table. Importing this package fills ``OP_TABLE`` with every row."""

from lowbit.compiler.ops import (elementwise, integer, integer_block,  # noqa: F401
                                integer_log2, linalg, nn, reduce, shape)
from lowbit.compiler.ops.spec import OP_TABLE, REQUIRED, OpSpec, register

__all__ = ["OP_TABLE", "REQUIRED", "OpSpec", "register"]
