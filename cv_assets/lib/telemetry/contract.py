"""The telemetry contract: what an app posts about each inference, and the rules that admit it.

An app posts batches to ``POST /v1/events`` (``cv_assets.telemetry``)::

    {"schema_version": 1, "events": [<event>, ...]}

A body that is not a JSON object, a ``schema_version`` other than :data:`SCHEMA_VERSION`, or an
``events`` that is not a list rejects the whole batch with one reason (the service answers 400).
Otherwise each event is judged on its own: ``validate_batch`` returns the accepted events and one
rejection per refused event, ``{"index": i, "event_id": <id or None>, "reason": ...}``, whose
reason names the field path and the rule, e.g. ``events[3].detections[1].box: x1 0.8 is not <
x2 0.2`` (several broken fields of one event are joined with ``; ``). An event carries exactly
these fields; any other field is refused, so nothing the contract does not name (a user name, a
location) is ever stored:

- ``event_id``: 8..64 characters of ``[A-Za-z0-9_-]``, made by the app once per event (a uuid4);
  the service stores an id once, so a retried batch is safe.
- ``time``: when the inference ran, ISO-8601 in UTC, ``2026-12-01T10:00:00Z`` (fractional seconds
  and ``+00:00`` allowed); its date is the partition the event is stored under.
- ``install_id``: a pseudonymous id made once per install, 8..64 characters of ``[A-Za-z0-9_-]``;
  never a device or advertising id.
- ``app_version``: dotted integers, ``2.14.1`` (1 to 5 parts).
- ``os``: ``android``, ``ios`` or ``other``; ``os_version``: 1..32 characters.
- ``device_model``: 1..64 characters (``Pixel 8``, ``iPhone15,2``).
- ``runtime``: ``onnxruntime``, ``litert`` or ``coreml``; ``delegate``: 1..32 characters, what ran
  the model (``cpu``, ``gpu``, ``nnapi``, ``ane``, ``xnnpack``).
- ``model_version``: the registry version that ran (1..64 characters); it must be a version the
  platform registered, and its class count bounds ``class_id``. ``model_sha256``: the sha256 of
  the model file, 64 lowercase hex digits.
- ``input``: the frame the model saw, ``width`` and ``height`` (integers > 0, the camera frame
  before letterboxing) and ``brightness``, ``contrast``, ``sharpness`` (finite numbers >= 0, as
  ``lib/ingest`` measures them: mean luma, luma standard deviation, Laplacian variance).
- ``detections``: the top-K after NMS, at most :data:`MAX_DETECTIONS`, each ``class_id``
  (integer >= 0, below the model's class count), ``confidence`` (in [0, 1]) and ``box``
  ``[x1, y1, x2, y2]`` as fractions of the frame, each in [0, 1], with ``x1 < x2`` and ``y1 < y2``.
- ``latency_ms``: the model's run time, finite and >= 0.
- ``sampling``: why this event was picked to be sent: ``random``, ``low_confidence`` or ``none``.
- ``consent_image``: whether the user agreed that a frame may be sent (a JSON boolean).
- ``image`` (optional): the frame, base64 of a JPEG (it must start with the bytes FF D8 FF),
  allowed only when ``consent_image`` is true, at most ``max_image_bytes`` decoded (512 KiB by
  default).

Numbers are JSON numbers (a boolean is not a number); NaN and infinities, which Python's JSON
reader accepts, are refused wherever a number is expected. The flat fields are checked together by
a pandera schema over the whole batch, lazily, so one bad event never hides another; the nested
parts (detections, the image) by plain loops, which are faster than a table for a few boxes each.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.api.pandas.model_config import BaseConfig
from pandera.errors import SchemaErrors
from pandera.typing import Series

SCHEMA_VERSION = 1
MAX_DETECTIONS = 100
MAX_IMAGE_BYTES = 512 * 1024
OS_NAMES = ("android", "ios", "other")
RUNTIMES = ("onnxruntime", "litert", "coreml")
SAMPLING = ("random", "low_confidence", "none")
JPEG_MAGIC = b"\xff\xd8\xff"

_ID = r"[A-Za-z0-9_-]{8,64}"
_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)"
# Each field's JSON type; "number" is an int or a float, never a bool.
FIELDS: dict[str, str] = {
    "event_id": "string", "time": "string", "install_id": "string", "app_version": "string",
    "os": "string", "os_version": "string", "device_model": "string", "runtime": "string",
    "delegate": "string", "model_version": "string", "model_sha256": "string",
    "input": "object", "detections": "list", "latency_ms": "number", "sampling": "string",
    "consent_image": "boolean",
}  # fmt: skip
OPTIONAL = {"image": "string"}
INPUT_FIELDS = {"width": "integer", "height": "integer", "brightness": "number",
                "contrast": "number", "sharpness": "number"}  # fmt: skip
DETECTION_FIELDS = {"class_id": "integer", "confidence": "number", "box": "list"}

Rejection = dict[str, Any]


class BatchError(ValueError):
    """The whole batch is refused (the service answers 400 with this reason)."""


def _is(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        # 2**53: beyond it a JSON integer is no longer exact in most apps' languages.
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, list)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _length(s: pd.Series, lo: int, hi: int) -> pd.Series:
    n = s.str.len()
    return (n >= lo) & (n <= hi)


def _finite_nonneg(s: pd.Series) -> pd.Series:
    v = s.to_numpy(dtype=float)
    return pd.Series(np.isfinite(v) & (v >= 0), index=s.index)


class EventRows(pa.DataFrameModel):
    """One row per event whose fields have the right JSON types: the flat fields' value rules."""

    event_id: Series[str]
    time: Series[str]
    install_id: Series[str]
    app_version: Series[str]
    os: Series[str]
    os_version: Series[str]
    device_model: Series[str]
    runtime: Series[str]
    delegate: Series[str]
    model_version: Series[str]
    model_sha256: Series[str]
    sampling: Series[str]
    input_width: Series[int]
    input_height: Series[int]
    input_brightness: Series[float] = pa.Field(nullable=True)  # NaN gets its own reason below
    input_contrast: Series[float] = pa.Field(nullable=True)
    input_sharpness: Series[float] = pa.Field(nullable=True)
    latency_ms: Series[float] = pa.Field(nullable=True)
    consent_image: Series[bool]
    has_image: Series[bool]

    @pa.check("event_id", "install_id", name="id_format")
    @classmethod
    def id_format(cls, s: pd.Series) -> pd.Series:
        return s.str.fullmatch(_ID)

    @pa.check("time", name="time_format")
    @classmethod
    def time_format(cls, s: pd.Series) -> pd.Series:
        shaped = s.str.fullmatch(_TIME)
        # The shape first, then a real date: 2026-02-30T00:00:00Z has the shape.
        parsed = pd.to_datetime(s.where(shaped, None), format="ISO8601", utc=True, errors="coerce")
        return shaped & parsed.notna()

    @pa.check("app_version", name="app_version_format")
    @classmethod
    def app_version_format(cls, s: pd.Series) -> pd.Series:
        return s.str.fullmatch(r"\d{1,9}(\.\d{1,9}){0,4}")

    @pa.check("os", name="os_name")
    @classmethod
    def os_name(cls, s: pd.Series) -> pd.Series:
        return s.isin(OS_NAMES)

    @pa.check("runtime", name="runtime_name")
    @classmethod
    def runtime_name(cls, s: pd.Series) -> pd.Series:
        return s.isin(RUNTIMES)

    @pa.check("sampling", name="sampling_name")
    @classmethod
    def sampling_name(cls, s: pd.Series) -> pd.Series:
        return s.isin(SAMPLING)

    @pa.check("os_version", "delegate", name="len_1_32")
    @classmethod
    def short_text(cls, s: pd.Series) -> pd.Series:
        return _length(s, 1, 32)

    @pa.check("device_model", "model_version", name="len_1_64")
    @classmethod
    def text(cls, s: pd.Series) -> pd.Series:
        return _length(s, 1, 64)

    @pa.check("model_sha256", name="sha256_format")
    @classmethod
    def sha256_format(cls, s: pd.Series) -> pd.Series:
        return s.str.fullmatch(r"[0-9a-f]{64}")

    @pa.check("input_width", "input_height", name="positive")
    @classmethod
    def positive(cls, s: pd.Series) -> pd.Series:
        return s > 0

    @pa.check(
        "input_brightness",
        "input_contrast",
        "input_sharpness",
        "latency_ms",
        name="finite_nonneg",
        ignore_na=False,  # pandera skips NaN by default: here NaN is what is refused
    )
    @classmethod
    def finite_nonneg(cls, s: pd.Series) -> pd.Series:
        return _finite_nonneg(s)

    @pa.dataframe_check(name="image_consent")
    @classmethod
    def image_needs_consent(cls, df: pd.DataFrame) -> pd.Series:
        return ~df["has_image"] | df["consent_image"]

    class Config(BaseConfig):
        strict = True
        coerce = False


