# Two commands on a fresh machine with Python 3.11 and make:
#   make demo   sets everything up, then runs the walkthrough on the local mesh
#   make test   sets everything up, then runs the linters and every test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/canary demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy canary serving mesh loadtest verifier payloads

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: lint
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

bench: install
	$(BIN)/python -m bench.mesh_latency

clean:
	-$(BIN)/canary mesh down
	rm -rf $(VENV) .canary .mypy_cache .ruff_cache .pytest_cache
