# Two commands for a new user: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genlab-installed

.PHONY: demo test lint test-slow bench bench-quality clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# the CPU wheel; a bare `pip install torch` would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/genlab demo --out runs/demo

# ruff's settings (one line length, the rules) are in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

test: lint
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m pytest -q

test-slow: $(STAMP)
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m pytest -q -m slow

# The benchmarks of bench/ (genlab against peers measured in the same run), then every result table.
# pythae is a benchmark-only peer: installed into .venv here, never a genlab dependency.
BENCH_EPOCHS ?= 3
bench: $(STAMP)
	$(PY) -c "import pythae" 2>/dev/null || $(PY) -m pip install --quiet pythae
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m bench.vae_mlp_epoch --epochs $(BENCH_EPOCHS)
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m bench.vae_conv_epoch
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m bench.nll_eval
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m bench.pixelcnn_step
	$(PY) -m bench

# Time to quality (bench/time_to_quality.py): train a time-budgeted preset, then its k=5000 test NLL; the
# training alone takes the preset's budget (mnist-10min: 10 minutes, mnist-1h: one hour).
PRESET ?= mnist-10min
bench-quality: $(STAMP)
	GENLAB_DATA=$${GENLAB_DATA:-$(abspath ../shared/data)} $(PY) -m bench.time_to_quality --preset $(PRESET)

clean:
	rm -rf runs build .pytest_cache
