"""Live accuracy: the field model's mAP on the audit frames people labelled.

``field_accuracy`` scores the apps' own detections (as each phone ran its model) against the
labels of the audit set (``lib/telemetry/audit.py``), per model version and per cohort where
enough frames are labelled, with a bootstrap interval. ``audit_sensor`` runs it after each import
of labels (``cv-assets audit import``).
"""

import json
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from cv_assets.defs.common import OWNERS
from cv_assets.defs.monitoring.field import field_samples
from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.telemetry.audit import AUDIT, audit_events, audit_labels
from cv_assets.lib.telemetry.live_accuracy import live_accuracy
from cv_assets.resources.storage import ArtifactStoreResource, PlatformSettings

IMPORTS = f"{AUDIT}/imports/"
REPORT = f"{AUDIT}/accuracy.json"


class FieldAccuracyConfig(dg.Config):
    min_images: int = Field(
        default=30, description="labelled frames a cohort needs for its own row and interval"
    )
    n_resamples: int = Field(default=1000, description="bootstrap resamples of the frames")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@dg.asset(
    group_name="monitoring",
    kinds={"parquet"},
    owners=OWNERS,
    code_version="1",
    deps=[field_samples],
)
def field_accuracy(
    context: dg.AssetExecutionContext,
    config: FieldAccuracyConfig,
    artifacts: ArtifactStoreResource,
    settings: PlatformSettings,
) -> dg.MaterializeResult:
    """The field model's live mAP50 on labelled audit frames, per model and cohort, with a CI."""
    store = artifacts.store
    events, labels = audit_events(store), audit_labels(store)
    acc = live_accuracy(events, labels, len(settings.classes),
                        min_images=config.min_images, n_resamples=config.n_resamples)  # fmt: skip
    rec = acc.as_dict() | {"at": datetime.now(UTC).isoformat()}
    ref = store.put_bytes(REPORT, json.dumps(rec, indent=1).encode())
    rows = [(r.scope, r.name, r.n_images, _fmt(r.map50),
             f"[{_fmt(r.map50_low)}, {_fmt(r.map50_high)}]", _fmt(r.map50_95), r.note or "")
            for r in acc.rows]  # fmt: skip
    for r in acc.rows:
        context.log.info(f"{r.name}: live mAP50 {_fmt(r.map50)} on {r.n_images} frames")
    small = ", ".join(f"{name} ({n})" for name, n in acc.too_small) or "-"
    return dg.MaterializeResult(
        value=rec,
        metadata={
            "audit_frames": acc.n_audit,
            "labelled_frames": acc.n_labelled,
            "live_map50": dg.MetadataValue.md(
                md_table(rows, ["scope", "name", "frames", "mAP50", "95% CI", "mAP50-95", "note"])
                if rows
                else "no labelled audit frames yet: `cv-assets audit export`, label, `import`"
            ),
            "cohorts_too_small": small,
            "report": dg.MetadataValue.path(ref.uri),
        },
    )


field_accuracy_job = dg.define_asset_job(
    "field_accuracy_job",
    selection=[field_accuracy],
    description="The field model's live accuracy on the audit frames people labelled.",
)


def audit_sensor(cfg: PlatformConfig) -> dg.SensorDefinition:
    @dg.sensor(
        name="audit_sensor",
        job=field_accuracy_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=cfg.sensor_interval_s,
        description="Audit labels: reports the live accuracy after each import of people's "
        "labels of audit frames (cv-assets audit import).",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource
    ) -> dg.SensorResult:
        records = sorted(artifacts.store.list(IMPORTS))
        if not records:
            return dg.SensorResult(skip_reason="no audit labels imported yet")
        # One run per import: the newest import's record names it.
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"audit:{records[-1]}")])

    return _sensor
