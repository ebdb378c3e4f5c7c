"""The aarch64 host runner, built on demand: Debian's cross toolchain plus TVM's aarch64 runtime.

Invariant: ``runner()`` returns an aarch64 executable built from ``runner.cc`` against the
``libtvm_runtime.so`` and ``libtvm_ffi.so`` of the *same* TVM versions as this Python
environment (taken from PyPI's ``manylinux_2_28_aarch64`` wheels), so a library that this
environment exports for ``aarch64`` loads in it. Everything is cached under
``$LOWBIT_CACHE_DIR/aarch64/tvm-VERSION-ffi-VERSION`` and each file is moved into place whole,
so an interrupted build is rebuilt, never half-used. A missing tool or a failed download is a
``LowbitError`` saying what to install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata, resources
from pathlib import Path

from lowbit.compiler.errors import LowbitError
from lowbit.models.cache import cache_dir

CROSS_CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")
APT_PACKAGES = "gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
RUNNER_SOURCE = "runner.cc"

WHEELS = {  # distribution -> (files taken from its aarch64 wheel, by path prefix)
    "apache-tvm": ("tvm/lib/libtvm_runtime.so",),
    "apache-tvm-ffi": ("tvm_ffi/lib/libtvm_ffi.so", "tvm_ffi/include/"),
}


def missing_tools() -> list[str]:
    """What this machine lacks to build and run the runner (empty when nothing)."""
    missing = [tool for tool in (CROSS_CXX, QEMU) if shutil.which(tool) is None]
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        missing.append(f"the aarch64 C library under {SYSROOT}")
    return missing


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise LowbitError(f"running aarch64 code on {os.uname().machine} needs "
                          f"{', '.join(missing)} (Debian: apt-get install {APT_PACKAGES})")


def runtime_dir() -> Path:
    versions = {name: metadata.version(name) for name in WHEELS}
    return (cache_dir() / "aarch64"
            / f"tvm-{versions['apache-tvm']}-ffi-{versions['apache-tvm-ffi']}")


def _download_wheels(folder: Path) -> list[Path]:
    pins = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--platform", WHEEL_PLATFORM, "--dest", str(folder), *pins]
    print(f"downloading the aarch64 TVM runtime ({', '.join(pins)})", file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != len(WHEELS):
        reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise LowbitError(f"cannot download the aarch64 TVM runtime wheels ({reason})",
                          file=str(folder))
    return wheels


def _extract(wheels: list[Path], folder: Path) -> None:
    """The runtime libraries into ``folder/lib``, the FFI headers into ``folder/include``."""
    wanted = tuple(prefix for prefixes in WHEELS.values() for prefix in prefixes)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if not member.startswith(wanted) or member.endswith("/"):
                    continue
                _, kind, rest = member.split("/", 2)
                target = folder / kind / rest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))


def runtime_libraries() -> Path:
    """The folder holding ``lib/`` and ``include/`` of TVM's aarch64 runtime."""
    folder = runtime_dir() / "runtime"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        staging = Path(scratch) / "runtime"
        _extract(_download_wheels(Path(scratch) / "wheels"), staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process put its copy there first
            if not folder.is_dir():
                raise
    return folder


def runner() -> Path:
    """The aarch64 runner executable, built if this source and these libraries have none."""
    require_tools()
    packaged = resources.files("lowbit.runtime.aarch64").joinpath(RUNNER_SOURCE)
    source = packaged.read_bytes()
    libraries = runtime_libraries()
    binary = runtime_dir() / f"runner-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.is_file():
        return binary
    with tempfile.TemporaryDirectory(dir=binary.parent) as scratch:
        source_path, built = Path(scratch) / RUNNER_SOURCE, Path(scratch) / "runner"
        source_path.write_bytes(source)
        lib = libraries / "lib"
        command = [CROSS_CXX, "-std=c++17", "-O2", str(source_path), "-o", str(built),
                   f"-I{libraries / 'include'}", f"-L{lib}", "-Wl,--no-as-needed",
                   "-ltvm_runtime", "-ltvm_ffi", f"-Wl,-rpath,{lib}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
            first = next((line for line in lines if "error" in line), lines[-1])
            raise LowbitError(f"building the aarch64 runner failed: {first}",
                              file=str(packaged))
        os.replace(built, binary)
    return binary


__all__ = ["APT_PACKAGES", "CROSS_CXX", "QEMU", "SYSROOT", "missing_tools", "require_tools",
           "runner", "runtime_libraries"]
