"""Preparing ``CV_ASSETS_HOME``: its folders and the Dagster instance config inside it."""

import os
import shutil
from pathlib import Path

from cv_assets.lib.core.settings import PlatformConfig

REPO = Path(__file__).resolve().parents[2]


def prepare_home(cfg: PlatformConfig, dagster_yaml: Path | None = None) -> dict[str, str]:
    """Create the home's folders, install ``dagster.yaml`` and return the environment to use.

    The returned environment pins ``DAGSTER_HOME`` and ``CV_ASSETS_HOME``, so that the webserver,
    the daemon, every run process and the CLI all read the same instance.
    """
    src = dagster_yaml or REPO / "dagster.yaml"
    cfg.dagster_home.mkdir(parents=True, exist_ok=True)
    if cfg.profile == "local":
        Path(cfg.landing_root).mkdir(parents=True, exist_ok=True)
        Path(cfg.artifacts_root).mkdir(parents=True, exist_ok=True)
    if src.is_file():
        shutil.copyfile(src, cfg.dagster_home / "dagster.yaml")
        _create_storage(cfg.dagster_home)
    env = dict(os.environ)
    env["CV_ASSETS_HOME"] = str(cfg.home)
    env["DAGSTER_HOME"] = str(cfg.dagster_home)
    env.setdefault("YOLO_OFFLINE", "1")
    env.setdefault("YOLO_CONFIG_DIR", str(cfg.home / "ultralytics"))
    return env


def _create_storage(dagster_home: Path) -> None:
    """Create the instance's SQLite schemas once, up front.

    ``dagster dev`` starts the webserver and the daemon at the same moment; on a fresh home both
    would create the same tables and one of them dies with "table ... already exists".
    """
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(dg.AssetKey("_init"))
    finally:
        instance.dispose()
