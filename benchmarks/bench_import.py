"""Import benchmarks (issue 16): conversion truth per format, a COCO batch's intake cost against
the same batch as YOLO txt, and the peak memory of importing a 50,000-annotation COCO file.

``BENCH_IMPORT_N`` sets the images of the intake-cost batch (default 5,000; 500 with
``BENCH_QUICK=1``); ``BENCH_IMPORT_SIZE`` their side (default 320 px, the demo's: what intake
costs a user). At 64 px decoding costs almost nothing, which shows the labels' own cost alone.
"""

import os
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_intake import _fresh, ingest_runner
from benchmarks.common import QUICK, Result, Skipped, timed
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.formats import import_batch, is_annotation_file, is_image_place
from cv_assets.lib.ingest.landing import LandingZone
from cv_assets.lib.ingest.raw import copy_raw_batch, load_raw_manifest
from cv_assets.lib.synth import formats
from cv_assets.lib.synth.batches import CLASSES, write_batches

ISSUE = 16
SIZE = int(os.environ.get("BENCH_IMPORT_SIZE", "320"))
IMPORTED = [f for f in formats.FORMATS if f != "yolo"]  # yolo is read as it always was


def _import_landed(fmt: str, batch: Path) -> Any:
    """``import_batch`` on a landed batch folder, as intake calls it."""
    files = sorted(p.relative_to(batch).as_posix() for p in batch.rglob("*") if p.is_file())
    annotations = [(f, (batch / f).stat().st_size) for f in files if is_annotation_file(fmt, f)]
    images = [f for f in files if is_image_place(fmt, f)]
    return import_batch(fmt, annotations, lambda p: (batch / p).read_bytes(), images, CLASSES)


def conversion_truth() -> Result:
    """Every format written by the generator, read back by its adapter, against the truth."""
    n = 60 if QUICK else 300
    root = _fresh("conversion_truth")
    worst: dict[str, float] = {}
    notes: list[str] = []
    for fmt in IMPORTED:
        (s,) = write_batches(root / fmt, 1, n, seed=21, size=96, fmt=fmt, unlabelled_fraction=0.1)
        try:
            imported = _import_landed(fmt, s.path)
        except ImportError as e:  # an adapter not written yet: nothing to measure for any format
            raise Skipped(f"the {fmt} adapter cannot be imported ({e})") from None
        errors = [
            formats.box_error(boxes, [b.row() for b in imported.labels[k].boxes])
            if k in imported.labels
            else float("inf")
            for k, boxes in s.truth.items()
        ]
        extra = set(imported.labels) - set(s.truth)  # e.g. an unlabelled image given labels
        refused = len(imported.problems) + len(imported.bad_files)
        worst[fmt] = max(errors) if not (extra or refused) else float("inf")
        notes.append(
            f"{fmt} {worst[fmt]:.2g} ({len(s.truth)} labelled + {len(s.unlabelled)} unlabelled "
            f"images, {sum(len(b) for b in s.truth.values())} boxes"
            + (f", {refused} refused, {len(extra)} unexpected" if extra or refused else "")
            + ")"
        )
    value = max(worst.values())
    return Result(
        "import_conversion_truth",
        ISSUE,
        "largest |box - truth| (normalised) over every box of a generated batch per format "
        f"({', '.join(IMPORTED)}), each read back by its import adapter",
        value,
        "",
        "<= 1e-6",
        value <= 1e-6,
        "; ".join(notes),
    )


def _landed_manifest(root: Path, fmt: str, n: int) -> tuple[ArtifactStore, dict[str, Any], Any]:
    """The same seeded batch landed as ``fmt`` and copied into its own store."""
    (s,) = write_batches(root / fmt / "landing", 1, n, seed=22, size=SIZE, fmt=fmt)
    store = ArtifactStore(str(root / fmt / "artifacts"))
    rec = copy_raw_batch(LandingZone(str(root / fmt / "landing")), store, s.batch_id, CLASSES)
    manifest = load_raw_manifest(store, s.batch_id)
    assert manifest is not None
    return store, dict(rec), manifest


