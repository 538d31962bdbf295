# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pins apply to every install, build environments included.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint format clean bench bench-ddp bench-precision bench-quality

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Each demo gets a fresh run directory, so an earlier demo's outputs are never overwritten.
DEMO_RUN ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(BIN)/vaekit train configs/demo.toml --run-dir $(DEMO_RUN)
	$(BIN)/vaekit evaluate $(DEMO_RUN) --iw 100 --limit 2000
	$(BIN)/vaekit report $(DEMO_RUN)
	@echo "demo report: $(DEMO_RUN)/report.html (open it in a browser)"

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Speed benchmark (not part of CI): bench/results/*.json and BENCHMARKS.md, about 15 minutes on
# 2 cores. BENCH_ARGS adds options, e.g. BENCH_ARGS="--precision bf16" or "--quick".
BENCH_ARGS ?=

bench: $(STAMP)
	$(BIN)/python bench/run.py --scaling $(BENCH_ARGS)

# Data-parallel training speed (not part of CI): one process (2 threads, 1 thread) against two
# under torchrun; bench/results/cpu-ddp.json and BENCHMARKS.md. BENCH_ARGS e.g. "--repeats 5".
bench-ddp: $(STAMP)
	$(BIN)/python bench/ddp.py $(BENCH_ARGS)

# Does bf16 training cost likelihood? The mlp workload, 20 epochs in fp32 and in bf16, each
# scored by the test IW-NLL (K = 5000, 2,000 test images); not part of CI.
bench-precision: $(STAMP)
	$(BIN)/python bench/precision.py $(BENCH_ARGS)

# Model quality (not part of CI): each recipe trained for MINUTES of wall clock, then its test
# NLL with K = 5000; rows accumulate in bench/results/quality.json and BENCHMARKS.md.
# PEER=pythae trains pythae's model of each recipe's kind instead (in bench/.venvs/pythae).
RECIPES ?= fmnist-vae,fmnist-iwae,fmnist-vamp,fmnist-iaf,fmnist-hvae
MINUTES ?= 60
SEEDS ?= 0
PEER ?=
# DEVICE=cuda trains and evaluates on the GPU (rows kept apart from the CPU comparison).
DEVICE ?=
bench-quality: $(STAMP)
	$(BIN)/python bench/quality.py --recipes $(RECIPES) --minutes $(MINUTES) --seeds $(SEEDS) \
		$(if $(PEER),--peer $(PEER)) $(if $(DEVICE),--device $(DEVICE)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
