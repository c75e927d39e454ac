"""What every asset group shares: who owns the assets (shown on each asset in the UI), and how a
Parquet table an asset wrote is described to the UI (its columns and row count)."""

import io

import dagster as dg
import pyarrow.parquet as pq

OWNERS = ["team:ml-platform"]


def parquet_table_metadata(data: bytes, name: str | None = None) -> dict[str, dg.MetadataValue]:
    """The column schema and row count of a Parquet file, read from its footer.

    Args:
        data: the Parquet file, as written to the artifact store.
        name: ``None`` for the asset's main table, which the UI shows under the standard keys
            ``dagster/column_schema`` and ``dagster/row_count``; otherwise the prefix of the keys
            of a secondary table (``<name>_column_schema``, ``<name>_row_count``).
    """
    meta = pq.read_metadata(io.BytesIO(data))
    schema = dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type)) for f in meta.schema.to_arrow_schema()]
    )
    schema_key, rows_key = (
        ("dagster/column_schema", "dagster/row_count")
        if name is None
        else (f"{name}_column_schema", f"{name}_row_count")
    )
    return {
        schema_key: dg.MetadataValue.table_schema(schema),
        rows_key: dg.MetadataValue.int(meta.num_rows),
    }
