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
OPTUNA_PORT ?= 8085
# The telemetry service's port for `make telemetry` and `make ui`; unset, the service's own
# (CV_ASSETS_TELEMETRY_PORT, else 8090).
TELEMETRY_ENV = $(if $(TELEMETRY_PORT),CV_ASSETS_TELEMETRY_PORT=$(TELEMETRY_PORT))

.PHONY: install system-deps demo test lint typecheck validate pytest test-fast ui mlflow-ui bench gpu-wheels clean \
  labelstudio-install labelstudio export-install telemetry optuna-dashboard

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

# Label Studio in a virtualenv of its own: its pins (pytz<2023, pyarrow<25) clash with ours.
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
$(LS_STAMP): deploy/labelstudio/requirements.txt deploy/labelstudio/constraints.txt
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --disable-pip-version-check \
	  -c deploy/labelstudio/constraints.txt -r deploy/labelstudio/requirements.txt
	@touch $@

labelstudio-install: $(LS_STAMP)

# The LiteRT and Core ML converters in a virtualenv of their own (lib/mobile/convert_worker.py):
# coremltools 9.0 fails under our numpy 2.4, and litert-torch pins typing-extensions<4.13.
EXPORT_VENV := .venv-export
EXPORT_STAMP := $(EXPORT_VENV)/.installed
# torch first, as a CPU build (2.6 GB in all instead of 7 with CUDA's libraries; the files come
# out the same); where no CPU wheel is at hand, the pair our own environment uses.
EXPORT_TORCH_CPU := torch==2.13.0+cpu torchvision==0.28.0
EXPORT_TORCH := torch==2.14.1 torchvision==0.29.1
$(EXPORT_STAMP): deploy/export/requirements.txt deploy/export/constraints.txt
	@test -x $(EXPORT_VENV)/bin/python || $(PYTHON) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/pip install --quiet --disable-pip-version-check $(EXPORT_TORCH_CPU) \
	  || $(EXPORT_VENV)/bin/pip install --quiet --disable-pip-version-check $(EXPORT_TORCH)
	$(EXPORT_VENV)/bin/pip install --quiet --disable-pip-version-check \
	  -c deploy/export/constraints.txt -r deploy/export/requirements.txt
	@touch $@

export-install: $(EXPORT_STAMP)

# Label Studio on 127.0.0.1:8080 (CV_ASSETS_LABELSTUDIO_URL), data under $CV_ASSETS_HOME/labelstudio.
labelstudio: install labelstudio-install
	$(BIN)/python -m cv_assets.dev.labelstudio

# What the integration and browser tests need from Debian (PostgreSQL, Chromium): installed only
# when missing, so a second run costs nothing.
system-deps:
	bash .ci/services.sh
	bash .ci/browser.sh

demo: install export-install
	$(BIN)/python -m cv_assets.dev.demo

test: install labelstudio-install export-install system-deps lint typecheck validate pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/pyright

# `dg check defs` loads the definitions the way `dg dev` and the UI do (pyproject's [tool.dg]),
# against an empty instance.
validate: install
	d=$$(mktemp -d) && printf 'telemetry:\n  enabled: false\n' > $$d/dagster.yaml && \
	  DAGSTER_HOME=$$d $(BIN)/dg check defs

# Every pytest run keeps each test's durations, slowest first, in .cv_assets/test-reports/; the
# line above pytest's final count names the file.
pytest: install
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

# The inner loop: the unit and asset tiers without training, services or a browser. 651 tests,
# 2 min 30 s on 2 idle cores.
test-fast: install
	$(BIN)/python -m pytest -m "(unit or asset) and not slow and not integration" $(PYTEST_ARGS)

# `dg dev` on 127.0.0.1:$(UI_PORT) with the telemetry service beside it (cv_assets/dev/ui.py): the
# service starts first and stops when dg dev exits (Ctrl-C). dg dev loads the project from
# pyproject's [tool.dg] (code location `cv_assets`, the name every cursor and run history is keyed
# by); workspace.yaml names the same location for `dagster dev`.
# The annotation sensor's token: the environment's, else the one `make labelstudio` generated.
ui: install export-install
	CV_ASSETS_LABELSTUDIO_TOKEN=$${CV_ASSETS_LABELSTUDIO_TOKEN:-$$(cat $(CV_ASSETS_HOME)/labelstudio/token 2>/dev/null)} \
	  $(TELEMETRY_ENV) $(BIN)/python -m cv_assets.dev.ui --port $(UI_PORT)

mlflow-ui: install
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) --backend-store-uri sqlite:///$(CV_ASSETS_HOME)/mlflow.db

# optuna-dashboard on 127.0.0.1:$(OPTUNA_PORT) over hpo_sweep's studies: $(CV_ASSETS_HOME)/optuna.db
# beside mlflow.db, the `optuna` schema of MLflow's Postgres database, or CV_ASSETS_OPTUNA_STORAGE
# (cv_assets/dev/optuna_dashboard.py, which never prints the storage URL).
optuna-dashboard: install
	$(BIN)/python -m cv_assets.dev.optuna_dashboard --port $(OPTUNA_PORT)

bench: install export-install
	$(BIN)/python -m benchmarks.run

# Wheels for the GPU check (benchmarks/gpu_check.sh): what a CUDA machine with PyTorch lacks,
# at the versions of constraints.txt, for its Python 3.12. polars is left out (its runtime is too big
# to carry); a stand-in in benchmarks/gpu_shim reads the one CSV Ultralytics needs.
GPU_WHEELS := dagster dagster-shared dagster-pipes alembic sqlalchemy greenlet mako pydantic \
  pydantic-core annotated-types typing-inspection structlog toposort tomli watchdog \
  universal-pathlib pathlib-abc coloredlogs humanfriendly docstring-parser python-dotenv \
  antlr4-python3-runtime tzdata pytz grpcio-health-checking platformdirs mlflow-skinny \
  mlflow-tracing opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions \
  opentelemetry-proto cachetools databricks-sdk gitpython gitdb smmap sqlparse importlib-metadata \
  ultralytics ultralytics-thop ultralytics-platform pandera typeguard tenacity tomlkit \
  rich-click uuid6 google-auth pyasn1 pyasn1-modules onnxslim fastapi starlette multipart \
  sniffio cryptography cffi pycparser

gpu-wheels: install
	mkdir -p .whl && grep -qs '^/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp -d .whl $(foreach p,17 24 27 28 31 34 35,--platform manylinux_2_$(p)_x86_64) \
	  --platform manylinux2014_x86_64 \
	  $$(for p in $(GPU_WHEELS); do grep -iE "^$${p//-/[-_]}==" constraints.txt; done)

clean:
	rm -rf $(CV_ASSETS_HOME) .pytest_cache .ruff_cache

# The telemetry ingest service on 127.0.0.1:8090 (CV_ASSETS_TELEMETRY_HOST, TELEMETRY_PORT). Its
# token: CV_ASSETS_TELEMETRY_TOKEN, else one generated once into
# $CV_ASSETS_HOME/telemetry/token (cv_assets/dev/telemetry.py). Events spool under
# $CV_ASSETS_HOME/telemetry/spool.
telemetry: install
	$(TELEMETRY_ENV) $(BIN)/python -m cv_assets.dev.telemetry
