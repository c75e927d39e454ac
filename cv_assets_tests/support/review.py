"""A batch labelled with the champion's own detections, then corrupted on purpose; its queue.

A champion trained for two epochs at imgsz 64 sees little, so the batch is labelled with what it
does see (its own detections, through the same ONNX file) and then corrupted: whatever the
champion's quality, the review queue must then find the corruptions and nothing else.
"""

from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np

from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.defs.monitoring.review import review_queue
from cv_assets.lib.core.metrics import box_iou
from cv_assets.lib.core.onnx_detect import OnnxDetector, read_image
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.monitoring.review import predictions_text
from cv_assets.read_side import registry_for
from cv_assets_tests.support.jobs import QUIET, materialized
from cv_assets_tests.support.landing import land

JOB = "review_queue_test_job"


@dataclass
class Planted:
    batch_id: str
    conf_min: float
    mismatch: tuple[str, int, str, str] = ("", 0, "", "")  # stem, line, labelled, predicted
    emptied: tuple[str, int] = ("", 0)  # stem whose boxes were all left out, and how many
    clean: list[str] = field(default_factory=list)


def review_job(cfg: PlatformConfig) -> dg.JobDefinition:
    """A job over review_queue, whether or not the definitions wire it in yet."""
    base = build_defs(cfg)
    keys = {k for a in base.assets or [] if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    job = dg.define_asset_job(JOB, selection=[review_queue.key])
    extra = [] if review_queue.key in keys else [review_queue]
    return dg.Definitions.merge(base, dg.Definitions(assets=extra, jobs=[job])).resolve_job_def(JOB)


def materialize_queue(cfg, instance, batch_id: str, conf_min: float) -> dict:
    """review_queue on one batch; its materialization's metadata."""
    rc = QUIET | {"ops": {"review_queue": {"config": {"conf_min": conf_min}}}}
    r = review_job(cfg).execute_in_process(partition_key=batch_id, instance=instance, run_config=rc)
    assert r.success
    md = materialized(r, "review_queue")
    assert md is not None
    return md


def land_corrupted_batch(cfg, instance, seed: int = 40, images: int = 12) -> Planted:
    """A landed, validated batch labelled with the champion's detections, then corrupted."""
    champ = registry_for(cfg).champion()
    assert champ is not None
    det = OnnxDetector(str(champ.mobile["onnx_uri"]))
    (s,) = land(cfg, batches=1, images=images, size=96, seed=seed)
    paths = sorted((s.path / "images").iterdir())
    # The threshold: the third most confident box of a typical image, so images carry few boxes.
    tops = [np.sort(det.detect(read_image(p), conf=1e-6)[:, 4])[::-1][:3] for p in paths]
    conf_min = float(np.median([t[-1] for t in tops if len(t)])) * 0.999
    preds = {p.stem: det.detect(read_image(p), conf=conf_min) for p in paths}
    plan = Planted(s.batch_id, conf_min)
    for stem, d in preds.items():
        text = predictions_text(d)
        assert len(text.splitlines()) == len(d), "a degenerate box cannot be a label line"
        (s.path / "labels" / f"{stem}.txt").write_text(text)
    with_boxes = [stem for stem, d in preds.items() if len(d)]
    assert len(with_boxes) >= 3, "the champion sees nothing at all: no labels to corrupt"
    emptied = with_boxes[0]
    (s.path / "labels" / f"{emptied}.txt").write_text("")
    plan.emptied = (emptied, len(preds[emptied]))
    plan.mismatch = _change_one_class(s.path, with_boxes[1:], preds, champ.class_names)
    plan.clean = [st for st in preds if st not in (emptied, plan.mismatch[0])]
    instance.add_dynamic_partitions(BATCHES, [s.batch_id])
    intake = build_defs(cfg).resolve_job_def("intake_job")
    assert intake.execute_in_process(
        partition_key=s.batch_id, instance=instance, run_config=QUIET
    ).success
    return plan


def _change_one_class(root: Path, stems, preds, classes) -> tuple[str, int, str, str]:
    """Relabel one box with a class the champion does not see there; (stem, line, new, seen)."""
    for stem in stems:
        d = preds[stem]
        iou = box_iou(d[:, :4], d[:, :4])
        for i, p in enumerate(d):
            for k in range(len(classes)):
                if k == int(p[5]) or ((d[:, 5] == k) & (iou[i] >= 0.5)).any():
                    continue
                lines = (root / "labels" / f"{stem}.txt").read_text().splitlines()
                lines[i] = " ".join([str(k), *lines[i].split()[1:]])
                (root / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
                return stem, i + 1, classes[k], classes[int(p[5])]
    raise AssertionError("no box whose class can be changed unambiguously")
