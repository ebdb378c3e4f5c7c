"""Outlier channel rearrangement: a hand-made case with a known gain, zero cost on the bundled
models (same ops, shapes and node count; float outputs equal to torch's), declined sites."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.compiler import GraphBuilder, Sym, TensorType
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import get_model
from lowbit.passes import PassManager
from lowbit.passes.quantize.lowering import LoweringOptions, lower_graph
from lowbit.passes.quantize.calibrate import calibrate
from lowbit.passes.rearrange_channels import RearrangeChannels
from lowbit.passes.rearrange_sites import find_site, permute_site
from lowbit.runtime import run_graph
from lowbit.runtime.references import relative_error

RNG = np.random.default_rng(3)
OUTLIERS = (0, 16)


def _planted_graph(rows: int = 8):
    """x[N, 32] -> fc1 (the identity: hidden channel j is x_j) -> fc2 whose 32 columns are +-1
    except columns 0 and 16, which are +-70 (one outlier per block of 16)."""
    builder = GraphBuilder("planted")
    first, second = builder.capture("fc1", "linear"), builder.capture("fc2", "linear")
    x = builder.add_input("x", TensorType("float32", (Sym(1), 32)))
    w1 = np.eye(32, dtype=np.float32)
    signs = RNG.choice([-1.0, 1.0], (rows, 32))
    w2 = signs.copy()
    w2[:, OUTLIERS] *= 70.0
    h = builder.add("linear", [x, builder.add_constant(w1, "w1")], first, hint="fc1")
    y = builder.add("linear", [h, builder.add_constant(w2.astype(np.float32), "w2")], second,
                    hint="fc2")
    return builder.finish([y]), w2


def _uniform(samples: int) -> dict[str, np.ndarray]:
    """Uniform in [-1, 1] with a first sample of ones: every channel's max |x| is exactly 1."""
    x = RNG.uniform(-1.0, 1.0, (samples, 32)).astype(np.float32)
    x[0] = 1.0
    return {"x": x}


