"""ONNX import against onnxruntime, at a batch size other than the export's.

Torch models (a CNN, an MLP, a transformer block) are exported with both torch exporters
(dynamo and TorchScript, dynamic batch); hand-made models cover shape subgraphs that fold at
import time and the rarer op variants. Errors name the file, the ONNX node and its op type.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from lowbit.compiler import LowbitError, Sym, UnsupportedOpError, load_graph, save_graph
from lowbit.compiler.importers.onnx_import import import_onnx
from lowbit.runtime import run_graph
from lowbit.runtime.references import relative_error, run_onnxruntime

EXPORT_BATCH, RUN_BATCH = 2, 3
TOLERANCE = 1e-5


# -- torch models ---------------------------------------------------------------------------

class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.fc = nn.Linear(8 * 2 * 2, 10)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = F.relu6(self.grouped(x))
        x = F.relu(self.bn2(self.depthwise(x)))
        x = self.pool(F.max_pool2d(x, 2))
        mean = F.adaptive_avg_pool2d(x, 1).flatten(1)
        peak = F.adaptive_max_pool2d(x, 1).flatten(1)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 2), 1)
        return self.fc(x) + self.head(mean) - self.head(peak)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.a(x))
        x = F.silu(self.b(x)) + torch.sigmoid(x) * torch.tanh(x)
        return self.c(F.gelu(x, approximate="tanh"))


class Block(nn.Module):
    """Embedding, layer norms, explicit attention, a class token and a manual normalization."""

    def __init__(self, vocab: int = 50, dim: int = 16, heads: int = 2, seq: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(1, seq, dim))
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff1, self.ff2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.heads, self.dim = heads, dim

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq = ids.shape
        x = self.embed(ids) + self.position[:, :seq]
        q, k, v = self.qkv(self.ln1(x)).split(self.dim, dim=-1)
        head = self.dim // self.heads
        q = q.reshape(batch, seq, self.heads, head).transpose(1, 2)
        k = k.reshape(batch, seq, self.heads, head).permute(0, 2, 3, 1)
        v = v.reshape(batch, seq, self.heads, head).transpose(1, 2)
        attn = torch.softmax((q @ k) / (head ** 0.5), dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(batch * seq, self.dim)
        x = x + self.proj(o).view(batch, seq, self.dim)
        x = torch.cat([self.cls.expand(batch, -1, -1), x, x.new_zeros(batch, 1, self.dim)], 1)
        x = x + self.ff2(F.gelu(self.ff1(self.ln2(x))))
        var = (x - x.mean(-1, keepdim=True)).pow(2).mean(-1, keepdim=True)
        x = x / torch.sqrt(var + 1e-5)
        x = torch.cat([x[:, :1], x[:, 1:] * 2.0], dim=1)
        return x[:, 0], x[:, 1:, :8]


def _randomize_bn(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _image(batch: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)


def _features(batch: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((batch, 16)).astype(np.float32)


def _ids(batch: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 50, (batch, 6)).astype(np.int64)


TORCH_MODELS: dict[str, tuple[Callable[[], nn.Module],
                              Callable[[int, np.random.Generator], np.ndarray]]] = {
    "cnn": (lambda: _randomize_bn(ConvNet()), _image),
    "mlp": (lambda: MLP().eval(), _features),
    "transformer": (lambda: Block().eval(), _ids),
}


def _export(name: str, exporter: str, directory: Path) -> Path:
    make_model, make_input = TORCH_MODELS[name]
    torch.manual_seed(0)
    model = make_model()
    sample = torch.from_numpy(make_input(EXPORT_BATCH, np.random.default_rng(0)))
    path = directory / f"{name}_{exporter}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(model, (sample,), str(path), dynamo=True, input_names=["x"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},),
                              opset_version=18, verbose=False)
        else:
            torch.onnx.export(model, (sample,), str(path), dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    directory = tmp_path_factory.mktemp("onnx")
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, exporter: str) -> Path:
        if (name, exporter) not in cache:
            cache[name, exporter] = _export(name, exporter, directory)
        return cache[name, exporter]

    return get


def _assert_matches_onnxruntime(path: Path, feeds: dict[str, np.ndarray]) -> None:
    graph = import_onnx(path)
    want = run_onnxruntime(str(path), feeds)
    got = run_graph(graph, feeds)
    assert graph.outputs == list(want), "graph outputs keep the ONNX output names"
    for name, reference in want.items():
        error = relative_error(got[name], reference)
        assert error <= TOLERANCE, f"{path.name} output {name}: relative error {error:.3g}"


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", list(TORCH_MODELS))
def test_torch_export_matches_onnxruntime(exported: Callable[[str, str], Path], name: str,
                                          exporter: str) -> None:
    path = exported(name, exporter)
    feeds = {"x": TORCH_MODELS[name][1](RUN_BATCH, np.random.default_rng(1))}
    _assert_matches_onnxruntime(path, feeds)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_imported_graph_structure(exported: Callable[[str, str], Path], exporter: str) -> None:
    path = exported("transformer", exporter)
    graph = import_onnx(path)
    model = onnx.load(str(path))
    assert graph.inputs == ["x"] and str(graph.types["x"]) == "int64[N, 6]"
    assert graph.metadata["source"] == "onnx" and graph.metadata["path"] == str(path)
    assert graph.metadata["opset"] == (18 if exporter == "dynamo" else 17)
    ops = graph.op_histogram()
    # constant-weight MatMuls become linear; shape subgraphs fold away entirely
    assert ops["linear"] == 4 and ops["matmul"] == 2 and ops["gather"] == 2
    assert set(ops) == {"add", "sub", "mul", "div", "pow", "sqrt", "erf", "linear", "matmul",
                        "layer_norm", "softmax", "reduce_mean", "reshape", "transpose",
                        "slice", "concat", "gather", "expand"}
    reshapes = [n.attrs["shape"] for n in graph.nodes if n.op == "reshape"]
    assert (Sym(6), 16) in reshapes and (Sym(1), 6, 2, 8) in reshapes
    captured_ops = {c.source_op for c in graph.captured.values()}
    assert captured_ops <= {n.op_type for n in model.graph.node}
    assert graph.covered_origins() == set(graph.captured)


def test_saved_graph_runs_the_same(exported: Callable[[str, str], Path],
                                   tmp_path: Path) -> None:
    graph = import_onnx(exported("transformer", "torchscript"))
    save_graph(graph, tmp_path / "block.lowbit")
    feeds = {"x": _ids(RUN_BATCH, np.random.default_rng(2))}
    again = run_graph(load_graph(tmp_path / "block.lowbit"), feeds)
    for name, array in run_graph(graph, feeds).items():
        np.testing.assert_array_equal(again[name], array)


# -- hand-made models -----------------------------------------------------------------------

def _info(name: str, shape: list | None, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[str],
           initializers: dict[str, np.ndarray] | None = None, opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "handmade", inputs, [_info(name, None) for name in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, name=f"{op.lower()}_{outputs[0]}", **attrs)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def _shape_chain() -> tuple[onnx.ModelProto, dict[str, tuple]]:
    """Reshape targets, fills and broadcasts computed from ``Shape`` (batch-dependent)."""
    nodes = [
        _node("Shape", ["x"], ["shape"]),
        _node("Gather", ["shape", "zero"], ["batch"], axis=0),
        _node("Gather", ["shape", "one"], ["rows"], axis=0),
        _node("Gather", ["shape", "two"], ["cols"], axis=0),
        _node("Mul", ["rows", "cols"], ["features"]),
        _node("Unsqueeze", ["batch", "axis0"], ["batch1"]),
        _node("Unsqueeze", ["features", "axis0"], ["features1"]),
        _node("Concat", ["batch1", "features1"], ["flat_shape"], axis=0),
        _node("Reshape", ["x", "flat_shape"], ["flat"]),
        _node("Mul", ["batch1", "four"], ["batch4"]),
        _node("Div", ["batch4", "two1"], ["batch2"]),
        _node("Concat", ["batch2", "minus1"], ["split_shape"], axis=0),
        _node("Reshape", ["flat", "split_shape"], ["halves"]),
        _node("Reshape", ["halves", "shape"], ["back"]),
        _node("ConstantOfShape", ["shape"], ["ones"],
              value=numpy_helper.from_array(np.array([1.5], np.float32))),
        _node("Add", ["back", "ones"], ["shifted"]),
        _node("Range", ["zero_s", "cols_s", "one_s"], ["steps"]),
        _node("Cast", ["steps"], ["steps_f"], to=TensorProto.FLOAT),
        _node("Add", ["shifted", "steps_f"], ["ramped"]),
        _node("Equal", ["flat_shape", "minus1"], ["is_free"]),
        _node("Where", ["is_free", "one", "flat_shape"], ["target"]),
        _node("Expand", ["bias", "target"], ["bias_n"]),
        _node("Flatten", ["ramped"], ["ramped_flat"], axis=1),
        _node("Add", ["ramped_flat", "bias_n"], ["out"]),
        _node("Size", ["x"], ["count"]),
        _node("Identity", ["x"], ["same"]),
    ]
    scalar = lambda v: np.array(v, np.int64)  # noqa: E731
    inits = {"zero": scalar(0), "one": scalar(1), "two": scalar(2), "axis0": _i64(0),
             "four": _i64(4), "two1": _i64(2), "minus1": _i64(-1), "zero_s": scalar(0),
             "cols_s": scalar(5), "one_s": scalar(1),
             "bias": np.linspace(-1, 1, 20).astype(np.float32).reshape(1, 20)}
    model = _model(nodes, [_info("x", ["batch", 4, 5])], ["out", "halves", "same"], inits)
    return model, {"x": (4, 5)}


def _vision_ops() -> tuple[onnx.ModelProto, dict[str, tuple]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((6, 2, 2, 2)).astype(np.float32)
    nodes = [
        _node("Conv", ["x", "w"], ["c1"], auto_pad="SAME_UPPER", strides=[2, 2]),
        _node("Conv", ["x", "w"], ["c2"], auto_pad="SAME_LOWER", strides=[2, 2]),
        _node("Conv", ["c1", "w2", "b2"], ["c3"], group=3, pads=[1, 0, 1, 1],
              dilations=[1, 2]),
        _node("HardSwish", ["c1"], ["hs"]),
        _node("HardSigmoid", ["c2"], ["hsig"], alpha=0.3, beta=0.4),
        _node("LeakyRelu", ["c3"], ["lr"], alpha=0.1),
        _node("MaxPool", ["hs"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        _node("MaxPool", ["hsig"], ["mp2"], kernel_shape=[2, 2], dilations=[2, 2],
              pads=[1, 1, 1, 1]),
        _node("AveragePool", ["hs"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
              count_include_pad=1),
        _node("AveragePool", ["hsig"], ["ap2"], kernel_shape=[3, 3], strides=[2, 2],
              ceil_mode=1),  # no partial window: ceil_mode changes nothing here
        _node("GlobalMaxPool", ["lr"], ["gmp"]),
        _node("GlobalAveragePool", ["lr"], ["gap"]),
        _node("Flatten", ["mp"], ["mp_flat"], axis=-3),
        _node("Softmax", ["mp_flat"], ["sm"], axis=1),
        _node("LogSoftmax", ["ap"], ["lsm"], axis=1),
        _node("ReduceSum", ["mp2", "axes23"], ["rs"], keepdims=0),
        _node("ReduceMin", ["ap2", "axes23"], ["rmin"], keepdims=1),
        _node("Add", ["rmin", "gmp"], ["pooled"]),
        _node("Sub", ["pooled", "gap"], ["pooled2"]),
    ]
    inits = {"w": w, "w2": w2, "b2": rng.standard_normal(6).astype(np.float32),
             "axes23": _i64(2, 3)}
    model = _model(nodes, [_info("x", ["batch", 3, 9, 9])],
                   ["sm", "lsm", "rs", "pooled2"], inits)
    return model, {"x": (3, 9, 9)}


def _matrix_ops() -> tuple[onnx.ModelProto, dict[str, tuple]]:
    rng = np.random.default_rng(1)
    f32 = np.float32
    nodes = [
        _node("Transpose", ["x"], ["xt"]),
        _node("Gemm", ["xt", "w", "c_row"], ["g1"], transA=1, alpha=0.5, beta=2.0),
        _node("Gemm", ["x", "w_t", "y"], ["g2"], transB=1, beta=0.5),
        _node("ReduceMean", ["z", "axes0"], ["b_act"], keepdims=0),
        _node("Gemm", ["x", "b_act"], ["g3"], alpha=2.0),
        _node("MatMul", ["x", "v"], ["mv"]),
        _node("ReduceMax", ["x", "axes0"], ["x_max"], keepdims=0),
        _node("MatMul", ["x_max", "w"], ["vm"]),
        _node("MatMul", ["x_max", "b_act"], ["vm2"]),
        _node("MatMul", ["x_max", "v"], ["dot"]),
        _node("Unsqueeze", ["mv", "axes1"], ["mv2"]),
        _node("Max", ["g1", "g2", "g3"], ["mx"]),
        _node("Min", ["g1", "g2"], ["mn"]),
        _node("Sum", ["mx", "mn", "vm"], ["sm"]),
        _node("Mean", ["sm", "vm2", "mv2"], ["mean"]),
        _node("Mul", ["mean", "dot"], ["out"]),
        _node("MatMul", ["x3", "w3"], ["batched"]),
        _node("Transpose", ["x3"], ["x3t"], perm=[0, 1, 3, 2]),
        _node("MatMul", ["x3", "x3t"], ["gram"]),
    ]
    inits = {"w": rng.standard_normal((5, 3)).astype(f32),
             "w_t": rng.standard_normal((3, 5)).astype(f32),
             "c_row": rng.standard_normal((1, 3)).astype(f32),
             "v": rng.standard_normal(5).astype(f32),
             "w3": rng.standard_normal((2, 4, 3)).astype(f32),
             "axes0": _i64(0), "axes1": _i64(1)}
    inputs = [_info("x", ["batch", 5]), _info("y", ["batch", 3]), _info("z", ["batch", 5, 3]),
              _info("x3", ["batch", 2, 3, 4])]
    model = _model(nodes, inputs, ["out", "batched", "gram"], inits)
    return model, {"x": (5,), "y": (3,), "z": (5, 3), "x3": (2, 3, 4)}


def _misc_ops() -> tuple[onnx.ModelProto, dict[str, tuple]]:
    """Opset 20: Gelu, Split, Tile, Squeeze, Clip, Cast, Pow with an int exponent, Where..."""
    rng = np.random.default_rng(2)
    nodes = [
        _node("Split", ["x", "sizes"], ["s0", "s1", "s2"], axis=1),
        _node("Split", ["x"], ["t0", "t1"], axis=2, num_outputs=2),
        _node("Gelu", ["s0"], ["g"], approximate="tanh"),
        _node("Gelu", ["s1"], ["g2"]),
        _node("Clip", ["s2", "", "hi"], ["clipped"]),
        _node("Clip", ["t0", "lo", "hi"], ["clipped2"]),
        _node("Tile", ["g", "reps"], ["tiled"]),
        _node("Concat", ["tiled", "g2"], ["cat"], axis=1),
        _node("Abs", ["cat"], ["a"]),
        _node("Sqrt", ["a"], ["sq"]),
        _node("Exp", ["clipped"], ["e"]),
        _node("Log", ["e"], ["l"]),
        _node("Neg", ["l"], ["n"]),
        _node("Reciprocal", ["e"], ["r"]),
        _node("Pow", ["r", "three"], ["p"]),
        _node("Cast", ["p"], ["p64"], to=TensorProto.DOUBLE),
        _node("CastLike", ["p64", "x"], ["p32"]),
        _node("Where", ["mask", "p32", "n"], ["w"]),
        _node("Dropout", ["w"], ["d"]),
        _node("ReduceMean", ["d", "axes1"], ["red"], keepdims=1),
        _node("Squeeze", ["red", "axes1"], ["sq1"]),
        _node("Unsqueeze", ["sq1", "axes_neg"], ["unsq"]),
        _node("Mul", ["unsq", "sq"], ["mixed"]),
        _node("Expand", ["row", "exp_shape"], ["rows"]),
        _node("Add", ["mixed", "rows"], ["mixed2"]),
        _node("Slice", ["mixed2", "st", "en", "ax", "stp"], ["sl"]),
        _node("Sigmoid", ["clipped2"], ["sg"]),
        _node("Tanh", ["t1"], ["th"]),
        _node("Erf", ["th"], ["ef"]),
        _node("Relu", ["ef"], ["rl"]),
        _node("Sub", ["sg", "rl"], ["diff"]),
        _node("Div", ["diff", "two"], ["half"]),
        _node("Transpose", ["emb"], ["emb_t"]),
        _node("Gather", ["emb_t", "ids"], ["looked"], axis=1),
    ]
    inits = {"sizes": _i64(1, 2, 1), "hi": np.array(0.5, np.float32),
             "lo": np.array(-0.25, np.float32), "reps": _i64(1, 2, 1),
             "three": np.array(3, np.int32), "axes1": _i64(1), "axes_neg": _i64(-2),
             "mask": rng.random((1, 4, 6)) > 0.5, "row": np.linspace(0, 1, 6, dtype=np.float32),
             "exp_shape": _i64(1, 1, 6), "st": _i64(1, -1), "en": _i64(2**62, -7),
             "ax": _i64(1, 2), "stp": _i64(1, -2), "two": np.array(2.0, np.float32),
             "emb": rng.standard_normal((7, 10)).astype(np.float32)}
    inputs = [_info("x", ["batch", 4, 6]), _info("ids", ["batch", 3], TensorProto.INT64)]
    model = _model(nodes, inputs, ["sl", "half", "looked"], inits, opset=20)
    return model, {"x": (4, 6), "ids": (3,)}


def _rule_less_ops_on_constants() -> tuple[onnx.ModelProto, dict[str, tuple]]:
    """Ops lowbit has no rule for fold when their inputs are known (evaluated by onnxruntime)."""
    nodes = [
        _node("GatherElements", ["table", "index"], ["picked"], axis=1),
        _node("Cast", ["picked"], ["picked_f"], to=TensorProto.FLOAT),
        _node("Trilu", ["square"], ["lower"], upper=0),
        _node("Mod", ["picked", "three"], ["remainder"]),
        _node("Cast", ["remainder"], ["remainder_f"], to=TensorProto.FLOAT),
        _node("MatMul", ["x", "lower"], ["mixed"]),
        _node("Add", ["mixed", "picked_f"], ["shifted"]),
        _node("Mul", ["shifted", "remainder_f"], ["out"]),
    ]
    inits = {"table": np.arange(200, dtype=np.int64).reshape(1, 200) % 17,
             "index": _i64(3, 150, 199, 0, 77, 100).reshape(1, 6),
             "square": np.ones((6, 6), np.float32), "three": _i64(3)}
    return _model(nodes, [_info("x", ["batch", 6])], ["out"], inits), {"x": (6,)}


HANDMADE = {"shape_chain": _shape_chain, "vision_ops": _vision_ops, "matrix_ops": _matrix_ops,
            "misc_ops": _misc_ops, "rule_less_ops_on_constants": _rule_less_ops_on_constants}


@pytest.mark.parametrize("name", list(HANDMADE))
def test_handmade_model_matches_onnxruntime(tmp_path: Path, name: str) -> None:
    model, shapes = HANDMADE[name]()
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(3)
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    feeds = {n: (rng.integers(0, 7, (RUN_BATCH,) + s) if inputs[n] == TensorProto.INT64
                 else rng.standard_normal((RUN_BATCH,) + s).astype(np.float32))
             for n, s in shapes.items()}
    _assert_matches_onnxruntime(path, feeds)


def test_shape_chain_folds_to_plain_reshapes(tmp_path: Path) -> None:
    model, _ = _shape_chain()
    onnx.save(model, str(tmp_path / "chain.onnx"))
    graph = import_onnx(tmp_path / "chain.onnx")
    reshapes = [n.attrs["shape"] for n in graph.nodes if n.op == "reshape"]
    assert (Sym(1), 20) in reshapes and (Sym(2), 10) in reshapes
    assert graph.op_histogram()["expand"] == 2  # ConstantOfShape and Expand to [N, 20]
    assert graph.outputs == ["out", "halves", "same"]  # "same" is a copy of the input


def test_output_names_are_sanitized_and_recorded(tmp_path: Path) -> None:
    nodes = [_node("Relu", ["in:0"], ["out/relu:0"]), _node("Sigmoid", ["in:0"], ["hidden"]),
             _node("Identity", ["hidden"], ["final"])]
    model = _model(nodes, [_info("in:0", ["batch", 3])], ["out/relu:0", "final"])
    onnx.save(model, str(tmp_path / "names.onnx"))
    graph = import_onnx(tmp_path / "names.onnx")
    assert graph.inputs == ["in_0"] and graph.outputs == ["out_relu_0", "final"]
    assert graph.metadata["onnx_names"] == {"in:0": "in_0", "out/relu:0": "out_relu_0"}
    assert [n.op for n in graph.nodes] == ["relu", "sigmoid"]  # Identity renamed, not copied


def test_local_functions_are_inlined(tmp_path: Path) -> None:
    function = helper.make_function(
        "custom", "ScaleShift", ["a", "s"], ["out"],
        [helper.make_node("Mul", ["a", "s"], ["m"]), helper.make_node("Add", ["m", "s"], ["out"])],
        opset_imports=[helper.make_opsetid("", 18)])
    model = _model([helper.make_node("ScaleShift", ["x", "s"], ["y"], domain="custom")],
                   [_info("x", ["batch", 3])], ["y"], {"s": np.float32([1.0, 2.0, 3.0])})
    model.opset_import.append(helper.make_opsetid("custom", 1))
    model.functions.append(function)
    path = tmp_path / "function.onnx"
    onnx.save(model, str(path))
    _assert_matches_onnxruntime(path, {"x": np.ones((RUN_BATCH, 3), np.float32)})


# -- errors ---------------------------------------------------------------------------------

def test_unsupported_op_names_node_and_op(tmp_path: Path) -> None:
    nodes = [_node("Relu", ["x"], ["r"]),
             helper.make_node("Det", ["r"], ["d"], name="my_determinant")]
    path = tmp_path / "det.onnx"
    onnx.save(_model(nodes, [_info("x", ["batch", 3, 3])], ["d"]), str(path))
    with pytest.raises(UnsupportedOpError) as caught:
        import_onnx(path)
    message = str(caught.value)
    assert "my_determinant" in message and "Det" in message and str(path) in message
    assert caught.value.node == "my_determinant" and caught.value.op == "Det"


def test_rule_less_op_on_activations_is_unsupported(tmp_path: Path) -> None:
    nodes = [helper.make_node("IsNaN", ["x"], ["nan"], name="nan_check"),
             _node("Where", ["nan", "zero", "x"], ["y"])]
    path = tmp_path / "isnan.onnx"
    onnx.save(_model(nodes, [_info("x", ["batch", 3])], ["y"],
                     {"zero": np.float32(0.0)}), str(path))
    with pytest.raises(UnsupportedOpError, match="IsNaN is not supported") as caught:
        import_onnx(path)
    assert caught.value.node == "nan_check"


def test_shape_inference_failure_names_onnx_node(tmp_path: Path) -> None:
    nodes = [helper.make_node("Add", ["a", "b"], ["c"], name="bad_add")]
    path = tmp_path / "mismatch.onnx"
    inputs = [_info("a", ["batch", 3]), _info("b", ["batch", 4])]
    onnx.save(_model(nodes, inputs, ["c"]), str(path))
    with pytest.raises(LowbitError, match="shape inference failed") as caught:
        import_onnx(path)
    assert caught.value.node == "bad_add" and caught.value.op == "Add"
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_value_defined_twice_is_refused(tmp_path: Path) -> None:
    nodes = [_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["x"], ["y"], name="again")]
    path = tmp_path / "twice.onnx"
    onnx.save(_model(nodes, [_info("x", ["batch", 3])], ["y"]), str(path))
    with pytest.raises(LowbitError, match="already defined") as caught:
        import_onnx(path)
    assert caught.value.node == "again"


def test_truncated_file_is_reported(exported: Callable[[str, str], Path],
                                    tmp_path: Path) -> None:
    data = exported("cnn", "torchscript").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LowbitError, match="corrupt or truncated") as caught:
        import_onnx(path)
    assert str(path) in str(caught.value)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\x00not an onnx model at all" * 10)
    with pytest.raises(LowbitError, match="corrupt or truncated") as caught:
        import_onnx(garbage)
    assert str(garbage) in str(caught.value)
    with pytest.raises(LowbitError, match="no such file") as caught:
        import_onnx(tmp_path / "missing.onnx")
    assert "missing.onnx" in str(caught.value)


def test_old_opset_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.onnx"
    onnx.save(_model([_node("Relu", ["x"], ["y"])], [_info("x", ["batch", 3])], ["y"],
                     opset=11), str(path))
    with pytest.raises(LowbitError, match="opset 11") as caught:
        import_onnx(path)
    assert str(path) in str(caught.value)


def test_average_pool_ceil_mode_with_partial_window_is_refused(tmp_path: Path) -> None:
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], name="ceil_pool", kernel_shape=[2],
                              strides=[2], ceil_mode=1)]
    path = tmp_path / "ceil.onnx"
    onnx.save(_model(nodes, [_info("x", ["batch", 2, 5])], ["y"]), str(path))
    with pytest.raises(UnsupportedOpError, match="ceil_mode") as caught:
        import_onnx(path)
    assert caught.value.node == "ceil_pool"


def test_undecidable_batch_comparison_is_refused(tmp_path: Path) -> None:
    nodes = [_node("Shape", ["x"], ["shape"]),
             helper.make_node("Equal", ["shape", "four"], ["is_four"], name="batch_is_four"),
             _node("Where", ["is_four", "shape", "shape"], ["target"]),
             _node("Reshape", ["x", "target"], ["y"])]
    path = tmp_path / "guard.onnx"
    onnx.save(_model(nodes, [_info("x", ["batch", 4])], ["y"], {"four": _i64(4, 4)}), str(path))
    with pytest.raises(LowbitError, match="cannot decide") as caught:
        import_onnx(path)
    assert caught.value.node == "batch_is_four"


def test_symbolic_non_batch_dim_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seq.onnx"
    onnx.save(_model([_node("Relu", ["x"], ["y"])], [_info("x", ["batch", "seq"])], ["y"]),
              str(path))
    with pytest.raises(LowbitError, match="dimension 1 is symbolic"):
        import_onnx(path)


def test_runtime_value_as_reshape_target_is_refused(tmp_path: Path) -> None:
    nodes = [_node("Cast", ["s"], ["target"], to=TensorProto.INT64),
             _node("Reshape", ["x", "target"], ["y"])]
    path = tmp_path / "dynamic_reshape.onnx"
    onnx.save(_model(nodes, [_info("x", ["batch", 4]), _info("s", [2])], ["y"]), str(path))
    with pytest.raises(UnsupportedOpError, match="known at import time") as caught:
        import_onnx(path)
    assert caught.value.op == "Reshape"
