"""``cv-assets audit``: the audit set's frames out to people, their labels back in.

- ``export [--out DIR]`` writes the audit frames nobody labelled yet (``images/<event_id>.jpg``)
  and ``classes.txt``: a folder Label Studio, CVAT or Roboflow takes in.
- ``import DIR`` reads the tool's YOLO export (``DIR/labels/<event_id>.txt``) under intake's
  label rules; a file that breaks one is quarantined with its line and rule. ``audit_sensor``
  then reports the live accuracy (``field_accuracy``).
- ``status [--json]`` counts the audit frames, the labelled ones and the last live accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cv_assets.lib.core.settings import PlatformConfig


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    from cv_assets.lib.telemetry.audit import (
        AUDIT,
        audit_events,
        audit_labels,
        export_audit,
        import_audit,
    )
    from cv_assets.read_side import open_store

    store, classes = open_store(cfg), list(cfg.classes)
    if args.audit_command == "export":
        out = args.out or Path("audit-frames")
        n = export_audit(store, out, classes)
        print(f"{n} audit frames to label in {out}/images (classes: {out}/classes.txt)")
        print("label them, export YOLO labels, then: cv-assets audit import <export folder>")
        return 0
    if args.audit_command == "import":
        res = import_audit(store, args.folder, classes)
        print(
            f"read {res.read} label files: {res.accepted} accepted ({res.replaced} replaced an "
            f"earlier label), {len(res.quarantined)} quarantined"
        )
        for f, why in res.quarantined:
            print(f"  quarantined {f}: {why}", file=sys.stderr)
        print(f"record: {res.record}; audit_sensor reports the live accuracy next")
        return 1 if res.quarantined and not res.accepted else 0
    events, labels = audit_events(store), audit_labels(store)
    report_key = f"{AUDIT}/accuracy.json"
    report = json.loads(store.get_bytes(report_key)) if store.exists(report_key) else None
    labelled = set(labels) & (set() if events.empty else {str(e) for e in events["event_id"]})
    status = {"audit_frames": len(events), "labelled": len(labelled), "live_accuracy": report}
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(f"audit frames: {status['audit_frames']}, labelled: {status['labelled']}")
    for r in (report or {}).get("rows", []):
        ci = (f"[{r['map50_low']:.3f}, {r['map50_high']:.3f}]"
              if r.get("map50_low") is not None else "(too few for an interval)")  # fmt: skip
        print(f"  {r['name']}: live mAP50 {r['map50']:.3f} {ci} on {r['n_images']} frames")
    return 0
