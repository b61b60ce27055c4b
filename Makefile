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

.PHONY: install pretrain test lint bench campaign campaign-quick campaign-dry-run campaign-dry-run-bare wheelhouse clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24" "setuptools>=77" wheel
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[$(EXTRAS)]"
	touch $@

# The main job: pre-train the tiny preset on the built-in synthetic motion set with
# DeepSpeed, then print a linear probe of the pre-trained vs a random-init encoder.
# With jemalloc installed (apt install libjemalloc2) it runs on jemalloc, which keeps a long CPU run's
# memory flat at full speed where glibc's heap fragments (docs/training.md); JEMALLOC= turns it off.
comma := ,
JEMALLOC ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 /usr/lib/libjemalloc.so.2))
pretrain: install
	$(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC) MALLOC_CONF=dirty_decay_ms:-1$(comma)muzzy_decay_ms:-1) \
	$(VENV)/bin/deepspeed training/pretrain.py $(ARGS)

# The suite runs on TEST_WORKERS processes (pytest-xdist; auto: one per core, 0: in this process): most of its
# time is the single-threaded Triton interpreter, so two cores nearly halve it.
TEST_WORKERS ?= auto
test: install
	$(PY) -m pytest tests -q --durations=15 -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check hitrs_fast kernels training tests benchmarks

# Throughput suite: smoke mode on CPU, real numbers on a GPU.
bench: install
	$(PY) -m pytest benchmarks -q -s $(PYTEST_ARGS)

# The whole GPU measurement campaign (benchmarks/campaign.py): results.json, tables.md,
# campaign.log and summary.txt in $(CAMPAIGN_OUT). On the bare GPU image run
# `bash benchmarks/campaign.sh OUT_DIR` directly: it installs the package itself.
CAMPAIGN_OUT ?= runs/campaign
campaign: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash benchmarks/campaign.sh $(CAMPAIGN_OUT)

# The rows that decide the design in one GPU call of at most 8 minutes.
campaign-quick: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash benchmarks/campaign.sh --quick $(CAMPAIGN_OUT)-quick

# DeepSpeed and what pre-training imports, as wheels for the GPU image (carried with the tree: .wheelhouse/).
wheelhouse: install
	PYTHON=$(PY) bash benchmarks/wheelhouse.sh .wheelhouse

# Its CPU dry run (smoke sizes, Triton interpreter) from the dev environment.
campaign-dry-run: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash benchmarks/campaign.sh --dry-run $(CAMPAIGN_OUT)-dry-run

# The dry run from a fresh environment holding only what the GPU image has (pinned CPU torch,
# triton, numpy, pytest, pytest-benchmark, setuptools, wheel): the campaign's own install path
# and every import must work without the project's dependencies, DeepSpeed, DALI or xformers.
# triton as on the GPU image (3.6); its interpreter needs numpy < 2.3 (newer numpy refuses its size-1 array to int
# conversions; on the GPU the interpreter is not used, so the image's numpy 2.5 is fine there).
# Both campaigns run: --quick (what one short GPU call measures) and the full one.
GPU_IMAGE_TRITON ?= 3.6.0
campaign-dry-run-bare:
	bare=$$(mktemp -d) && trap 'rm -rf "$$bare"' EXIT && \
	$(PYTHON) -m venv "$$bare/venv" && \
	"$$bare/venv/bin/pip" install -q --no-compile "$(TORCH_SPEC)" "triton==$(GPU_IMAGE_TRITON)" "numpy<2.3" pytest pytest-benchmark setuptools wheel && \
	PATH="$$bare/venv/bin:$$PATH" bash benchmarks/campaign.sh --quick --dry-run $(CAMPAIGN_OUT)-quick-dry-run-bare && \
	PATH="$$bare/venv/bin:$$PATH" bash benchmarks/campaign.sh --dry-run $(CAMPAIGN_OUT)-dry-run-bare

clean:
	rm -rf $(VENV) runs .pytest_cache
