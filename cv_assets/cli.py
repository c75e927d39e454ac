"""The ``cv-assets`` command line. Heavy imports happen inside each command, so it starts fast."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.lib.synth.batches import format_shift, parse_shift, write_batches

    cfg = PlatformConfig.from_env()
    landing = args.landing or cfg.landing_root
    if landing.startswith("s3://"):
        raise SystemExit("cv-assets synth writes to a local folder; sync it to S3 afterwards")
    shift = parse_shift(args.shift or [], cfg.classes)
    summaries = write_batches(
        Path(landing),
        batches=args.batches,
        images_per_batch=args.images_per_batch,
        seed=args.seed,
        shift=shift,
        corrupt_fraction=args.corrupt_fraction,
        quirk_fraction=args.quirk_fraction,
        size=args.size,
        prefix=args.prefix,
        classes=cfg.classes,
    )
    for s in summaries:
        print(
            f"{s.batch_id}: {s.files_landed} items ({len(s.faults)} faulty, {len(s.quirks)} quirky)"
            f" shift[{format_shift(shift, cfg.classes)}] -> {s.path}"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    from cv_assets.status import collect_status, render_status

    s = collect_status()
    print(json.dumps(s, indent=2, default=str) if args.json else render_status(s))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from cv_assets.doctor import run_doctor

    checks = run_doctor()
    for c in checks:
        print(f"{c.status:4}  {c.what}: {c.detail}")
    failed = [c for c in checks if c.status == "FAIL"]
    print(
        f"{len(checks) - len(failed)}/{len(checks)} checks passed"
        if not failed
        else f"{len(failed)} check(s) failed"
    )
    return 1 if failed else 0


def _promote(args: argparse.Namespace) -> int:
    import getpass

    from cv_assets.defs.training.champion import report_champion_decision
    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.lib.tracking.registry import RegistryError
    from cv_assets.status import open_instance, registry_for

    cfg = PlatformConfig.from_env()
    reg = registry_for(cfg)
    who = args.who or getpass.getuser()
    try:
        if args.command == "promote":
            target = reg.get(args.version)
            if target.status not in ("pending_approval", "archived", "registered", "failed"):
                raise RegistryError(f"version {args.version} is {target.status}; cannot promote")
            e = reg.promote(args.version, who, args.reason or "manual approval", action="approve")
        else:
            e = reg.rollback(who, args.reason or "manual rollback")
    except RegistryError as err:
        print(f"cv-assets {args.command}: {err}", file=sys.stderr)
        return 2
    # The decision becomes champion_model's newest materialization: the UI's history and lineage
    # show it, and the monitoring assets measure this champion from their next run on.
    instance = open_instance(cfg)
    try:
        report_champion_decision(instance, reg.store, reg, e, cfg.mlflow_ui_url)
    finally:
        instance.dispose()
    print(f"{e['action']}: champion is now v{e['version']} (was v{e['previous']}), by {e['who']}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from cv_assets.predict import ModelNotFound, predict

    try:
        doc, failed = predict(args.model, args.images, args.format, args.conf, args.iou)
    except ModelNotFound as e:
        print(f"cv-assets predict: {e}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=1))
    return 1 if failed else 0


def _lineage(args: argparse.Namespace) -> int:
    from cv_assets.lineage import LineageError, collect_lineage, render_lineage

    try:
        doc = collect_lineage(version=args.version)
    except LineageError as e:
        print(f"cv-assets lineage: {e}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2, default=str) if args.json else render_lineage(doc))
    # A hash that no longer matches its record is worth a failing exit code in a script.
    return 1 if doc["problems"] else 0


def _review(args: argparse.Namespace) -> int:
    from cv_assets.review_cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cv-assets", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write synthetic labelled batches in the landing contract")
    s.add_argument("--landing", help="landing root (default: $CV_ASSETS_HOME/landing)")
    s.add_argument("--batches", type=int, default=1)
    s.add_argument("--images-per-batch", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--shift",
        action="append",
        metavar="KEY=VALUE",
        help="brightness=0.25, contrast=0.7, blur=2, scale=1.5, class_mix=square:3,circle:1 "
        "(repeatable)",
    )
    s.add_argument("--corrupt-fraction", type=float, default=0.0)
    s.add_argument("--quirk-fraction", type=float, default=0.0)
    s.add_argument("--size", type=int, default=640, help="image side in pixels")
    s.add_argument("--prefix", default="batch")
    s.set_defaults(func=_synth)

    st = sub.add_parser("status", help="batches, datasets, models, champion and drift")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)

    pr = sub.add_parser("promote", help="approve a registered version: move `champion` to it")
    pr.add_argument("version")
    pr.add_argument("--reason", help="why (kept in the promotion history)")
    pr.add_argument("--who", help="who decides (default: the current user)")
    pr.set_defaults(func=_promote)
    rb = sub.add_parser("rollback", help="move `champion` back to the previous champion")
    rb.add_argument("--reason", help="why (kept in the promotion history)")
    rb.add_argument("--who", help="who decides (default: the current user)")
    rb.set_defaults(func=_promote)

    pd = sub.add_parser(
        "predict", help="detections as JSON from the champion's mobile file (onnxruntime only)"
    )
    pd.add_argument("images", nargs="+", metavar="IMAGE")
    pd.add_argument("--model", default="champion", help="'champion' or a .onnx/.ort path")
    pd.add_argument(
        "--format",
        default="app",
        choices=["app", "onnx_fp32", "onnx_int8", "ort"],
        help="which of the champion's files (default: the app's file)",
    )
    pd.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    pd.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    pd.set_defaults(func=_predict)

    ln = sub.add_parser(
        "lineage", help="a model's chain: batches, dataset version, weights, mobile files"
    )
    ln.add_argument("version", nargs="?", help="registered version, e.g. 3 (default: champion)")
    ln.add_argument("--json", action="store_true")
    ln.set_defaults(func=_lineage)

    rv = sub.add_parser("review", help="send the review queue to a person and its fixes back")
    rsub = rv.add_subparsers(dest="review_command", required=True)
    rx = rsub.add_parser("export", help="a folder to correct: the queue's images, labels, crops")
    rx.add_argument("--batch", required=True, help="the batch whose review_queue to export")
    rx.add_argument("--out", type=Path, help="folder to write (default: ./review-<batch>)")
    rx.add_argument("--top", type=int, help="only the K most severe items")
    ri = rsub.add_parser("import", help="validate corrected labels and land them as a new batch")
    ri.add_argument("folder", type=Path, help="a folder written by `review export`, edited")
    ri.add_argument("--batch-id", help="id of the new batch (default: <batch>-review-<UTC time>)")
    rv.set_defaults(func=_review)

    d = sub.add_parser("doctor", help="preflight: versions, offline readiness, storage reachable")
    d.set_defaults(func=_doctor)
    return p


# Where the platform is told URIs that may carry credentials (a database password, a signed URL).
URI_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_ARTIFACT_ROOT",
    "MLFLOW_UI_URL",
    "CV_ASSETS_S3_ROOT",
    "CV_ASSETS_LANDING",
    "CV_ASSETS_ARTIFACTS",
    "CV_ASSETS_S3_ENDPOINT_URL",
)


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from cv_assets.lib.core.secrets import mask_secrets_in

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as e:
        # A library's message may echo a configured URI, password included: mask it here too.
        said = mask_secrets_in(str(e), [os.environ.get(v) for v in URI_VARIABLES])
        print(f"cv-assets {args.command}: error: {said}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
