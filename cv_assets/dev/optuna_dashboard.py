"""optuna-dashboard on 127.0.0.1 over the home's hyperparameter studies (``make optuna-dashboard``).

The studies are where the training worker keeps them (``lib/training/studies.py``): beside
MLflow's tracking store of this home (``$CV_ASSETS_HOME/optuna.db`` for the embedded default,
schema ``optuna`` of MLflow's Postgres database when deployed), or ``CV_ASSETS_OPTUNA_STORAGE``.
The storage URL may hold a password, so it is opened here and never printed or passed on a
command line (where ``ps`` would show it): what is printed is where the studies are, in words.
"""

from __future__ import annotations

import argparse
import os
import sys

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.training.studies import (
    STORAGE_VAR,
    StudyStorageUnavailable,
    open_study_storage,
    study_storage,
)

HOST = "127.0.0.1"
DEFAULT_PORT = 8085  # Label Studio has 8080, the telemetry service 8090, MLflow 5000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="optuna-dashboard over the home's studies")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    cfg = PlatformConfig.from_env()
    where = study_storage(cfg.mlflow_tracking_uri, os.environ)
    if not where.persistent:
        sys.exit(
            f"cv_assets.dev.optuna_dashboard: {where.warning}. There is nothing to show: set "
            f"{STORAGE_VAR} to the database the training worker keeps its studies in."
        )
    try:
        storage = open_study_storage(where, heartbeat=False)
    except StudyStorageUnavailable as e:
        sys.exit(f"cv_assets.dev.optuna_dashboard: {e}")
    print(f"optuna-dashboard: http://{HOST}:{args.port}/dashboard (studies in {where.where})")
    from optuna_dashboard import run_server

    run_server(storage, host=HOST, port=args.port)


if __name__ == "__main__":
    main()
