# Every target bootstraps itself: the venv is (re)built when missing or when
# pyproject.toml is newer than the last install.  `make serve` and `make client` install
# the runtime dependencies only; `make test`, `lint` and `format` add the dev extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

.PHONY: test lint format serve client bench bench-codec clean

$(RUNTIME): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@bash tools/system-deps.sh build
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The tests drive real system tools (tshark, iproute2, openssl, ...): tools/system-deps.sh
# installs them from Debian's packages when run as root, and names what is missing otherwise.
test: $(STAMP)
	@bash tools/system-deps.sh test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

serve: $(RUNTIME)
	$(BIN)/switchboard serve $(ARGS)

client: $(RUNTIME)
	$(BIN)/switchboard client $(ARGS)

# The server suite (docs/BENCHMARKS.md, docs/bench.png); the chart needs the bench extra.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m switchboard.bench.suite $(ARGS)

bench-codec: $(STAMP)
	$(BIN)/python -m switchboard.bench.protocol_codec $(ARGS)

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
