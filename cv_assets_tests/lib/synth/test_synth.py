"""Tests for cv_assets.lib.synth.batches: synthetic landing batches, faults, quirks and shifts."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

from cv_assets.lib.synth.batches import (
    BATCH_ID_RE,
    CLASSES,
    FAULT_KINDS,
    JPEG_QUALITY,
    QUIRK_KINDS,
    BatchSummary,
    Shift,
    format_shift,
    parse_shift,
    render_scene,
    write_batches,
)

pytestmark = pytest.mark.unit

SIZE = 96
SEED = 11
LABEL_FAULTS = {
    "class_out_of_range",
    "coords_outside",
    "zero_area_box",
    "nan_value",
    "wrong_columns",
    "non_numeric",
}
GOOD_LINE = re.compile(r"\d+ \d\.\d{6} \d\.\d{6} \d\.\d{6} \d\.\d{6}")


def _land(root: Path, seed: int = SEED, batches: int = 1) -> list[BatchSummary]:
    """20 images a batch: 15 faults (every kind once), 4 quirks, 1 original for the duplicate."""
    return write_batches(
        root,
        batches=batches,
        images_per_batch=20,
        seed=seed,
        corrupt_fraction=0.75,
        quirk_fraction=0.2,
        size=SIZE,
    )


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file under root: bytes, the link text for symlinks, batch.json minus created_at."""
    out: dict[str, bytes | str] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif name == "batch.json":
                meta = json.loads(path.read_text(encoding="utf-8"))
                meta.pop("created_at")
                out[rel] = json.dumps(meta, sort_keys=True)
            else:
                out[rel] = path.read_bytes()
    return out


def _jpeg_payloads(snapshot: dict[str, bytes | str]) -> set[bytes]:
    """The distinct JPEG file contents (SOI marker) in a snapshot; skips faults like zero_byte."""
    return {v for v in snapshot.values() if isinstance(v, bytes) and v.startswith(b"\xff\xd8")}


def _index(stem: str) -> int:
    return int(stem.rsplit("_", 1)[1])


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _check_good_line(line: str, n_classes: int = len(CLASSES)) -> None:
    assert GOOD_LINE.fullmatch(line), line
    cls, cx, cy, w, h = (float(v) for v in line.split())
    assert 0 <= cls < n_classes
    assert w > 0 and h > 0, line
    assert cx - w / 2 >= -1e-9 and cx + w / 2 <= 1 + 1e-9, line
    assert cy - h / 2 >= -1e-9 and cy + h / 2 <= 1 + 1e-9, line


def _scenes(shift: Shift, count: int = 12, size: int = 128) -> list[tuple[Image.Image, list]]:
    return [render_scene(np.random.default_rng([99, 0, i]), size, shift) for i in range(count)]


