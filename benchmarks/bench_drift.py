"""Monitoring benchmarks (issue 5): one drift report on 100k feature rows, sampled and not.

Each configuration runs in its own process, so its peak RSS is its own and its first report pays
Evidently's import, as a run of ``drift_report`` does. The time covers what the asset does with
the tables: ``lib/monitoring/drift.py``'s ``compare`` (the Evidently report, its HTML and JSON) and
writing
both files to an artifact store. The champion's predictions on images, which the asset also makes
(at most 300 per side), are not part of a report on feature rows.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import QUICK, Result

ROWS = 20_000 if QUICK else 100_000
CLASSES = ["square", "circle", "triangle"]


def feature_table(n: int, seed: int, brightness: float = 0.5):
    """``n`` feature rows drawn from the distributions of the demo's 614 landed images.

    Means and spreads measured on the demo's features: brightness 0.50 (sd 0.07), contrast 0.135
    (0.034), sharpness 0.024 (0.009), 1-8 boxes, mean box area 0.042 (0.018), aspect ~1 (0.057),
    the three classes equally likely; prediction columns as a trained champion gives them. 3 % of
    images have no boxes (NaN box statistics), as landed data without objects does.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    boxes = rng.integers(1, 9, n)
    boxes[rng.random(n) < 0.03] = 0
    per_class = rng.multinomial(1, [1 / 3] * 3, size=(n, 8)).cumsum(1)[np.arange(n), boxes - 1]
    per_class[boxes == 0] = 0
    empty = np.where(boxes == 0, np.nan, 1.0)
    table = {
        "brightness": rng.normal(brightness, 0.07, n).clip(0, 1),
        "contrast": rng.normal(0.135, 0.034, n).clip(0.005, 1),
        "sharpness": rng.gamma(6.8, 0.0035, n),
        "n_boxes": boxes.astype(float),
        "box_area_mean": rng.gamma(5.5, 0.0076, n) * empty,
        "box_aspect_mean": np.exp(rng.normal(0, 0.055, n)) * empty,
        **{f"n_{c}": per_class[:, i].astype(float) for i, c in enumerate(CLASSES)},
        "pred_conf_mean": rng.beta(8, 2, n) * (boxes > 0),
        "pred_count": rng.poisson(boxes).astype(float),
    }
    return pd.DataFrame(table)


def _drift_child(rows: int, max_rows: int) -> None:
    """Runs in a subprocess: two reports (cold, then warm) and the peak RSS, as JSON."""
    # compare imports Evidently on its first call, so the first report pays for it, as a run does.
    from cv_assets.lib.core.store import ArtifactStore
    from cv_assets.lib.monitoring.drift import DriftSettings, compare, drift_columns

    ref = feature_table(rows, seed=1)
    cur = feature_table(rows, seed=2, brightness=0.52)  # a mild shift: one column drifts
    columns = drift_columns(CLASSES)
    settings = DriftSettings() if max_rows <= 0 else DriftSettings(max_rows=max_rows)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, res = [], None
    with tempfile.TemporaryDirectory(prefix="bench_drift_") as tmp:
        store = ArtifactStore(tmp)
        for k in range(2):
            t0 = time.perf_counter()
            res = compare(ref, cur, columns, settings)
            store.put_bytes(f"drift/{k}/report.html", res.html.encode())
            store.put_bytes(
                f"drift/{k}/report.json", json.dumps(res.report_json, default=str).encode()
            )
            times.append(time.perf_counter() - t0)
    assert res is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    drifted = [c for c, v in res.columns.items() if v["drifted"]]
    out = {
        "times": times,
        "base_kib": base,
        "peak_kib": peak,
        "max_rows": settings.max_rows,
        "reference_rows": res.reference_rows,
        "current_rows": res.current_rows,
        "drifted": drifted,
        "html_mib": len(res.html) / 2**20,
    }
    print(json.dumps(out))


def _measure(max_rows: int) -> dict:
    code = (
        "import sys; from benchmarks.bench_drift import _drift_child; "
        "_drift_child(int(sys.argv[1]), int(sys.argv[2]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROWS), str(max_rows)],
        env=os.environ,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _result(name: str, d: dict, what: str) -> Result:
    cold, warm = d["times"]
    return Result(
        name,
        5,
        f"one drift report (Evidently, HTML + JSON written) of {ROWS:,} current vs {ROWS:,} "
        f"reference feature rows, 11 columns, {what}",
        cold,
        "s",
        "<= 60 s",
        cold <= 60,
        f"first report in a fresh process (Evidently's import included) {cold:.1f} s, "
        f"second {warm:.1f} s; {d['reference_rows']:,} vs {d['current_rows']:,} rows compared; "
        f"peak RSS {d['peak_kib'] / 1024:.0f} MiB ({d['base_kib'] / 1024:.0f} MiB with both "
        f"tables built, before the report); HTML {d['html_mib']:.1f} MiB; "
        f"drifted: {', '.join(d['drifted']) or 'none'} (brightness shifted by 0.02)",
    )


def drift_report_100k() -> Result:
    """Sampling off: every row of both tables goes into the report."""
    return _result("drift_report_100k", _measure(ROWS), f"sampling off (max_rows {ROWS:,})")


def drift_report_100k_default() -> Result:
    """The platform's default ``DriftSettings``: each side sampled to ``max_rows``."""
    d = _measure(0)
    return _result(
        "drift_report_100k_default",
        d,
        f"default DriftSettings (each side sampled to max_rows {d['max_rows']:,})",
    )


BENCHMARKS = [drift_report_100k, drift_report_100k_default]
