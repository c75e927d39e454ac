"""A day of field telemetry in a home, as the ingest service would have stored it."""

from pathlib import Path
from typing import Any

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.telemetry.contract import validate_batch
from cv_assets.lib.telemetry.spool import Spool


def trained_champion(cfg: PlatformConfig, instance) -> tuple[Any, ArtifactStore, Path]:
    """A tiny champion trained on the intaken batches: its version, the store, its ONNX file."""
    from cv_assets.read_side import open_store, registry_for
    from cv_assets_tests.support.jobs import train

    assert train(cfg, instance).success
    champ = registry_for(cfg).champion()
    assert champ is not None
    store = open_store(cfg)
    onnx = store.local_path(store.key_of(str(champ.mobile["onnx_uri"])))
    assert onnx is not None
    return champ, store, onnx


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
