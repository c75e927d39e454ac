"""Starting an annotation round: which pool images a person labels, pushed to Label Studio.

**The candidates** are the unlabelled images the champion pre-annotated (every batch's
``pre_annotations``), less those labelled since (their sha256 is in the training dataset the
round takes as input) and those an earlier round already pushed (its manifest names them): a
person is never asked twice for the same image, even one they skipped.

**The choice** is ``select.select_for_labelling``: the most uncertain images, spread out so that
near-duplicates are not both picked. Only the ``k * spread`` most uncertain candidates are read
and embedded, so a round's cost does not grow with the pool. After them come the labelled images
the review queues rank worst (``label_issues``): their current labels are the prediction, and a
person corrects them; a correction supersedes the old label when it lands.

**The push** copies the chosen images to ``<files_root>/<round>/`` (Label Studio's local-files
document root, scoped to the round: the project's storage is that folder only), creates the
project with the platform's classes and imports every task with the champion's boxes as its
prediction in one request, most uncertain first. If anything fails after the project was
created, the project is deleted (when Label Studio still answers) and no manifest is written:
the round did not happen, and running it again starts clean.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cv_assets.lib.annotation.labelstudio import LabelStudio, LabelStudioError
from cv_assets.lib.annotation.records import PreAnnotations
from cv_assets.lib.annotation.rounds import TASK_COLUMNS, build_tasks, task_file
from cv_assets.lib.annotation.select import image_features, select_for_labelling
from cv_assets.lib.core import layout
from cv_assets.lib.core.metrics import read_yolo_truth
from cv_assets.lib.core.store import ArtifactStore


def _table(store: ArtifactStore, uri: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.get_bytes(store.key_of(uri))))


def pushed_before(store: ArtifactStore) -> set[str]:
    """sha256 of every image an earlier round pushed."""
    out: set[str] = set()
    for key in store.list(layout.ROUNDS_PREFIX):
        if key.endswith("/round.json"):
            out |= {t["sha256"] for t in json.loads(store.get_bytes(key))["tasks"]}
    return out


def candidates(
    store: ArtifactStore,
    proposals: Mapping[str, PreAnnotations],
    exclude: Iterable[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pool's images (TASK_COLUMNS, most uncertain first) and their proposed boxes."""
    images, boxes = [], []
    for bid, rec in sorted(proposals.items()):
        img = _table(store, rec["images_table"]["uri"]).assign(batch_id=bid)
        images.append(img)
        boxes.append(_table(store, rec["boxes_table"]["uri"]))
    if not images:
        return pd.DataFrame({c: [] for c in TASK_COLUMNS}), pd.DataFrame()
    pool = pd.concat(images, ignore_index=True).drop_duplicates("sha256")
    skip = set(exclude)
    pool = pool.loc[[s not in skip for s in pool["sha256"]], list(TASK_COLUMNS)]
    order = sorted(range(len(pool)), key=lambda i: (-float(pool["uncertainty"].iloc[i]),
                                                     str(pool["sha256"].iloc[i])))  # fmt: skip
    return pool.iloc[order].reset_index(drop=True), pd.concat(boxes, ignore_index=True)


def label_issues(
    store: ArtifactStore,
    queues: Mapping[str, Mapping[str, Any]],
    exclude: Iterable[str],
    limit: int,
    classes: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``limit`` labelled images the review queues rank worst, with their current labels as
    the boxes a person corrects (``review_queue`` records: ``table`` is the ranked queue)."""
    if limit <= 0 or not queues:
        return pd.DataFrame({c: [] for c in TASK_COLUMNS}), pd.DataFrame()
    items = [_table(store, q["table"]["uri"]).assign(batch_id=b) for b, q in sorted(queues.items())]
    items = [t for t in items if len(t)]
    if not items:
        return pd.DataFrame({c: [] for c in TASK_COLUMNS}), pd.DataFrame()
    worst = pd.concat(items, ignore_index=True).sort_values(
        ["score", "sha256"], ascending=[False, True]).drop_duplicates("sha256")  # fmt: skip
    skip = set(exclude)
    worst = worst.loc[[s not in skip for s in worst["sha256"]]].head(limit)
    rows, boxes = [], []
    for r in worst.to_dict("records"):
        data = store.get_bytes(store.key_of(str(r["image_uri"])))
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        rows.append({"sha256": r["sha256"], "stem": r["stem"], "batch_id": r["batch_id"],
                     "image_uri": r["image_uri"], "width": width, "height": height,
                     "uncertainty": float(r["score"]), "kind": "label_issue",
                     "note": f"Check the labels: {r['details']}",
                     "model_version": "current-labels"})  # fmt: skip
        truth = read_yolo_truth(store.get_bytes(store.key_of(str(r["label_uri"]))).decode())
        for c, x1, y1, x2, y2 in truth.tolist():
            name = classes[int(c)] if int(c) < len(classes) else str(int(c))
            boxes.append({"sha256": r["sha256"], "stem": r["stem"], "class_id": int(c),
                          "class": name, "confidence": 1.0, "cx": (x1 + x2) / 2,
                          "cy": (y1 + y2) / 2, "w": x2 - x1, "h": y2 - y1})  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(boxes)


def choose(store: ArtifactStore, pool: pd.DataFrame, k: int, spread: int = 4) -> pd.DataFrame:
    """k images by uncertainty and diversity, from the ``k * spread`` most uncertain."""
    head = pool.head(max(k * spread, k)).reset_index(drop=True)
    if head.empty:
        return head
    feats = np.stack([image_features(store.get_bytes(store.key_of(u))) for u in head["image_uri"]])
    return select_for_labelling(head, feats, k)


@dataclass(frozen=True)
class StartedRound:
    manifest: dict[str, Any]
    manifest_uri: str


def push_round(
    client: LabelStudio,
    store: ArtifactStore,
    round_id: str,
    folder: Path,
    chosen: pd.DataFrame,
    boxes: pd.DataFrame,
    classes: Sequence[str],
    model_version: str,
    created_at: str,
) -> StartedRound:
    """Copy the images, create the project, push the tasks, then write the round's manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in chosen.to_dict("records"):
        (folder / task_file(row)).write_bytes(store.get_bytes(store.key_of(row["image_uri"])))
    tasks, entries = build_tasks(round_id, chosen, boxes, model_version)
    project: int | None = None
    try:
        project = client.create_project(
            round_id, classes, f"cv_assets annotation round {round_id} ({model_version})"
        )
        client.add_local_storage(project, str(folder), round_id)
        client.import_tasks(project, tasks)
        ids = {
            t["data"].get("cv_sha256"): t["id"]
            for t in client.export(project)
            if t.get("data", {}).get("cv_round") == round_id
        }
    except Exception:
        _undo(client, project, folder)
        raise
    for e in entries:
        e["task_id"] = ids.get(e["sha256"])
    manifest = {
        "round_id": round_id,
        "project": project,
        "url": client.project_url(project),
        "created_at": created_at,
        "model_version": model_version,
        "classes": list(classes),
        "folder": str(folder),
        "tasks": entries,
    }
    ref = store.put_bytes(layout.round_manifest(round_id), json.dumps(manifest, indent=1).encode())
    return StartedRound(manifest, ref.uri)


def _undo(client: LabelStudio, project: int | None, folder: Path) -> None:
    """Best effort: a round that failed half-way leaves no project and no files behind."""
    if project is not None:
        # Label Studio down: the orphan project has no manifest, so it is never collected.
        with contextlib.suppress(LabelStudioError):
            client.delete_project(project)
    shutil.rmtree(folder, ignore_errors=True)
