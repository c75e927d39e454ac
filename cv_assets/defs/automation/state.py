"""What the retraining triggers read from the instance: new accepted data, recent trainings.

Conditions, sensors and the schedule all ask these same questions, so they answer the same way.
"""

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

# Every training run carries this tag (training_job, hpo_sweep and automation-launched runs), so
# the cooldown and the concurrency limit see all of them, however they were started.
TRAINING_TAG = ("cv_assets/stage", "training")
PAGE = 1000


@dataclass(frozen=True)
class NewData:
    images: int
    batches: tuple[str, ...]
    dataset_version: str | None

    def describe(self) -> str:
        since = f"dataset {self.dataset_version}" if self.dataset_version else "no dataset yet"
        shown = ", ".join(self.batches[:5]) + (" ..." if len(self.batches) > 5 else "")
        return f"{self.images} newly accepted images in {len(self.batches)} batches since " + (
            f"{since} ({shown})" if self.batches else since
        )


def _meta(mat: dg.AssetMaterialization, key: str) -> Any:
    v = mat.metadata.get(key)
    return v.value if v is not None else None


def _latest(instance: dg.DagsterInstance, asset: str) -> tuple[int, dg.AssetMaterialization] | None:
    recs = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
    if not recs or recs[0].asset_materialization is None:
        return None
    return recs[0].storage_id, recs[0].asset_materialization


def new_accepted_data(instance: dg.DagsterInstance) -> NewData:
    """Accepted images in validated batches that the newest ``training_dataset`` does not hold.

    The dataset's own list of batches decides, not timestamps: a batch validated while the
    snapshot was being taken is counted as new, because the snapshot did not see it.
    """
    last = _latest(instance, "training_dataset")
    included: set[str] = set()
    version = None
    if last is not None:
        version = str(_meta(last[1], "dataset_version"))
        ids = _meta(last[1], "batch_ids")
        included = set(json.loads(ids) if isinstance(ids, str) else ids or [])
    newest: dict[str, tuple[int, bool]] = {}
    after = None
    while True:
        res = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("validated_batch"), after_storage_id=after),
            limit=PAGE,
            ascending=True,
        )
        for rec in res.records:
            mat = rec.asset_materialization
            if mat is None or mat.partition is None:
                continue
            ok = _meta(mat, "acceptance_ok")
            newest[mat.partition] = (int(_meta(mat, "accepted") or 0), ok is not False)
        if not res.has_more:
            break
        after = res.records[-1].storage_id
    new = sorted(b for b, (n, ok) in newest.items() if ok and n > 0 and b not in included)
    return NewData(sum(newest[b][0] for b in new), tuple(new), version)


def last_training_start(instance: dg.DagsterInstance, within_s: float) -> datetime | None:
    """When the newest training run (any trigger) was created, if within ``within_s``."""
    since = datetime.fromtimestamp(time.time() - within_s, UTC)
    runs = instance.get_run_records(
        dg.RunsFilter(tags=dict([TRAINING_TAG]), created_after=since), limit=1
    )
    return runs[0].create_timestamp if runs else None
