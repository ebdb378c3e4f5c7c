"""Overflow proof: the static range analysis is sound on random programs at their extremes.

Invariant (issue 11): for every node of an integer program, every value the interpreter
computes (exactly, in int64) lies inside the interval ``analyze_ranges`` derived for it, and
needs no more bits than ``RangeReport.accumulator_bits`` reports for the node, including the
int64 intermediate ``acc * mult + offset`` of a requantization. So nothing the analysis
proved can overflow: an int32 accumulator it proved stays within int32 however the inputs are
chosen inside the calibrated range. Hypothesis drives random graphs (``tests.fuzz_graphs``)
and inputs at and past the calibrated extremes; a failure shrinks to a small graph.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbit.compiler import GraphBuilder, LowbitError, Sym, TensorType
from lowbit.compiler.ops.integer import INT_RANGES
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
from lowbit.passes.quantize.range_analysis import analyze_ranges
from lowbit.runtime import run_graph
from tests.fuzz_graphs import extreme_inputs, random_inputs, random_module


def _bits(low: int, high: int) -> int:
    """Two's complement bits for [low, high], by definition: the smallest b with
    -2^(b-1) <= low and high <= 2^(b-1) - 1."""
    b = 1
    while not (-(2 ** (b - 1)) <= low and high <= 2 ** (b - 1) - 1):
        b += 1
    return b


@settings(max_examples=150, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**31 - 1), input_seed=st.integers(0, 2**31 - 1))
def test_every_value_lies_in_its_interval_at_the_extremes(seed: int, input_seed: int) -> None:
    graph = random_module(seed, 2)
    calibration = random_inputs(graph, seed, 32)
    result = compile_graph(graph, calibration, CompileOptions(progress=False))
    report = result.ranges
    program = result.integer_graph
    feeds = extreme_inputs(graph, calibration, input_seed, 4)
    try:
        values = run_graph(program, feeds, keep=True)
    except LowbitError as err:  # the interpreter refuses an overflow: only where not proved
        assert any(entry.split(" ")[0] == err.node for entry in report.unproved), str(err)
        return
    for node in program.nodes:
        if node.name not in report.accumulator_bits:
            continue
        low, high = report.intervals[node.outputs[0]]
        value = values[node.outputs[0]].astype(np.int64)
        if value.size == 0:
            continue
        assert low <= int(value.min()) and int(value.max()) <= high, node.name
        assert _bits(int(value.min()), int(value.max())) <= report.accumulator_bits[node.name]
        dtype = program.types[node.outputs[0]].dtype
        if node.name not in report.unproved and dtype in INT_RANGES:
            lo, hi = INT_RANGES[dtype]
            assert lo <= int(value.min()) and int(value.max()) <= hi, node.name
        if node.op == "requantize":
            acc, mult = (values[v].astype(object) for v in node.inputs[:2])
            offset = values[node.inputs[3]].astype(object) if len(node.inputs) > 3 and \
                node.inputs[3] else 0
            product = acc * mult + offset
            assert _bits(int(product.min()), int(product.max())) <= \
                report.accumulator_bits[node.name], node.name


def test_accumulator_bits_by_hand() -> None:
    """int_linear of int8 codes (zero point 0) with weights [[127, 127], [-1, 2]]: the worst
    case is 2 * 127 * -128 = -32512 (16 bits); the requantization multiplies by 2^20 and adds
    8: 32512 * 2^20 + 8 < 2^35, so 35 magnitude bits and a sign bit."""
    builder = GraphBuilder("by-hand")
    origin = builder.capture("fc", "linear")
    x = builder.add_input("x", TensorType("int8", (Sym(1), 2)))
    w = builder.add_constant(np.array([[127, 127], [-1, 2]], np.int8), "w")
    acc = builder.add("int_linear", [x, w], origin, {"x_zero_point": 0}, hint="acc")
    mult = builder.add_constant(np.array(2**20, np.int64), "mult")
    shift = builder.add_constant(np.array(24, np.int64), "shift")
    offset = builder.add_constant(np.array(8, np.int64), "offset")
    out = builder.add("requantize", [acc, mult, shift, offset], origin,
                      {"zero_point": 0, "dtype": "int8", "qmin": -128, "qmax": 127}, hint="y")
    report = analyze_ranges(builder.finish([out]))
    assert report.intervals["acc"] == (-32512, 32258)  # 127*-128*2 and 127*127*2 (row 0)
    node_of = {n.outputs[0]: n.name for n in builder.graph.nodes}
    assert report.accumulator_bits[node_of["acc"]] == 16
    assert report.accumulator_bits[node_of["y"]] == 36
    assert report.unproved == []
