"""An IO manager that passes small JSON records (URIs, hashes, counts) between assets.

Assets never hand each other pickled tensors or images: they return a record that points at files
in the artifact store, and this IO manager keeps that record, readable by a person, at
``records/<asset>/<partition>.json`` in the same store (so it works on S3 as well).

The store is not the root of trust: whoever can write the bucket could point a record at other
weights and record their hash beside them. So each record's sha256 goes into its materialization's
metadata (``record_sha256``, in the Dagster instance's database), and a record is handed
downstream only if it still hashes to what its newest materialization says.
"""

import hashlib
import json
from typing import Any

import dagster as dg

from cv_assets.lib.core import layout
from cv_assets.resources.storage import ArtifactStoreResource

RECORD_SHA = "record_sha256"


def record_key(asset: str, partition: str | None) -> str:
    return layout.record(asset, partition)


def record_bytes(obj: Any) -> bytes:
    """The stored form of a record: the bytes whose sha256 the materialization carries."""
    return json.dumps(obj, indent=1, sort_keys=True).encode()


def record_sha256(obj: Any) -> str:
    return hashlib.sha256(record_bytes(obj)).hexdigest()


class RecordTampered(dg.Failure):
    pass


class JsonRecordIOManager(dg.ConfigurableIOManager):
    """Stores each asset's return value (a JSON-serialisable dict) in the artifact store."""

    artifacts: dg.ResourceDependency[ArtifactStoreResource]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        pk = context.partition_key if context.has_partition_key else None
        key = record_key(context.asset_key.to_user_string(), pk)
        data = record_bytes(obj)
        self.artifacts.store.put_bytes(key, data)
        context.add_output_metadata({RECORD_SHA: hashlib.sha256(data).hexdigest()})

    def load_input(self, context: dg.InputContext) -> Any:
        asset = context.asset_key.to_user_string()
        store = self.artifacts.store
        if not context.has_asset_partitions:
            key = record_key(asset, None)
            if not store.exists(key):
                raise dg.Failure(
                    description=f"{asset} has not been materialized yet, so there is nothing "
                    f"to read for this step: materialize {asset} first",
                    allow_retries=False,
                )
            return self._verified(context, key, None)
        keys = context.asset_partition_keys
        if context.upstream_output is not None and len(keys) == 1 and context.has_partition_key:
            return self._verified(context, record_key(asset, keys[0]), keys[0])
        # A many-partition input: {partition: record}, skipping partitions never materialised.
        # (Not checked one by one: that is a query per partition, and these records hold table
        # URIs with their own sha256, never weights that get unpickled.)
        out: dict[str, Any] = {}
        for pk in keys:
            k = record_key(asset, pk)
            if store.exists(k):
                out[pk] = json.loads(store.get_bytes(k))
        return out

    def _verified(self, context: dg.InputContext, key: str, partition: str | None) -> Any:
        data = self.artifacts.store.get_bytes(key)
        got = hashlib.sha256(data).hexdigest()
        expected, run = _recorded_sha(context, partition)
        if expected is not None and got != expected:
            raise RecordTampered(
                description=f"{self.artifacts.store.uri(key)} hashes to {got[:16]}, but its "
                f"materialization (run {run[:8] or 'runless'}) recorded {expected[:16]}: the "
                "record was changed after it was written; refusing to use it (re-materialize "
                f"{context.asset_key.to_user_string()} to write it again)",
                allow_retries=False,
            )
        return json.loads(data)


def _recorded_sha(context: dg.InputContext, partition: str | None) -> tuple[str | None, str]:
    """``record_sha256`` of the newest materialization of the input's asset (and partition)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=context.asset_key, asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return None, ""
    meta = records[0].asset_materialization.metadata.get(RECORD_SHA)
    # Materializations written before records carried their hash are trusted as they were.
    return (str(meta.value) if meta is not None else None), records[0].run_id