def _luma(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def _laplacian_variance(image: Image.Image) -> float:
    g = _luma(image)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


# ---------------------------------------------------------------------------------- determinism


def test_same_arguments_give_byte_identical_files_and_another_seed_does_not(
    tmp_path: Path,
) -> None:
    first = _land(tmp_path / "a", batches=2)
    second = _land(tmp_path / "b", batches=2)
    snap_a, snap_b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    assert len(snap_a) == 2 * (19 + 19 + 1 + 1)  # images, labels, batch.json, link target
    assert snap_a == snap_b
    assert [(s.batch_id, s.samples, s.faults, s.quirks, s.files_landed) for s in first] == [
        (s.batch_id, s.samples, s.faults, s.quirks, s.files_landed) for s in second
    ]

    _land(tmp_path / "c", seed=SEED + 1, batches=2)
    snap_c = _snapshot(tmp_path / "c")
    jpegs_a, jpegs_c = _jpeg_payloads(snap_a), _jpeg_payloads(snap_c)
    assert len(jpegs_a) == 2 * 15  # 20 - orphan, zero_byte, text, bomb, the duplicate
    assert jpegs_a.isdisjoint(jpegs_c)


def test_same_seed_in_a_later_batch_gives_different_images(tmp_path: Path) -> None:
    summaries = write_batches(tmp_path, batches=2, images_per_batch=4, seed=3, size=SIZE)
    first = sorted((summaries[0].path / "images").iterdir())
    later = sorted((summaries[1].path / "images").iterdir())
    for a, b in zip(first, later, strict=True):
        assert a.read_bytes() != b.read_bytes()


def test_render_scene_is_deterministic_and_returns_one_to_eight_clipped_boxes() -> None:
    for i in range(30):
        image, boxes = render_scene(np.random.default_rng([5, 0, i]), 160, Shift())
        again, boxes_again = render_scene(np.random.default_rng([5, 0, i]), 160, Shift())
        assert image.mode == "RGB" and image.size == (160, 160)
        assert image.tobytes() == again.tobytes() and boxes == boxes_again
        assert 1 <= len(boxes) <= 8
        for box in boxes:
            _check_good_line("%d %.6f %.6f %.6f %.6f" % box)  # noqa: UP031


# ---------------------------------------------------------------------------------- landing


def test_batch_json_is_written_atomically_with_classes_and_utc_time(tmp_path: Path) -> None:
    classes = ("car", "person")
    (summary,) = write_batches(
        tmp_path,
        batches=1,
        images_per_batch=3,
        seed=5,
        shift=Shift(brightness=0.25, class_mix=(3.0, 1.0)),
        size=SIZE,
        classes=classes,
    )
    assert sorted(p.name for p in summary.path.iterdir()) == ["batch.json", "images", "labels"]
    meta = json.loads((summary.path / "batch.json").read_text(encoding="utf-8"))
    assert meta["batch_id"] == summary.batch_id == "batch-0000"
    assert meta["classes"] == ["car", "person"]
    created = datetime.fromisoformat(meta["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert meta["source"] == "cv-assets synth seed=5 shift=brightness=0.25;class_mix=car:3,person:1"
    newest_data = max(p.stat().st_mtime_ns for p in summary.path.glob("*/*"))
    assert (summary.path / "batch.json").stat().st_mtime_ns >= newest_data


def test_default_batch_json_lists_the_three_shape_classes(tmp_path: Path) -> None:
    (summary,) = write_batches(tmp_path, batches=1, images_per_batch=2, seed=1, size=SIZE)
    meta = json.loads((summary.path / "batch.json").read_text(encoding="utf-8"))
    assert meta["classes"] == ["square", "circle", "triangle"]
    assert meta["source"] == "cv-assets synth seed=1 shift=none"


def test_batch_ids_continue_after_the_highest_existing_batch(tmp_path: Path) -> None:
    for name in ("batch-0003", "batch-0007", "other-0042", "batch-07x"):
        (tmp_path / name).mkdir()
    first = write_batches(tmp_path, batches=2, images_per_batch=2, seed=1, size=SIZE)
    second = write_batches(tmp_path, batches=1, images_per_batch=2, seed=1, size=SIZE)
    ids = [s.batch_id for s in first + second]
    assert ids == ["batch-0008", "batch-0009", "batch-0010"]
    assert all(BATCH_ID_RE.fullmatch(i) for i in ids)
    assert all((tmp_path / i / "batch.json").is_file() for i in ids)

    fresh = write_batches(tmp_path / "new", batches=1, images_per_batch=1, seed=1, prefix="x.y")
    assert fresh[0].batch_id == "x.y-0000"


def test_clean_batch_has_valid_yolo_labels_with_lf_endings(tmp_path: Path) -> None:
    (summary,) = write_batches(tmp_path, batches=1, images_per_batch=10, seed=2, size=SIZE)
    assert summary.faults == {} and summary.quirks == {}
    assert summary.samples == summary.files_landed == 10
    images = sorted((summary.path / "images").iterdir())
    labels = sorted((summary.path / "labels").iterdir())
    assert [p.stem for p in images] == [p.stem for p in labels]
    for image_path, label_path in zip(images, labels, strict=True):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", image_path.stem)
        with Image.open(image_path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (SIZE, SIZE)
        text = label_path.read_bytes().decode("utf-8")
        assert "\r" not in text and text.endswith("\n")
        for line in text.splitlines():
            _check_good_line(line)


# ---------------------------------------------------------------------------------- faults


def test_every_fault_kind_lands_with_its_described_property(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (summary,) = _land(tmp_path)
    batch = summary.path
    assert sorted(summary.faults.values()) == sorted(FAULT_KINDS)
    assert summary.files_landed == 20
    assert summary.samples == 18  # all but missing_label and orphan_label
    image_stems = {p.stem for p in (batch / "images").iterdir()}
    label_stems = {p.stem for p in (batch / "labels").iterdir()}
    faulted_stems = {Path(key).stem for key in summary.faults}

    for key, kind in summary.faults.items():
        path = batch / key
        stem = path.stem
        label = batch / "labels" / f"{stem}.txt"
        if kind == "truncated_jpeg":
            scene, _ = render_scene(np.random.default_rng([SEED, 0, _index(stem)]), SIZE, Shift())
            full = _jpeg(scene)
            assert path.read_bytes() == full[: len(full) // 2]
            with pytest.raises(OSError), Image.open(path) as image:
                image.load()
            assert label.is_file()
        elif kind == "zero_byte":
            assert path.stat().st_size == 0 and label.is_file()
        elif kind == "text_as_jpg":
            assert path.read_bytes() == b"this is not an image\n" and label.is_file()
            with pytest.raises(UnidentifiedImageError):
                Image.open(path)
        elif kind == "decompression_bomb":
            assert key.endswith(".png") and path.stat().st_size < 1000 and label.is_file()
            with pytest.raises(Image.DecompressionBombError):
                Image.open(path)
            monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
            with Image.open(path) as image:  # reads the header only; never decodes
                assert image.format == "PNG" and image.size == (30000, 30000)
            monkeypatch.undo()
        elif kind in LABEL_FAULTS:
            assert key.startswith("labels/") and (batch / "images" / f"{stem}.jpg").is_file()
            lines = path.read_text(encoding="utf-8").splitlines()
            assert len(lines) >= 2
            for index, line in enumerate(lines):
                if index != 1:
                    _check_good_line(line)
            bad = lines[1].split()
            if kind == "class_out_of_range":
                assert bad[0] == str(len(CLASSES) + 4)
            elif kind == "coords_outside":
                assert float(bad[1]) == 1.35
            elif kind == "zero_area_box":
                assert float(bad[3]) == 0 or float(bad[4]) < 0
            elif kind == "nan_value":
                assert bad[2] in ("nan", "inf")
            elif kind == "wrong_columns":
                assert len(bad) == 4
            else:
                assert bad[3] == "abc" and len(bad) == 5
        elif kind == "missing_label":
            assert path.is_file() and stem not in label_stems
            with Image.open(path) as image:
                image.verify()
        elif kind == "orphan_label":
            assert key.startswith("labels/") and path.is_file() and stem not in image_stems
        elif kind == "duplicate_image":
            copies = [
                p
                for p in (batch / "images").iterdir()
                if p != path and not p.is_symlink() and p.read_bytes() == path.read_bytes()
            ]
            assert len(copies) == 1 and copies[0].stem not in faulted_stems
            original_label = batch / "labels" / f"{copies[0].stem}.txt"
            assert label.read_bytes() == original_label.read_bytes()
        elif kind == "bad_filename":
            assert re.fullmatch(r"images/\.\.\\\.\.\\evil_\d+\.jpg", key)
            assert path.is_file() and label.is_file()
            assert path.parent == batch / "images"
        elif kind == "symlink":
            assert path.is_symlink() and label.is_file()
            target = path.resolve()
            assert not target.is_relative_to(batch.resolve())
            assert target.is_relative_to((tmp_path / ".synth_targets").resolve())
            with Image.open(target) as image:
                image.verify()
        else:  # pragma: no cover - every kind is handled above
            pytest.fail(f"unhandled fault kind {kind}")


def test_fault_kinds_cycle_from_the_first_in_every_batch(tmp_path: Path) -> None:
    summaries = write_batches(
        tmp_path, batches=2, images_per_batch=10, seed=4, corrupt_fraction=0.5, size=SIZE
    )
    for summary in summaries:
        assert sorted(summary.faults.values()) == sorted(FAULT_KINDS[:5])
        assert summary.files_landed == 10 and summary.samples == 10


def test_quirks_are_valid_samples_disjoint_from_faults_and_the_duplicated_original(
    tmp_path: Path,
) -> None:
    (summary,) = _land(tmp_path)
    batch = summary.path
    assert sorted(summary.quirks.values()) == sorted(QUIRK_KINDS)
    quirk_stems = {Path(key).stem for key in summary.quirks}
    fault_stems = {Path(key).stem for key in summary.faults}
    assert quirk_stems.isdisjoint(fault_stems)
    duplicate = next(k for k, v in summary.faults.items() if v == "duplicate_image")
    originals = [
        p
        for p in (batch / "images").iterdir()
        if p.name != Path(duplicate).name and p.read_bytes() == (batch / duplicate).read_bytes()
    ]
    assert [p.stem for p in originals if p.stem in quirk_stems | fault_stems] == []

    for key, quirk in summary.quirks.items():
        path = batch / key
        if quirk in ("upper_ext", "jpeg_ext"):
            assert path.suffix == (".JPG" if quirk == "upper_ext" else ".jpeg")
            with Image.open(path) as image:
                image.verify()
            label_bytes = (batch / "labels" / f"{path.stem}.txt").read_bytes()
        else:
            label_bytes = path.read_bytes()
            assert (batch / "images" / f"{path.stem}.jpg").is_file()
        if quirk == "utf8_bom":
            assert label_bytes.startswith(b"\xef\xbb\xbf")
        if quirk == "crlf":
            assert label_bytes.endswith(b"\r\n")
            assert label_bytes.count(b"\r\n") == label_bytes.count(b"\n")
        for line in label_bytes.decode("utf-8-sig").splitlines():
            _check_good_line(line)


def test_labels_of_samples_without_label_faults_are_valid_yolo_lines(tmp_path: Path) -> None:
    (summary,) = _land(tmp_path)
    label_faults = {k for k, v in summary.faults.items() if v in LABEL_FAULTS}
    checked = 0
    for path in (summary.path / "labels").iterdir():
        if f"labels/{path.name}" in label_faults:
            continue
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
        assert 1 <= len(lines) <= 8
        for line in lines:
            _check_good_line(line)
        checked += 1
    assert checked == 20 - 1 - len(label_faults)  # one sample has no label (missing_label)


def test_more_faults_and_quirks_than_images_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not fit in 20 images"):
        write_batches(tmp_path, 1, 20, 1, corrupt_fraction=0.75, quirk_fraction=0.25, size=SIZE)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: write_batches(p, 1, 2, 1, prefix="bad/prefix"), "not make a valid batch id"),
        (
            lambda p: write_batches(p, 1, 2, 1, Shift(class_mix=(1.0, 2.0))),
            "2 weights but there are 3 classes",
        ),
        (lambda p: write_batches(p, 1, 2, -1), r"seed must be within \[0, 2\*\*32\)"),
        (
            lambda p: write_batches(p, 1, 2, 1, corrupt_fraction=1.5),
            r"corrupt_fraction must be within \[0, 1\]",
        ),
        (lambda p: write_batches(p, 1, 2, 1, classes=("a", "a")), "unique"),
        (lambda p: write_batches(p, 1, 2, 1, size=8), "size must be >= 32"),
        (lambda p: write_batches(p, 1, 0, 1), "images_per_batch must be >= 1"),
    ],
)
def test_write_batches_rejects_bad_arguments_before_landing_anything(
    tmp_path: Path, call: Callable[[Path], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "landing")
    assert not (tmp_path / "landing").exists()


# ---------------------------------------------------------------------------------- shifts


def test_brightness_shift_raises_mean_luminance() -> None:
    base = _scenes(Shift())
    bright = _scenes(Shift(brightness=0.25))
    gain = np.mean(
        [_luma(b[0]).mean() - _luma(a[0]).mean() for a, b in zip(base, bright, strict=True)]
    )
    assert gain >= 0.2 * 255


def test_contrast_shift_lowers_pixel_spread() -> None:
    base = _scenes(Shift())
    flat = _scenes(Shift(contrast=0.5))
    for (a, _), (b, _) in zip(base, flat, strict=True):
        assert _luma(b).std() < 0.7 * _luma(a).std()


def test_blur_shift_lowers_laplacian_sharpness() -> None:
    base = _scenes(Shift())
    blurred = _scenes(Shift(blur=4))
    for (a, _), (b, _) in zip(base, blurred, strict=True):
        assert _laplacian_variance(b) < 0.5 * _laplacian_variance(a)


def test_scale_shift_raises_mean_box_area() -> None:
    def mean_area(scenes: list[tuple[Image.Image, list]]) -> float:
        return float(np.mean([w * h for _, boxes in scenes for (_, _, _, w, h) in boxes]))

    assert mean_area(_scenes(Shift(scale=2.0), count=20)) > 2 * mean_area(_scenes(Shift(), 20))


def test_class_mix_skews_class_counts() -> None:
    counts = np.zeros(3)
    for _, boxes in _scenes(Shift(class_mix=(8.0, 1.0, 1.0)), count=40, size=64):
        for cls, *_ in boxes:
            counts[cls] += 1
    assert counts[0] > 2.5 * counts[1] and counts[0] > 2.5 * counts[2]

    only_circles = parse_shift(["class_mix=circle:1"])
    for _, boxes in _scenes(only_circles, count=10, size=64):
        assert {cls for cls, *_ in boxes} == {1}


# ---------------------------------------------------------------------------------- parse_shift


def test_parse_shift_reads_every_key_and_both_class_mix_forms() -> None:
    shift = parse_shift(
        ["brightness=0.25", "contrast=0.7", "blur=2", "scale=1.5", "class_mix=square:3,circle:1"]
    )
    assert shift == Shift(0.25, 0.7, 2.0, 1.5, (3.0, 1.0, 0.0))
    assert parse_shift(["class_mix=3,1,1"]).class_mix == (3.0, 1.0, 1.0)
    assert parse_shift([]) == Shift()
    assert parse_shift(["class_mix=b:2"], classes=("a", "b")).class_mix == (0.0, 2.0)


def test_format_shift_round_trips_through_parse_shift() -> None:
    shift = Shift(brightness=-0.1, blur=1.5, class_mix=(1.0, 2.0, 0.0))
    assert parse_shift(format_shift(shift).split(";")) == shift
    assert format_shift(Shift()) == "none"


@pytest.mark.parametrize(
    ("item", "rule"),
    [
        ("speed=2", "unknown key 'speed'"),
        ("contrast", "expected 'key=value'"),
        ("brightness=abc", "'abc' is not a number"),
        ("blur=nan", "must be a finite number"),
        ("brightness=2", r"brightness must be within \[-1, 1\]"),
        ("contrast=-1", "contrast must be >= 0"),
        ("blur=-0.5", "blur must be >= 0"),
        ("scale=0", "scale must be > 0"),
        ("class_mix=dog:1", "unknown class 'dog'"),
        ("class_mix=square:1,2", "all 'class:weight' pairs or all plain weights"),
        ("class_mix=1,2", "2 plain weights but there are 3 classes"),
        ("class_mix=1,-1,1", "weights must be >= 0"),
        ("class_mix=square:0,circle:0", "must not all be zero"),
        ("class_mix=square:1,square:2", "class 'square' is given twice"),
        ("class_mix=", "comma-separated weights"),
    ],
)
def test_parse_shift_error_names_the_item_and_the_rule(item: str, rule: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"shift item {item!r}") + ".*" + rule):
        parse_shift([item])


def test_parse_shift_rejects_a_key_given_twice() -> None:
    with pytest.raises(ValueError, match="key 'blur' is given twice"):
        parse_shift(["blur=1", "blur=2"])
