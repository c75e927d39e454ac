"""Where an Optuna study lives: beside MLflow's tracking store, never inside its namespace.

Optuna's RDB storage and MLflow's tracking store both keep their schema revision in alembic's
default table, ``alembic_version``, so one set of tables cannot hold both: on a SQLite file that
MLflow made, Optuna refuses to start ("no longer compatible with the table schema"), and a file
Optuna made first would refuse MLflow the same way (docs/decisions.md, "Hyperparameter search").
So a study is kept

- for ``sqlite:///…/mlflow.db``: in ``optuna.db`` in the same folder;
- for ``postgresql://…/db``: in the same database, in a schema of its own (``optuna``), which
  Optuna's connections put first on their ``search_path``;
- for an MLflow server (``http(s)://``) or another store: where ``CV_ASSETS_OPTUNA_STORAGE``
  says (any URL Optuna takes), else in memory, with a warning: a retried run then starts afresh.

``CV_ASSETS_OPTUNA_STORAGE``, when set, wins over all of these. The storage URL may hold a
password: what a person reads is ``StudyStorage.where``, which never contains one.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cv_assets.lib.core.secrets import mask_secrets_in, mask_uri

log = logging.getLogger(__name__)

STORAGE_VAR = "CV_ASSETS_OPTUNA_STORAGE"
SQLITE_NAME = "optuna.db"
SCHEMA = "optuna"
# A trial whose process stopped beating this long ago is failed by the next one to run
# (Optuna's heartbeat): a killed worker's trial does not stay RUNNING for ever.
HEARTBEAT_S, GRACE_S = 30, 120


class StudyStorageUnavailable(ConnectionError):
    """The study's database could not be opened; names it without its password."""


@dataclass(frozen=True)
class StudyStorage:
    url: str | None  # None: in memory
    where: str  # what a person reads: never a password
    schema: str | None = None  # a Postgres schema of its own, first on the search_path
    warning: str = ""

    @property
    def persistent(self) -> bool:
        return self.url is not None


def study_storage(tracking_uri: str, env: Mapping[str, str]) -> StudyStorage:
    """Where the studies of a platform whose MLflow tracking URI is ``tracking_uri`` live."""
    given = env.get(STORAGE_VAR, "").strip()
    if given:
        kind = urlsplit(given).scheme.split("+", 1)[0] or "database"
        return StudyStorage(given, f"the {kind} database {STORAGE_VAR} names ({_db_of(given)})")
    scheme = urlsplit(tracking_uri).scheme.lower() if "://" in tracking_uri else ""
    if scheme == "sqlite":
        path = tracking_uri.split("://", 1)[1].split("?", 1)[0][1:]  # sqlite:///<path>
        if path and path != ":memory:":
            beside = Path(path).with_name(SQLITE_NAME)
            return StudyStorage(f"sqlite:///{beside}", f"{beside} (beside MLflow's database)")
    if scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        url = "postgresql" + tracking_uri[len(scheme.split("+", 1)[0]) :]
        where = f"schema {SCHEMA!r} of MLflow's Postgres database ({_db_of(tracking_uri)})"
        return StudyStorage(url, where, schema=SCHEMA)
    what = f"MLflow tracking at {mask_uri(tracking_uri)}"
    return StudyStorage(
        None,
        "memory (this process only)",
        warning=f"{what} is not a SQLite or Postgres database the study can sit beside: the "
        f"Optuna study is kept in memory, so a retried run starts it afresh; set {STORAGE_VAR} "
        "to a database URL (e.g. postgresql://…/optuna) to keep it",
    )


def _db_of(uri: str) -> str:
    parts = urlsplit(mask_uri(uri))
    return f"{parts.hostname or 'localhost'}{parts.path}"


def open_study_storage(s: StudyStorage, heartbeat: bool = True) -> Any:
    """An Optuna storage for ``s`` (its schema created first on Postgres).

    Raises:
        StudyStorageUnavailable: the database refused or did not answer; the message names it
            as ``s.where`` does, and the driver's own words with any password masked.
    """
    import optuna

    if s.url is None:
        if s.warning:
            log.warning(s.warning)
        return optuna.storages.InMemoryStorage()
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs |= {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
    try:
        if s.schema:
            _create_schema(s.url, s.schema)
            # libpq's options: every connection of Optuna's engine looks in the schema first,
            # so its tables and its alembic_version land there and not beside MLflow's.
            opts = {"options": f"-csearch_path={s.schema}"}
            kwargs["engine_kwargs"] = {"connect_args": opts}
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(s.url, **kwargs)
    except Exception as e:
        said = mask_secrets_in(f"{type(e).__name__}: {e}", [s.url])
        raise StudyStorageUnavailable(
            f"the Optuna study storage ({s.where}) could not be opened: {said}"
        ) from None


def _create_schema(url: str, schema: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        engine.dispose()
