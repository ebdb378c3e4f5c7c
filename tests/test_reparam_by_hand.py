"""Scale reparameterization passes on two-layer graphs whose numbers are derived by hand
(in the comments), plus the log2 attention op against hand arithmetic and a slow reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.compiler import GraphBuilder, TensorType
from lowbit.compiler.dims import Sym
from lowbit.compiler.ir import Graph
from lowbit.passes.awq import GRID, AwqSearch
from lowbit.passes.equalize import CrossLayerEqualization
from lowbit.passes.equalize_attention import QueryKeyEqualization
from lowbit.passes.manager import PassManager
from lowbit.passes.quantize.calibrate import FIXED_RANGES_KEY, calibrate
from lowbit.passes.quantize.lowering_log2 import log2_code_table
from lowbit.passes.quantize.observers import quantile_search_ranges
from lowbit.passes.repq_vit_layernorm import RepqVitLayerNorm
from lowbit.passes.repq_vit_softmax import LOG2_SOFTMAX_KEY, RepqVitSoftmax
from lowbit.passes.smooth_quant import SmoothQuant
from lowbit.runtime import run_graph
from tests.integer_graphs import one_op

N = Sym(1)


def _constants(graph: Graph, node: str) -> list[np.ndarray]:
    return [graph.constants[v] for v in graph.node(node).inputs[1:] if v]


def row(stats: dict, key: str, layer: str) -> dict:
    """The per-layer stats row of ``layer``; the report's markdown table must mention it."""
    assert any(f"| {layer} |" in line for line in stats["markdown"])
    return next(r for r in stats[key] if r["layer"] == layer)


def linear_relu_linear() -> Graph:
    """y = W2 relu(W1 x + b1) with W1 = [[4, 0], [0, 1]], b1 = [2, 3], W2 = [[1, 1]]."""
    b = GraphBuilder("pair")
    origin = b.capture("pair", "test")
    x = b.add_input("x", TensorType("float32", (N, 2)))
    w1 = b.add_constant(np.array([[4, 0], [0, 1]], np.float32), "w1")
    b1 = b.add_constant(np.array([2, 3], np.float32), "b1")
    w2 = b.add_constant(np.array([[1, 1]], np.float32), "w2")
    h = b.add("linear", [x, w1, b1], origin, hint="first")
    r = b.add("relu", [h], origin, hint="relu")
    return b.finish([b.add("linear", [r, w2], origin, hint="second")])


def test_equalization_by_hand() -> None:
    # r1 = [4, 1], r2 = [1, 1] -> S = sqrt(r1 / r2) = [2, 1]: W1 rows / S, b1 / S, W2 cols * S;
    # both ranges become sqrt(r1 r2) = [2, 1] and the next sweep leaves them (S = 1).
    graph = linear_relu_linear()
    result = CrossLayerEqualization().run(graph)
    w1, b1 = _constants(result.graph, "first")
    (w2,) = _constants(result.graph, "second")
    np.testing.assert_allclose(w1, [[2, 0], [0, 1]])
    np.testing.assert_allclose(b1, [1, 3])
    np.testing.assert_allclose(w2, [[2, 1]])
    pair = row(result.stats, "pairs", "first -> second")
    assert pair["first_range_spread_before"] == 4.0 and pair["first_range_spread_after"] == 2.0
    feeds = {"x": np.array([[1.0, -2.0], [-3.0, 0.5]], np.float32)}
    np.testing.assert_allclose(run_graph(result.graph, feeds)["second"],
                               run_graph(graph, feeds)["second"], rtol=1e-6)


def norm_linear(gamma: list[float], beta: list[float], weight: list[list[float]],
                residual: bool = False) -> Graph:
    """layer_norm(x; gamma, beta, eps=1e-12) -> linear(weight), optionally also + x."""
    b = GraphBuilder("norm")
    origin = b.capture("norm", "test")
    x = b.add_input("x", TensorType("float32", (N, 2)))
    g = b.add_constant(np.array(gamma, np.float32), "gamma")
    bb = b.add_constant(np.array(beta, np.float32), "beta")
    w = b.add_constant(np.array(weight, np.float32), "w")
    y = b.add("layer_norm", [x, g, bb], origin, {"eps": 1e-12}, hint="ln")
    out = b.add("linear", [y, w], origin, hint="fc")
    outputs = [out, b.add("add", [y, x], origin, hint="res")] if residual else [out]
    return b.finish(outputs)


# Two channels normalize to +-1: calibration rows [1, 0] and [0, 1] give [1, -1] and [-1, 1].
CALIB = {"x": np.array([[1, 0], [0, 1]], np.float32)}


