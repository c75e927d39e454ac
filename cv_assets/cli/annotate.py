"""``cv-assets annotate``: start an annotation round in Label Studio, see where rounds stand.

- ``start [--k N]`` runs ``annotation_round_job`` on the instance (a run like any other: in the
  UI, with its logs) and prints the round's Label Studio URL.
- ``status [--json]`` lists every round with its tasks (pushed, completed, corrected, skipped,
  open, deleted, landed), read live from Label Studio; where it cannot be reached, what was pushed
  and why not (the sensor's last counts are the round's observations in the UI).
- ``url`` prints Label Studio's URL and each round's project.

The folder round trip (``cv-assets review export`` / ``import``) stays as the offline path.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cv_assets.lib.core.settings import PlatformConfig


def start(cfg: PlatformConfig, k: int | None, issues: int | None = None) -> tuple[int, str]:
    from cv_assets.definitions import build_defs
    from cv_assets.read_side import open_instance

    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    config = {"k": k, "label_issues": issues}
    if any(v is not None for v in config.values()):
        run_config["ops"] = {
            "annotation_round": {"config": {n: v for n, v in config.items() if v is not None}}
        }
    job = build_defs(cfg).resolve_job_def("annotation_round_job")
    instance = open_instance(cfg)
    try:
        r = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False)
    finally:
        instance.dispose()
    if not r.success:
        failures = [e.message for e in r.all_events if e.is_failure]
        why = "; ".join(str(f) for f in failures if f) or "see the run in the UI"
        return 1, f"no round was started (run {r.run_id}): {why}"
    rec = r.output_for_node("annotation_round")
    return 0, (
        f"{rec['round_id']}: {rec['pushed']} images to label in Label Studio: {rec['url']}\n"
        "Completed tasks land as a batch on the next labelstudio_sensor tick (`make ui` runs "
        "it); `cv-assets annotate status` shows the counts."
    )


def rounds_status(cfg: PlatformConfig) -> list[dict[str, Any]]:
    from cv_assets.lib.annotation.collect import landed_so_far, manifests
    from cv_assets.lib.annotation.labelstudio import LabelStudio, LabelStudioError
    from cv_assets.lib.annotation.rounds import collect
    from cv_assets.read_side import open_store

    store = open_store(cfg)
    out = []
    for m in manifests(store):
        row: dict[str, Any] = {
            "round": m["round_id"],
            "url": m["url"],
            "created_at": m["created_at"],
        }
        try:
            client = LabelStudio(cfg.labelstudio_url, cfg.labelstudio_token or "")
            landed = landed_so_far(store, m["round_id"])
            found = collect(m, client.export(int(m["project"])), landed)
            row |= found.counts(len(m["tasks"])) | {"landed": len(landed)}
        except LabelStudioError as e:
            row |= {"pushed": len(m["tasks"]), "error": str(e)}
        out.append(row)
    return out


COLUMNS = ("pushed", "completed", "corrected", "skipped", "open", "deleted", "landed")


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    from cv_assets.lib.annotation.labelstudio import LabelStudioError

    try:
        if args.annotate_command == "start":
            code, msg = start(cfg, args.k, args.label_issues)
            print(msg, file=sys.stderr if code else sys.stdout)
            return code
        rows = rounds_status(cfg)
    except LabelStudioError as e:
        print(f"cv-assets annotate {args.annotate_command}: {e}", file=sys.stderr)
        return 2
    if args.annotate_command == "url":
        print(f"Label Studio: {cfg.labelstudio_url}")
        for r in rows:
            print(f"{r['round']}: {r['url']}")
        return 0
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no annotation round yet: `cv-assets annotate start`")
    for r in rows:
        counts = ", ".join(f"{c} {r[c]}" for c in COLUMNS if c in r)
        print(
            f"{r['round']}: {counts}\n  {r['url']}" + (f"\n  {r['error']}" if "error" in r else "")
        )
    return 0
