"""IR invariants: verify() names what is wrong, save/load is lossless, order and text form."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest

from lowbit.compiler import GraphError, LowbitError, Sym, format_graph, load_graph, save_graph
from lowbit.compiler.dims import broadcast, divide, parse_dim, product
from lowbit.compiler.serialize import graph_to_json
from lowbit.runtime import run_graph
from tests.graphs import conv_relu_linear


def test_roundtrip_is_lossless(tmp_path) -> None:
    graph = conv_relu_linear()
    path = tmp_path / "g.lowbit"
    save_graph(graph, path)
    loaded = load_graph(path)
    assert graph_to_json(loaded) == graph_to_json(graph)
    for name, array in graph.constants.items():
        assert loaded.constants[name].dtype == array.dtype
        assert loaded.constants[name].tobytes() == array.tobytes()
    feeds = {"image": np.random.default_rng(1).standard_normal((3, 2, 6, 6)).astype(np.float32)}
    assert run_graph(loaded, feeds)["logits"].tobytes() == run_graph(graph, feeds)["logits"].tobytes()


def test_roundtrip_keeps_symbolic_attrs_and_origins(tmp_path) -> None:
    graph = conv_relu_linear()
    path = tmp_path / "g.lowbit"
    save_graph(graph, path)
    loaded = load_graph(path)
    assert loaded.types["image"].shape == (Sym(1), 2, 6, 6)
    assert [n.origin for n in loaded.nodes] == [n.origin for n in graph.nodes]
    assert loaded.captured == graph.captured
    assert isinstance(loaded.nodes[0].attrs["strides"], tuple)


def test_verify_names_dangling_input() -> None:
    graph = conv_relu_linear()
    relu = graph.node("relu")
    relu.inputs = ("nowhere",)
    with pytest.raises(GraphError) as caught:
        graph.verify()
    assert caught.value.node == "relu" and caught.value.op == "relu"
    assert "nowhere" in str(caught.value) and "dangling" in str(caught.value)


def test_verify_catches_wrong_order_missing_origin_and_bad_type() -> None:
    graph = conv_relu_linear()
    graph.nodes[0], graph.nodes[1] = graph.nodes[1], graph.nodes[0]
    with pytest.raises(GraphError, match="dangling"):
        graph.verify()
    graph.toposort()
    graph.verify()
    assert [n.op for n in graph.nodes] == ["conv", "relu", "reduce_mean", "linear"]

    graph.nodes[1].origin = frozenset()
    with pytest.raises(GraphError, match="provenance"):
        graph.verify()

    graph = conv_relu_linear()
    graph.types["relu"] = dataclasses.replace(graph.types["relu"], dtype="float64")
    with pytest.raises(GraphError, match="inference gives"):
        graph.verify()


def test_toposort_detects_cycle() -> None:
    graph = conv_relu_linear()
    graph.node("conv").inputs = ("relu",) + graph.node("conv").inputs[1:]
    with pytest.raises(GraphError, match="cycle"):
        graph.toposort()


def test_text_dump_shows_types_attrs_and_origin() -> None:
    text = format_graph(conv_relu_linear())
    assert "input  %image : float32[N, 2, 6, 6]" in text
    assert "%conv = conv(%image, @conv.w, @conv.b) {strides=(1, 1)" in text
    assert "%logits = linear(%reduce_mean, @fc.w, _) : float32[N, 4]  # from fc" in text


def test_load_rejects_corrupt_and_foreign_files(tmp_path) -> None:
    good = tmp_path / "g.lowbit"
    save_graph(conv_relu_linear(), good)
    truncated = tmp_path / "t.lowbit"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(LowbitError, match="unreadable") as caught:
        load_graph(truncated)
    assert caught.value.file == str(truncated)
    foreign = tmp_path / "f.lowbit"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(LowbitError):
        load_graph(foreign)


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch) -> None:
    path = tmp_path / "g.lowbit"
    save_graph(conv_relu_linear(), path)
    before = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        save_graph(conv_relu_linear(seed=1), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.lowbit"]
    assert zipfile.is_zipfile(path)


def test_symbolic_dims_algebra() -> None:
    assert product((Sym(1), 12, 4)) == Sym(48)
    assert divide(Sym(48), 4) == Sym(12)
    assert divide(Sym(12), Sym(1)) == 12
    assert broadcast((Sym(1), 1, 4), (3, 1)) == (Sym(1), 3, 4)
    assert parse_dim("12*N") == Sym(12) and parse_dim(str(Sym(1))) == Sym(1)
    with pytest.raises(ValueError):
        divide(Sym(5), 2)
