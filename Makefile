# Both targets are idempotent: the venv is built once and rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all install demo test lint clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first, pinned: a plain `torch` requirement would resolve a multi-GB CUDA build.
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[broker,fast,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamad demo

test: $(STAMP)
	# three workers, one test file each at a time: the integration tests mostly wait on the
	# broker and on child processes, so the suite takes 3.3 min instead of 9.3 on 2 cores
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check streamad connectors tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
