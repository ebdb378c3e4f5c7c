"""Integer-only kernels: dyadic requantization and I-BERT's exp, softmax, GELU, sqrt, LayerNorm.

Each approximation is split in two: ``plan_*`` runs at compile time, may use floats, and
returns a frozen dataclass of Python ints plus a float output scale for bookkeeping;
``apply_*`` runs at run time on integer numpy arrays with ``+ - *``, comparisons, shifts and
floor division only, every intermediate provably inside int64.
"""

from lowbit.kernels.dyadic import (INT64_SAFE, check_abs_below, dyadic, int_array, requantize,
                                   rounding_shift)
from lowbit.kernels.i_exp import ExpPlan, apply_exp, plan_exp
from lowbit.kernels.i_gelu import GeluPlan, apply_gelu, plan_gelu
from lowbit.kernels.i_layernorm import LayerNormPlan, apply_layernorm, plan_layernorm
from lowbit.kernels.i_softmax import SoftmaxPlan, apply_softmax, plan_softmax
from lowbit.kernels.i_sqrt import NEWTON_STEPS, bit_length, isqrt

__all__ = ["INT64_SAFE", "NEWTON_STEPS", "ExpPlan", "GeluPlan", "LayerNormPlan", "SoftmaxPlan",
           "apply_exp", "apply_gelu", "apply_layernorm", "apply_softmax", "bit_length",
           "check_abs_below", "dyadic", "int_array", "isqrt", "plan_exp", "plan_gelu",
           "plan_layernorm", "plan_softmax", "requantize", "rounding_shift"]
