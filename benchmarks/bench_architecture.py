"""Which architecture a team on this platform should train (issue 20): YOLO26n vs YOLO11n on the
demo's data and recipe, each through the whole training job (training, the test split, the app
files), side by side in one home."""

import json
from pathlib import Path
from typing import Any

from benchmarks.bench_intake import QUIET
from benchmarks.bench_pipes import prepared_home
from benchmarks.common import QUICK, Result
from cv_assets.dev.demo import BATCHES, IMAGES
from cv_assets.lib.training.yolo import TrainParams

ARCHITECTURES = ("yolo11n.yaml", "yolo26n.yaml")


def _record(root: str, asset: str) -> dict[str, Any]:
    return json.loads((Path(root) / f"records/{asset}/_all.json").read_text())


def _train(p: Any, model_yaml: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """The training job on one architecture; what it measured."""
    rc = QUIET | {
        "ops": {
            "yolo_model": {"config": recipe | {"model_yaml": model_yaml, "device": "cpu"}},
            "model_evaluation": {"config": {"min_map50": 0.0, "bootstrap_resamples": 0}},
        }
    }
    import dagster as dg

    r = p.job.execute_in_process(
        instance=p.instance,
        run_config=rc,
        asset_selection=[dg.AssetKey(a) for a in _ASSETS],
        raise_on_error=False,
    )
    assert r.success, f"{model_yaml}: the training job failed"
    root = p.cfg.artifacts_root
    model, ev, mobile = (_record(root, a) for a in ("yolo_model", "model_evaluation",
                                                     "mobile_model"))  # fmt: skip
    files = mobile["summary"]["files"]
    return {
        "train_min": model["train_seconds"] / 60,
        "map50": ev["challenger"]["map50"],
        "map50_95": ev["challenger"]["map50_95"],
        "latency": {f: files[f]["latency_ms"] for f in files if files[f].get("latency_ms")},
        "app_format": mobile["summary"]["app_format"],
    }


_ASSETS = ("yolo_model", "model_evaluation", "mobile_model")


def architecture() -> Result:
    """Test mAP per CPU-minute of training, and the app file's latency, YOLO26n vs YOLO11n."""
    p = prepared_home("architecture", 2 if QUICK else BATCHES, 40 if QUICK else IMAGES)
    defaults = TrainParams()
    recipe = {"epochs": 2 if QUICK else defaults.epochs, "imgsz": defaults.imgsz, "force": True}
    got = {m: _train(p, m, recipe) for m in ARCHITECTURES}
    p.instance.dispose()
    per_min = {m: g["map50_95"] / g["train_min"] for m, g in got.items()}
    v11, v26 = (got[m] for m in ARCHITECTURES)
    ratio = per_min["yolo26n.yaml"] / per_min["yolo11n.yaml"]

    def line(name: str, g: dict[str, Any]) -> str:
        lat = ", ".join(f"{f} {ms:.1f} ms" for f, ms in sorted(g["latency"].items()))
        return (f"{name}: test mAP50 {g['map50']:.3f}, mAP50-95 {g['map50_95']:.3f}, training "
                f"{g['train_min']:.1f} min; {lat}")  # fmt: skip

    return Result(
        "architecture_yolo26n_vs_yolo11n",
        20,
        f"test mAP50-95 per CPU-minute of training, YOLO26n / YOLO11n, on the demo's data "
        f"({p.dataset['images']} images) and recipe ({recipe['epochs']} epochs, imgsz "
        f"{recipe['imgsz']}), 2 cores",
        ratio,
        "x",
        "measured (the better one is the default)",
        True,
        f"{line('YOLO11n', v11)}; {line('YOLO26n', v26)}",
    )


BENCHMARKS = [architecture]
