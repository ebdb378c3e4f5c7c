# Two entry points for a fresh machine: `make demo` (the main job on a bundled model) and
# `make test` (the test suite). Both create .venv and install lowbit into it first.
VENV ?= .venv
PY := $(VENV)/bin/python
LOWBIT := $(VENV)/bin/lowbit
STAMP := $(VENV)/.installed
OUT ?= out
MODEL ?= digits-cnn

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,bench]"
	# Test references that would otherwise pull torchvision/transformers extras (and a CUDA torch).
	$(PY) -m pip install -q -c constraints.txt --no-deps zennit==0.5.1 lxt==2.1
	$(PY) -m pip install -q -c constraints.txt click Pillow
	# NNCF, a `lowbit bench` peer: its ONNX backend's own dependencies, not its numpy/networkx caps.
	$(PY) -m pip install -q -c constraints.txt --no-deps nncf==2.19.0
	$(PY) -m pip install -q -c constraints.txt jsonschema natsort openvino-telemetry pandas \
		psutil pydot tabulate
	$(PY) -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	touch $@

install: $(STAMP)

# System packages for the aarch64 tests (cross compiler, qemu user-mode emulation, the arm64 C
# library), installed with apt-get where missing (Debian; as root, or through sudo). Elsewhere
# the aarch64 tests skip and say what is missing.
APT_PACKAGES := gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "system packages present: $(APT_PACKAGES)"; \
	elif ! command -v apt-get >/dev/null; then echo "no apt-get: install $$missing yourself"; \
	else sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends $$missing; fi

# The aarch64 host runner (TVM's aarch64 runtime from PyPI, cross-built; cached in
# ~/.cache/lowbit), so that a missing download fails here rather than skipping tests.
aarch64-runner: $(STAMP)
	$(PY) -c "from lowbit.runtime.aarch64.toolchain import runner; print(runner())"

demo: $(STAMP)
	$(LOWBIT) capture $(MODEL) --out $(OUT)/$(MODEL).lowbit
	$(LOWBIT) check $(MODEL)
	$(LOWBIT) compile $(MODEL) --out $(OUT)/$(MODEL)
	$(PY) -m lowbit.models.sample $(MODEL) --count 16 --out $(OUT)/$(MODEL)-inputs.npz
	$(LOWBIT) run $(OUT)/$(MODEL) --input $(OUT)/$(MODEL)-inputs.npz --output $(OUT)/$(MODEL)-interp.npz --backend interp
	$(LOWBIT) run $(OUT)/$(MODEL) --input $(OUT)/$(MODEL)-inputs.npz --output $(OUT)/$(MODEL)-onnx.npz --backend onnx
	$(LOWBIT) run $(OUT)/$(MODEL) --input $(OUT)/$(MODEL)-inputs.npz --output $(OUT)/$(MODEL)-tvm.npz --backend tvm
	@echo "report: $(OUT)/$(MODEL)/report.html (and report.json, report.md)"

test: $(STAMP)
	$(PY) -m pytest -q

.PHONY: install system-deps aarch64-runner demo test
