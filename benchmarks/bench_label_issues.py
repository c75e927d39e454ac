"""Label-issue benchmark (review queue): does the queue find planted label errors, and only them?

The champion is the last ``make demo``'s (``DEMO_HOME``, default ``.cv_assets``) when there is one;
otherwise a small one is trained once through the platform's own jobs under
``benchmarks/.work/label_issues`` and reused by later runs.
"""

import hashlib
import os
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks.bench_intake import _fresh
from benchmarks.common import QUICK, WORK, Result

# The demo's recipe (yolo11n at 224 px) on 384 images, about ten minutes on 2 cores: the method
# presumes a champion that sees the objects (a queue made from a blind model's view measures the
# model), and a smaller one (45 epochs at 192 px on 256 images: test mAP50 0.76) confused classes.
BENCH_TRAIN = {"epochs": 30, "imgsz": 224, "batch": 16, "min_train_images": 8}
CHAMPION_HOME = WORK / "label_issues_champion" / "home"


@cache
def _champion() -> tuple[Any, Any, str]:
    """(config, champion record, where it came from)."""
    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.read_side import registry_for

    home = os.environ.get("DEMO_HOME", str(Path(__file__).resolve().parents[1] / ".cv_assets"))
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": home})
    champ = registry_for(cfg).champion()
    if champ is not None and champ.mobile.get("onnx_uri"):
        return cfg, champ, "the demo's champion"
    # The marker, not the registry, says whether training finished: opening the registry of a
    # half-made home would keep its MLflow database open while training replaces it.
    if not (CHAMPION_HOME / "trained").exists():
        _train_champion()
        (CHAMPION_HOME / "trained").touch()
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(CHAMPION_HOME)})
    champ = registry_for(cfg).champion()
    assert champ is not None and champ.mobile.get("onnx_uri")
    how = f"{BENCH_TRAIN['epochs']} epochs at {BENCH_TRAIN['imgsz']} px"
    return cfg, champ, f"a champion trained for the benchmark ({how})"


def _train_champion() -> Any:
    from benchmarks.bench_intake import train_champion

    return train_champion("label_issues_champion", 6, 64, 57, BENCH_TRAIN)


# --- the planted batch and the clean batch ------------------------------------------------------

IMAGES = 32 if QUICK else 128
ERROR_SHARE = 0.05  # of the batch's label boxes
PLANTS = ("flip", "shift", "remove", "extra")  # cycled over the planted errors, in this order
EXPECTED = {
    "flip": "class_mismatch",
    "shift": "low_iou",
    "remove": "missing_label",
    "extra": "extra_label",
}


@dataclass
class Batch:
    samples: pd.DataFrame
    truths: list[np.ndarray]  # the labels as they will be read (after planting)
    sizes: list[tuple[int, int]]
    planted: list[dict[str, Any]] = field(default_factory=list)


def _land(root: Path, seed: int) -> Batch:
    from cv_assets.lib.core.metrics import read_yolo_truth
    from cv_assets.lib.synth.batches import write_batches

    (b,) = write_batches(root, 1, IMAGES, seed=seed, size=320)
    images = sorted((root / b.batch_id / "images").iterdir())
    rows, truths, sizes = [], [], []
    for p in images:
        label = root / b.batch_id / "labels" / f"{p.stem}.txt"
        rows.append(
            {
                "stem": p.stem,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                "source": f"images/{p.name}",
                "image_uri": str(p),
                "label_uri": str(label),
            }
        )
        truths.append(read_yolo_truth(label.read_text()))
        with Image.open(p) as img:
            sizes.append(img.size)
    return Batch(pd.DataFrame(rows), truths, sizes)


