"""``cv-assets synth``: synthetic labelled batches written in the landing contract."""

import argparse
from pathlib import Path

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.synth.batches import format_shift, parse_shift, write_batches


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    """Write ``--batches`` batches to the landing zone and print one line about each."""
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
        fmt=args.format,
        unlabelled_fraction=args.unlabelled_fraction,
    )
    shown = format_shift(shift, cfg.classes)
    for s in summaries:
        print(
            f"{s.batch_id}: {s.files_landed} items ({len(s.faults)} faulty, {len(s.quirks)} quirky"
            f", {len(s.unlabelled)} unlabelled) {s.format} shift[{shown}] -> {s.path}"
        )
    return 0
