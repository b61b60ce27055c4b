# Two-command quickstart: `make pretrain` (the main job) and `make test`.
# torch is installed explicitly first (CPU build 2.13.0 by default) so that no extra
# resolves an unpinned torch and pulls the CUDA stack; override with TORCH_SPEC.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: install pretrain test lint bench bench-smoke clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24" "setuptools>=69" wheel
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[$(EXTRAS)]"
	touch $@

# The main job: pre-train the tiny preset on the built-in synthetic motion set with
# DeepSpeed, then print a linear probe of the pre-trained vs a random-init encoder.
pretrain: install
	$(VENV)/bin/deepspeed training/pretrain.py $(ARGS)

test: install
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check hitrs_fast kernels training tests benchmarks

# Throughput suite: smoke mode on CPU, real numbers on a GPU.
bench: install
	$(PY) -m pytest benchmarks -q -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