def import_cost() -> Result:
    """A COCO batch through intake vs the same images and boxes as YOLO txt."""
    n = int(os.environ.get("BENCH_IMPORT_N", 500 if QUICK else 5000))
    root = _fresh("import_cost")
    yolo, coco = (ingest_runner(*_landed_manifest(root, fmt, n)) for fmt in ("yolo", "coco"))
    first_yolo, first_coco = yolo(), coco()  # warm the page cache and imports for both sides
    if first_coco.accepted != n:
        reasons = ", ".join(f"{r} x{k}" for r, k in first_coco.top_reasons(3))
        raise Skipped(
            f"intake accepted {first_coco.accepted} of {n} COCO images ({reasons}); "
            "ingest_batch does not import COCO batches yet"
        )
    assert first_yolo.accepted == n
    same = {r["stem"]: r.get("label_sha256") for r in first_yolo.samples}
    identical = sum(same.get(r["stem"]) == r.get("label_sha256") for r in first_coco.samples)
    ty, tc = [], []
    for _ in range(3 if QUICK else 5):  # interleaved, so drift in machine load hits both alike
        ty.append(timed(yolo, 1))
        tc.append(timed(coco, 1))
    my, mc = statistics.median(ty), statistics.median(tc)
    ratio = mc / my
    return Result(
        "import_coco_vs_yolo_intake",
        ISSUE,
        f"intake of a {n:,}-image batch landed as COCO instances JSON vs the same batch as YOLO "
        f"txt ({SIZE} px images)",
        ratio,
        "x",
        "<= 1.2x",
        ratio <= 1.2,
        f"yolo {my:.2f} s ({my / n * 1e3:.2f} ms/img), coco {mc:.2f} s ({mc / n * 1e3:.2f} "
        f"ms/img), median of {len(ty)}; stored label files identical for {identical:,} of "
        f"{n:,} images",
    )


def _coco_file(root: Path, images: int, per_image: int) -> tuple[Path, list[str]]:
    """A COCO instances file of ``images * per_image`` random boxes (no image files needed)."""
    rng = np.random.default_rng(23)
    samples = []
    for i in range(images):
        wh = rng.uniform(0.02, 0.3, size=(per_image, 2))
        centre = rng.uniform(wh / 2, 1 - wh / 2)
        cls = rng.integers(0, len(CLASSES), size=per_image)
        boxes = tuple(
            (int(c), float(x), float(y), float(w), float(h))
            for c, (x, y), (w, h) in zip(cls, centre, wh, strict=True)
        )
        samples.append(formats.Sample(f"img_{i:06d}.jpg", 640, 480, boxes))
    batch = root / "batch"
    (batch / "annotations").mkdir(parents=True)
    formats.write_coco(batch, samples, CLASSES)
    return batch / "annotations" / "instances.json", [f"images/{s.image}" for s in samples]


def coco_memory() -> Result:
    """Peak Python memory (tracemalloc) of ``import_batch`` on a 50,000-annotation COCO file."""
    images, per_image = (2000, 5) if QUICK else (10_000, 5)
    root = _fresh("coco_memory")
    path, image_paths = _coco_file(root, images, per_image)
    size = path.stat().st_size
    rel = "annotations/instances.json"
    tracemalloc.start()
    t0 = time.perf_counter()
    read = lambda _: path.read_bytes()  # noqa: E731 - read inside the traced window, as intake does
    imported = import_batch("coco", [(rel, size)], read, image_paths, CLASSES)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    n = images * per_image
    assert imported.boxes == n and not imported.problems, (imported.boxes, imported.problems[:3])
    return Result(
        "import_coco_50k_peak_memory",
        ISSUE,
        f"peak Python memory (tracemalloc) of import_batch on a COCO file of {n:,} annotations "
        f"on {images:,} images",
        peak,
        "MiB",
        "<= 256 MiB",
        peak <= 256,
        f"file {size / 2**20:.1f} MiB, {n:,} boxes out, {seconds:.1f} s under tracemalloc",
    )


BENCHMARKS = [conversion_truth, import_cost, coco_memory]
