# Every target runs from a fresh clone: `make help` lists them.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
# Tools installed in the venv (hadolint, moto_server, mlflow) are found by the tests' subprocesses.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup data run test test-fast test-docker lint format audit clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

setup: $(BIN)/.installed ## create .venv with the pinned dependencies

data: setup ## fetch the real cs-training.csv into data/ (checked by SHA256)
	$(BIN)/python -m credit_risk.devtools.fetch_data

run: setup ## the whole flow locally: MLflow server (SQLite), fetch data, train, promote, serve the API on :8000
	$(BIN)/python -m credit_risk.devtools.local

test: lint ## lint, then the unit and integration tiers: what CI runs
	$(BIN)/python -m pytest tests/unit tests/integration

test-fast: setup ## the unit tier only: needs nothing running, under a minute
	$(BIN)/python -m pytest tests/unit

# As root on Debian it installs docker.io/docker-compose and starts dockerd if none runs.
test-docker: setup ## the Docker tier: build the images, run docker-compose.yml on a real engine
	DOCKER_TIER_INSTALL=1 $(BIN)/python -m pytest tests/docker

lint: setup ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: setup ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

audit: setup ## known-vulnerability audit of every pin (exit 3: no vulnerability service reachable)
	PYTHON=$(BIN)/python bench/audit.sh

clean: ## remove the local MLflow data and caches (keeps data/)
	rm -rf mlflow/data .pytest_cache .ruff_cache
