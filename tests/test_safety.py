"""No code execution from inputs, and no writes outside the requested folder.

Invariants (issue 11): lowbit never unpickles, never evaluates text as code and loads torch
weights only with ``weights_only=True`` (an AST scan of the whole package, whose rules are
themselves tested on snippets); a pickle smuggled into a ``.lowbit`` file is refused without
running; ONNX external data cannot point outside the model's folder; names inside a model
(``../../x``, ``/abs``) never reach the file system as paths.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import lowbit
from lowbit.cli.main import main
from lowbit.compiler import LowbitError, load_graph, save_graph
from lowbit.compiler.importers import capture
from tests.graphs import conv_relu_linear

PACKAGE = Path(lowbit.__file__).parent
FORBIDDEN_MODULES = frozenset({"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib",
                               "marshal", "shelve", "yaml", "torch.package"})


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
               for k in call.keywords)


@dataclass(frozen=True)
class CallRule:
    """A call the package must not make: ``matches(dotted name, call)`` flags it."""

    what: str
    matches: Callable[[str, ast.Call], bool]


CALL_RULES: tuple[CallRule, ...] = (
    CallRule("eval/exec/compile of text", lambda name, call: name in {"eval", "exec", "compile",
                                                                      "__import__"}),
    CallRule("torch.load without weights_only=True",
             lambda name, call: name.endswith("torch.load")
             and not _keyword_is(call, "weights_only", True)),
    CallRule("np.load without allow_pickle=False",
             lambda name, call: name in {"np.load", "numpy.load"}
             and not _keyword_is(call, "allow_pickle", False)),
    CallRule("torch.jit.load (runs TorchScript from the file)",
             lambda name, call: name.endswith("jit.load")),
    CallRule("pandas.read_pickle", lambda name, call: name.endswith("read_pickle")),
    CallRule("a shell command", lambda name, call: name in {"os.system", "os.popen"}
             or (name.startswith("subprocess.") and _keyword_is(call, "shell", True))),
)


def violations(source: str, where: str = "<snippet>") -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{where}:{node.lineno}: imports {a.name}" for a in node.names
                      if a.name in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in FORBIDDEN_MODULES:
            found.append(f"{where}:{node.lineno}: imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            found += [f"{where}:{node.lineno}: {rule.what}" for rule in CALL_RULES
                      if rule.matches(name, node)]
    return found


def _package_sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if "tests" not in p.relative_to(PACKAGE).parts
                  and ".venv" not in p.relative_to(PACKAGE).parts)


def test_package_never_unpickles_or_evaluates_code() -> None:
    sources = _package_sources()
    assert len(sources) > 100  # the scan covers the package, not an empty folder
    found = [v for path in sources
             for v in violations(path.read_text(), str(path.relative_to(PACKAGE)))]
    assert found == []


@pytest.mark.parametrize("snippet", [
    "import pickle", "from joblib import load", "import torch.package",
    "eval('1')", "exec(text)", "compile(src, 'f', 'exec')", "__import__(name)",
    "torch.load(f)", "torch.load(f, weights_only=False)", "np.load(f)",
    "numpy.load(f, allow_pickle=True)", "torch.jit.load(f)", "pd.read_pickle(f)",
    "os.system(cmd)", "subprocess.run(cmd, shell=True)",
])
def test_the_scan_flags_each_forbidden_form(snippet: str) -> None:
    assert len(violations(snippet)) == 1


@pytest.mark.parametrize("snippet", [
    "torch.load(f, weights_only=True)", "np.load(f, allow_pickle=False)", "model.eval()",
    "tvm.compile(mod, target)", "subprocess.run([sys.executable, '-c', 'pass'])",
])
def test_the_scan_accepts_safe_forms(snippet: str) -> None:
    assert violations(snippet) == []


# -- a pickle inside a .lowbit file ------------------------------------------------------------

class _Marker:
    """Unpickling this object creates a file: proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.path,))


