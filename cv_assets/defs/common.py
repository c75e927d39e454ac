"""What every asset group shares: who owns the assets (shown on each asset in the UI), the Dagster
types of the records assets hand each other, and how a Parquet table an asset wrote is described
to the UI (its columns and row count)."""

import io

import dagster as dg
import pyarrow.parquet as pq

from cv_assets.lib.annotation.records import AnnotationRound, PreAnnotations
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.ingest.records import BatchFeatures, RawBatch, ValidatedBatch
from cv_assets.lib.mobile.records import MobileModel
from cv_assets.lib.training.records import ChampionModel, ModelEvaluation, YoloModel

OWNERS = ["team:ml-platform"]


def _record_type(record: type) -> None:
    """Let an asset annotate an input or output with a record TypedDict.

    Dagster checks an annotated value with ``isinstance``, which a TypedDict refuses; this maps
    the TypedDict to a Dagster type that checks what ``dict[str, Any]`` checked (a dict) and
    shows the record's name and docstring in the UI. Once per process, before any asset refers
    to it: every asset module imports this one.
    """
    dg.make_python_type_usable_as_dagster_type(
        record,
        dg.DagsterType(
            type_check_fn=lambda _context, value: isinstance(value, dict),
            name=record.__name__,
            description=record.__doc__,
        ),
    )


for _record in (
    RawBatch,
    ValidatedBatch,
    BatchFeatures,
    TrainingDataset,
    YoloModel,
    ModelEvaluation,
    MobileModel,
    ChampionModel,
    PreAnnotations,
    AnnotationRound,
):
    _record_type(_record)


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
