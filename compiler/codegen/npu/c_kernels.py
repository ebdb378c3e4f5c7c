"""C kernels of the reference NPU: one static C function per admitted group, plain loops.

Invariant: each kernel computes what the interpreter computes for its group (``eval_int_conv``,
``eval_int_linear``, ``eval_int_add``, ``eval_max_pool``, ``eval_int_sum`` followed by
``eval_requantize``), element for element. Products accumulate in ``int32_t``, which
``kinds.plan`` proved cannot overflow; the epilogue is ``requantize`` of
``lowbit.kernels.dyadic``: ``(int64)acc * mult``, plus ``2^(shift-1)``, an arithmetic (floor)
right shift, plus the zero point, clamped to ``[qmin, qmax]``. The floor shift is written with
``~`` so that it does not depend on how the C compiler shifts negative numbers.

A kernel is ``static void <symbol>(int64_t n, const T0 *in0, [const T1 *in1,] U *out)`` over
``n`` samples (the batch ``N``), arrays in the lowbit layout (NCHW, row-major); weights and
requantize parameters are ``static const`` arrays in the source. ``KERNELS`` maps each NPU
kind to its emitter; ``PRELUDE`` holds the shared helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.codegen.npu.kinds import KINDS, Group, per_channel, static
from lowbit.compiler.ir import Graph

C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t"}

PRELUDE = """\
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "tvm/ffi/c_api.h"

/* floor((v + 2^(s-1)) / 2^s), v for s == 0: lowbit.kernels.dyadic.rounding_shift */
static inline int64_t lb_rounding_shift(int64_t v, int64_t s) {
  if (s == 0) return v;
  int64_t t = v + ((int64_t)1 << (s - 1));
  return t >= 0 ? t >> s : ~((~t) >> s);
}

