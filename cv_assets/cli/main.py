"""The ``cv-assets`` command line. Heavy imports happen inside each command, so it starts fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path


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
    s.add_argument(
        "--format",
        default="yolo",
        choices=["yolo", "ultralytics", "coco", "voc", "cvat", "labelstudio"],
        help="annotation format of the landing contract (default: yolo); faults and quirks are "
        "yolo-only",
    )
    s.add_argument(
        "--unlabelled-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of each batch's images landed with no annotation (labels: partial/none)",
    )
    s.set_defaults(command_module="synth")

    st = sub.add_parser("status", help="batches, datasets, models, champion and drift")
    st.add_argument("--json", action="store_true")
    st.set_defaults(command_module="status")

    pr = sub.add_parser("promote", help="approve a registered version: move `champion` to it")
    pr.add_argument("version")
    pr.add_argument("--reason", help="why (kept in the promotion history)")
    pr.add_argument("--who", help="who decides (default: the current user)")
    pr.set_defaults(command_module="promote")
    rb = sub.add_parser("rollback", help="move `champion` back to the previous champion")
    rb.add_argument("--reason", help="why (kept in the promotion history)")
    rb.add_argument("--who", help="who decides (default: the current user)")
    rb.set_defaults(command_module="promote")

    pd = sub.add_parser(
        "predict", help="detections as JSON from the champion's app file (onnxruntime or LiteRT)"
    )
    pd.add_argument("images", nargs="+", metavar="IMAGE")
    pd.add_argument("--model", default="champion", help="'champion' or a .onnx/.ort/.tflite path")
    pd.add_argument(
        "--format",
        default="app",
        choices=["app", "onnx_fp32", "onnx_int8", "ort", "tflite", "tflite_int8"],
        help="which of the champion's files (default: the app's file)",
    )
    pd.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    pd.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    pd.set_defaults(command_module="predict")

    ln = sub.add_parser(
        "lineage", help="a model's chain: batches, dataset version, weights, mobile files"
    )
    ln.add_argument("version", nargs="?", help="registered version, e.g. 3 (default: champion)")
    ln.add_argument("--json", action="store_true")
    ln.set_defaults(command_module="lineage")

    rv = sub.add_parser("review", help="send the review queue to a person and its fixes back")
    rsub = rv.add_subparsers(dest="review_command", required=True)
    rx = rsub.add_parser("export", help="a folder to correct: the queue's images, labels, crops")
    rx.add_argument("--batch", required=True, help="the batch whose review_queue to export")
    rx.add_argument("--out", type=Path, help="folder to write (default: ./review-<batch>)")
    rx.add_argument("--top", type=int, help="only the K most severe items")
    ri = rsub.add_parser("import", help="validate corrected labels and land them as a new batch")
    ri.add_argument("folder", type=Path, help="a folder written by `review export`, edited")
    ri.add_argument("--batch-id", help="id of the new batch (default: <batch>-review-<UTC time>)")
    rv.set_defaults(command_module="review")

    an = sub.add_parser("annotate", help="annotation rounds in Label Studio: start one, see them")
    asub = an.add_subparsers(dest="annotate_command", required=True)
    ast = asub.add_parser("start", help="push the k most useful pool images to Label Studio")
    ast.add_argument("--k", type=int, help="uncertain pool images (default: the asset's, 32)")
    ast.add_argument(
        "--label-issues", type=int, help="labelled images the review queues rank worst (8)"
    )
    ass = asub.add_parser("status", help="every round: pushed, completed, corrected, skipped...")
    ass.add_argument("--json", action="store_true")
    asub.add_parser("url", help="Label Studio's URL and each round's project")
    an.set_defaults(command_module="annotate")

    au = sub.add_parser("audit", help="the audit set: field frames out to label, labels back in")
    ausub = au.add_subparsers(dest="audit_command", required=True)
    aux = ausub.add_parser("export", help="the audit frames nobody labelled yet, as a folder")
    aux.add_argument("--out", type=Path, help="folder to write (default: ./audit-frames)")
    aui = ausub.add_parser("import", help="a labelling tool's YOLO export of audit frames")
    aui.add_argument("folder", type=Path, help="holds labels/<event_id>.txt")
    aus = ausub.add_parser("status", help="audit frames, labelled ones, the live accuracy")
    aus.add_argument("--json", action="store_true")
    au.set_defaults(command_module="audit")

    rl = sub.add_parser("release", help="signed release channels (stable, beta) apps fetch from")
    rsub2 = rl.add_subparsers(dest="release_command", required=True)
    kg = rsub2.add_parser("keygen", help="an Ed25519 signing key pair, outside the repository")
    kg.add_argument("--out", type=Path, required=True, help="the private key's path (0600)")
    sh = rsub2.add_parser("show", help="each channel's manifest")
    sh.add_argument("--channel", choices=["stable", "beta"])
    sh.add_argument("--json", action="store_true")
    pb = rsub2.add_parser("publish", help="publish a registered version to a channel")
    pb.add_argument("version")
    pb.add_argument("--channel", choices=["stable", "beta"], required=True)
    pb.add_argument("--rollout", type=int, default=100, help="percent of installs (100)")
    pb.add_argument("--min-app-version", default="1.0.0")
    pb.add_argument("--ttl-days", type=int, default=30, help="the manifest expires after (30)")
    ro = rsub2.add_parser("rollout", help="the channel's release to another share of installs")
    ro.add_argument("percent", type=int)
    ro.add_argument("--channel", choices=["stable", "beta"], required=True)
    rb2 = rsub2.add_parser("rollback", help="a new signed manifest for the previous version")
    rb2.add_argument("--channel", choices=["stable", "beta"], required=True)
    rl.set_defaults(command_module="release")

    d = sub.add_parser("doctor", help="preflight: versions, offline readiness, storage reachable")
    d.set_defaults(command_module="doctor")
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
    from cv_assets.lib.core.settings import PlatformConfig

    args = build_parser().parse_args(argv)
    try:
        # Each command's module, and what it imports (Dagster, MLflow, torch), loads only when
        # that command runs: `cv-assets --help` and `cv-assets predict` stay fast.
        command = importlib.import_module(f"cv_assets.cli.{args.command_module}")
        # The one place this process reads its configuration; every command is handed it.
        return int(command.run(args, PlatformConfig.from_env()))
    except (ValueError, OSError) as e:
        # A library's message may echo a configured URI, password included: mask it here too.
        said = mask_secrets_in(str(e), [os.environ.get(v) for v in URI_VARIABLES])
        print(f"cv-assets {args.command}: error: {said}", file=sys.stderr)
        return 2
