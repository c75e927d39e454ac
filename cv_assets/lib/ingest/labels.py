"""YOLO label files: parsing into a table, validation with a pandera schema, canonical output.

Parsing never fails: every line becomes a row, with what could not be read recorded in the row
(``ncols``, ``bad_token``), so one lazy pandera validation reports every broken line of a batch at
once. Each failure becomes a message that names the file, the line and the rule, e.g.
``labels/cat_003.txt:2: class id 7 is outside 0..2 (classes: square, circle, triangle)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.api.pandas.model_config import BaseConfig
from pandera.errors import SchemaErrors
from pandera.typing import Series

COLUMNS = ("class_id", "cx", "cy", "w", "h")

# Rules in the order a person should hear about them: a line with 4 columns also has a NaN, but
# "expected 5 columns" is the reason worth reading.
RULES = (
    "wrong_columns",
    "non_numeric",
    "nonfinite",
    "class_not_integer",
    "class_out_of_range",
    "coords_outside",
    "zero_area_box",
)


class LabelRows(pa.DataFrameModel):
    """One row per non-blank line of a YOLO label file."""

    file: Series[str]
    line: Series[int] = pa.Field(ge=1)
    ncols: Series[int] = pa.Field(eq=5)
    bad_token: Series[str] = pa.Field(str_length={"max_value": 0})
    class_id: Series[float] = pa.Field(nullable=True)
    cx: Series[float] = pa.Field(nullable=True)
    cy: Series[float] = pa.Field(nullable=True)
    w: Series[float] = pa.Field(nullable=True)
    h: Series[float] = pa.Field(nullable=True)

    @pa.dataframe_check(name="nonfinite")
    @classmethod
    def values_finite(cls, df: pd.DataFrame) -> pd.Series:
        vals = df[list(COLUMNS)].to_numpy(dtype=float)
        return pd.Series(np.isfinite(vals).all(axis=1) | (df["ncols"] != 5), index=df.index)

    @pa.dataframe_check(name="class_not_integer")
    @classmethod
    def class_integer(cls, df: pd.DataFrame) -> pd.Series:
        c = df["class_id"]
        return pd.Series(~np.isfinite(c) | (c == np.floor(c)), index=df.index)

    @pa.dataframe_check(name="coords_outside")
    @classmethod
    def coords_in_unit_interval(cls, df: pd.DataFrame) -> pd.Series:
        vals = df[["cx", "cy", "w", "h"]]
        bad = ((vals < 0) | (vals > 1)).any(axis=1) & np.isfinite(vals).all(axis=1)
        return ~bad

    @pa.dataframe_check(name="zero_area_box")
    @classmethod
    def positive_area(cls, df: pd.DataFrame) -> pd.Series:
        return ~((df["w"] <= 0) | (df["h"] <= 0))

    class Config(BaseConfig):
        strict = True
        coerce = False


@lru_cache(maxsize=16)
def label_schema(n_classes: int) -> pa.DataFrameSchema:
    """``LabelRows`` plus the class-range rule, which depends on the platform's class list."""
    in_range = pa.Check(
        lambda df: (
            ~np.isfinite(df["class_id"])
            | ((df["class_id"] >= 0) & (df["class_id"] <= n_classes - 1))
        ),
        name="class_out_of_range",
    )
    # DataFrameModel checks are static; the class count is not. to_schema() returns a cached
    # object shared by every caller, so the rule goes onto a copy, never onto that object.
    schema = copy.copy(LabelRows.to_schema())
    schema.checks = [*(schema.checks or []), in_range]
    return schema


@dataclass(frozen=True)
class LabelLimits:
    """Bounds on one label file, checked before any line is parsed into numbers."""

    max_bytes: int = 1024 * 1024
    max_boxes: int = 1000


@dataclass(frozen=True)
class LabelFile:
    """A label file's rows, or the reason it could not be read as text at all.

    ``n_boxes`` counts its non-blank lines; when that exceeds the limit given to
    ``parse_label_file``, ``rows`` is left empty (nothing was parsed).
    """

    path: str
    rows: list[tuple[int, int, str, float, float, float, float, float]]
    unreadable: str | None = None
    raw: bytes = b""
    n_boxes: int = 0


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more)"


def _brief(names: Sequence[str], limit: int = 10) -> str:
    more = len(names) - limit
    tail = f", ... ({more:,} more)" if more > 0 else ""
    return ", ".join(_clip(n) for n in names[:limit]) + tail


