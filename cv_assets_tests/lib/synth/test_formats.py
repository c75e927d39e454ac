"""Tests for cv_assets.lib.synth.formats: the generator writes every format of landing contract v2.

Each format is read back here with plain json / xml.etree / yaml, independently of the platform's
import adapters; the last tests land each format and run the adapters on it (conversion truth).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from cv_assets.lib.synth.batches import CLASSES, BatchSummary, write_batches
from cv_assets.lib.synth.formats import FORMATS, LABEL_STUDIO_UPLOAD, box_error, pixel_box
from cv_assets.lib.synth.scenes import Box
from cv_assets_tests.support.processes import cli

pytestmark = pytest.mark.unit

SIZE = 64
SEED = 7
OTHER_FORMATS = [f for f in FORMATS if f != "yolo"]
# Where each format's annotation files sit, relative to the batch folder ("*" = one per image).
CONTRACT = {
    "yolo": ["labels/*.txt"],
    "ultralytics": ["data.yaml", "labels/*.txt"],
    "coco": ["annotations/instances.json"],
    "voc": ["annotations/*.xml"],
    "cvat": ["annotations/annotations.xml"],
    "labelstudio": ["annotations/export.json"],
}


def _land(root: Path, fmt: str, n: int = 12, unlabelled: float = 0.0, **kw) -> BatchSummary:
    (summary,) = write_batches(
        root, 1, n, seed=SEED, size=SIZE, fmt=fmt, unlabelled_fraction=unlabelled, **kw
    )
    return summary


def _files(batch: Path) -> list[str]:
    return sorted(p.relative_to(batch).as_posix() for p in batch.rglob("*") if p.is_file())


def _yolo_rows(text: str, classes: list[str]) -> list[Box]:
    """YOLO rows whose ids index ``classes``, as boxes whose ids index the platform's CLASSES."""
    out: list[Box] = []
    for line in text.splitlines():
        cls, cx, cy, w, h = line.split()
        out.append((CLASSES.index(classes[int(cls)]), float(cx), float(cy), float(w), float(h)))
    return out


