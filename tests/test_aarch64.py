"""aarch64 TVM libraries run under qemu-aarch64 user-mode emulation, bit-exact with the
reference interpreter.

Each program is cross-compiled for ``aarch64`` (``aarch64-linux-gnu-gcc``), then run by the
C++ runner (``lowbit.runtime.aarch64``) built against TVM's own aarch64 runtime, under
``qemu-aarch64 -L /usr/aarch64-linux-gnu``; every output must equal ``run_graph``'s element
for element, dtype and shape included. The lowered digits CNN and ViT run on real and random
images, the ViT through the Python API and the CNN end to end through ``lowbit compile
--target aarch64`` and ``lowbit run --backend tvm``. MiniLM is left out: lowering, the cross
build and an emulated run of its unscheduled attention take minutes, over this file's
one-minute budget. Tests skip,
naming what is missing, only where the cross toolchain, qemu or the aarch64 TVM wheels cannot
be had (``.ci/run`` installs the toolchain with apt-get).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from lowbit.compiler import Graph, GraphBuilder, LowbitError, Sym, TensorType
from lowbit.compiler.artifact import load_program
from lowbit.models import get_model
from lowbit.runtime import run_graph

pytest.importorskip("tvm")

from lowbit.compiler.codegen.tvm_build import build, export_library  # noqa: E402
from lowbit.runtime.aarch64 import toolchain  # noqa: E402
from lowbit.runtime.aarch64.qemu import run_aarch64  # noqa: E402
from lowbit.runtime.tvm_backend import run_library  # noqa: E402

from tests.integer_graphs import assert_same, random_feeds  # noqa: E402
from tests.test_tvm_codegen import lowered_program  # noqa: E402

N = Sym(1)


@functools.cache
def runner_or_reason() -> tuple[Path | None, str]:
    """The built runner, or why this machine cannot have one."""
    missing = toolchain.missing_tools()
    if missing:
        return None, f"missing {', '.join(missing)} (apt-get install {toolchain.APT_PACKAGES})"
    try:
        return toolchain.runner(), ""
    except LowbitError as err:
        return None, str(err)


@pytest.fixture(scope="module", autouse=True)
def aarch64_runner() -> Path:
    runner, reason = runner_or_reason()
    if runner is None:
        pytest.skip(f"cannot run aarch64 code here: {reason}")
    return runner


def emulated(graph: Graph, folder: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``graph`` cross-built for aarch64 and run under qemu, outputs keyed by name."""
    library = export_library(build(graph, "aarch64"), folder / "model.so")
    return run_library(library, "aarch64", feeds, graph.inputs, graph.outputs)


def test_the_runner_is_an_arm_executable(aarch64_runner) -> None:
    header = aarch64_runner.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def test_every_boundary_dtype_and_several_outputs_cross_the_runner(tmp_path) -> None:
    """Inputs and outputs of each dtype the runner's .npy table reads, in order."""
    builder = GraphBuilder("dtypes")
    origin = builder.capture("dtypes", "dtypes")
    names = {dtype: builder.add_input(f"x_{dtype}", TensorType(dtype, (N, 3, 5)))
             for dtype in ("int8", "uint8", "int16", "int32", "int64", "float32", "bool")}
    outputs = [builder.add("neg", [names["int8"]], origin),
               builder.add("add", [names["uint8"], names["uint8"]], origin),
               builder.add("maximum", [names["int16"], names["int16"]], origin),
               builder.add("cast", [names["int32"]], origin, {"to": "int64"}),
               builder.add("relu", [names["int64"]], origin),
               builder.add("clip", [names["float32"]], origin, {"min": -1.5, "max": 2.0}),
               builder.add("where", [names["bool"], names["int8"], names["int8"]], origin),
               builder.add("cast", [names["int16"]], origin, {"to": "bool"})]
    graph = builder.finish(outputs)
    feeds = random_feeds(graph)(4)
    assert_same(emulated(graph, tmp_path, feeds), run_graph(graph, feeds), "under qemu")


def real_and_random_images(name: str) -> list[dict[str, np.ndarray]]:
    """16 test images, and 3 uniform over twice the data range."""
    real = get_model(name).sample_inputs(16, "test")
    noise = np.random.default_rng(5).uniform(-1.0, 2.0, real["image"][:3].shape)
    return [real, {"image": noise.astype(np.float32)}]


def test_lowered_vit_is_bit_exact_under_qemu(tmp_path) -> None:
    _, program = lowered_program("digits-vit")
    library = export_library(build(program, "aarch64"), tmp_path / "model.so")
    for feeds in real_and_random_images("digits-vit"):
        got = run_library(library, "aarch64", feeds, program.inputs, program.outputs)
        assert_same(got, run_graph(program, feeds), "digits-vit under qemu")


def test_compile_target_aarch64_then_run_backend_tvm_is_bit_exact(tmp_path) -> None:
    from lowbit.cli.main import main

    out = tmp_path / "cnn"
    assert main(["compile", "digits-cnn", "--calib-samples", "64", "--target", "aarch64",
                 "--out", str(out)]) == 0
    for index, feeds in enumerate(real_and_random_images("digits-cnn")):
        inputs, outputs = tmp_path / f"x{index}.npz", tmp_path / f"y{index}.npz"
        np.savez(inputs, **feeds)
        assert main(["run", str(out), "--input", str(inputs), "--output", str(outputs),
                     "--backend", "tvm"]) == 0
        with np.load(outputs) as got:
            assert_same(dict(got), run_graph(load_program(out), feeds),
                        "lowbit run --backend tvm, aarch64")


def test_a_library_that_is_not_aarch64_is_refused_with_the_runner_s_reason(tmp_path) -> None:
    bogus = tmp_path / "model.so"
    bogus.write_bytes(b"\x7fELF not really a library")
    with pytest.raises(LowbitError, match="aarch64 run under qemu-aarch64 failed") as err:
        run_aarch64(bogus, [np.zeros((1, 1, 8, 8), np.float32)])
    assert err.value.file == str(bogus)