def _plant(batch: Batch, seed: int) -> None:
    """Corrupt ERROR_SHARE of the label boxes, at most one per image, kinds in turn."""
    rng = np.random.default_rng(seed)
    boxes = sum(len(t) for t in batch.truths)
    n = max(len(PLANTS), round(ERROR_SHARE * boxes))
    candidates = [i for i, t in enumerate(batch.truths) if len(t)]
    for k, i in enumerate(rng.choice(candidates, size=n, replace=False)):
        kind, t = PLANTS[k % len(PLANTS)], batch.truths[i].copy()
        j = int(rng.integers(len(t)))
        box = t[j, 1:5].copy()
        if kind == "flip":
            t[j, 0] = (t[j, 0] + rng.integers(1, 3)) % 3
        elif kind == "shift":
            # Half the box's side along one axis: IoU 1/3 with the object, a plain mistake.
            axis = int(rng.integers(2))
            side = box[axis + 2] - box[axis]
            step = 0.5 * side * (1 if box[axis] - 0.5 * side < 0 else rng.choice([-1, 1]))
            step = -abs(step) if box[axis + 2] + step > 1 else step
            t[j, [1 + axis, 3 + axis]] += step
        elif kind == "remove":
            t = np.delete(t, j, axis=0)
        else:
            box = _free_box(t, box, rng)
            t = np.vstack([t, [int(rng.integers(3)), *box]])
            j = len(t) - 1
        batch.truths[i] = t
        line = None if kind == "remove" else j + 1
        batch.planted.append({"image": int(i), "kind": kind, "line": line, "box": box})
        Path(batch.samples.loc[i, "label_uri"]).write_text(_label_text(t))


