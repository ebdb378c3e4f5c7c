"""TVM's thread count: one thread per physical core, read off a hand-made CPU topology."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbit.runtime import tvm_threads
from lowbit.runtime.tvm_threads import claim_physical_cores, physical_cores


def topology(root: Path, siblings: dict[int, str]) -> Path:
    """``/sys/devices/system/cpu`` with CPU -> its ``thread_siblings_list``."""
    for cpu, listed in siblings.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "thread_siblings_list").write_text(f"{listed}\n")
    return root


def test_two_hardware_threads_of_one_core_count_once(tmp_path: Path) -> None:
    root = topology(tmp_path, {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert physical_cores({0, 1, 2, 3}, root) == 2
    assert physical_cores({0, 2}, root) == 1


def test_one_thread_per_core_counts_every_cpu(tmp_path: Path) -> None:
    # the machines this project runs on: TVM's own default would give 1 thread here
    root = topology(tmp_path, {0: "0", 1: "1"})
    assert physical_cores({0, 1}, root) == 2


def test_cores_of_two_clusters_are_told_apart(tmp_path: Path) -> None:
    # an Arm big.LITTLE board: core_id restarts at 0 in each cluster; the sibling lists do not
    root = topology(tmp_path, {0: "0", 1: "1", 4: "4", 5: "5"})
    assert physical_cores({0, 1, 4, 5}, root) == 4


def test_unreadable_topology_counts_cpus(tmp_path: Path) -> None:
    assert physical_cores({0, 1, 5}, tmp_path) == 3


def test_a_value_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tvm_threads.VARIABLE, "7")
    claim_physical_cores()
    assert tvm_threads.os.environ[tvm_threads.VARIABLE] == "7"


def test_unset_value_becomes_the_physical_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tvm_threads.VARIABLE, raising=False)
    monkeypatch.setattr(tvm_threads, "physical_cores", lambda: 3)
    claim_physical_cores()
    assert tvm_threads.os.environ[tvm_threads.VARIABLE] == "3"
