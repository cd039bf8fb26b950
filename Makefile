# Two commands on a fresh machine with Python 3.11 and make:
#   make demo   sets everything up, then runs the walkthrough on the local mesh
#   make test   sets everything up, then runs the linters and every test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint unit bench clean browser

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
	$(BIN)/mypy canary serving payloads mesh loadtest verifier commands

# The browser test drives Debian's chromium through Playwright (never Playwright's
# own browser download). Installing it needs root and apt; without them the test
# skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || \
	  (DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	  echo "could not install chromium (needs root and apt): the browser test will skip"

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: lint browser
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

bench: install
	$(BIN)/python -m bench.mesh_latency
	$(BIN)/python -m bench.loadtest_overhead
	$(BIN)/python -m bench.verdict_guarantees
	$(BIN)/python -m bench.sequential_vs_fixed
	$(BIN)/python -m bench.percentile_ratio
	$(BIN)/python -m bench.fuzz_parsing

.PHONY: bench-load
bench-load: install
	$(BIN)/python -m bench.loadtest_overhead

clean:
	-$(BIN)/canary mesh down
	rm -rf $(VENV) .canary .mypy_cache .ruff_cache .pytest_cache

# Ten minutes of mixed load with a routing change a minute and a replica killed (bench/soak.py).
.PHONY: soak
soak: install
	$(BIN)/python -m bench.soak
