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

# The benchmarks of bench/ (genlab against peers measured in the same run), then every result table.
# pythae is a benchmark-only peer: installed into .venv here, never a genlab dependency.
BENCH_EPOCHS ?= 3
bench: $(STAMP)
	$(PY) -c "import pythae" 2>/dev/null || $(PY) -m pip install --quiet pythae
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) bench/vae_mlp_epoch.py --epochs $(BENCH_EPOCHS)
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) bench/vae_conv_epoch.py
	$(PY) bench/common.py

clean:
	rm -rf runs build .pytest_cache
