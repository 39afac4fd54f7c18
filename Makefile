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

# Ports of the demo, each optional (make demo PORT=13952 WS_PORT=18951 ...; 0: any free
# one). Only the command line counts: an exported PORT in the environment does not move it.
demo_flag = $(if $(filter command line,$(origin $(1))),$(2) $($(1)))
DEMO_PORTS := $(call demo_flag,PORT,--port) $(call demo_flag,WS_PORT,--ws-port) \
	$(call demo_flag,WSS_PORT,--wss-port) $(call demo_flag,ADMIN_PORT,--admin-port) \
	$(call demo_flag,NOTIFIER_PORT,--notifier-port) \
	$(call demo_flag,CONTROL_PORT,--control-port) \
	$(call demo_flag,NOTIFIER_HTTP_PORT,--notifier-http-port) \
	$(call demo_flag,NOTIFIER_HTTPS_PORT,--notifier-https-port) \
	$(call demo_flag,WORK_PATH,--work-path)

demo: $(STAMP)
	$(BIN)/twistd -n smbridge $(strip --demo $(DEMO_PORTS))

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

# Every benchmark in full (each also runs in a quick mode inside the tests, so none
# rots: tests/test_bench_list.py); each writes bench/results/<name>.json.
BENCHES := run lifecycle reconnect sender storm timers tunnel sizing switchover workers
bench: $(STAMP)
	@set -e; for b in $(BENCHES); do \
		echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py; \
	done

clean:
	rm -rf $(VENV) $(TOOLS) smbridge-work .pytest_cache bench/results

# Nightly-style fuzzing of the frame decoder: a million mutated frames, at most 30 min.
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py --count 1000000 --min-count 1000000 --seconds 1800