def test_smooth_quant_by_hand() -> None:
    # LN output absmax a = gamma = [4, 1], weight column absmax w = [1, 4]; alpha = 0.5:
    # s = sqrt(a / w) = [2, 0.5] -> gamma' = gamma / s = [2, 2], W' = W s = [[2, 2]].
    graph = norm_linear([4, 1], [0, 0], [[1, 4]])
    result = SmoothQuant(CALIB, alpha=0.5).run(graph)
    gamma, beta = _constants(result.graph, "ln")
    (weight,) = _constants(result.graph, "fc")
    np.testing.assert_allclose(gamma, [2, 2], rtol=1e-6)
    np.testing.assert_allclose(beta, [0, 0])
    np.testing.assert_allclose(weight, [[2, 2]], rtol=1e-6)
    layer = row(result.stats, "layers", "ln")
    assert layer["act_channel_spread_before"] == pytest.approx(4.0)
    assert layer["act_channel_spread_after"] == pytest.approx(1.0)


# RepQ-ViT's quantile search: with each row three times, every searched quantile of a channel
# (0.999 ... 0.99999 and their complements) interpolates between equal extremes.
REPQ_CALIB = {"x": np.tile(CALIB["x"], (3, 1))}


def test_repq_vit_layernorm_by_hand() -> None:
    # Channel ranges [-4, 4] and [0, 2] (gamma [4, 1], beta [0, 1]) at 4 bits:
    # D = [8/15, 2/15], z = [7.5, 0]; mean D = 1/3, mean z = 3.75; r = D / mean D = [1.6, 0.4];
    # b = mean D (mean z - z) = [-1.25, 1.25]. gamma' = gamma / r = [2.5, 2.5],
    # beta' = beta / r - b = [1.25, 1.25]; W' = W r = [[1.6, 0.4]], bias' = W' b = -1.5.
    # Both channels now span [-1.25, 3.75] = [-mean z * mean D, (15 - mean z) mean D].
    graph = norm_linear([4, 1], [0, 1], [[1, 1]])
    result = RepqVitLayerNorm(REPQ_CALIB, activation_bits=4).run(graph)
    gamma, beta = _constants(result.graph, "ln")
    weight, bias = _constants(result.graph, "fc")
    np.testing.assert_allclose(gamma, [2.5, 2.5], rtol=1e-5)
    np.testing.assert_allclose(beta, [1.25, 1.25], rtol=1e-5)
    np.testing.assert_allclose(weight, [[1.6, 0.4]], rtol=1e-5)
    np.testing.assert_allclose(bias, [-1.5], rtol=1e-5)
    np.testing.assert_allclose(row(result.stats, "layers", "ln")["range_after"], [-1.25, 3.75],
                               rtol=1e-5)
    # RepQ-ViT deploys that layer-wise quantizer as it is: calibration keeps the range
    ln_out = result.graph.node("ln").outputs[0]
    np.testing.assert_allclose(result.graph.metadata[FIXED_RANGES_KEY][ln_out], [-1.25, 3.75],
                               rtol=1e-5)
    kept = calibrate(result.graph, {"x": np.array([[9, 0]], np.float32)}, progress=False)
    np.testing.assert_allclose(kept.ranges[ln_out], [-1.25, 3.75], rtol=1e-5)


def test_quantile_search_clips_rare_outliers_by_hand() -> None:
    # 99,998 ones and two 100s at 4 bits. Quantiles 0.999 and 0.9999 give [0, 1]: the ones are
    # exact (1 = 15 / 15), the outliers lose 99 each, error 2 * 99^2 = 19602. Quantile 0.99999
    # (position 99999 * 0.99999 > 99998) gives [0, 100]: step 100 / 15, the outliers are exact
    # and every 1 rounds to 0, error 99998. The second channel has no outlier: [-1, 2].
    data = np.ones((100_000, 2))
    data[-2:, 0] = 100.0
    data[::2, 1] = -1.0
    data[1::4, 1] = 2.0
    lo, hi = quantile_search_ranges(data, 4)
    np.testing.assert_allclose(lo, [0.0, -1.0])
    np.testing.assert_allclose(hi, [1.0, 2.0])


def test_a_norm_with_another_reader_is_duplicated_with_its_origin() -> None:
    graph = norm_linear([4, 1], [0, 1], [[1, 1]], residual=True)
    result, _ = PassManager([RepqVitLayerNorm(REPQ_CALIB, activation_bits=4)]).run(graph)
    norms = [n for n in result.nodes if n.op == "layer_norm"]
    assert len(norms) == 2 and norms[0].origin == norms[1].origin
    np.testing.assert_allclose(_constants(result, "ln")[0], [4, 1])  # the residual's copy
    feeds = {"x": np.array([[0.3, -2.0], [1.5, 0.25]], np.float32)}
    for name, want in run_graph(graph, feeds).items():
        np.testing.assert_allclose(run_graph(result, feeds)[name], want, rtol=1e-5, atol=1e-6)


