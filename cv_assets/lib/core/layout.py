"""The artifact store's layout: every key the platform writes, in one place.

Keys are relative to the store's root (a local folder or an ``s3://`` prefix). A key is a contract
with every existing home: changing one here orphans what earlier versions wrote, so keys only
ever gain siblings. DESIGN.md's landing contract is the input side; this is the output side.
"""

from __future__ import annotations

# Dagster records: one JSON file per asset and partition, whose sha256 the materialization carries.
UNPARTITIONED = "_all"
# The registry's own files: every version's history and the champion pointer.
REGISTRY_HISTORY = "registry/history.json"
REGISTRY_CHAMPION = "registry/champion.json"
# The duplicate index: one file per validated batch, holding its images' hashes.
DEDUP_PREFIX = "dedup/"
# `cv-assets doctor` writes and deletes one probe file here.
DOCTOR_PREFIX = ".doctor/"


def record(asset: str, partition: str | None) -> str:
    return f"records/{asset}/{partition or UNPARTITIONED}.json"


def raw_prefix(batch_id: str) -> str:
    """The byte-for-byte copy of a landed batch (``files/``) and its manifest."""
    return f"raw/{batch_id}"


def raw_manifest(batch_id: str) -> str:
    return f"{raw_prefix(batch_id)}/manifest.json"


def raw_files(batch_id: str) -> str:
    return f"{raw_prefix(batch_id)}/files"


def dedup_index(batch_id: str) -> str:
    return f"{DEDUP_PREFIX}{batch_id}.json"


def standardised(batch_id: str) -> str:
    """Accepted images re-encoded as JPEG (``images/``) and their canonical labels."""
    return f"std/{batch_id}"


def validated_table(batch_id: str, table: str) -> str:
    """``samples`` or ``quarantine`` of one validated batch."""
    return f"validated/{batch_id}/{table}.parquet"


def dataset_prefix(version: str) -> str:
    return f"datasets/{version}"


def dataset_samples(version: str) -> str:
    return f"{dataset_prefix(version)}/samples.parquet"


def dataset_split_list(version: str, split: str) -> str:
    return f"{dataset_prefix(version)}/{split}.txt"


def dataset_yaml(version: str) -> str:
    return f"{dataset_prefix(version)}/data.yaml"


def model_record(cache_key: str) -> str:
    return f"models/{cache_key}/record.json"


def model_weights(cache_key: str) -> str:
    return f"models/{cache_key}/best.pt"


def evaluation_record(model_key: str) -> str:
    return f"evaluations/{model_key}/evaluation.json"


def evaluation_plot(model_key: str, name: str) -> str:
    return f"evaluations/{model_key}/{name}.png"


def mobile_release(release_key: str) -> str:
    return f"mobile/{release_key}/release.json"


def mobile_file(release_key: str, file_name: str) -> str:
    return f"mobile/{release_key}/{file_name}"


def drift_prefix(batch_id: str, champion_version: str | int) -> str:
    """A batch's drift report against one champion (``report.html``, ``report.json``)."""
    return f"drift/{batch_id}/v{champion_version}"


def drift_reference(champion_key: str, max_rows: int) -> str:
    """The champion's reference features, computed once per champion and row cap."""
    return f"drift/reference/{champion_key}/{max_rows}.parquet"


def performance_record(batch_id: str, champion_version: str | int) -> str:
    return f"performance/{batch_id}/v{champion_version}.json"


def review_prefix(batch_id: str, champion_version: str | int) -> str:
    """A batch's review queue (``queue.parquet``) and its crops (``crops/``)."""
    return f"review/{batch_id}/v{champion_version}"


def proposals_prefix(batch_id: str, champion_version: str | int) -> str:
    """The champion's proposals for a batch's unlabelled pool (``boxes``, ``images`` tables)."""
    return f"proposals/{batch_id}/v{champion_version}"


ROUNDS_PREFIX = "annotation/rounds/"


def round_manifest(round_id: str) -> str:
    """An annotation round's ledger: its Label Studio project and one entry per task pushed."""
    return f"{ROUNDS_PREFIX}{round_id}/round.json"


def round_collected(round_id: str) -> str:
    """Task id -> the annotation of it already landed (``<id>@<updated_at>``)."""
    return f"{ROUNDS_PREFIX}{round_id}/collected.json"