# The rule each check states, for the reason a person reads; ``{v}`` is the refused value.
_RULES = {
    "id_format": "{v} must be 8..64 characters of A-Z a-z 0-9 _ -",
    "time_format": "{v} is not an ISO-8601 UTC time like 2026-12-01T10:00:00Z",
    "app_version_format": "{v} is not dotted integers like 2.14.1",
    "os_name": "{v} is not one of " + ", ".join(OS_NAMES),
    "runtime_name": "{v} is not one of " + ", ".join(RUNTIMES),
    "sampling_name": "{v} is not one of " + ", ".join(SAMPLING),
    "len_1_32": "{v} must be 1..32 characters",
    "len_1_64": "{v} must be 1..64 characters",
    "sha256_format": "{v} is not 64 lowercase hex digits",
    "positive": "{v} is not > 0",
    "finite_nonneg": "{v} is not a finite number >= 0",
    "image_consent": "an image is only allowed when consent_image is true",
}


def _field_path(column: str) -> str:
    return f"input.{column[6:]}" if column.startswith("input_") else column


def _table_reasons(rows: list[dict[str, Any]], index: list[int]) -> dict[int, list[str]]:
    """Reasons by event index for the flat fields of ``rows`` (events ``index``)."""
    if not rows:
        return {}
    df = pd.DataFrame(rows, index=pd.Index(index))
    try:
        EventRows.validate(df, lazy=True)
    except SchemaErrors as err:
        out: dict[int, list[str]] = {}
        fc = err.failure_cases
        for column, check, value, i in zip(
            fc["column"], fc["check"], fc["failure_case"], fc["index"], strict=True
        ):
            rule = _RULES.get(str(check))
            if i is None or (isinstance(i, float) and math.isnan(i)):
                continue  # a column-level failure (dtype): the type pass already said why
            if str(check) == "image_consent":
                where, text = "image", _RULES["image_consent"]
            else:
                where = _field_path(str(column))
                text = (rule or f"fails {check}").format(v=_show(value))
            found = out.setdefault(int(i), [])
            reason = f"events[{int(i)}].{where}: {text}"
            if reason not in found:  # a frame-wide check reports once per column
                found.append(reason)
        return out
    return {}


