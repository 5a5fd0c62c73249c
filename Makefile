# The two commands (see README): `make up` starts the hub, `make test` runs every check.
# Everything a test needs is installed here, into .venv and node_modules, from the package registries.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HUBCTL_ARGS ?=

.PHONY: up test lint typecheck contracts unit install lock tools node clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Every dependency from the lock file, each checked against its hash (runtime, the embedded
# nats-server, dev and bench extras), then the project alone. Strict editable install: a link
# tree of the sources under build/, so the one import root `referral_hub` maps onto services/
# and contracts/, and mypy can follow it.
$(STAMP): requirements/dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e . --config-settings editable_mode=strict
	touch $(STAMP)

# Both lock files from pyproject.toml's pins, with hashes, for Python 3.11 on linux x86_64
# whatever machine runs it: requirements/dev.txt for make up and make test, requirements/prod.txt
# (runtime only) for the Dockerfile. After editing a pin: make lock, commit all three files.
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock"
lock: | $(STAMP)
	$(LOCK) pyproject.toml --extra dev -o requirements/dev.txt
	$(LOCK) pyproject.toml -o requirements/prod.txt

# Re-link on every run so files added since the last install are importable.
install: $(STAMP)
	$(BIN)/pip install -qq --no-deps -e . --config-settings editable_mode=strict

up: install
	$(BIN)/hubctl up $(HUBCTL_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

contracts: install
	$(BIN)/hubctl contracts check

# Debian's prometheus package (Prometheus 2.42 and promtool) for the ops tests, and Debian's
# chromium for the portal's browser tests (Playwright drives /usr/bin/chromium); installed,
# never assumed. Needs root or sudo, as CI has.
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus chromium >/dev/null; }

# The official AsyncAPI parser (@asyncapi/parser, pinned in package-lock.json) that the contract
# tests run through node. Reinstalled only when the lock file is newer than the installed tree.
# No install scripts: the one dependency that has one (@scarf/scarf) only reports downloads.
NODE_STAMP := node_modules/.package-lock.json

$(NODE_STAMP): package-lock.json package.json
	npm ci --no-audit --no-fund --silent --ignore-scripts
	touch $(NODE_STAMP)

node: $(NODE_STAMP)

# Most tests wait on real servers, timers and processes rather than the CPU, so three
# workers on two cores roughly halve the run; a module stays on one worker (its fixtures
# are module-scoped). PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 3
unit: install tools node
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# pytest runs last, so its summary is the run's closing line.
test: lint typecheck contracts unit

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
