"""``training_dataset``: the versioned snapshot that training and evaluation take as input."""

import dagster as dg

from cv_assets.defs.common import OWNERS, parquet_table_metadata
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.dataset.snapshot import EmptyDataset, publish_snapshot
from cv_assets.lib.ingest.records import ValidatedBatch
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
    validated_batch: dict[str, ValidatedBatch],
    artifacts: ArtifactStoreResource,
    settings: PlatformSettings,
) -> dg.MaterializeResult[TrainingDataset]:
    """Versioned snapshot of all accepted samples, split 80/10/10 by content hash."""
    try:
        out = publish_snapshot(artifacts.store, validated_batch, settings.classes)
    except EmptyDataset as e:
        raise dg.Failure(description=str(e)) from None
    snap, record = out.snapshot, out.record
    context.log.info(f"dataset {snap.version}: {snap.counts} from {len(snap.batches)} batches")
    return dg.MaterializeResult(
        value=record,
        data_version=dg.DataVersion(snap.version),
        metadata=parquet_table_metadata(out.table)
        | {
            "dataset_version": snap.version,
            "images": record["images"],
            **{f"{s}_images": n for s, n in snap.counts.items()},
            "batches": len(snap.batches),
            # The volume trigger counts new data against exactly these batches.
            "batch_ids": dg.MetadataValue.json(list(snap.batches)),
            "excluded_batches": ", ".join(record["excluded_batches"]) or "none",
            "superseded_labels": snap.superseded,
            "boxes_by_class": dg.MetadataValue.md(out.boxes_by_class_md()),
            "data_yaml": dg.MetadataValue.path(out.data_yaml.uri),
            "samples_sha256": out.samples.sha256,
        },
    )
