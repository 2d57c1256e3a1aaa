# Two commands on a fresh machine: `make demo` and `make test`. Each creates or reuses .venv, installs torch first
# (pinned: a plain `pip install torch` would pull a multi-GB CUDA build), then the package; a second run installs nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.uer-ray-installed

.PHONY: install demo test test-fast bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch, sys; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 4))" 2>/dev/null \
		|| $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,demo]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) launch.py quickstart

test: install
	$(PY) -m pytest -q --durations=20

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/preprocess.py

clean:
	rm -rf runs .pytest_cache
