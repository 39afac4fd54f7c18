# Quick start: `make demo` runs the bridge with its embedded demo Notifier;
# `make test` runs the whole test suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration bench fuzz lint clean

TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed

# sslyze (the TLS profile test) pins an older cryptography: it gets its own venv.
$(TOOLS_STAMP):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q sslyze
	touch $(TOOLS_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/twistd -n smbridge --demo

test: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(TOOLS) smbridge-work .pytest_cache bench/results

# Nightly-style fuzzing of the frame decoder: a million mutated frames, at most 30 min.
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py --count 1000000 --min-count 1000000 --seconds 1800