def _free_box(t: np.ndarray, like: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A box the size of ``like`` that touches no labelled object."""
    from cv_assets.lib.core.metrics import box_iou

    w, h = like[2] - like[0], like[3] - like[1]
    for _ in range(200):
        x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        box = np.array([x, y, x + w, y + h])
        if not len(t) or box_iou(box[None], t[:, 1:5]).max() == 0:
            return box
    raise AssertionError("no free place for an extra box")


def _label_text(t: np.ndarray) -> str:
    return "".join(
        f"{int(c)} {(a + b) / 2:.6f} {(d + e) / 2:.6f} {b - a:.6f} {e - d:.6f}\n"
        for c, a, d, b, e in t
    )


def _hit(item: dict[str, Any], p: dict[str, Any], stem: str) -> bool:
    """Whether a queue row is the planted error ``p``, with the kind that names it."""
    from cv_assets.lib.core.metrics import box_iou
    from cv_assets.lib.monitoring.label_issues import MATCH_IOU

    if item["stem"] != stem or item["kind"] != EXPECTED[p["kind"]]:
        return False
    if p["kind"] == "remove":
        pred = np.array([float(v) for v in str(item["pred_box"]).split()])
        xyxy = np.concatenate([pred[:2] - pred[2:] / 2, pred[:2] + pred[2:] / 2])
        return bool(box_iou(xyxy[None], p["box"][None])[0, 0] >= MATCH_IOU)
    return item["label_line"] == p["line"]


@cache
def _measure() -> dict[str, Any]:
    from cv_assets.lib.core.metrics import evaluate_detections
    from cv_assets.lib.core.onnx_detect import OnnxDetector, read_image
    from cv_assets.lib.monitoring.review import ReviewSettings, build_queue
    from cv_assets.lib.synth.scenes import CLASSES
    from cv_assets.read_side import open_store

    cfg, champ, source = _champion()
    store = open_store(cfg)
    onnx = store.local_path(store.key_of(str(champ.mobile["onnx_uri"])))
    det = OnnxDetector(str(onnx))
    settings = ReviewSettings()
    root = _fresh("label_issues_batches")
    out: dict[str, Any] = {"source": source, "version": champ.version, "test_map50": champ.map50}
    for name, seed in (("clean", 71), ("planted", 72)):
        batch = _land(root / name, seed)
        if name == "planted":
            _plant(batch, seed)
        found = {
            u: det.detect(read_image(u), conf=settings.conf_floor)
            for u in batch.samples["image_uri"]
        }
        t0 = time.perf_counter()
        q = build_queue(
            batch.samples,
            lambda u: Path(u).read_bytes(),
            lambda u, _data, found=found: found[u],
            CLASSES,
            settings,
        )
        secs = time.perf_counter() - t0
        preds = [found[str(u)] for u in batch.samples["image_uri"]]
        m = evaluate_detections(preds, batch.truths, len(CLASSES))
        rec = {"queue": q, "batch": batch, "map50": m.map50, "seconds": secs}
        out[name] = rec
    return out


def _planted_scores(r: dict[str, Any]) -> tuple[float, float, int, str]:
    q, batch = r["queue"], r["batch"]
    k = len(batch.planted)
    top = q.table.head(k).to_dict("records")
    stems = batch.samples["stem"].tolist()
    found = [any(_hit(it, p, stems[p["image"]]) for it in top) for p in batch.planted]
    true_items = sum(any(_hit(it, p, stems[p["image"]]) for p in batch.planted) for it in top)
    by_kind = ", ".join(
        f"{kind} {sum(f for f, p in zip(found, batch.planted, strict=True) if p['kind'] == kind)}/"
        f"{sum(p['kind'] == kind for p in batch.planted)}"
        for kind in PLANTS
    )
    # A queue shorter than K is judged on what it holds.
    return true_items / max(min(k, len(top)), 1), sum(found) / k, k, by_kind


def _context(m: dict[str, Any]) -> str:
    q = m["planted"]["queue"]
    return (
        f"{m['source']} v{m['version']}, test mAP50 {m['test_map50']:.3f}; "
        f"confident from conf {q.conf_min:.3g}"
    )


def label_issues_precision() -> Result:
    m = _measure()
    p, r, k, by_kind = _planted_scores(m["planted"])
    q = m["planted"]["queue"]
    return Result(
        "label_issues_top_k_precision",
        17,
        f"review queue (cleanlab ObjectLab) on {IMAGES} synthetic images with {k} planted label "
        "errors (5% of boxes: class flips, half-box shifts, removed and extra boxes): share of the "
        "top-K items (K = planted; all items if fewer) that are a planted error of the right kind",
        p,
        "",
        ">= 0.8",
        p >= 0.8,
        f"recall {r:.2f}; found by kind {by_kind}; queue {len(q.table)} items on {q.flagged} "
        f"images; mAP50 on the batch {m['planted']['map50']:.3f}; {_context(m)}; "
        f"queue built in {m['planted']['seconds']:.1f} s",
    )


def label_issues_recall() -> Result:
    m = _measure()
    p, r, k, by_kind = _planted_scores(m["planted"])
    return Result(
        "label_issues_top_k_recall",
        17,
        f"the same queue: share of the {k} planted errors found, with the right kind, in its top K",
        r,
        "",
        ">= 0.8",
        r >= 0.8,
        f"precision {p:.2f}; found by kind {by_kind}; {_context(m)}",
    )


def label_issues_clean_queue() -> Result:
    m = _measure()
    c = m["clean"]
    q, gap = c["queue"], abs(c["map50"] - m["test_map50"])
    ok = len(q.table) <= 5 and gap <= 0.05
    return Result(
        "label_issues_clean_batch_items",
        17,
        f"review queue items on a clean batch of {IMAGES} synthetic images (all labels right), "
        "where the champion's mAP50 is within 0.05 of its test mAP50",
        len(q.table),
        "items",
        "<= 5 (and mAP gap <= 0.05)",
        ok,
        f"{q.counts}; mAP50 on the batch {c['map50']:.3f} vs test {m['test_map50']:.3f} "
        f"(gap {gap:.3f}); {_context(m)}; built in {c['seconds']:.1f} s",
    )


BENCHMARKS = [label_issues_precision, label_issues_recall, label_issues_clean_queue]