def _type_reasons(i: int, event: Any) -> list[str]:
    """Missing, unknown and wrongly typed fields of one event (the table needs the types right)."""
    at = f"events[{i}]"
    if not isinstance(event, dict):
        return [f"{at}: expected an object, got {_json_type(event)}"]
    out = [f"{at}: unknown field {k!r}" for k in event if k not in FIELDS and k not in OPTIONAL]
    for name, kind in (FIELDS | OPTIONAL).items():
        if name not in event:
            if name in FIELDS:
                out.append(f"{at}.{name}: missing (required, {kind})")
        elif not _is(event[name], kind):
            out.append(f"{at}.{name}: expected {kind}, got {_json_type(event[name])}")
    inp = event.get("input")
    if isinstance(inp, dict):
        out += [f"{at}.input: unknown field {k!r}" for k in inp if k not in INPUT_FIELDS]
        for name, kind in INPUT_FIELDS.items():
            if name not in inp:
                out.append(f"{at}.input.{name}: missing (required, {kind})")
            elif not _is(inp[name], kind):
                out.append(f"{at}.input.{name}: expected {kind}, got {_json_type(inp[name])}")
    return out


def _detection_reasons(at: str, dets: list[Any], n_classes: int) -> list[str]:
    if len(dets) > MAX_DETECTIONS:
        return [f"{at}.detections: {len(dets)} detections, more than the top-{MAX_DETECTIONS}"]
    out = []
    for j, d in enumerate(dets):
        here = f"{at}.detections[{j}]"
        if not isinstance(d, dict):
            out.append(f"{here}: expected an object, got {_json_type(d)}")
            continue
        extra = [k for k in d if k not in DETECTION_FIELDS]
        out += [f"{here}: unknown field {k!r}" for k in extra]
        bad = [k for k, kind in DETECTION_FIELDS.items() if k not in d or not _is(d[k], kind)]
        for k in bad:
            got = f"got {_json_type(d[k])}" if k in d else "missing"
            out.append(f"{here}.{k}: expected {DETECTION_FIELDS[k]}, {got}")
        if bad:
            continue
        c, conf, box = d["class_id"], d["confidence"], d["box"]
        if not 0 <= c < n_classes:
            out.append(f"{here}.class_id: {c} is outside 0..{n_classes - 1} (the model's classes)")
        if not (math.isfinite(conf) and 0 <= conf <= 1):
            out.append(f"{here}.confidence: {conf!r} is not in [0, 1]")
        if len(box) != 4 or not all(_is(v, "number") for v in box):
            out.append(f"{here}.box: expected 4 numbers [x1, y1, x2, y2], got {_show(box)}")
            continue
        if not all(math.isfinite(v) and 0 <= v <= 1 for v in box):
            out.append(f"{here}.box: {_show(box, 80)} has a value outside [0, 1]")
            continue
        x1, y1, x2, y2 = box
        if not x1 < x2:
            out.append(f"{here}.box: x1 {x1!r} is not < x2 {x2!r}")
        if not y1 < y2:
            out.append(f"{here}.box: y1 {y1!r} is not < y2 {y2!r}")
    return out


