"""The read side of the faces: the instance, the stores and the registry of a ``PlatformConfig``,
and what the Dagster event log recorded.

The ``cv-assets`` commands, the local-development drivers, the tests and the benchmarks open
these here and nowhere else. Dagster is imported inside the functions that need it: ``predict``
opens the store through this module and starts without paying for Dagster's import.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.tracking.registry import Registry

if TYPE_CHECKING:
    import dagster as dg

PAGE = 1000  # event log records fetched per request


def open_instance(cfg: PlatformConfig) -> dg.DagsterInstance:
    """The Dagster instance of ``cfg``'s home; the caller disposes of it."""
    import dagster as dg

    home = cfg.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.from_config(str(home))


def open_store(cfg: PlatformConfig, root: str | None = None) -> ArtifactStore:
    """The artifact store of ``cfg``; with ``root`` (the landing zone, say), the store there,
    reached through the same S3 endpoint."""
    return ArtifactStore(root or cfg.artifacts_root, cfg.s3_endpoint_url)


def registry_for(cfg: PlatformConfig) -> Registry:
    """The model registry: MLflow's at ``cfg``'s tracking URI, over ``cfg``'s artifact store."""
    return Registry(tracking.client(cfg.mlflow_tracking_uri), tracking.MODEL_NAME, open_store(cfg))


def metadata_of(mat: dg.AssetMaterialization) -> dict[str, Any]:
    """A materialization's metadata as plain values (``MetadataValue.value``), by key."""
    return {k: v.value for k, v in mat.metadata.items()}


def materializations(
    instance: dg.DagsterInstance,
    asset: str,
    partition: str | None = None,
    before: int | None = None,
    storage_id: int | None = None,
) -> Iterator[dg.EventLogRecord]:
    """Records of ``asset``'s materializations, newest first, fetched a page at a time.

    Args:
        partition: only this partition's.
        before: only those older than this storage id.
        storage_id: only this one.
    """
    import dagster as dg

    flt = dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset),
        asset_partitions=[partition] if partition is not None else None,
        before_storage_id=before,
        storage_ids=[storage_id] if storage_id is not None else None,
    )
    cursor = None
    while True:
        res = instance.fetch_materializations(flt, limit=PAGE, cursor=cursor)
        yield from res.records
        if not res.has_more:
            return
        cursor = res.cursor


def latest_metadata(
    instance: dg.DagsterInstance, asset: str, partition: str | None = None
) -> dict[str, Any] | None:
    """Metadata of the newest materialization of ``asset`` (of ``partition``); None if none."""
    import dagster as dg

    flt = dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset),
        asset_partitions=[partition] if partition is not None else None,
    )
    for rec in instance.fetch_materializations(flt, limit=1).records:
        if rec.asset_materialization is not None:
            return metadata_of(rec.asset_materialization)
    return None


def latest_by_partition(instance: dg.DagsterInstance, asset: str) -> dict[str, dict[str, Any]]:
    """Metadata of the newest materialisation of each partition of ``asset``, with its
    ``timestamp``."""
    out: dict[str, dict[str, Any]] = {}
    for rec in materializations(instance, asset):
        mat = rec.asset_materialization
        if mat is None or mat.partition is None or mat.partition in out:
            continue
        out[mat.partition] = metadata_of(mat) | {"timestamp": rec.timestamp}
    return out