def test_planted_outliers_gain_is_known() -> None:
    """W4 blocks of 16. Before: each block holds one outlier, scale 70/7 = 10, so its 15 unit
    entries round to 0: 30 lost per row. After sorting the two outliers share a block; the
    other block is all units (exact), the outlier block loses 14 per row. Every channel has
    the same calibrated range, so the relative error is 30/(30 + 2*4900) before and
    14/(30 + 2*4900) after: a gain of 10 log10(30/14) = 3.31 dB."""
    graph, w2 = _planted_graph()
    calib = _uniform(64)
    result = RearrangeChannels(calib, block_size=16, bits=4).run(graph)
    assert result.changed
    (site,) = result.stats["sites"]
    assert site["permuted"] and site["writers"] == ["fc1"] and site["readers"] == ["fc2"]
    total = 30 + 2 * 4900
    assert site["error_before"]["fc2"] == pytest.approx(30 / total, rel=1e-9)
    assert site["error_after"]["fc2"] == pytest.approx(14 / total, rel=1e-9)
    gain = 10 * np.log10(site["error_before"]["fc2"] / site["error_after"]["fc2"])
    assert gain == pytest.approx(3.31, abs=0.01)
    order = site["permutation"]
    assert {order.index(c) // 16 for c in OUTLIERS} == {1}  # both outliers in one block
    permuted = result.graph
    np.testing.assert_array_equal(permuted.constants[permuted.node("fc2").inputs[1]],
                                  w2.astype(np.float32)[:, order])
    feeds = _uniform(512)
    assert relative_error(run_graph(permuted, feeds)[permuted.outputs[0]],
                          run_graph(graph, feeds)[graph.outputs[0]]) < 1e-6  # float32 order

    def integer_error(float_graph) -> float:
        stats = calibrate(float_graph, calib, progress=False)
        program, _ = lower_graph(float_graph, stats.ranges,
                                 LoweringOptions(bits=4, block_size=16), stats.channel_absmax)
        want = run_graph(float_graph, feeds)[float_graph.outputs[0]]
        got = run_graph(program, feeds)[float_graph.outputs[0]]
        return float(((got - want) ** 2).sum() / (want**2).sum())

    # the integer program (8-bit activations) gains about what the weight error predicts
    assert 10 * np.log10(integer_error(graph) / integer_error(permuted)) > 2.5


def test_no_gain_keeps_the_graph() -> None:
    """All columns alike: no order lowers the error; the site is reported, nothing changes."""
    graph, _ = _planted_graph()
    w2 = graph.constants["w2"]
    flat = graph.copy()
    flat.constants["w2"] = np.sign(w2)
    result = RearrangeChannels(_uniform(16), block_size=16).run(flat)
    assert not result.changed and not result.stats["sites"][0]["permuted"]
    assert result.stats["sites"][0]["reason"].startswith("no sort order")


def _torch_outputs(model, feeds) -> np.ndarray:
    with torch.no_grad():
        module = model.load()
        args = [torch.from_numpy(feeds[name]) for name in model.input_names]
        return module(*args).numpy()


def _random_site_permutations(graph):
    """Every site the bundled graph has, each given a random permutation."""
    permuted, seen, declined, sites = graph.copy(), set(), [], 0
    for node in graph.nodes:
        if node.op != "linear" or node.inputs[0] in seen:
            continue
        site = find_site(graph, node.inputs[0], graph.types[node.inputs[0]].rank - 1)
        seen.update(site.values)
        if site.declined:
            declined.append(site.declined)
            continue
        permute_site(permuted, site, RNG.permutation(site.channels), f"test{sites}")
        sites += 1
    return permuted, sites, declined


@pytest.mark.parametrize("name", ["digits-vit", "minilm"])
def test_zero_cost_on_bundled_models(name: str) -> None:
    """Random permutations of every site: same op histogram, node count and value types;
    float outputs equal to torch's to 1e-5 of their range. digits-vit's residual stream
    (conv patch embedding, position table, adds, LayerNorms, q/k/v/fc1/head columns,
    out/fc2 rows) is one site; MiniLM's reaches the graph output and is declined."""
    model = get_model(name)
    graph = capture_bundled(name)
    permuted, sites, declined = _random_site_permutations(graph)
    assert permuted.op_histogram() == graph.op_histogram()
    assert len(permuted.nodes) == len(graph.nodes)
    assert {v: graph.types[v] for n in graph.nodes for v in n.outputs} == \
        {v: permuted.types[v] for n in permuted.nodes for v in n.outputs}
    assert [n.origin for n in permuted.nodes] == [n.origin for n in graph.nodes]
    permuted.verify()
    feeds = model.sample_inputs(8, "test")
    want = _torch_outputs(model, feeds)
    output = graph.outputs[0]
    assert relative_error(run_graph(graph, feeds)[output], want) < 1e-5
    assert relative_error(run_graph(permuted, feeds)[output], want) < 1e-5
    if name == "digits-vit":
        assert sites == 3  # the stream and the two MLP hidden layers
        assert sum("attention heads" in reason for reason in declined) == 2
    else:
        assert sites == 6  # the six MLP hidden layers
        assert any("graph output 'embedding'" in reason for reason in declined)


def test_pass_on_digits_vit_reports_sites_and_keeps_torch_output() -> None:
    model = get_model("digits-vit")
    graph = capture_bundled("digits-vit")
    calib = model.sample_inputs(64, "calib")
    rearranged, records = PassManager([RearrangeChannels(calib, block_size=16)]).run(graph)
    stats = records[0].stats
    assert len(stats["sites"]) == 3 and len(stats["declined"]) == 2
    for site in stats["sites"]:
        assert set(site["error_before"]) == set(site["readers"])
        if site["permuted"]:
            assert sum(site["error_after"].values()) < sum(site["error_before"].values())
    assert rearranged.op_histogram() == graph.op_histogram()
    feeds = model.sample_inputs(8, "test")
    assert relative_error(run_graph(rearranged, feeds)["logits"],
                          _torch_outputs(model, feeds)) < 1e-5
