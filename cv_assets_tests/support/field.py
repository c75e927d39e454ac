"""A day of field telemetry in a home, as the ingest service would have stored it."""

from typing import Any

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.telemetry.contract import validate_batch
from cv_assets.lib.telemetry.spool import Spool


def store_events(
    cfg: PlatformConfig, store: ArtifactStore, events: list[dict[str, Any]], version: str
) -> None:
    """What the service does with a batch: validate it, spool it, flush it to Parquet."""
    accepted, rejected = validate_batch({"schema_version": 1, "events": events},
                                        {version: len(cfg.classes)})  # fmt: skip
    assert not rejected and len(accepted) == len(events), rejected[:3]
    spool = Spool(cfg.home / "telemetry" / "spool", store)
    try:
        assert spool.add(accepted) == (len(events), 0)
        assert spool.flush()
    finally:
        spool.close()