def _to_float(tok: str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None


def parse_label_file(path: str, raw: bytes, max_boxes: int | None = None) -> LabelFile:
    """Rows of ``(line, ncols, bad_token, class_id, cx, cy, w, h)``.

    A UTF-8 BOM and CRLF line ends are accepted; blank lines are skipped (their numbers still
    count, so messages point at the line a person sees in an editor).

    Args:
        max_boxes: with more non-blank lines than this, the lines are counted (a string scan)
            but not parsed, so an oversized file costs milliseconds, not seconds.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return LabelFile(path, [], f"{path}: not UTF-8 text (byte {e.start})", raw)
    lines = text.splitlines()
    if max_boxes is not None and len(lines) > max_boxes:
        n = len(lines) - sum(1 for line in lines if not line or line.isspace())
        if n > max_boxes:
            return LabelFile(path, [], None, raw, n)
    rows = []
    for lineno, line in enumerate(lines, start=1):
        toks = line.split()
        if not toks:
            continue
        vals: list[float] = []
        bad = ""
        for tok in toks[:5]:
            v = _to_float(tok)
            if v is None:
                bad = bad or tok
                v = math.nan
            vals.append(v)
        vals += [math.nan] * (5 - len(vals))
        c, cx, cy, w, h = vals
        rows.append((lineno, len(toks), bad, c, cx, cy, w, h))
    return LabelFile(path, rows, None, raw, len(rows))


def label_table(files: Iterable[LabelFile]) -> pd.DataFrame:
    records = [(f.path, *r) for f in files for r in f.rows]
    df = pd.DataFrame.from_records(
        records, columns=["file", "line", "ncols", "bad_token", *COLUMNS]
    )
    return df.astype(
        {"file": str, "line": "int64", "ncols": "int64", "bad_token": str}
        | dict.fromkeys(COLUMNS, "float64")
    )


_CHECK_TO_RULE = {
    "equal_to(5)": "wrong_columns",
    "str_length(None, 0)": "non_numeric",
}


def _fmt(v: float) -> str:
    return f"{float(v):g}"


def _message(row: dict[str, Any], rule: str, classes: Sequence[str]) -> str:
    where = f"{row['file']}:{row['line']}"
    if rule == "wrong_columns":
        return f"{where}: expected 5 columns (class cx cy w h), found {row['ncols']}"
    if rule == "non_numeric":
        return f"{where}: {_clip(repr(row['bad_token']))} is not a number"
    if rule == "nonfinite":
        bad = [f"{c}={_fmt(row[c])}" for c in COLUMNS if not math.isfinite(row[c])]
        return f"{where}: NaN or inf is not a coordinate ({', '.join(bad)})"
    if rule == "class_not_integer":
        return f"{where}: class id {_fmt(row['class_id'])} is not an integer"
    if rule == "class_out_of_range":
        return (
            f"{where}: class id {_clip(str(int(row['class_id'])), 20)} is outside "
            f"0..{len(classes) - 1} "
            f"(classes: {_brief(list(classes))})"
        )
    if rule == "coords_outside":
        bad = [f"{c} = {_fmt(row[c])}" for c in ("cx", "cy", "w", "h") if not 0 <= row[c] <= 1]
        return f"{where}: {', '.join(bad)} outside [0, 1] (coordinates are normalised)"
    if rule == "zero_area_box":
        return (
            f"{where}: box has zero or negative size (w = {_fmt(row['w'])}, h = {_fmt(row['h'])})"
        )
    return f"{where}: fails {rule}"


@dataclass(frozen=True)
class LabelError:
    file: str
    line: int
    rule: str
    message: str


def validate_labels(df: pd.DataFrame, classes: Sequence[str]) -> list[LabelError]:
    """Every broken line of the table, one error per line (its most telling rule), in file order."""
    if df.empty:
        return []
    try:
        label_schema(len(classes)).validate(df, lazy=True)
        return []
    except SchemaErrors as err:
        fc = err.failure_cases
    rules_by_row: dict[int, set[str]] = {}
    for check, index in zip(fc["check"].astype(str), fc["index"], strict=True):
        if index is None or (isinstance(index, float) and math.isnan(index)):
            continue
        rule = _CHECK_TO_RULE.get(check, check)
        if rule in RULES:
            rules_by_row.setdefault(int(index), set()).add(rule)
    errors = []
    for idx in sorted(rules_by_row):
        row = df.loc[idx].to_dict()
        rule = next(r for r in RULES if r in rules_by_row[idx])
        errors.append(LabelError(row["file"], int(row["line"]), rule, _message(row, rule, classes)))
    errors.sort(key=lambda e: (e.file, e.line))
    return errors


def canonical_label_text(rows: Sequence[Sequence[float]]) -> str:
    """Standard form: LF line ends, no BOM, boxes clipped to the image, six decimals."""
    out = []
    for c, cx, cy, w, h in rows:
        x0, y0 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
        x1, y1 = min(1.0, cx + w / 2), min(1.0, cy + h / 2)
        out.append(
            f"{int(c)} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}\n"
        )
    return "".join(out)
