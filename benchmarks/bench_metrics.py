"""Our metric against the COCO reference on a real champion, and the gate's interval on real data.

Reads the demo's home (``DEMO_HOME``, default ``./.cv_assets``): the champion's weights predict its
own frozen test split once; ``lib/core/metrics.py`` and faster-coco-eval score the same predictions.
When the registry also holds the champion before it, both are scored on that split and the paired
bootstrap gives the interval the gate reports, so its width on a real test split is measured.
"""

import os
import tempfile
from pathlib import Path
from typing import cast

from benchmarks.common import Result, Skipped


def metric_vs_coco_on_champion() -> Result:
    from cv_assets.lib.core.files import local_file
    from cv_assets.lib.core.metrics import evaluate_detections, read_yolo_truth
    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.lib.dataset.records import TrainingDataset
    from cv_assets.lib.dataset.snapshot import test_split
    from cv_assets.lib.training.bootstrap import paired_bootstrap
    from cv_assets.lib.training.train import input_sizes
    from cv_assets.lib.training.yolo import predict_yolo, verified_weights
    from cv_assets.read_side import open_store, registry_for
    from cv_assets_tests.support.coco import coco_reference

    home = os.environ.get("DEMO_HOME", str(Path(__file__).resolve().parents[1] / ".cv_assets"))
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": home})
    reg = registry_for(cfg)
    champ = reg.champion()
    if champ is None:
        raise Skipped(f"no champion in {home}: run `make demo` first")
    store = open_store(cfg)
    # test_split reads only the dataset's samples table: the rest of the record is not needed.
    samples_uri = store.uri(f"datasets/{champ.dataset_version}/samples.parquet")
    dataset = cast(TrainingDataset, {"samples": {"uri": samples_uri}})
    n = len(champ.class_names)
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = test_split(store, dataset, Path(tmp))
        truths = [read_yolo_truth(Path(p).read_text()) for p in labels]

        def predictions(v):
            w = verified_weights(local_file(store, v.weights_uri, Path(tmp)), v.weights_sha256)
            return predict_yolo(w, images, v.imgsz or 224, device="cpu")

        imgsz = champ.imgsz or 224
        preds = predictions(champ)
        sizes = input_sizes(images, imgsz)
        ours = evaluate_detections(preds, truths, n, image_sizes=sizes)
        stats, _ = coco_reference((preds, truths, sizes), n)
        earlier = [v for v in reg.versions() if int(v.version) < int(champ.version)]
        interval = ""
        if earlier:
            prev = earlier[-1]
            b = paired_bootstrap(preds, predictions(prev), truths, n)
            interval = (
                f" v{champ.version} - v{prev.version} mAP50-95 {b.delta:+.3f}, 95 % interval "
                f"[{b.low:+.3f}, {b.high:+.3f}] (width {b.high - b.low:.3f}) on {b.n_images} "
                "test images."
            )
    diff = max(abs(ours.map50 - stats[1]), abs(ours.map50_95 - stats[0]))
    sized = ", ".join(
        f"{k} {v:.3f}"
        for k, v in (("small", ours.ap_small), ("medium", ours.ap_medium), ("large", ours.ap_large))
        if v is not None
    )
    return Result(
        name="metric_vs_coco_on_champion",
        issue=13,
        measured="largest difference, ours vs faster-coco-eval, in mAP50 and mAP50-95 on the "
        "demo champion's test split",
        value=float(diff),
        unit="",
        goal="<= 0.01",
        passed=bool(diff <= 0.01),
        details=(
            f"v{champ.version} on {len(images)} test images at {imgsz} px: ours mAP50 "
            f"{ours.map50:.4f} / mAP50-95 {ours.map50_95:.4f}, COCO {stats[1]:.4f} / "
            f"{stats[0]:.4f}; AP by size (model-input px): {sized or 'n/a'}.{interval}"
        ),
    )


BENCHMARKS = [metric_vs_coco_on_champion]