def _norm(cls: str, x1: float, y1: float, x2: float, y2: float, w: float, h: float) -> Box:
    return (CLASSES.index(cls), (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)


def _read_back(fmt: str, batch: Path) -> dict[str, list[Box]]:
    """Every format's annotations, parsed with plain tools, as normalised boxes by image path."""
    out: dict[str, list[Box]] = {}
    ann = batch / "annotations"
    if fmt in ("yolo", "ultralytics"):
        names = list(CLASSES)
        if fmt == "ultralytics":
            names = yaml.safe_load((batch / "data.yaml").read_text(encoding="utf-8"))["names"]
        for p in sorted((batch / "labels").glob("*.txt")):
            out[f"images/{p.stem}.jpg"] = _yolo_rows(p.read_text(encoding="utf-8"), names)
    elif fmt == "coco":
        doc = json.loads((ann / "instances.json").read_text(encoding="utf-8"))
        cats = {c["id"]: c["name"] for c in doc["categories"]}
        images = {i["id"]: i for i in doc["images"]}
        for a in doc["annotations"]:
            img = images[a["image_id"]]
            x, y, w, h = a["bbox"]
            assert (
                a["iscrowd"] == 0 and a["segmentation"] == [] and a["area"] == pytest.approx(w * h)
            )
            box = _norm(cats[a["category_id"]], x, y, x + w, y + h, img["width"], img["height"])
            out.setdefault(f"images/{img['file_name']}", []).append(box)
    elif fmt == "voc":
        for p in sorted(ann.glob("*.xml")):
            root = ET.parse(p).getroot()
            w, h = (float(root.findtext(f"size/{k}") or "nan") for k in ("width", "height"))
            boxes = out.setdefault(f"images/{root.findtext('filename')}", [])
            for obj in root.iter("object"):
                x1, y1, x2, y2 = (
                    float(obj.findtext(f"bndbox/{k}") or "nan")
                    for k in ("xmin", "ymin", "xmax", "ymax")
                )
                boxes.append(_norm(obj.findtext("name") or "", x1, y1, x2, y2, w, h))
    elif fmt == "cvat":
        root = ET.parse(ann / "annotations.xml").getroot()
        assert root.findtext("version") == "1.1"
        for img in root.iter("image"):
            w, h = float(img.get("width", "nan")), float(img.get("height", "nan"))
            boxes = out.setdefault(f"images/{img.get('name')}", [])
            for b in img.iter("box"):
                x1, y1, x2, y2 = (float(b.get(k, "nan")) for k in ("xtl", "ytl", "xbr", "ybr"))
                assert b.get("occluded") == "0"
                boxes.append(_norm(b.get("label", ""), x1, y1, x2, y2, w, h))
    elif fmt == "labelstudio":
        for task in json.loads((ann / "export.json").read_text(encoding="utf-8")):
            assert task["data"]["image"].startswith(LABEL_STUDIO_UPLOAD)
            boxes = out.setdefault(f"images/{task['data']['image'].rsplit('/', 1)[1]}", [])
            (annotation,) = task["annotations"]
            for r in annotation["result"]:
                v = r["value"]
                assert r["type"] == "rectanglelabels" and v["rotation"] == 0
                (cls,) = v["rectanglelabels"]
                x1, y1 = v["x"], v["y"]  # percent of the image: normalise against 100
                boxes.append(_norm(cls, x1, y1, x1 + v["width"], y1 + v["height"], 100, 100))
    return out


def _snapshot(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            if p.name == "batch.json":
                meta = json.loads(p.read_text(encoding="utf-8"))
                meta.pop("created_at")
                out[p.relative_to(root).as_posix()] = json.dumps(meta, sort_keys=True)
            else:
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


# ------------------------------------------------------------------------------ the contract


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_lands_its_annotation_files_where_the_contract_says(
    tmp_path: Path, fmt: str
) -> None:
    s = _land(tmp_path, fmt, n=4)
    files = _files(s.path)
    images = [f"images/{s.batch_id}_{i:05d}.jpg" for i in range(4)]
    per_image = {
        p.replace("*", f"{s.batch_id}_{i:05d}") for p in CONTRACT[fmt] if "*" in p for i in range(4)
    }
    single = {p for p in CONTRACT[fmt] if "*" not in p}
    assert files == sorted(["batch.json", *images, *per_image, *single])
    meta = json.loads((s.path / "batch.json").read_text(encoding="utf-8"))
    assert (meta["format"], meta["labels"], meta["classes"]) == (fmt, "full", list(CLASSES))
    assert (s.format, s.labels, s.unlabelled, s.samples, s.files_landed) == (fmt, "full", [], 4, 4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_back_to_the_generator_boxes_within_1e6(tmp_path: Path, fmt: str) -> None:
    s = _land(tmp_path, fmt, n=16)
    got = _read_back(fmt, s.path)
    assert sorted(got) == sorted(s.truth) and len(s.truth) == 16
    # yolo keeps today's six decimals; the generator's boxes are on that grid, so it is exact too.
    worst = max(box_error(s.truth[k], got[k]) for k in s.truth)
    assert worst <= 1e-6, f"{fmt}: a box is {worst:g} away from the generator's truth"


def test_class_lists_are_written_out_of_the_platform_order_so_only_names_map(
    tmp_path: Path,
) -> None:
    u = _land(tmp_path / "u", "ultralytics", n=2)
    names = yaml.safe_load((u.path / "data.yaml").read_text(encoding="utf-8"))["names"]
    assert names == list(reversed(CLASSES))
    c = _land(tmp_path / "c", "coco", n=2)
    doc = json.loads((c.path / "annotations" / "instances.json").read_text(encoding="utf-8"))
    cats = [(cat["id"], cat["name"]) for cat in doc["categories"]]
    assert [name for _, name in cats] == list(reversed(CLASSES))
    ids = sorted(i for i, _ in cats)
    assert ids != list(range(len(CLASSES))) and ids != list(range(1, len(CLASSES) + 1))
    assert all(b - a > 1 for a, b in itertools.pairwise(ids))


def test_unicode_class_names_are_written_and_read_back_in_every_format(tmp_path: Path) -> None:
    classes = ("Straßenschild", "狗", "car")
    for fmt in OTHER_FORMATS:
        (s,) = write_batches(tmp_path / fmt, 1, 2, seed=SEED, size=SIZE, fmt=fmt, classes=classes)
        text = "".join(
            p.read_text(encoding="utf-8")
            for p in s.path.rglob("*.*")
            if p.suffix in (".json", ".xml", ".yaml")
        )
        assert any(name in text for name in classes[:2]), fmt


# ---------------------------------------------------------------------- unlabelled images


@pytest.mark.parametrize("fmt", FORMATS)
def test_unlabelled_fraction_leaves_that_many_images_named_by_no_annotation(
    tmp_path: Path, fmt: str
) -> None:
    s = _land(tmp_path, fmt, n=10, unlabelled=0.3)
    assert (s.labels, len(s.unlabelled), s.samples, s.files_landed) == ("partial", 3, 7, 10)
    assert json.loads((s.path / "batch.json").read_text(encoding="utf-8"))["labels"] == "partial"
    assert all((s.path / p).is_file() for p in s.unlabelled)  # the images themselves land
    got = _read_back(fmt, s.path)
    assert sorted(got) == sorted(s.truth) and not set(got) & set(s.unlabelled)
    assert len(s.truth) + len(s.unlabelled) == 10
    text = b"".join(
        p.read_bytes()
        for p in s.path.rglob("*")
        if p.is_file() and p.suffix in (".json", ".xml", ".txt", ".yaml") and p.name != "batch.json"
    )
    for image in s.unlabelled:
        assert Path(image).stem.encode() not in text, f"{image} is named by an annotation"


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unlabelled_batch_is_images_only(tmp_path: Path, fmt: str) -> None:
    s = _land(tmp_path, fmt, n=3, unlabelled=1.0)
    assert [f for f in _files(s.path) if not f.startswith("images/")] == ["batch.json"]
    assert (s.labels, s.samples, len(s.unlabelled), s.truth) == ("none", 0, 3, {})
    assert json.loads((s.path / "batch.json").read_text(encoding="utf-8"))["labels"] == "none"


def test_unlabelled_images_are_chosen_from_the_seed_and_leave_the_rest_unchanged(
    tmp_path: Path,
) -> None:
    full = _land(tmp_path / "full", "yolo", n=12)
    a = _land(tmp_path / "a", "yolo", n=12, unlabelled=0.5)
    b = _land(tmp_path / "b", "yolo", n=12, unlabelled=0.5)
    (other,) = write_batches(
        tmp_path / "o", 1, 12, seed=SEED + 1, size=SIZE, unlabelled_fraction=0.5
    )
    assert a.unlabelled == b.unlabelled and len(a.unlabelled) == 6
    assert other.unlabelled != a.unlabelled
    snap_full, snap_a = _snapshot(full.path), _snapshot(a.path)
    # Only the unlabelled images' label files are gone; every other file is byte-identical.
    gone = {f"labels/{Path(p).stem}.txt" for p in a.unlabelled}
    assert set(snap_full) - set(snap_a) == gone
    assert all(snap_a[k] == snap_full[k] for k in snap_a if k != "batch.json")


def test_unlabelled_images_avoid_faults_and_leave_the_planted_faults_unchanged(
    tmp_path: Path,
) -> None:
    kw = {"corrupt_fraction": 0.25, "quirk_fraction": 0.25}
    plain = _land(tmp_path / "p", "yolo", n=20, **kw)
    s = _land(tmp_path / "u", "yolo", n=20, unlabelled=0.25, **kw)
    assert (s.faults, s.quirks) == (plain.faults, plain.quirks)
    marked = set(s.faults) | set(s.quirks)
    assert len(s.unlabelled) == 5 and not set(s.unlabelled) & marked
    with pytest.raises(ValueError, match="unlabelled do not fit"):
        _land(tmp_path / "x", "yolo", n=20, unlabelled=0.8, **kw)


# --------------------------------------------------------------------- determinism, yolo


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_arguments_give_byte_identical_files_in_every_format(tmp_path: Path, fmt: str) -> None:
    a = _land(tmp_path / "a", fmt, n=6, unlabelled=0.34)
    b = _land(tmp_path / "b", fmt, n=6, unlabelled=0.34)
    assert _snapshot(a.path) == _snapshot(b.path)
    assert (a.unlabelled, a.truth) == (b.unlabelled, b.truth)


def test_yolo_label_files_are_todays_bytes(tmp_path: Path) -> None:
    # Digest of the label files today's generator (before formats existed) writes for these
    # arguments; existing fixtures and tests depend on them staying the same.
    (s,) = write_batches(tmp_path, 1, 6, seed=7, size=SIZE)
    h = hashlib.sha256()
    for p in sorted((s.path / "labels").iterdir()):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    assert h.hexdigest() == "f589184c01a54f137933d52fccb92438941943bbec3e8c811be503fa22e9466e"
    assert sorted(os.listdir(s.path)) == ["batch.json", "images", "labels"]
    explicit = _land(tmp_path / "explicit", "yolo", n=6)  # fmt="yolo", unlabelled_fraction=0
    assert _snapshot(explicit.path) == _snapshot(s.path)


# -------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("fmt", OTHER_FORMATS)
@pytest.mark.parametrize("kw", [{"corrupt_fraction": 0.2}, {"quirk_fraction": 0.2}])
def test_faults_or_quirks_with_another_format_are_refused(
    tmp_path: Path, fmt: str, kw: dict[str, float]
) -> None:
    with pytest.raises(ValueError, match=f"need format 'yolo', not '{fmt}'"):
        _land(tmp_path, fmt, n=10, **kw)
    assert not any(tmp_path.iterdir())  # refused before anything landed


def test_an_unknown_format_or_fraction_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be one of yolo, ultralytics"):
        _land(tmp_path, "kitti")
    with pytest.raises(ValueError, match=r"unlabelled_fraction must be within \[0, 1\]"):
        _land(tmp_path, "coco", unlabelled=1.5)


def test_box_error_pairs_boxes_by_class_not_by_order() -> None:
    truth: list[Box] = [(0, 0.5, 0.2, 0.1, 0.1), (0, 0.5, 0.8, 0.1, 0.1), (1, 0.3, 0.3, 0.2, 0.2)]
    got: list[Box] = [
        (1, 0.3, 0.3, 0.2, 0.2),
        (0, 0.5 + 1e-16, 0.8, 0.1, 0.1),
        (0, 0.5, 0.2 + 2e-7, 0.1, 0.1),
    ]
    assert box_error(truth, got) == pytest.approx(2e-7)
    assert box_error(truth, got[:2]) == float("inf")
    assert box_error(truth, [(2, b[1], b[2], b[3], b[4]) for b in got]) == float("inf")
    assert pixel_box((0, 0.5, 0.25, 0.5, 0.5), 200, 100) == (50.0, 0.0, 150.0, 50.0)


# -------------------------------------------------------------------------------- the CLI


def test_cli_writes_a_coco_batch_with_unlabelled_images(cfg, tmp_path: Path) -> None:
    land = tmp_path / "land"
    out = cli(
        "synth",
        "--landing",
        str(land),
        "--images-per-batch",
        "4",
        "--size",
        "64",
        "--format",
        "coco",
        "--unlabelled-fraction",
        "0.5",
    )
    assert out.returncode == 0, out.stderr
    assert "2 unlabelled) coco" in out.stdout
    marker = json.loads((land / "batch-0000" / "batch.json").read_text(encoding="utf-8"))
    assert (marker["format"], marker["labels"]) == ("coco", "partial")
    assert (land / "batch-0000" / "annotations" / "instances.json").is_file()

    refused = cli("synth", "--landing", str(land), "--format", "voc", "--corrupt-fraction", "0.2")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "need format 'yolo', not 'voc'" in refused.stderr


def test_cli_format_choices_are_the_generators_formats() -> None:
    from cv_assets.cli.main import build_parser

    # The parser lists the formats itself, so that `cv-assets` starts without numpy or Pillow.
    parser = build_parser()
    for fmt in FORMATS:
        assert parser.parse_args(["synth", "--format", fmt]).format == fmt
    assert parser.parse_args(["synth"]).format == "yolo"
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--format", "kitti"])


# ------------------------------------------------------------------ conversion truth (import)


@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_import_batch_gives_back_the_generator_boxes_within_1e6(tmp_path: Path, fmt: str) -> None:
    """Each format written by the generator and read by the platform's adapter: the boxes
    ``import_batch`` produces are the generator's ground truth, class ids included."""
    from cv_assets.lib.ingest.formats import import_batch, is_annotation_file, is_image_place

    s = _land(tmp_path, fmt, n=24, unlabelled=0.25)
    files = [(f, (s.path / f).stat().st_size) for f in _files(s.path) if is_annotation_file(fmt, f)]
    images = [f for f in _files(s.path) if is_image_place(fmt, f)]
    assert files and len(images) == 24
    imported = import_batch(fmt, files, lambda p: (s.path / p).read_bytes(), images, CLASSES)
    assert not imported.bad_files and not imported.problems, (imported.bad_files, imported.problems)
    assert sorted(imported.labels) == sorted(s.truth)
    assert imported.boxes == sum(len(b) for b in s.truth.values())
    worst = max(box_error(s.truth[k], [b.row() for b in imported.labels[k].boxes]) for k in s.truth)
    assert worst <= 1e-6, f"{fmt}: the import is {worst:g} away from the generator's truth"
    assert imported.converted == 0 and imported.crowd == 0
