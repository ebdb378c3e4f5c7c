"""Nothing lost: an interrupted ``lowbit compile`` leaves the previous output or the new one.

Invariant (issue 11): whenever ``lowbit compile MODEL --out DIR`` is killed (SIGKILL) or
interrupted (SIGINT, Ctrl-C), DIR is byte for byte the previous complete output, or a complete
new one, never a mix and never a half-written file; the staging folder a SIGKILL leaves behind
is removed by the next compile. The compile runs in a real process, killed at several points:
while starting, as soon as its staging folder appears (the TVM build runs inside it), and once
the staging folder holds the integer program (Ctrl-C).
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lowbit.cli.main import main
from lowbit.compiler import load_graph
from tests.compile_runs import tiny_onnx

POLL_SECONDS, LIMIT_SECONDS = 0.002, 300


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _is_complete(folder: Path, bits: str) -> bool:
    """Every file the manifest names is there and the integer program loads."""
    manifest = json.loads((folder / "manifest.json").read_text())
    names = [n for n in manifest["files"].values() if isinstance(n, str)]
    load_graph(folder / manifest["files"]["integer"])
    return manifest["bits"] == int(bits) and all((folder / n).is_file() for n in names)


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Path]:
    return tiny_onnx(tmp_path)


def _staging(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _wait_for(process: subprocess.Popen, ready: Callable[[], bool]) -> bool:
    """Poll until ``ready()``; False if the process ended first."""
    deadline = time.monotonic() + LIMIT_SECONDS
    while time.monotonic() < deadline:
        if ready():
            return True
        if process.poll() is not None:
            return False
        time.sleep(POLL_SECONDS)
    process.kill()
    raise AssertionError("the compile neither reached the kill point nor ended")


def test_killed_compile_leaves_previous_or_new_output(model: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    onnx_path, calib = model
    out = tmp_path / "out"
    base = ["compile", str(onnx_path), "--calib", str(calib), "--out", str(out)]
    assert main(base + ["--target", "none"]) == 0
    previous = _snapshot(out)

    def has_program() -> bool:
        return any((p / "integer.lowbit").exists() for p in _staging(out))

    points: list[tuple[str, signal.Signals, Callable[[], bool] | None]] = [
        ("while starting", signal.SIGKILL, None),
        ("as the staging folder appears", signal.SIGKILL, lambda: bool(_staging(out))),
        ("Ctrl-C during the TVM build", signal.SIGINT, has_program),
    ]
    landed = 0
    for where, sig, ready in points:
        process = subprocess.Popen([sys.executable, "-m", "lowbit.cli.main", *base,
                                    "--bits", "4"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        if ready is None:
            time.sleep(0.3)
            reached = process.poll() is None
        else:
            reached = _wait_for(process, ready)
        process.send_signal(sig)
        _, err = process.communicate(timeout=LIMIT_SECONDS)
        landed += reached
        now = _snapshot(out)
        assert now == previous or _is_complete(out, "4"), f"mixed output after a kill {where}"
        if sig == signal.SIGINT and reached:
            assert process.returncode == 130 and "interrupted" in err, err
            assert not _staging(out), "Ctrl-C cleans its staging folder"
    assert landed == len(points), "every kill must land before the compile ends"
    # a SIGKILL during the build left a staging folder; the next compile removes it
    assert main(base + ["--target", "none", "--bits", "4"]) == 0
    assert _is_complete(out, "4") and _snapshot(out) != previous
    assert _staging(out) == []
