# Two commands do all the set-up on a fresh machine:
#   make study   - install into .venv, generate the synthetic data, run every notebook, build the book
#   make test    - install into .venv (with test tools and Debian's chromium), run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= default
# Caches that would otherwise land in $HOME go to a project-local folder.
CACHE := $(CURDIR)/.cache
export JUPYTER_CONFIG_DIR := $(CACHE)/jupyter/config
export JUPYTER_DATA_DIR := $(CACHE)/jupyter/data
export JUPYTER_RUNTIME_DIR := $(CACHE)/jupyter/runtime
export JUPYTER_PLATFORM_DIRS := 1
export IPYTHONDIR := $(CACHE)/ipython
export MPLCONFIGDIR := $(CACHE)/matplotlib
export HF_HOME := $(CACHE)/huggingface
export TORCH_HOME := $(CACHE)/torch
export XDG_CACHE_HOME := $(CACHE)
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: study test install install-test synth book clean lock check-study

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt --upgrade pip

# Everything is installed at the exact versions locked in constraints.txt. torch/torchvision go
# first: the build machines carry torch 2.14.1 + torchvision 0.29.1 (a CUDA build) on local disk
# and cannot install newer releases; these pins equal the lock (tests/test_packaging.py checks).
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all]"
	touch $@

# Refresh constraints.txt after changing a range in pyproject.toml: resolve without the old lock,
# then freeze what got installed (fer_utils itself excluded).
lock: | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[all]"
	{ echo "# Exact versions of a tested install; the Makefile installs with pip install -c constraints.txt."; \
	  echo "# Made by: .venv/bin/pip freeze --all --exclude-editable. Refresh with: make lock"; \
	  $(BIN)/pip freeze --all --exclude-editable; } > constraints.txt
	touch $(VENV)/.installed

install: $(VENV)/.installed
	@mkdir -p $(JUPYTER_CONFIG_DIR) $(JUPYTER_DATA_DIR) $(JUPYTER_RUNTIME_DIR) $(IPYTHONDIR) \
		$(MPLCONFIGDIR) $(HF_HOME) $(TORCH_HOME)

study: install
	$(BIN)/fer study run --profile $(PROFILE)
	$(BIN)/fer book build
	@echo "Open _build/html/index.html"

# The study's invariants after `make study` (run by .ci/run): see `fer study check --help`.
check-study: install
	$(BIN)/fer study check --profile $(PROFILE)

synth: install
	$(BIN)/fer data synth

book: install
	$(BIN)/fer book build

# One pytest-xdist worker per core, each test module on one worker (its module fixtures built once);
# the 25 slowest tests are listed at the end, to keep the suite within its 6 minutes.
test: install
	bash .ci/install-browser.sh
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=25

clean:
	rm -rf _build book/experiments data/runs data/cache .cache