def test_pickled_constant_in_a_graph_file_is_refused_without_running(tmp_path: Path) -> None:
    good = tmp_path / "good.lowbit"
    save_graph(conv_relu_linear(), good)
    marker = tmp_path / "pickle-ran"
    with np.load(good, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    payload = np.empty(1, dtype=object)
    payload[0] = _Marker(marker)
    arrays["const_0"] = payload
    bad = tmp_path / "bad.lowbit"
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # savez pickles object arrays: the hostile file
    bad.write_bytes(buffer.getvalue())
    with pytest.raises(LowbitError, match="unreadable lowbit graph file"):
        load_graph(bad)
    assert not marker.exists()


# -- names inside a model are not paths --------------------------------------------------------

def _graph_file_with_names(tmp_path: Path, rename: dict[str, str]) -> Path:
    path = tmp_path / "tiny.lowbit"
    save_graph(conv_relu_linear(), path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    text = arrays["graph_json"].tobytes().decode()
    for old, new in rename.items():
        text = text.replace(json.dumps(old), json.dumps(new))
    arrays["graph_json"] = np.frombuffer(text.encode(), dtype=np.uint8)
    with open(path, "wb") as handle:  # a file object: np.savez would append ".npz" to a name
        np.savez(handle, **arrays)
    return path


@pytest.mark.parametrize("name", ["../../evil", "/tmp/evil", "a\\b", "x y"])
def test_graph_file_with_a_path_for_a_name_is_refused(tmp_path: Path, name: str) -> None:
    path = _graph_file_with_names(tmp_path, {"image": name})
    with pytest.raises(LowbitError, match="unsafe or invalid name"):
        load_graph(path)


def test_graph_file_with_plain_renamed_values_still_loads(tmp_path: Path) -> None:
    """The rewrite above really renames (so the refusal is about the name, not the edit)."""
    graph = load_graph(_graph_file_with_names(tmp_path, {"image": "picture.v2"}))
    assert graph.inputs == ["picture.v2"]


def _relu_model(value_name: str, graph_name: str) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), f"{value_name}.w")
    nodes = [helper.make_node("MatMul", [value_name, f"{value_name}.w"], ["hidden/../../h"]),
             helper.make_node("Relu", ["hidden/../../h"], ["../out"])]
    graph = helper.make_graph(
        nodes, graph_name,
        [helper.make_tensor_value_info(value_name, TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("../out", TensorProto.FLOAT, ["N", 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_hostile_value_names_never_become_paths(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Capture, save and compile a model whose names are paths: every file lands where it was
    asked to, with the fixed names of the compile directory."""
    work = tmp_path / "work"
    work.mkdir()
    model = work / "model.onnx"
    onnx.save(_relu_model("../../../x", "../../graph"), model)
    graph = capture(str(model))
    assert all("/" not in name for name in [*graph.types, *(n.name for n in graph.nodes)])
    assert graph.metadata["onnx_names"]["../out"] == graph.outputs[0]
    rng = np.random.default_rng(0)
    np.savez(work / "calib.npz", **{graph.inputs[0]: rng.standard_normal((8, 3), np.float32)})
    before = _listing(tmp_path)
    assert main(["capture", str(model), "--out", str(work / "g.lowbit")]) == 0
    assert main(["compile", str(model), "--calib", str(work / "calib.npz"), "--target", "none",
                 "--out", str(work / "out")]) == 0, capsys.readouterr().err
    created = _listing(tmp_path) - before
    assert {p.split("/")[0] for p in created} == {"work"}
    assert {p for p in created if not p.startswith("work/out/")} == {"work/g.lowbit",
                                                                    "work/out"}
    assert load_graph(work / "g.lowbit").inputs == graph.inputs


@pytest.mark.parametrize("location", ["../../secret.bin", "ABSOLUTE", "link.bin",
                                      "sub/../../../secret.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path,
                                                           location: str) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(9, 7.0, np.float32).tobytes())
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "link.bin").symlink_to(secret)
    model = _relu_model("x", "g")
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", str(secret) if location == "ABSOLUTE" else location
    onnx.save(model, folder / "model.onnx")
    with pytest.raises(LowbitError, match="model.onnx"):
        capture(str(folder / "model.onnx"))


def test_external_data_inside_the_model_folder_is_read(tmp_path: Path) -> None:
    """The refusals above are about the location: a weight beside the model loads."""
    model = _relu_model("x", "g")
    onnx.save(model, tmp_path / "model.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    graph = capture(str(tmp_path / "model.onnx"))
    (weight,) = graph.constants.values()
    np.testing.assert_array_equal(weight, np.eye(3, dtype=np.float32))


def test_in_memory_model_with_unloaded_external_data_is_refused(tmp_path: Path) -> None:
    """Without a file there is no folder to confine reads to: the import refuses, rather than
    resolving the location against the working directory."""
    from lowbit.compiler.importers.onnx_import import import_onnx_model

    model = _relu_model("x", "g")
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        (tmp_path / "weights.bin").write_bytes(np.eye(3, dtype=np.float32).tobytes())
        with pytest.raises(LowbitError, match="external data"):
            import_onnx_model(model)
    finally:
        os.chdir(cwd)
