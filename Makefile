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
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -c "import torch; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(LOWBIT) capture $(MODEL) --out $(OUT)/$(MODEL).lowbit
	$(LOWBIT) show $(OUT)/$(MODEL).lowbit
	$(LOWBIT) check $(MODEL)

test: $(STAMP)
	$(PY) -m pytest -q

.PHONY: install demo test
