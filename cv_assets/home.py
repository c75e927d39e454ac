"""Preparing ``CV_ASSETS_HOME``: its folders and the Dagster instance config inside it."""

import os
import shutil
from pathlib import Path

from cv_assets.lib.settings import PlatformConfig

REPO = Path(__file__).resolve().parents[1]


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
    env = dict(os.environ)
    env["CV_ASSETS_HOME"] = str(cfg.home)
    env["DAGSTER_HOME"] = str(cfg.dagster_home)
    env.setdefault("YOLO_OFFLINE", "1")
    return env
