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
	$(PY) -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(LOWBIT) capture $(MODEL) --out $(OUT)/$(MODEL).lowbit
	$(LOWBIT) check $(MODEL)
	$(LOWBIT) compile $(MODEL) --out $(OUT)/$(MODEL)
	$(PY) -m lowbit.models.sample $(MODEL) --count 16 --out $(OUT)/$(MODEL)-inputs.npz
	$(LOWBIT) run $(OUT)/$(MODEL) --input $(OUT)/$(MODEL)-inputs.npz --output $(OUT)/$(MODEL)-interp.npz --backend interp
	$(LOWBIT) run $(OUT)/$(MODEL) --input $(OUT)/$(MODEL)-inputs.npz --output $(OUT)/$(MODEL)-onnx.npz --backend onnx
	cat $(OUT)/$(MODEL)/report.md

test: $(STAMP)
	$(PY) -m pytest -q

.PHONY: install demo test