static inline int64_t lb_clamp(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* requantize: clamp(rounding_shift(acc * mult, shift) + zero_point, qmin, qmax) */
static inline int64_t lb_requantize(int32_t acc, int64_t mult, int64_t shift, int64_t zp,
                                    int64_t qmin, int64_t qmax) {
  return lb_clamp(lb_rounding_shift((int64_t)acc * mult, shift) + zp, qmin, qmax);
}
"""


@dataclass(frozen=True)
class Kernel:
    """One group's C function and what the region code needs to call it."""

    symbol: str
    code: str
    input_types: tuple[str, ...]
    input_per_sample: tuple[int, ...]
    """Elements of each input for one sample (``N = 1``)."""
    output_type: str
    output_per_sample: int


def kernel(group: Group, graph: Graph, symbol: str) -> Kernel:
    inputs = group.inputs(graph)
    out = graph.types[group.output]
    return Kernel(symbol, KERNELS[group.kind](group, graph, symbol),
                  tuple(C_TYPES[graph.types[v].dtype] for v in inputs),
                  tuple(int(np.prod(static(graph.types[v]))) for v in inputs),
                  C_TYPES[out.dtype], int(np.prod(static(out))))


# -- helpers -----------------------------------------------------------------------------------
def _array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = ", ".join(str(int(v)) for v in np.asarray(values).ravel())
    return f"  static const {ctype} {name}[{max(np.asarray(values).size, 1)}] = {{{flat or 0}}};\n"


def _header(symbol: str, group: Group, graph: Graph) -> str:
    params = [f"const {C_TYPES[graph.types[v].dtype]}* in{i}"
              for i, v in enumerate(group.inputs(graph))]
    out = C_TYPES[graph.types[group.output].dtype]
    return f"static void {symbol}(int64_t n, {', '.join(params)}, {out}* out) {{\n"


def _epilogue_arrays(group: Group, graph: Graph) -> str:
    """``M``/``S``: the requantize multiplier and shift per output channel."""
    rq = group.epilogue
    out = graph.types[group.output]
    axis = KINDS[group.kind].channel_axis
    mult = per_channel(graph, rq.inputs[1], out, axis)
    shift = per_channel(graph, rq.inputs[2], out, axis)
    return _array("int64_t", "M", mult) + _array("int64_t", "S", shift)


def _requantize(group: Group, acc: str, channel: str) -> str:
    attrs = group.epilogue.attrs
    return (f"lb_requantize({acc}, M[{channel}], S[{channel}], {attrs['zero_point']}, "
            f"{attrs['qmin']}, {attrs['qmax']})")


def _weights_and_bias(group: Group, graph: Graph, channels: int) -> str:
    inputs = group.anchor.inputs
    bias = graph.constants[inputs[2]] if len(inputs) > 2 and inputs[2] else \
        np.zeros(channels, np.int32)
    weight = graph.constants[inputs[1]]
    return (_array(C_TYPES[str(weight.dtype)], "W", weight)
            + _array("int32_t", "B", bias.astype(np.int64)))


# -- kernels -----------------------------------------------------------------------------------
def conv2d(group: Group, graph: Graph, symbol: str) -> str:
    node = group.anchor
    samples, channels, height, width = static(graph.types[node.inputs[0]])
    oc, icg, kh, kw = static(graph.types[node.inputs[1]])
    _, _, oh, ow = static(graph.types[node.outputs[0]])
    sh, sw = node.attrs["strides"]
    top, left = node.attrs["pads"][:2]
    ocg = oc // node.attrs["groups"]
    zp = node.attrs["x_zero_point"]
    return (_header(symbol, group, graph) + _weights_and_bias(group, graph, oc)
            + _epilogue_arrays(group, graph) + f"""\
  for (int64_t b = 0; b < n * {samples}; ++b)
    for (int64_t oc = 0; oc < {oc}; ++oc)
      for (int64_t oy = 0; oy < {oh}; ++oy)
        for (int64_t ox = 0; ox < {ow}; ++ox) {{
          int32_t acc = B[oc];
          for (int64_t icg = 0; icg < {icg}; ++icg) {{
            const int64_t ic = (oc / {ocg}) * {icg} + icg;
            for (int64_t ky = 0; ky < {kh}; ++ky) {{
              const int64_t iy = oy * {sh} - {top} + ky;
              if (iy < 0 || iy >= {height}) continue;
              for (int64_t kx = 0; kx < {kw}; ++kx) {{
                const int64_t ix = ox * {sw} - {left} + kx;
                if (ix < 0 || ix >= {width}) continue;
                acc += ((int32_t)in0[((b * {channels} + ic) * {height} + iy) * {width} + ix]
                        - ({zp})) * (int32_t)W[((oc * {icg} + icg) * {kh} + ky) * {kw} + kx];
              }}
            }}
          }}
          out[((b * {oc} + oc) * {oh} + oy) * {ow} + ox] = {_requantize(group, "acc", "oc")};
        }}
}}
""")


def fully_connected(group: Group, graph: Graph, symbol: str) -> str:
    node = group.anchor
    x = static(graph.types[node.inputs[0]])
    features, depth = static(graph.types[node.inputs[1]])
    rows = int(np.prod(x[:-1]))
    zp = node.attrs["x_zero_point"]
    return (_header(symbol, group, graph) + _weights_and_bias(group, graph, features)
            + _epilogue_arrays(group, graph) + f"""\
  for (int64_t r = 0; r < n * {rows}; ++r)
    for (int64_t m = 0; m < {features}; ++m) {{
      int32_t acc = B[m];
      for (int64_t k = 0; k < {depth}; ++k)
        acc += ((int32_t)in0[r * {depth} + k] - ({zp})) * (int32_t)W[m * {depth} + k];
      out[r * {features} + m] = {_requantize(group, "acc", "m")};
    }}
}}
""")


def add(group: Group, graph: Graph, symbol: str) -> str:
    a = group.anchor.attrs
    size = int(np.prod(static(graph.types[group.output])))
    return _header(symbol, group, graph) + f"""\
  for (int64_t i = 0; i < n * {size}; ++i) {{
    const int64_t total = ((int64_t)in0[i] - ({a['a_zero_point']})) * {a['a_mult']}
                        + ((int64_t)in1[i] - ({a['b_zero_point']})) * {a['b_mult']};
    out[i] = lb_clamp(lb_rounding_shift(total, {a['shift']}) + ({a['zero_point']}),
                      {a['qmin']}, {a['qmax']});
  }}
}}
"""


def max_pool2d(group: Group, graph: Graph, symbol: str) -> str:
    node = group.anchor
    dtype = graph.types[node.inputs[0]].dtype
    samples, channels, height, width = static(graph.types[node.inputs[0]])
    _, _, oh, ow = static(graph.types[node.outputs[0]])
    kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["strides"]
    top, left = node.attrs["pads"][:2]
    lowest = int(np.iinfo(dtype).min)  # padding holds the lowest value: it never wins
    return _header(symbol, group, graph) + f"""\
  for (int64_t p = 0; p < n * {samples * channels}; ++p)
    for (int64_t oy = 0; oy < {oh}; ++oy)
      for (int64_t ox = 0; ox < {ow}; ++ox) {{
        int64_t best = {lowest};
        for (int64_t ky = 0; ky < {kh}; ++ky) {{
          const int64_t iy = oy * {sh} - {top} + ky;
          if (iy < 0 || iy >= {height}) continue;
          for (int64_t kx = 0; kx < {kw}; ++kx) {{
            const int64_t ix = ox * {sw} - {left} + kx;
            if (ix < 0 || ix >= {width}) continue;
            const int64_t v = in0[(p * {height} + iy) * {width} + ix];
            if (v > best) best = v;
          }}
        }}
        out[(p * {oh} + oy) * {ow} + ox] = best;
      }}
}}
"""


def global_avg_pool2d(group: Group, graph: Graph, symbol: str) -> str:
    node = group.anchor
    samples, channels, height, width = static(graph.types[node.inputs[0]])
    zp = node.attrs["zero_point"]
    return _header(symbol, group, graph) + _epilogue_arrays(group, graph) + f"""\
  for (int64_t b = 0; b < n * {samples}; ++b)
    for (int64_t c = 0; c < {channels}; ++c) {{
      int32_t acc = 0;
      for (int64_t i = 0; i < {height * width}; ++i)
        acc += (int32_t)in0[(b * {channels} + c) * {height * width} + i] - ({zp});
      out[b * {channels} + c] = {_requantize(group, "acc", "c")};
    }}
}}
"""


KERNELS: dict[str, Callable[[Group, Graph, str], str]] = {
    "conv2d": conv2d, "depthwise_conv2d": conv2d, "fully_connected": fully_connected,
    "add": add, "max_pool2d": max_pool2d, "global_avg_pool2d": global_avg_pool2d,
}

__all__ = ["C_TYPES", "KERNELS", "Kernel", "PRELUDE", "kernel"]
