"""An IO manager that passes small JSON records (URIs, hashes, counts) between assets.

Assets never hand each other pickled tensors or images: they return a record that points at files
in the artifact store, and this IO manager keeps that record, readable by a person, at
``records/<asset>/<partition>.json`` in the same store (so it works on S3 as well).
"""

import json
from typing import Any

import dagster as dg

from cv_assets.resources.storage import ArtifactStoreResource

UNPARTITIONED = "_all"


def record_key(asset: str, partition: str | None) -> str:
    return f"records/{asset}/{partition or UNPARTITIONED}.json"


class JsonRecordIOManager(dg.ConfigurableIOManager):
    """Stores each asset's return value (a JSON-serialisable dict) in the artifact store."""

    artifacts: dg.ResourceDependency[ArtifactStoreResource]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        pk = context.partition_key if context.has_partition_key else None
        key = record_key(context.asset_key.to_user_string(), pk)
        self.artifacts.store.put_bytes(key, json.dumps(obj, indent=1, sort_keys=True).encode())

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
            return json.loads(store.get_bytes(key))
        keys = context.asset_partition_keys
        if context.upstream_output is not None and len(keys) == 1 and context.has_partition_key:
            return json.loads(store.get_bytes(record_key(asset, keys[0])))
        # A many-partition input: {partition: record}, skipping partitions never materialised.
        out: dict[str, Any] = {}
        for pk in keys:
            k = record_key(asset, pk)
            if store.exists(k):
                out[pk] = json.loads(store.get_bytes(k))
        return out
