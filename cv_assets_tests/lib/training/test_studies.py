"""Where Optuna keeps a study: beside MLflow's tracking store, because one set of tables cannot
hold both (each keeps its schema revision in alembic's ``alembic_version``)."""

import sqlite3

import optuna
import pytest

from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.studies import (
    STORAGE_VAR,
    StudyStorageUnavailable,
    open_study_storage,
    study_storage,
)

pytestmark = pytest.mark.unit


def _revision(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


def test_optuna_refuses_a_database_mlflow_made_so_the_study_sits_beside_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    tracking.experiment_id(c, artifact_location=str(tmp_path / "mlruns"))  # its alembic_version
    mlflow_rev = _revision(tmp_path / "mlflow.db")
    with pytest.raises(RuntimeError, match="no longer compatible with the table schema"):
        optuna.storages.RDBStorage(uri)  # the same file: Optuna reads MLflow's revision
    s = study_storage(uri, {})
    assert s.url == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert s.where == f"{tmp_path / 'optuna.db'} (beside MLflow's database)"
    optuna.create_study(study_name="s", storage=open_study_storage(s)).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1
    )
    # Both stores keep working, each with its own alembic_version.
    assert tracking.experiment_id(c)
    assert len(optuna.load_study(study_name="s", storage=str(s.url)).trials) == 1
    assert _revision(tmp_path / "mlflow.db") == mlflow_rev


def test_postgres_studies_get_a_schema_of_their_own_in_mlflows_database():
    s = study_storage("postgresql://mlflow:s3cret@db.internal:5432/mlflow", {})
    assert s.url == "postgresql://mlflow:s3cret@db.internal:5432/mlflow" and s.schema == "optuna"
    assert s.where == "schema 'optuna' of MLflow's Postgres database (db.internal/mlflow)"
    # The driver a deployment names is kept; postgres:// is SQLAlchemy's postgresql://.
    assert study_storage("postgresql+psycopg2://u@h/m", {}).url == "postgresql+psycopg2://u@h/m"
    assert study_storage("postgres://u@h/m", {}).url == "postgresql://u@h/m"


def test_an_mlflow_server_needs_the_variable_else_the_study_is_in_memory_with_a_warning():
    s = study_storage("https://user:tok3n@mlflow.example.com", {})
    assert s.url is None and not s.persistent
    assert STORAGE_VAR in s.warning and "tok3n" not in s.warning
    assert "user:***@mlflow.example.com" in s.warning
    given = {STORAGE_VAR: "postgresql://optuna:pa55@db/optuna"}
    s = study_storage("https://mlflow.example.com", given)
    assert s.url == "postgresql://optuna:pa55@db/optuna" and s.schema is None
    assert s.where == f"the postgresql database {STORAGE_VAR} names (db/optuna)"
    # The variable wins over the SQLite default too.
    assert study_storage("sqlite:///x/mlflow.db", given).url == given[STORAGE_VAR]


def test_a_storage_that_cannot_be_opened_is_named_without_its_password(tmp_path):
    s = study_storage("https://mlflow.example.com", {STORAGE_VAR: "nosuchdb://u:pa55@h/x"})
    with pytest.raises(StudyStorageUnavailable, match=r"could not be opened") as e:
        open_study_storage(s)
    assert "pa55" not in str(e.value)
