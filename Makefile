# cv_assets: `make demo` and `make test` are the two set-up commands; each creates .venv if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

export CV_ASSETS_HOME ?= $(CURDIR)/.cv_assets
export DAGSTER_HOME := $(CV_ASSETS_HOME)/dagster_home
export YOLO_OFFLINE := 1
export UI_PORT ?= 3000
MLFLOW_PORT ?= 5000

.PHONY: install demo test lint typecheck validate pytest ui mlflow-ui bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/python -m cv_assets.demo

test: install lint typecheck validate pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/pyright

validate: install
	cd $$(mktemp -d) && DAGSTER_HOME=$$PWD $(BIN)/dagster definitions validate -w $(CURDIR)/workspace.yaml

pytest: install
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

ui: install
	$(BIN)/python -c "from cv_assets.home import prepare_home; from cv_assets.lib.settings import PlatformConfig; prepare_home(PlatformConfig.from_env())"
	$(BIN)/dagster dev -h 127.0.0.1 -p $(UI_PORT) -w workspace.yaml

mlflow-ui: install
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) --backend-store-uri sqlite:///$(CV_ASSETS_HOME)/mlflow.db

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(CV_ASSETS_HOME) .pytest_cache .ruff_cache
