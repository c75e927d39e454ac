"""Stand-in for polars, on the lent GPU machine only (gpu_check.sh puts it on the path).

Ultralytics reads ``results.csv`` with polars when it saves a checkpoint. polars' runtime wheel
(54 MB) does not fit the GPU machine's 64 MiB transfer limit next to the other wheels, so this
reads the CSV with the standard library instead. Both sides of the GPU comparison use it.
"""

import csv
import io
from typing import Any

# Below 1.0 on purpose: MLflow then skips its optional polars support instead of importing it.
__version__ = "0.0.0"


class _Frame:
    def __init__(self, rows: list[dict[str, str]]) -> None:
        self._rows = rows

    def to_dict(self, as_series: bool = False) -> dict[str, list[Any]]:
        keys = list(self._rows[0]) if self._rows else []
        return {k.strip(): [_num(r[k]) for r in self._rows] for k in keys}


def _num(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def read_csv(source: bytes | str, infer_schema_length: int | None = None) -> _Frame:
    text = source.decode() if isinstance(source, bytes) else open(source).read()  # noqa: SIM115
    return _Frame(list(csv.DictReader(io.StringIO(text))))