def _fake_quant_error(x: torch.Tensor, weight: torch.Tensor, s: torch.Tensor, bits: int
                      ) -> float:
    """The objective, re-implemented with torch's fake quantizers: per-tensor affine min/max
    activations in [-2^(b-1), 2^(b-1) - 1], per-row symmetric weights in +-(2^(b-1) - 1)."""
    xs, ws = x / s, weight * s
    lo, hi = min(float(xs.min()), 0.0), max(float(xs.max()), 0.0)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scale = (hi - lo) / (qmax - qmin)
    zero = int(min(max(round(qmin - lo / scale), qmin), qmax))
    xq = torch.fake_quantize_per_tensor_affine(xs, scale, zero, qmin, qmax)
    row_scale = ws.abs().amax(dim=1) / qmax
    zeros = torch.zeros(len(ws), dtype=torch.int32)
    wq = torch.fake_quantize_per_channel_affine(ws, row_scale, zeros, 0, -qmax, qmax)
    want = x @ weight.T
    return float(((want - xq @ wq.T) ** 2).sum() / (want**2).sum())


def test_awq_picks_the_alpha_with_the_smallest_fake_quant_error() -> None:
    rng = np.random.default_rng(5)
    gamma = [6.0, 0.2]
    weight = rng.standard_normal((3, 2)).astype(np.float32)
    graph = norm_linear(gamma, [0.5, -0.1], weight.tolist())
    calib = {"x": rng.standard_normal((64, 2)).astype(np.float32)}
    result = AwqSearch(calib, bits=4, activation_bits=4).run(graph)
    x = torch.from_numpy(run_graph(graph, calib, keep=True)["ln"])
    w = torch.from_numpy(weight)
    a, col = x.abs().amax(dim=0), w.abs().amax(dim=0)
    errors = [_fake_quant_error(x, w, (a.double()**al / col.double() ** (1 - al))
                                .clamp(1e-4, 1e4).float(), 4)
              for al in GRID]
    layer = row(result.stats, "layers", "ln")
    assert layer["alpha"] == GRID[int(np.argmin(errors))]
    assert layer["error_best"] == pytest.approx(min(errors), rel=1e-3)


