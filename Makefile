# Two commands for a new user: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genlab-installed

.PHONY: demo test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# the CPU wheel; a bare `pip install torch` would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/genlab demo --out runs/demo

test: $(STAMP)
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m pytest -q

test-slow: $(STAMP)
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m pytest -q -m slow

clean:
	rm -rf runs build .pytest_cache
