"""Annotation rounds: the tasks a round pushes to Label Studio, and what collecting it lands.

A round is a set of images a person labels in one Label Studio project. Its manifest
(``annotation/rounds/<round>/round.json``) is the platform's ledger of it: the project, and one
entry per task with the image's pool identity (``sha256``, batch, stem), the file Label Studio
shows (``<round>/<file>`` under Label Studio's document root) and the champion's boxes pushed as
its prediction.

**Collecting.** Label Studio's export holds every task with all its annotations. A task is

- *completed* when it has an annotation that was not cancelled: the newest such annotation (the
  one the ``labelstudio`` import adapter reads) is its label;
- *skipped* when every annotation it has was cancelled (the person pressed Skip): it lands
  nothing and its image stays in the unlabelled pool;
- *open* when it has no annotation yet;
- *deleted* when the manifest pushed it and Label Studio no longer has it.

``collected.json`` maps each task to the annotation already landed (``<id>@<updated_at>``). A
completed task lands when its annotation differs from that: once, and again only if a person
edits it later (the edit supersedes the earlier label, as a correction does). The landing batch
id is a hash of what it lands, so a collection that is interrupted between landing and writing
``collected.json`` finds its batch already there and does not land it twice.

*Corrected* counts completed tasks whose label differs from the champion's prediction: another
class, another number of boxes, or a box moved (IoU < ``SAME_BOX_IOU`` with its match).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from cv_assets.lib.annotation.labelstudio import FROM_NAME, TO_NAME

SOURCE_PREFIX = "labelstudio:"  # batch.json ``source`` of a collected round
SAME_BOX_IOU = 0.9
TASK_COLUMNS = ["sha256", "stem", "batch_id", "image_uri", "width", "height", "uncertainty"]


def new_round_id(now: datetime) -> str:
    """``round-<UTC time>-<4 hex>``: sorts by time; two rounds started together differ."""
    return f"round-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def task_file(row: Mapping[str, Any]) -> str:
    """The round folder's name for an image: unique across batches, readable by a person."""
    return f"{row['batch_id']}__{row['stem']}.jpg"


def prediction_result(boxes: pd.DataFrame, width: int, height: int) -> list[dict[str, Any]]:
    """Label Studio rectangles (percent of the image) from the proposals' normalised centre boxes
    (``class``, ``confidence``, ``cx``, ``cy``, ``w``, ``h``)."""
    out: list[dict[str, Any]] = []
    if boxes.empty:
        return out
    cols = ["class", "confidence", "cx", "cy", "w", "h"]
    for i, (name, conf, cx, cy, w, h) in enumerate(boxes[cols].itertuples(index=False)):
        x, y = (float(cx) - float(w) / 2) * 100, (float(cy) - float(h) / 2) * 100
        out.append(
            {
                "id": f"p{i}",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "rectanglelabels",
                "original_width": int(width),
                "original_height": int(height),
                "image_rotation": 0,
                "score": round(float(conf), 4),
                "value": {
                    "x": max(0.0, x),
                    "y": max(0.0, y),
                    "width": min(float(w) * 100, 100.0 - max(0.0, x)),
                    "height": min(float(h) * 100, 100.0 - max(0.0, y)),
                    "rotation": 0,
                    "rectanglelabels": [str(name)],
                },
            }
        )
    return out