def decode_image(text: str, max_bytes: int) -> bytes:
    """The JPEG bytes of an event's ``image``; ``ValueError`` saying which rule it breaks."""
    # Four base64 characters carry three bytes: refuse an oversized image before decoding it.
    if len(text) > (max_bytes + 2) // 3 * 4 + 4:
        raise ValueError(f"about {len(text) * 3 // 4:,} bytes, more than {max_bytes:,}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    if len(data) > max_bytes:
        raise ValueError(f"{len(data):,} bytes, more than {max_bytes:,}")
    if not data.startswith(JPEG_MAGIC):
        raise ValueError(f"is not a JPEG (starts with {data[:3].hex() or 'nothing'}, not ffd8ff)")
    return data


def check_envelope(doc: Any) -> list[Any]:
    """The batch's events; ``BatchError`` when the envelope itself is wrong."""
    if not isinstance(doc, dict):
        raise BatchError(f"body: expected a JSON object, got {_json_type(doc)}")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise BatchError(
            f"schema_version: {_show(version)} is not supported (this service speaks "
            f"{SCHEMA_VERSION})"
        )
    events = doc.get("events")
    if not isinstance(events, list):
        got = "missing" if "events" not in doc else f"got {_json_type(events)}"
        raise BatchError(f"events: expected a list of events, {got}")
    return events


def validate_batch(
    doc: Any, known_models: Mapping[str, int], max_image_bytes: int = MAX_IMAGE_BYTES
) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """The accepted events and a rejection per refused event, in the batch's order.

    Args:
        doc: the parsed body, ``{"schema_version": 1, "events": [...]}``.
        known_models: model version -> its number of classes.
        max_image_bytes: the largest decoded ``image`` accepted.

    Accepted events are the posted dicts, except that ``image``, when present, holds the decoded
    JPEG bytes. Raises ``BatchError`` when the envelope is wrong (nothing is judged then).
    """
    events = check_envelope(doc)
    reasons: dict[int, list[str]] = {}
    rows, index = [], []
    for i, event in enumerate(events):
        found = _type_reasons(i, event)
        if found:
            reasons[i] = found
            continue
        inp = event["input"]
        rows.append(
            {k: event[k] for k in FIELDS if FIELDS[k] != "object" and k != "detections"}
            | {f"input_{k}": inp[k] for k in INPUT_FIELDS}
            | {"has_image": "image" in event}
        )
        index.append(i)
    for i, found in _table_reasons(rows, index).items():
        reasons.setdefault(i, []).extend(found)
    known = ", ".join(sorted(known_models)) or "none registered"
    images: dict[int, bytes] = {}
    for i in index:
        event, at = events[i], f"events[{i}]"
        n_classes = known_models.get(event["model_version"])
        if n_classes is None:
            reasons.setdefault(i, []).append(
                f"{at}.model_version: unknown model version "
                f"{_show(event['model_version'])} (known: {known})"
            )
        else:
            found = _detection_reasons(at, event["detections"], n_classes)
            if found:
                reasons.setdefault(i, []).extend(found)
        if "image" in event and i not in reasons:
            try:
                images[i] = decode_image(event["image"], max_image_bytes)
            except ValueError as e:
                reasons.setdefault(i, []).append(f"{at}.image: {e}")
    accepted, rejected = [], []
    for i, event in enumerate(events):
        if i in reasons:
            eid = event.get("event_id") if isinstance(event, dict) else None
            rejected.append(
                {
                    "index": i,
                    "event_id": eid[:64] if isinstance(eid, str) else None,
                    "reason": "; ".join(reasons[i]),
                }
            )
        else:
            accepted.append(event | {"image": images[i]} if i in images else event)
    return accepted, rejected
