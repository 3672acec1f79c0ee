# Two commands for a new user: `make demo` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.genlab-installed

# PyTorch, the CPU build unless you choose otherwise. PyPI's Linux wheel of torch is the CUDA build (several GB), so
# on Linux the CPU wheel (torch==X+cpu) comes from PyTorch's CPU index when pip does not already see one (a local
# wheel folder or mirror); PyPI's macOS wheels are CPU (and Apple GPU) builds already. A torch that is already in
# .venv is never replaced. For a CUDA build: `make demo TORCH_SPEC=torch==2.13.0 TORCH_INDEX=` (PyPI's default build)
# or any wheel index, e.g. `TORCH_INDEX=https://download.pytorch.org/whl/cu128`; or install torch into .venv first.
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= $(if $(filter Darwin,$(shell uname -s)),torch==$(TORCH_VERSION),torch==$(TORCH_VERSION)+cpu)
TORCH_INDEX ?= $(if $(filter Darwin,$(shell uname -s)),,https://download.pytorch.org/whl/cpu)

# The development data (MNIST, Fashion-MNIST, poems) next to the project, when it is there: tests and benchmarks
# then read it instead of downloading. Without it the tests that need it find it where genlab searches or skip.
SHARED_DATA := $(wildcard $(abspath ../shared/data))
WITH_DATA := $(if $(SHARED_DATA),GENLAB_DATA=$${GENLAB_DATA:-$(SHARED_DATA)})

.PHONY: demo test lint browser test-slow bench bench-quality clean torch

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(MAKE) --no-print-directory torch
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the first try takes a wheel pip already sees; the second asks the index for it
torch:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet '$(TORCH_SPEC)' 2>/dev/null || \
	    $(PY) -m pip install --quiet '$(TORCH_SPEC)' $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

demo: $(STAMP)
	$(VENV)/bin/genlab demo --out runs/demo

# ruff's settings (one line length, the rules) are in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

# The browser tests (tests/test_serve_browser.py) drive Debian's headless Chromium through its chromedriver. When
# either is missing and this runs as root where apt-get is, they are installed; otherwise those tests skip, and -rs
# prints why (the missing program and how to install it) instead of passing silently.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@missing=""; for program in chromium chromedriver; do \
	    command -v $$program >/dev/null 2>&1 || missing="$$missing $$program"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(BROWSER_PACKAGES) for the browser tests (missing:$$missing)"; \
	    (apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        $(BROWSER_PACKAGES) >/dev/null) || echo "could not install $(BROWSER_PACKAGES): the browser tests will skip"; \
	else echo "missing:$$missing, and installing needs root and apt-get: the browser tests will skip;" \
	    "install with: sudo apt-get install $(BROWSER_PACKAGES)"; fi

test: lint browser
	$(WITH_DATA) $(PY) -m pytest -q -rs

test-slow: $(STAMP)
	$(WITH_DATA) $(PY) -m pytest -q -m slow

# The benchmarks of bench/ (genlab against peers measured in the same run), then every result table.
# pythae is a benchmark-only peer: installed into .venv here, never a genlab dependency.
BENCH_EPOCHS ?= 3
bench: $(STAMP)
	$(PY) -c "import pythae" 2>/dev/null || $(PY) -m pip install --quiet pythae
	$(WITH_DATA) $(PY) -m bench.vae_mlp_epoch --epochs $(BENCH_EPOCHS)
	$(WITH_DATA) $(PY) -m bench.vae_conv_epoch
	$(WITH_DATA) $(PY) -m bench.nll_eval
	$(WITH_DATA) $(PY) -m bench.pixelcnn_step
	$(PY) -m bench

# Time to quality (bench/time_to_quality.py): train a time-budgeted preset, then its k=5000 test NLL; the
# training alone takes the preset's budget (mnist-10min: 10 minutes, mnist-1h: one hour).
PRESET ?= mnist-10min
bench-quality: $(STAMP)
	$(WITH_DATA) $(PY) -m bench.time_to_quality --preset $(PRESET)

clean:
	rm -rf runs build .pytest_cache
