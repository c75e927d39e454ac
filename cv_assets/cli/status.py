"""``cv-assets status``: what the platform holds, read from the Dagster instance and the store.

The event log is the source of truth for what was materialised; the artifact store adds what
never became a run (refused batches).
"""

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.ingest.landing import LandingZone
from cv_assets.lib.monitoring.review import KINDS
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.tracking.registry import URI_TAGS, Registry
from cv_assets.read_side import (
    PAGE,
    latest_by_partition,
    metadata_of,
    open_instance,
    open_store,
    registry_for,
)


def batches_section(cfg: PlatformConfig, instance: dg.DagsterInstance) -> dict[str, Any]:
    complete, _ignored = LandingZone(cfg.landing_root, cfg.s3_endpoint_url).scan()
    validated = latest_by_partition(instance, "validated_batch")
    store = open_store(cfg)
    refused = [
        json.loads(store.get_bytes(k)) for k in store.list("refusals/") if k.endswith(".json")
    ]
    return {
        "landed": len(complete),
        "registered": len(instance.get_dynamic_partitions("batches")),
        "validated": len(validated),
        "refused": len(refused),
        "refusals": [{"batch_id": r["batch_id"], "reason": r["reason"]} for r in refused],
        "images_landed": sum(int(m.get("landed", 0)) for m in validated.values()),
        "images_accepted": sum(int(m.get("accepted", 0)) for m in validated.values()),
        "images_unlabelled": sum(int(m.get("unlabelled", 0)) for m in validated.values()),
        "images_quarantined": sum(int(m.get("quarantined", 0)) for m in validated.values()),
        "annotations_quarantined": sum(
            int(m.get("annotations_quarantined", 0)) for m in validated.values()
        ),
        "per_batch": [
            {
                "batch_id": b,
                "landed": m.get("landed"),
                "accepted": m.get("accepted"),
                "unlabelled": m.get("unlabelled", 0),
                "quarantined": m.get("quarantined"),
                "acceptance_rate": m.get("acceptance_rate"),
                "format": m.get("format", "yolo"),
                "labels": m.get("labels", "full"),
            }
            for b, m in sorted(validated.items())
        ],
    }


