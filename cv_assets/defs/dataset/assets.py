"""``training_dataset``: the versioned snapshot that training and evaluation take as input."""

import io
from typing import Any

import dagster as dg
import pandas as pd

from cv_assets.defs.common import OWNERS, parquet_table_metadata
from cv_assets.lib.core import layout
from cv_assets.lib.core.report import md_table
from cv_assets.lib.dataset.snapshot import SPLITS, build_snapshot, data_yaml, parquet_bytes
from cv_assets.resources.storage import ArtifactStoreResource, PlatformSettings


@dg.asset(
    group_name="dataset",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    code_version="1",
    ins={"validated_batch": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
)
def training_dataset(
    context: dg.AssetExecutionContext,
    validated_batch: dict[str, dict[str, Any]],
    artifacts: ArtifactStoreResource,
    settings: PlatformSettings,
) -> dg.MaterializeResult[dict[str, Any]]:
    """Versioned snapshot of all accepted samples, split 80/10/10 by content hash."""
    store = artifacts.store
    usable = {b: r for b, r in validated_batch.items() if r.get("acceptance_ok", True)}
    excluded = sorted(set(validated_batch) - set(usable))
    tables = [
        (b, pd.read_parquet(io.BytesIO(store.verify(r["samples"]))))
        for b, r in sorted(usable.items())
    ]
    snap = build_snapshot(tables, settings.classes)
    if snap.samples.empty:
        raise dg.Failure(description="no accepted samples yet: land and validate a batch first")
    prefix = layout.dataset_prefix(snap.version)
    table = parquet_bytes(snap.samples)
    samples = store.put_bytes(layout.dataset_samples(snap.version), table)
    for split in SPLITS:
        store.put_bytes(
            layout.dataset_split_list(snap.version, split),
            ("\n".join(snap.split_paths(split)) + "\n").encode(),
        )
    yaml_ref = store.put_bytes(
        layout.dataset_yaml(snap.version), data_yaml(snap.classes, store.uri(prefix)).encode()
    )
    record = {
        "version": snap.version,
        "classes": snap.classes,
        "batches": snap.batches,
        "excluded_batches": excluded,
        "counts": snap.counts,
        "class_counts": snap.class_counts,
        "images": len(snap.samples),
        "samples": samples.as_dict(),
        "data_yaml": yaml_ref.as_dict(),
        "data_yaml_key": layout.dataset_yaml(snap.version),
    }
    per_class = md_table(
        [(c, *(snap.class_counts[s][c] for s in SPLITS)) for c in snap.classes],
        ["class", "train boxes", "val boxes", "test boxes"],
    )
    context.log.info(f"dataset {snap.version}: {snap.counts} from {len(snap.batches)} batches")
    return dg.MaterializeResult(
        value=record,
        data_version=dg.DataVersion(snap.version),
        metadata=parquet_table_metadata(table)
        | {
            "dataset_version": snap.version,
            "images": record["images"],
            **{f"{s}_images": n for s, n in snap.counts.items()},
            "batches": len(snap.batches),
            # The volume trigger counts new data against exactly these batches.
            "batch_ids": dg.MetadataValue.json(list(snap.batches)),
            "excluded_batches": ", ".join(excluded) or "none",
            "superseded_labels": snap.superseded,
            "boxes_by_class": dg.MetadataValue.md(per_class),
            "data_yaml": dg.MetadataValue.path(yaml_ref.uri),
            "samples_sha256": samples.sha256,
        },
    )
