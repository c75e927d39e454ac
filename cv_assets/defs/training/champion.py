"""What ``champion_model`` records, whoever decides: the gate inside a run, or a person.

``champion_model``'s latest materialization *is* the current champion. The asset writes it when
the gate blesses a challenger; ``cv-assets promote`` and ``rollback`` write it as a runless
materialization, with the same record and metadata. So every asset that measures "the champion"
takes it as an input, the UI's history shows manual decisions beside automatic ones, and after a
rollback the monitoring assets show as stale until they measure the rolled-back model.
"""

from typing import Any

import dagster as dg

from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.tracking.registry import Registry
from cv_assets.lib.training.promotion import champion_data_version, champion_record
from cv_assets.lib.training.records import ChampionModel
from cv_assets.resources.io_manager import RECORD_SHA, record_bytes, record_key, record_sha256

ASSET = "champion_model"


def champion_metadata(
    reg: Registry, record: ChampionModel, ui_url: str, who: str
) -> dict[str, Any]:
    hist = reg.history()[-10:]
    rows = [(h["at"], h["action"], h["version"], h["previous"] or "-", h["who"]) for h in hist]
    meta: dict[str, Any] = {
        "version": str(record.get("version") or "none"),
        "status": record.get("status", "none"),
        "action": record["action"],
        "decided_by": who,
        "history": dg.MetadataValue.md(md_table(rows, ["at", "action", "version", "from", "who"])),
    }
    if record.get("pending_version"):
        meta["pending_version"] = str(record["pending_version"])
    if record.get("version"):
        meta |= {
            "map50": record.get("map50") or 0.0,
            "map50_95": record.get("map50_95") or 0.0,
            "weights_sha256": record.get("weights_sha256", ""),
            "dataset_version": record.get("dataset_version", ""),
            "registry": dg.MetadataValue.url(
                tracking.model_url(ui_url, reg.name, str(record["version"]))
            ),
        }
    return meta


def report_champion_decision(
    instance: dg.DagsterInstance,
    store: ArtifactStore,
    reg: Registry,
    entry: dict[str, Any],
    ui_url: str,
) -> ChampionModel:
    """Record a decision made outside a run (promote, approve, rollback) as a materialization of
    ``champion_model``: the record the IO manager hands downstream, then the event."""
    action = f"{entry['action']}: v{entry['version']} (was v{entry['previous']}): {entry['why']}"
    record = champion_record(reg, action)
    store.put_bytes(record_key(ASSET, None), record_bytes(record))
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=ASSET,
            description=f"{entry['action']} by {entry['who']}: {entry['why']}",
            metadata=champion_metadata(reg, record, ui_url, entry["who"])
            | {RECORD_SHA: record_sha256(record)},
            tags={"dagster/data_version": champion_data_version(record)},
        )
    )
    return record