def datasets_section(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    res = instance.fetch_materializations(dg.AssetKey("training_dataset"), limit=PAGE)
    for rec in reversed(res.records):  # oldest first, so created_at is the first materialisation
        mat = rec.asset_materialization
        if mat is None:
            continue
        md = metadata_of(mat)
        version = str(md.get("dataset_version"))
        seen.setdefault(
            version,
            {
                "version": version,
                "images": md.get("images"),
                "train": md.get("train_images"),
                "val": md.get("val_images"),
                "test": md.get("test_images"),
                "created_at": datetime.fromtimestamp(rec.timestamp, UTC).isoformat(
                    timespec="seconds"
                ),
            },
        )
    return list(seen.values())


def champion_section(reg: Registry) -> dict[str, Any] | None:
    champ = reg.champion()
    if champ is None:
        return None
    return {
        "version": champ.version,
        "weights_uri": champ.weights_uri,
        "weights_sha256": champ.weights_sha256,
        **{tag: champ.mobile.get(tag) or None for tag in URI_TAGS.values()},
        "app_format": champ.mobile.get("app_format"),
        "model_card_uri": champ.mobile.get("model_card_uri"),
        "mobile_parity": json.loads(champ.mobile.get("mobile_parity") or "null"),
        "map50": champ.map50,
        "map50_95": champ.map50_95,
        "class_names": champ.class_names,
        "imgsz": champ.imgsz,
        "dataset_version": champ.dataset_version,
    }


def mobile_line(fmt: str, p: dict[str, Any], uri: str | None) -> str:
    """One app file: its check's numbers and verdict, or why it is not shipped."""
    if not p["passed"]:
        return f"{fmt}: NOT SHIPPED ({p.get('why', 'failed its check')})"
    if p.get("check") == "structural":  # Core ML cannot run on Linux: checked, not measured
        return f"{fmt}: structural check pass {p['mib']} MiB {uri}"
    return (f"{fmt}: mAP50-95 {p['map50_95']} ({p['delta_map50_95']:+.4f} vs PyTorch) "
            f"{p['mib']} MiB {p['latency_ms']} ms pass {uri}")  # fmt: skip


def drift_section(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    """The newest drift report of each batch, oldest batch first."""
    return [
        {
            "batch_id": b,
            "drift_share": m.get("drift_share"),
            "drifted": m.get("drifted"),
            "champion_version": m.get("champion_version"),
            "report_uri": m.get("report"),
        }
        for b, m in sorted(latest_by_partition(instance, "drift_report").items())
    ]


def field_section(instance: dg.DagsterInstance, days: int = 7) -> dict[str, Any]:
    """The apps' traffic of the last ``days`` judged days: events, flagged cohorts, frames sent
    to labelling and to the audit set; and the newest live accuracy on labelled audit frames."""
    drift = latest_by_partition(instance, "field_drift")
    samples = latest_by_partition(instance, "field_samples")
    per_day = [
        {
            "day": d,
            "events": (drift.get(d) or samples.get(d) or {}).get("n_events"),
            "drifted_cohorts": (drift.get(d) or {}).get("drifted_cohorts") or [],
            "champion_version": (drift.get(d) or {}).get("champion_version"),
            # This run's and the day's earlier runs' (late events land in a batch of their own).
            "frames_to_pool": int((samples.get(d) or {}).get("landed_frames") or 0)
            + int((samples.get(d) or {}).get("landed_before") or 0),
            "field_batch": (samples.get(d) or {}).get("field_batch"),
            "audit_frames": (samples.get(d) or {}).get("audit_frames"),
        }
        for d in sorted(set(drift) | set(samples))[-days:]
    ]
    recs = instance.fetch_materializations(dg.AssetKey("field_accuracy"), limit=1).records
    mat = recs[0].asset_materialization if recs else None
    acc = metadata_of(mat) if mat is not None else {}
    return {
        "days": per_day,
        "audit_labelled": acc.get("labelled_frames"),
        "audit_frames": acc.get("audit_frames"),
        "live_accuracy": str(acc.get("live_map50", "")) or None,
    }


def performance_section(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    """The champion's live accuracy on each batch (newest measurement per batch)."""
    keys = ("map50", "champion_test_map50", "degraded", "in_training_data", "champion_version")
    return [
        {"batch_id": b} | {k: m.get(k) for k in keys}
        for b, m in sorted(latest_by_partition(instance, "champion_performance").items())
    ]


def review_section(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    """How many labels of each batch the champion disputes (``cv-assets review export``)."""
    keys = ("items", *KINDS, "champion_version")
    return [
        {"batch_id": b} | {k: m.get(k) for k in keys} | {"table_uri": m.get("table")}
        for b, m in sorted(latest_by_partition(instance, "review_queue").items())
    ]


def trainings_section(instance: dg.DagsterInstance, limit: int = 20) -> list[dict[str, Any]]:
    """The newest training runs and what started each: automation (volume or freshness), drift,
    degradation, the schedule, or a person."""
    runs = instance.get_run_records(dg.RunsFilter(tags={"cv_assets/stage": "training"}), limit)
    return [
        {
            "run_id": r.dagster_run.run_id,
            "trigger": r.dagster_run.tags.get("cv_assets/trigger", "manual"),
            "trigger_batch": r.dagster_run.tags.get("cv_assets/trigger_batch"),
            "status": r.dagster_run.status.value,
            "created_at": r.create_timestamp.isoformat(timespec="seconds"),
        }
        for r in reversed(runs)
    ]


def evaluations_section(instance: dg.DagsterInstance, limit: int = 10) -> list[dict[str, Any]]:
    """The newest gate decisions: challenger vs champion on the test split, with the interval
    of their difference (a gain inside the interval's noise is no gain)."""
    keys = (
        "map50",
        "map50_95",
        "ap_small",
        "ap_medium",
        "ap_large",
        "test_images",
        "champion_version",
        "gate_passed",
        "delta_map50_95",
        "delta_ci_low",
        "delta_ci_high",
    )
    recs = instance.fetch_materializations(dg.AssetKey("model_evaluation"), limit=limit).records
    out = []
    for r in reversed(recs):
        if r.asset_materialization is None:
            continue
        m = metadata_of(r.asset_materialization)
        out.append({"run_id": r.run_id} | {k: m.get(k) for k in keys})
    return out


def collect_status(cfg: PlatformConfig) -> dict[str, Any]:
    """Everything ``status`` shows. Raises ``tracking.TrackingUnavailable`` (naming the masked
    URI) within seconds when the tracking server does not answer, not after MLflow's retries."""
    tracking.check_reachable(cfg.mlflow_tracking_uri)
    instance = open_instance(cfg)
    reg = registry_for(cfg)
    try:
        return {
            "home": str(cfg.home),
            "profile": cfg.profile,
            "batches": batches_section(cfg, instance),
            "datasets": datasets_section(instance),
            "models": [
                {
                    k: v.as_dict()[k]
                    for k in (
                        "version",
                        "dataset_version",
                        "mlflow_run_id",
                        "map50",
                        "map50_95",
                        "status",
                    )
                }
                for v in reg.versions()
            ],
            "champion": champion_section(reg),
            "evaluations": evaluations_section(instance),
            "promotions": reg.history()[-20:],
            "drift": drift_section(instance),
            "performance": performance_section(instance),
            "review": review_section(instance),
            "field": field_section(instance),
            "trainings": trainings_section(instance),
        }
    finally:
        instance.dispose()


def render_status(s: dict[str, Any]) -> str:
    b = s["batches"]
    lines = [
        f"cv_assets at {s['home']} (profile {s['profile']})",
        f"batches: {b['landed']} landed, {b['validated']} validated, {b['refused']} refused",
        f"images:  {b['images_landed']} landed = {b['images_accepted']} labelled "
        f"+ {b['images_unlabelled']} unlabelled + {b['images_quarantined']} quarantined"
        + (
            f" ({b['annotations_quarantined']} annotations quarantined)"
            if b["annotations_quarantined"]
            else ""
        ),
    ]
    for r in b["per_batch"][-10:]:
        lines.append(
            f"  {r['batch_id']} ({r['format']}, {r['labels']}): {r['landed']} landed = "
            f"{r['accepted']} labelled + {r['unlabelled']} unlabelled + {r['quarantined']} "
            "quarantined"
        )
    lines += [f"  refused {r['batch_id']}: {r['reason']}" for r in b["refusals"]]
    lines.append(
        f"datasets: {len(s['datasets'])} versions"
        + (
            f", newest {s['datasets'][-1]['version']} ({s['datasets'][-1]['images']} images)"
            if s["datasets"]
            else ""
        )
    )
    for m in s["models"][-5:]:
        lines.append(
            f"  model v{m['version']}: mAP50 {m['map50']} mAP50-95 {m['map50_95']} "
            f"[{m['status']}] dataset {m['dataset_version']}"
        )
    c = s["champion"]
    if c is None:
        lines.append("champion: none yet")
    else:
        lines.append(
            f"champion: v{c['version']} mAP50 {c['map50']} mAP50-95 {c['map50_95']} "
            f"imgsz {c['imgsz']} weights {c['weights_uri']}"
        )
        for fmt, p in (c.get("mobile_parity") or {}).items():
            lines.append(f"  {mobile_line(fmt, p, c.get(URI_TAGS.get(fmt, '')))}"
                         + (" [app]" if fmt == c["app_format"] else ""))  # fmt: skip
    for e in s["evaluations"][-3:]:
        ci = (
            f", vs v{e['champion_version']}: {e['delta_map50_95']:+.3f} "
            f"[{e['delta_ci_low']:+.3f}, {e['delta_ci_high']:+.3f}]"
            if e.get("delta_ci_low") is not None
            else ""
        )
        verdict = "blessed" if e["gate_passed"] else "rejected"
        lines.append(
            f"  evaluation {e['run_id'][:8]}: mAP50-95 {e['map50_95']} on {e['test_images']} "
            f"test images{ci} {verdict}"
        )
    for d in s["drift"][-10:]:
        flag = "DRIFTED" if d["drifted"] else "ok"
        lines.append(f"  drift {d['batch_id']}: share {d['drift_share']} {flag} {d['report_uri']}")
    for p in s["performance"][-10:]:
        seen = " (in its training data)" if p["in_training_data"] else ""
        flag = "DEGRADED" if p["degraded"] else "ok"
        lines.append(
            f"  live mAP50 {p['batch_id']}: {p['map50']} vs test {p['champion_test_map50']} "
            f"{flag}{seen}"
        )
    for r in s["review"][-5:]:
        lines.append(f"  review {r['batch_id']}: {r['items']} labels to check")
    f = s["field"]
    for d in f["days"]:
        flagged = ", ".join(d["drifted_cohorts"]) or "none"
        lines.append(
            f"  field {d['day']}: {d['events']} events vs v{d['champion_version']}, drifted: "
            f"{flagged}; {d['frames_to_pool']} low-confidence frames to the pool, "
            f"{d['audit_frames'] or 0} to the audit set"
        )
    if f["live_accuracy"]:
        lines.append(f"  audit: {f['audit_labelled']} of {f['audit_frames']} frames labelled")
        lines += [f"  {row}" for row in f["live_accuracy"].splitlines() if row.strip()]
    for t in s["trainings"][-5:]:
        on = f" on {t['trigger_batch']}" if t["trigger_batch"] else ""
        lines.append(
            f"  training {t['run_id'][:8]} {t['created_at']}: {t['trigger']}{on} {t['status']}"
        )
    for h in s["promotions"][-5:]:
        was = f"from v{h['previous']}" if h["previous"] else "first champion"
        lines.append(f"  {h['at']} {h['action']} v{h['version']} ({was}) by {h['who']}: {h['why']}")
    return "\n".join(lines)


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    """``cv-assets status [--json]``."""
    s = collect_status(cfg)
    print(json.dumps(s, indent=2, default=str) if args.json else render_status(s))
    return 0