def build_tasks(
    round_id: str, chosen: pd.DataFrame, boxes: pd.DataFrame, model_version: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Label Studio tasks for the chosen images (in the order given) and the manifest's entries.

    ``chosen``: TASK_COLUMNS, and optionally ``kind`` (``pool`` or ``label_issue``), ``note``
    (shown to the person) and ``model_version`` (whose boxes the prediction is: a label issue's
    prediction is the image's current labels, for the person to correct); ``boxes``: the boxes
    to predict (``sha256``, ``class``, ``confidence``, ``cx`` ``cy`` ``w`` ``h``).
    """
    by_image = {sha: g for sha, g in boxes.groupby("sha256", sort=False)} if len(boxes) else {}
    tasks, entries = [], []
    for row in chosen.to_dict("records"):
        mine = by_image[row["sha256"]] if row["sha256"] in by_image else boxes.iloc[0:0]
        file = task_file(row)
        result = prediction_result(mine, int(row["width"]), int(row["height"]))
        kind = _text(row, "kind") or "pool"
        note = (
            _text(row, "note")
            or f"Unlabelled: the champion is unsure (uncertainty {row['uncertainty']:.2f})"
        )
        tasks.append(
            {
                "data": {
                    "image": f"/data/local-files/?d={round_id}/{file}",
                    "cv_kind": kind,
                    "cv_note": note,
                    "cv_round": round_id,
                    "cv_sha256": row["sha256"],
                    "cv_batch": row["batch_id"],
                    "cv_stem": row["stem"],
                    "cv_uncertainty": round(float(row["uncertainty"]), 4),
                },
                # Label Studio's "prediction score" sampling shows the lowest score first.
                "predictions": [
                    {
                        "model_version": _text(row, "model_version") or model_version,
                        "score": round(1.0 - float(row["uncertainty"]), 4),
                        "result": result,
                    }
                ],
            }
        )
        entries.append(
            {k: row[k] for k in TASK_COLUMNS} | {"file": file, "kind": kind, "predicted": result}
        )
    return tasks, entries


def _text(row: Mapping[str, Any], key: str) -> str:
    """An optional text column: rows of a concatenated table hold NaN where theirs had none."""
    value = row.get(key)
    return value if isinstance(value, str) else ""


def image_file(task: Mapping[str, Any]) -> str:
    """The round file a task shows: the ``d`` of ``/data/local-files/?d=<round>/<file>``."""
    url = str(task.get("data", {}).get("image", ""))
    d = parse_qs(urlsplit(url).query).get("d", [""])[0]
    return d.rsplit("/", 1)[-1]


def chosen_annotation(task: Mapping[str, Any]) -> dict[str, Any] | None:
    """The newest annotation that was not cancelled (what the import adapter reads)."""
    live = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not live:
        return None
    return max(live, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""),
                                    int(a.get("id") or 0)))  # fmt: skip


def annotation_key(a: Mapping[str, Any]) -> str:
    return f"{a.get('id')}@{a.get('updated_at') or a.get('created_at') or ''}"


def _rect(r: Mapping[str, Any]) -> tuple[str, float, float, float, float] | None:
    v = r.get("value") or {}
    labels = v.get("rectanglelabels") or []
    if r.get("type") != "rectanglelabels" or len(labels) != 1:
        return None
    try:
        x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        return None
    return str(labels[0]), x, y, x + w, y + h


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def is_corrected(
    result: Sequence[Mapping[str, Any]], predicted: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a person's label differs from the prediction they were shown (greedy matching)."""
    mine = [r for r in (_rect(x) for x in result) if r]
    theirs = [r for r in (_rect(x) for x in predicted) if r]
    if len(mine) != len(theirs) or len(mine) != len(result):
        return True
    left = list(theirs)
    for lab, *box in mine:
        best = max(left, key=lambda p: _iou(tuple(box), tuple(p[1:])) if p[0] == lab else -1.0,
                   default=None)  # fmt: skip
        if best is None or best[0] != lab or _iou(tuple(box), tuple(best[1:])) < SAME_BOX_IOU:
            return True
        left.remove(best)
    return False


@dataclass
class Collection:
    """One pass over a round's export."""

    to_land: list[dict[str, Any]] = field(default_factory=list)  # tasks with a new annotation
    completed: int = 0
    corrected: int = 0
    skipped: int = 0
    open: int = 0
    deleted: list[int] = field(default_factory=list)  # task ids pushed but gone from Label Studio
    unknown: int = 0  # tasks in the project the round did not push (added by hand): not landed

    def counts(self, pushed: int) -> dict[str, int]:
        return {
            "pushed": pushed,
            "completed": self.completed,
            "corrected": self.corrected,
            "skipped": self.skipped,
            "open": self.open,
            "deleted": len(self.deleted),
            "not_pushed_by_round": self.unknown,
        }


def collect(
    manifest: Mapping[str, Any], exported: Sequence[Mapping[str, Any]], landed: Mapping[str, str]
) -> Collection:
    """Sort a round's exported tasks; ``landed``: task id (str) -> annotation key already landed."""
    entries = {e["file"]: e for e in manifest["tasks"]}
    out, seen = Collection(), set()
    for task in exported:
        entry = entries.get(image_file(task))
        if entry is None or task.get("data", {}).get("cv_round") != manifest["round_id"]:
            out.unknown += 1
            continue
        seen.add(entry["file"])
        ann = chosen_annotation(task)
        if ann is None:
            out.skipped += bool(task.get("annotations"))
            out.open += not task.get("annotations")
            continue
        out.completed += 1
        out.corrected += is_corrected(ann.get("result") or [], entry.get("predicted") or [])
        if landed.get(str(task.get("id"))) != annotation_key(ann):
            out.to_land.append(dict(task))
    gone = [e for f, e in entries.items() if f not in seen]
    out.deleted = [int(e.get("task_id") or -1) for e in gone]
    return out


def landing_batch(
    manifest: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    now: datetime,
) -> tuple[str, str, dict[str, Any]]:
    """The batch id, the annotation file's text and ``batch.json`` for collected tasks.

    Each task keeps only its chosen annotation, and loses its predictions (never labels). Every
    label carries its provenance in ``batch.json``: annotator, task, annotation, project, round.
    """
    rid = manifest["round_id"]
    keep, provenance = [], {}
    for t in sorted(tasks, key=lambda t: int(t.get("id") or 0)):
        ann = chosen_annotation(t)
        assert ann is not None
        keep.append({"id": t.get("id"), "data": t.get("data"), "annotations": [ann]})
        provenance[f"images/{image_file(t)}"] = {
            "annotator": ann.get("completed_by"),
            "task": t.get("id"),
            "annotation": ann.get("id"),
            "updated_at": ann.get("updated_at") or ann.get("created_at"),
            "project": manifest["project"],
            "round": rid,
        }
    keys = sorted(f"{p['task']}:{p['annotation']}@{p['updated_at']}" for p in provenance.values())
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:10]
    bid = f"{rid}-{digest}"
    marker = {
        "batch_id": bid,
        "classes": list(classes),
        "created_at": now.isoformat(),
        "source": f"{SOURCE_PREFIX}{rid}",
        "format": "labelstudio",
        "labels": "full",
        "provenance": provenance,
    }
    return bid, json.dumps(keep, indent=1), marker
