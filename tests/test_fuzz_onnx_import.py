"""Fuzzing the ONNX importer: hostile and broken model files end in a graph or a LowbitError.

Invariant (issue 11): capturing any file, however damaged, gives a graph that verifies or a
``LowbitError``; never another exception, never a run past ``CASE_SECONDS``. Through the CLI
(``lowbit capture`` / ``lowbit check``) that is exit 0/1, or exit 2 with one line and no
traceback. Cases are drawn by hypothesis (derandomized, so CI runs the same cases every time
and a failure shrinks to a small reproducer) from real models (the bundled digits-cnn and
digits-vit exported to ONNX) and small hand-built graphs, damaged by the mutators of
``tests.fuzz_onnx``; saved ``.lowbit`` graphs, which ``capture`` also reads, are damaged too.
``LOWBIT_FUZZ_ONNX_EXAMPLES`` (and ``_CLI_`` / ``_SAVED_``) raise the counts for a longer run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbit.cli.main import main
from lowbit.compiler import save_graph
from lowbit.compiler.importers import capture
from lowbit.runtime import run_graph
from lowbit.runtime.references import relative_error, run_onnxruntime
from tests.fuzz_onnx import (MUTATORS, SAVED_MUTATORS, capture_outcome, export_bundled,
                             handmade_seeds, mutate, truncate)
from tests.graphs import conv_relu_linear

EXAMPLES = int(os.environ.get("LOWBIT_FUZZ_ONNX_EXAMPLES", "2000"))
CLI_EXAMPLES = int(os.environ.get("LOWBIT_FUZZ_CLI_EXAMPLES", "150"))
SAVED_EXAMPLES = int(os.environ.get("LOWBIT_FUZZ_SAVED_EXAMPLES", "500"))
FUZZ_SETTINGS = dict(derandomize=True, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, onnx.ModelProto]:
    directory = tmp_path_factory.mktemp("seeds")
    models = handmade_seeds()
    for name in ("digits-cnn", "digits-vit"):
        models[name] = onnx.load(export_bundled(name, directory))
    return models


def test_seeds_capture_and_match_onnxruntime(seeds: dict[str, onnx.ModelProto],
                                             tmp_path: Path) -> None:
    """The mutations start from models the importer gets right."""
    rng = np.random.default_rng(3)
    for name, model in seeds.items():
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        graph = capture(str(path))
        feeds = {}
        for value in model.graph.input:
            if value.name in {t.name for t in model.graph.initializer}:
                continue
            dims = [d.dim_value or 3 for d in value.type.tensor_type.shape.dim]
            feeds[value.name] = (rng.integers(0, 4, dims).astype(np.int64)
                                 if value.type.tensor_type.elem_type == onnx.TensorProto.INT64
                                 else rng.standard_normal(dims).astype(np.float32))
        got, want = run_graph(graph, feeds), run_onnxruntime(str(path), feeds)
        for output in graph.outputs:
            assert relative_error(got[output], want[output]) < 1e-5, (name, output)


def test_mutated_models_end_in_a_graph_or_a_lowbit_error(seeds: dict[str, onnx.ModelProto],
                                                         tmp_path: Path) -> None:
    tally: Counter[str] = Counter()
    slowest = [0.0]

    @settings(max_examples=EXAMPLES, **FUZZ_SETTINGS)
    @given(seed=st.sampled_from(sorted(seeds)), mutator=st.sampled_from(sorted(MUTATORS)),
           rnd=st.randoms(use_true_random=False))
    def case(seed: str, mutator: str, rnd) -> None:
        outcome = capture_outcome(mutate(seeds[seed], mutator, rnd), tmp_path)
        tally[outcome.kind] += 1
        tally[mutator] += 1
        slowest[0] = max(slowest[0], outcome.seconds)

    case()
    total = tally["graph"] + tally["error"]
    print(f"\nONNX import fuzz: {total} mutated models, {tally['graph']} graphs, "
          f"{tally['error']} LowbitErrors, 0 crashes, slowest case {slowest[0]:.2f} s")
    assert total >= EXAMPLES
    assert all(tally[name] > 0 for name in MUTATORS), tally
    assert tally["graph"] > 0 and tally["error"] > 0


def test_damaged_saved_graphs_end_in_a_graph_or_a_lowbit_error(tmp_path: Path) -> None:
    """``capture`` also reads ``.lowbit`` files: a damaged zip or crafted JSON is refused."""
    save_graph(conv_relu_linear(), tmp_path / "seed.lowbit")
    with np.load(tmp_path / "seed.lowbit", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    tally: Counter[str] = Counter()

    @settings(max_examples=SAVED_EXAMPLES, **FUZZ_SETTINGS)
    @given(mutator=st.sampled_from(sorted(SAVED_MUTATORS)),
           rnd=st.randoms(use_true_random=False))
    def case(mutator: str, rnd) -> None:
        data = SAVED_MUTATORS[mutator](arrays, rnd)
        tally[capture_outcome(data, tmp_path, "graph.lowbit").kind] += 1

    case()
    print(f"\nsaved-graph fuzz: {sum(tally.values())} damaged files, {dict(tally)}, 0 crashes")
    assert sum(tally.values()) >= SAVED_EXAMPLES and tally["error"] > 0


def _one_line_or_success(code: int, err: str) -> None:
    assert code in (0, 1, 2), code
    assert "Traceback" not in err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lowbit "), err


def test_cli_capture_and_check_on_mutated_models(seeds: dict[str, onnx.ModelProto],
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    codes: Counter[int] = Counter()

    @settings(max_examples=CLI_EXAMPLES, **FUZZ_SETTINGS)
    @given(seed=st.sampled_from(sorted(seeds)), mutator=st.sampled_from(sorted(MUTATORS)),
           rnd=st.randoms(use_true_random=False))
    def case(seed: str, mutator: str, rnd) -> None:
        path = tmp_path / "model.onnx"
        out = tmp_path / "graph.lowbit"
        out.unlink(missing_ok=True)
        path.write_bytes(mutate(seeds[seed], mutator, rnd))
        capsys.readouterr()
        code = main(["capture", str(path), "--out", str(out)])
        _one_line_or_success(code, capsys.readouterr().err)
        assert out.exists() == (code == 0)
        assert [p.name for p in tmp_path.iterdir()] == (["model.onnx"] + (["graph.lowbit"]
                                                                           if code == 0 else []))
        codes[code] += 1
        if code == 0:
            check = main(["check", str(path), "--batch", "2"])
            _one_line_or_success(check, capsys.readouterr().err)
            codes[10 + check] += 1

    case()
    print(f"\nCLI fuzz: capture exit codes {dict(codes)} (1x = check exit code)")
    assert codes[0] + codes[2] >= CLI_EXAMPLES and codes[0] > 0 and codes[2] > 0


@pytest.mark.parametrize("op_type", ["Constant", "ConstantOfShape"])
def test_tensor_attribute_of_unknown_element_type_is_refused(seeds: dict[str, onnx.ModelProto],
                                                             tmp_path: Path,
                                                             op_type: str) -> None:
    """Regression (found by the long run): a flipped byte made a tensor attribute's element
    type 33, and ``numpy_helper.to_array`` raised ``KeyError`` inside the importer."""
    model = onnx.ModelProto()
    model.CopyFrom(seeds["embedding" if op_type == "ConstantOfShape" else "digits-vit"])
    nodes = [n for n in model.graph.node if n.op_type == op_type and n.attribute]
    assert nodes
    nodes[0].attribute[0].t.data_type = 33
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    outcome = capture_outcome(path.read_bytes(), tmp_path)
    assert outcome.kind == "error" and "element type 33 is not supported" in outcome.message


def test_float_shape_input_is_refused(seeds: dict[str, onnx.ModelProto],
                                      tmp_path: Path) -> None:
    """Regression (found by the long run): ``ConstantOfShape`` given a float shape reached
    ``np.full`` (``TypeError``)."""
    model = onnx.ModelProto()
    model.CopyFrom(seeds["embedding"])
    (shape,) = [t for t in model.graph.initializer if t.name == "shape"]
    shape.CopyFrom(onnx.numpy_helper.from_array(np.array([5.0, 3.0], np.float32), "shape"))
    outcome = capture_outcome(model.SerializeToString(), tmp_path)
    assert outcome.kind == "error" and "must be integers, not float32" in outcome.message


def test_check_survives_layer_norm_without_bias(seeds: dict[str, onnx.ModelProto],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (found by the CLI fuzz): a valid LayerNormalization whose optional bias is
    omitted made onnxruntime's extended fusions segfault inside ``lowbit check``."""
    model = onnx.ModelProto()
    model.CopyFrom(seeds["digits-vit"])
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert norms
    for node in norms:
        node.input[2] = ""
    path = tmp_path / "no_bias.onnx"
    onnx.save(model, path)
    assert main(["check", str(path), "--batch", "2"]) == 0
    assert "within tolerance" in capsys.readouterr().out


def test_cli_process_prints_one_line_for_a_broken_file(seeds: dict[str, onnx.ModelProto],
                                                       tmp_path: Path) -> None:
    """A real process: exit 2, one line on stderr, nothing on stdout, no file written."""
    import random

    path = tmp_path / "broken.onnx"
    path.write_bytes(truncate(seeds["digits-cnn"], random.Random(1)))
    out = tmp_path / "g.lowbit"
    done = subprocess.run([sys.executable, "-m", "lowbit.cli.main", "capture", str(path),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "corrupt or truncated ONNX file" in done.stderr and not out.exists()