def test_awq_quantizes_each_linear_at_its_own_width() -> None:
    """Mixed precision: a linear listed in ``layer_bits`` is searched at that width."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((3, 2)).astype(np.float32)
    graph = norm_linear([6.0, 0.2], [0.5, -0.1], weight.tolist())
    calib = {"x": rng.standard_normal((64, 2)).astype(np.float32)}
    (linear,) = [n.name for n in graph.nodes if n.op == "linear"]
    at8 = row(AwqSearch(calib, bits=8).run(graph).stats, "layers", "ln")
    at4 = row(AwqSearch(calib, bits=4).run(graph).stats, "layers", "ln")
    mixed = row(AwqSearch(calib, bits=4, layer_bits={linear: 8}).run(graph).stats, "layers", "ln")
    assert mixed["error_best"] == at8["error_best"] != at4["error_best"]


def test_log2_codes_by_hand() -> None:
    # D = 1: q = round(-2 log2 p): p = 1/2 -> 2, 1/4 -> 4, 0.3 -> round(3.47) = 3, 1 -> 0;
    # 4 bits: live codes 0..14, code 15 reads as 0 (p = 2^-8 -> 16 -> 15, p = 0 -> 15).
    table = log2_code_table(1.0, 4)
    probs = np.array([0.5, 0.25, 0.3, 1 - 2**-16, 2**-8, 0.0])
    assert table[np.rint(probs * 2**16).astype(int)].tolist() == [2, 4, 3, 0, 15, 15]


def test_log2_matmul_by_hand() -> None:
    # zero_code 15 -> F = 7. codes [0, 2, 3, 14, 15] against V = [1, 2, 4, 8, 100]:
    # even: 1 << 7 + 2 << 6 + 8 << 0 = 264; odd: 4 << 6 = 256; 15 is 0.
    # acc = 264 * 2^8 + 256 * 181 = 113920, i.e. 3.4766 at scale 2^-15, against the exact
    # 1 + 2/2 + 4 / 2^1.5 + 8 / 2^7 = 3.4767.
    graph = one_op("int_log2_matmul", [TensorType("uint8", (N, 1, 5)),
                                       TensorType("int8", (N, 5, 1))], {"zero_code": 15})
    feeds = {"x0": np.array([[[0, 2, 3, 14, 15]]], np.uint8),
             "x1": np.array([[[1], [2], [4], [8], [100]]], np.int8)}
    (acc,) = run_graph(graph, feeds).values()
    assert acc.dtype == np.int32 and acc.tolist() == [[[113920]]]
    assert acc[0, 0, 0] * 2.0**-15 == pytest.approx(1 + 1 + 4 / 2**1.5 + 8 / 2**7, rel=1e-4)


def test_log2_matmul_matches_a_slow_loop() -> None:
    rng = np.random.default_rng(7)
    p = rng.integers(0, 16, (2, 3, 4, 6)).astype(np.uint8)
    v = rng.integers(-128, 128, (2, 3, 6, 5)).astype(np.int8)
    graph = one_op("int_log2_matmul", [TensorType("uint8", (N, 3, 4, 6)),
                                       TensorType("int8", (N, 3, 6, 5))],
                   {"zero_code": 15, "v_zero_point": -3})
    (got,) = run_graph(graph, {"x0": p, "x1": v}).values()
    want = np.zeros(got.shape, np.int64)
    for idx in np.ndindex(*got.shape):
        *lead, i, j = idx
        for k in range(6):
            q = int(p[(*lead, i, k)])
            if q < 15:
                term = (int(v[(*lead, k, j)]) + 3) * 2 ** (7 - q // 2)
                want[idx] += term * 256 if q % 2 == 0 else term * 181
    np.testing.assert_array_equal(got, want)


def test_softmax_pass_only_annotates() -> None:
    b = GraphBuilder("attn")
    origin = b.capture("attn", "test")
    s = b.add_input("s", TensorType("float32", (N, 4, 4)))
    v = b.add_input("v", TensorType("float32", (N, 4, 3)))
    p = b.add("softmax", [s], origin, {"axis": -1}, hint="softmax")
    graph = b.finish([b.add("matmul", [p, v], origin, hint="pv")])
    rng = np.random.default_rng(1)
    calib = {"s": rng.standard_normal((16, 4, 4)).astype(np.float32),
             "v": rng.standard_normal((16, 4, 3)).astype(np.float32)}
    result = RepqVitSoftmax(calib, bits=4).run(graph)
    assert [n.op for n in result.graph.nodes] == ["softmax", "matmul"]
    assert result.graph.metadata[LOG2_SOFTMAX_KEY]["softmax"]["bits"] == 4
    assert 0 < result.graph.metadata[LOG2_SOFTMAX_KEY]["softmax"]["delta"] <= 1


def test_query_key_equalization_by_hand() -> None:
    # Q = x Wq^T, K = x Wk^T with Wq = diag(4, 1), Wk = diag(1, 4); calibration x = I gives
    # max|Q| = [4, 1], max|K| = [1, 4] -> s = sqrt(max|K| / max|Q|) = [1/2, 2]:
    # Wq' = diag(s) Wq = diag(2, 2), Wk' = diag(1/s) Wk = diag(2, 2); Q K^T is unchanged.
    b = GraphBuilder("qk")
    origin = b.capture("qk", "test")
    x = b.add_input("x", TensorType("float32", (N, 2, 2)))
    wq = b.add_constant(np.diag([4.0, 1.0]).astype(np.float32), "wq")
    wk = b.add_constant(np.diag([1.0, 4.0]).astype(np.float32), "wk")
    q = b.add("linear", [x, wq], origin, hint="query")
    k = b.add("linear", [x, wk], origin, hint="key")
    kt = b.add("transpose", [k], origin, {"perm": (0, 2, 1)}, hint="kt")
    graph = b.finish([b.add("matmul", [q, kt], origin, hint="logits")])
    result = QueryKeyEqualization({"x": np.eye(2, dtype=np.float32)[None]}).run(graph)
    np.testing.assert_allclose(_constants(result.graph, "query")[0], np.diag([2.0, 2.0]))
    np.testing.assert_allclose(_constants(result.graph, "key")[0], np.diag([2.0, 2.0]))
    assert row(result.stats, "pairs", "logits")["query_channel_spread_after"] == 1.0
    feeds = {"x": np.array([[[0.5, -1.0], [2.0, 3.0]]], np.float32)}
    np.testing.assert_allclose(run_graph(result.graph, feeds)["logits"],
                               run_graph(graph, feeds)["logits"], rtol=1e-6)


def test_default_passes_follow_the_model_family() -> None:
    from lowbit.passes.quantize.pipeline import default_passes
    from tests.graphs import conv_relu_linear

    assert default_passes(conv_relu_linear()) == ("equalize",)
    assert default_passes(conv_relu_linear(), bits=4) == ("equalize",)
    assert default_passes(norm_linear([1, 1], [0, 0], [[1, 1]])) == ()
    assert default_passes(norm_linear([1, 1], [0, 0], [[1, 1]]), bits=4) == ("awq",)
    assert default_passes(linear_relu_linear()) == ()
    assert default_passes(linear_relu_linear(), bits=4) == ()
