PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Table 1 reproduction: `make reproduce-table1 [PRESET=quick] [LAUNCHER=replicas|joblib|submitit_slurm]`.
# On a GPU, LAUNCHER=replicas trains each cell's seeds together as one stacked model.
# A data set that cannot be fetched gets one line and its cells are skipped: the others run and
# are tabled, then make exits 1 naming the skipped cells (benchmark/runs/reproduce.py).
PRESET ?= paper
MODELS ?= iwae,iwaer,iwaerrec
DATASETS ?= mnist,omniglot
SEEDS ?= 0-4
RESULTS ?= results/$(PRESET)
LAUNCHER ?= basic
LOGGER ?= auto   # CSV, plus W&B when you are logged in; logger=... in ARGS decides instead
ARGS ?=

.PHONY: install test test-slow test-floor test-gpu smoke bench lint format clean reproduce-table1 table1 \
	protocol-study size-study

install: $(STAMP)

# torch and torchvision are pinned to the builds the project is tested with; they are
# installed first, on their own, so pip resolves them from the local wheel cache when present.
# Another release in pyproject's range, in a venv of its own (the GPU machine's, say; the default
# and slow suites pass with it on a CPU, a 3 GB download):
# make test VENV=.venv-torch2.11 TORCH=2.11.0 TORCHVISION=0.26.0 PYTHON=python3.12
TORCH ?= 2.14.1
TORCHVISION ?= 0.29.1
CONSTRAINTS ?=
PIP_INSTALL = $(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) torch==$(TORCH) torchvision==$(TORCHVISION)
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

# One pytest worker per core (TEST_WORKERS=0: one process); each worker, and what it launches,
# gets cores / workers torch threads (tests/conftest.py).
TEST_WORKERS ?= auto
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-slow: install
	$(BIN)/python -m pytest -m slow

# The default suite with every dependency at the floor of pyproject's range, on the oldest
# Python it admits (a 3 GB download; FLOOR_PYTHON=/path/to/python3.10 where that is not on PATH).
FLOOR_VENV ?= .venv-floor
FLOOR_PYTHON ?= python3.10
test-floor:
	mkdir -p $(FLOOR_VENV)
	$(PYTHON) .ci/floor_constraints.py > $(FLOOR_VENV)/constraints.txt
	$(MAKE) --no-print-directory test VENV=$(FLOOR_VENV) PYTHON=$(FLOOR_PYTHON) \
		CONSTRAINTS=$(FLOOR_VENV)/constraints.txt \
		TORCH=$$(sed -n 's/^torch==//p' $(FLOOR_VENV)/constraints.txt) \
		TORCHVISION=$$(sed -n 's/^torchvision==//p' $(FLOOR_VENV)/constraints.txt)

# The CUDA smoke tests (skipped without a GPU).
test-gpu: install
	$(BIN)/python -m pytest -m gpu

smoke: install
	$(BIN)/python run.py experiment=smoke

# Speed benchmark -> results/bench.{json,md} (on a GPU results/bench_cuda.*): each model's
# training step and evaluation per compile mode, replica groups, paper Table 1 projected.
# Options (benchmark/speed/bench.py) in BENCH_ARGS, e.g. "device=cpu baseline=../old": the
# default step of a checkout of an earlier commit (`git worktree add ../old HEAD~1`) timed
# back to back with this one's.
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m benchmark.speed $(BENCH_ARGS)

reproduce-table1: install
	$(BIN)/python -m benchmark.runs.reproduce experiment=$(PRESET) model=$(MODELS) \
		dataset=$(DATASETS) seed=$(SEEDS) hydra/launcher=$(LAUNCHER) results_dir=$(RESULTS) \
		$(if $(filter logger=% ~logger,$(ARGS)),,logger=$(strip $(LOGGER))) $(ARGS)

table1: install
	$(BIN)/python -m benchmark.table $(RESULTS)

# The studies of results/protocol_study.md and results/sizes_study.md (resumable, as above).
protocol-study: install
	$(BIN)/python -m benchmark.runs.prepare_data mnist,omniglot_images
	$(BIN)/python -m benchmark.runs.prepare_data mnist dataset.binarization=static
	$(BIN)/python run.py -m experiment=protocol_study $(ARGS)
	$(BIN)/python run.py -m experiment=protocol_study dataset=omniglot_images \
		dataset.binarization=dynamic $(ARGS)
	$(BIN)/python run.py experiment=protocol_500 $(ARGS)
	$(BIN)/python -m benchmark.table results/protocol_study
	$(BIN)/python -m benchmark.table.studies results/protocol_study --paper-lines \
		--title "Protocol study: IWAE under each binarization, 30 epochs (static also 500)"

size-study: install
	$(BIN)/python -m benchmark.runs.prepare_data mnist dataset.binarization=static
	$(BIN)/python -m benchmark.runs.prepare_data omniglot_images
	for preset in sizes sizes_omniglot sizes_4k sizes_16k; do \
		$(BIN)/python run.py -m experiment=$$preset hydra/launcher=$(LAUNCHER) $(ARGS) || exit 1; \
	done
	$(BIN)/python -m benchmark.table results/sizes
	$(BIN)/python -m benchmark.table.sizes results/sizes

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
