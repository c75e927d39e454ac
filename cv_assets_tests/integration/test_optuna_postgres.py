"""The study beside MLflow on Postgres: the same database, a schema of its own (``optuna``), so
that neither store's ``alembic_version`` is the other's."""

import optuna
import pytest

from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.studies import open_study_storage, study_storage

pytestmark = pytest.mark.integration


def test_a_study_and_mlflow_share_one_postgres_database_in_separate_schemas(pg, pg_db):
    db = pg_db("mlflow")
    uri = pg.dsn(db)
    c = tracking.client(uri)
    run = tracking.start_run(c, "before", {})  # MLflow's tables first, as on a live platform
    s = study_storage(uri, {})
    assert pg.password not in s.where
    storage = open_study_storage(s)
    study = optuna.create_study(study_name="sweep", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr0", 1e-4, 1e-2, log=True), n_trials=2)
    # Each store has its own tables and its own alembic revision, in its own schema.
    tables = pg.query(
        db,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_name IN ('alembic_version', 'trials', 'runs', 'studies')",
    )
    assert sorted(tables) == [
        ("optuna", "alembic_version"), ("optuna", "studies"), ("optuna", "trials"),
        ("public", "alembic_version"), ("public", "runs"),
    ]  # fmt: skip
    # Both keep working, and a second opening (a retried run, the dashboard) finds the study.
    assert c.get_run(run).info.run_name == "before"
    tracking.start_run(c, "after", {})
    again = optuna.load_study(study_name="sweep", storage=open_study_storage(s, heartbeat=False))
    assert len(again.trials) == 2


def test_without_a_schema_of_its_own_optuna_refuses_mlflows_database(pg, pg_db):
    uri = pg.dsn(pg_db("mlflow"))
    tracking.experiment_id(tracking.client(uri))
    with pytest.raises(RuntimeError, match="no longer compatible with the table schema"):
        optuna.storages.RDBStorage(uri)  # it reads MLflow's alembic_version as its own
