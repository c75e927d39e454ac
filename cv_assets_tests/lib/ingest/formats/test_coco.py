"""The COCO adapter through ``import_batch``: the field's traps, each on a small in-memory file."""

import json
from typing import Any

import pytest

from cv_assets.lib.ingest.formats.base import Imported
from cv_assets_tests.support.imports import import_files

pytestmark = pytest.mark.unit
CLASSES = ["square", "circle", "triangle"]
FILE = "annotations/instances.json"


def run(files, images=("images/a.jpg",), classes=CLASSES, **kw) -> Imported:
    return import_files("coco", files, images, classes, **kw)


def coco(
    annotations: list[Any],
    categories: list[Any] | None = None,
    images: list[Any] | None = None,
) -> bytes:
    if images is None:
        images = [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}]
    if categories is None:
        categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    return json.dumps(doc).encode()


def ann(ann_id: Any, bbox: Any = (64, 48, 128, 96), category_id: Any = 1, **kw: Any) -> dict:
    box = list(bbox) if isinstance(bbox, tuple) else bbox
    return {
        "id": ann_id,
        "image_id": 1,
        "category_id": category_id,
        "bbox": box,
        "iscrowd": 0,
        **kw,
    }


def rows(out: Imported, image: str = "images/a.jpg") -> list[tuple]:
    return [(b.class_id, b.cx, b.cy, b.w, b.h) for b in out.labels[image].boxes]


def assert_rows(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0]
        assert g[1:] == pytest.approx(w[1:], abs=1e-9)


# bbox (64, 48, 128, 96) on 640x480: centre (128, 96) -> (0.2, 0.2), size (0.2, 0.2).
SQUARE_BOX = (0, 0.2, 0.2, 0.2, 0.2)


@pytest.mark.parametrize(
    "categories",
    [
        # Ultralytics' convert_coco remaps 91 ids to 80 by default: ids here are COCO's own.
        [{"id": 44, "name": "circle"}, {"id": 90, "name": "square"}, {"id": 7, "name": "triangle"}],
        # Roboflow: a root category (id 0) that owns nothing, then the real ones from 1.
        [{"id": 0, "name": "shapes"}, {"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
        # 0-based ids, in an order that is not the platform's.
        [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}],
    ],
    ids=["cls91-ids", "roboflow-root", "zero-based"],
)
def test_categories_map_by_name_whatever_their_ids(categories: list[dict]) -> None:
    by_name = {c["name"]: c["id"] for c in categories}
    anns = [ann(1, category_id=by_name["square"]), ann(2, (0, 0, 320, 480), by_name["circle"])]
    out = run({FILE: coco(anns, categories)}, ["images/a.jpg"])
    assert out.problems == [] and out.bad_files == {}
    assert_rows(rows(out), [SQUARE_BOX, (1, 0.25, 0.5, 0.5, 1.0)])
    assert (out.seen, out.boxes, out.converted, out.crowd) == (2, 2, 0, 0)
    assert out.adapter == "cv_assets.coco/1"


def test_polygon_without_bbox_becomes_its_bounding_box_counted_as_converted() -> None:
    polygon = [[100, 40, 300, 80, 200, 240], [150, 260, 160, 250, 170, 280]]  # two parts
    anns = [
        ann(1, None, segmentation=polygon),
        ann(2, [], segmentation=polygon),  # Some exporters write an empty bbox.
        ann(3, segmentation=polygon),  # A bbox is COCO's box: it wins over the polygon.
    ]
    out = run({FILE: coco(anns)}, ["images/a.jpg"])
    # Polygon x 100..300, y 40..280 on 640x480.
    poly = (0, 200 / 640, 160 / 480, 200 / 640, 240 / 480)
    assert_rows(rows(out), [poly, poly, SQUARE_BOX])
    assert [b.converted for b in out.labels["images/a.jpg"].boxes] == ["polygon", "polygon", ""]
    assert out.converted == 2 and out.labels["images/a.jpg"].converted == 2


def test_iscrowd_regions_are_excluded_and_counted_never_objects() -> None:
    rle = {"counts": [0, 10, 20], "size": [480, 640]}
    anns = [ann(1), ann(2, iscrowd=1, segmentation=rle), ann(3, None, iscrowd=1, segmentation=rle)]
    out = run({FILE: coco(anns)}, ["images/a.jpg"])
    assert_rows(rows(out), [SQUARE_BOX])
    assert (out.seen, out.boxes, out.crowd, len(out.problems)) == (3, 1, 2, 0)
    assert out.labels["images/a.jpg"].crowd == 2


def test_unicode_category_names_map_by_name() -> None:
    classes = ["квадрат", "円", "triangle"]
    categories = [{"id": 5, "name": "円"}, {"id": 9, "name": "квадрат"}]
    out = run(
        {FILE: coco([ann(1, category_id=9), ann(2, category_id=5)], categories)},
        ["images/a.jpg"],
        classes,
    )
    assert [b.class_id for b in out.labels["images/a.jpg"].boxes] == [0, 1]
    assert out.problems == []


def test_alias_maps_another_name_and_an_unknown_name_is_quarantined_with_its_name() -> None:
    categories = [{"id": 1, "name": "car"}, {"id": 2, "name": "Straßenbahn"}]
    anns = [ann(17, category_id=1), ann(18, category_id=2)]
    out = run({FILE: coco(anns, categories)}, ["images/a.jpg"], aliases={"car": "square"})
    assert_rows(rows(out), [SQUARE_BOX])
    [p] = out.problems
    assert (p.rule, p.file, p.where) == ("unknown_class", FILE, "annotation id 18")
    assert p.reason.startswith(f"{FILE}: annotation id 18 of images/a.jpg: ")
    assert "'Straßenbahn' is not one of the platform's classes" in p.reason
    assert out.labels["images/a.jpg"].quarantined == 1


@pytest.mark.parametrize(
    ("bad", "rule", "says"),
    [
        (ann(1, (10, 10, 5, 5)), "duplicate_id", "id 1 is used by an earlier annotation"),
        ({**ann(2), "image_id": 99}, "unknown_image_id", "image_id 99 is not the id of any image"),
        (ann(2, category_id=3), "unknown_category_id", "category_id 3 is not the id of any cat"),
        (ann(2, ["10", 10, 5, 5]), "bad_box", 'bbox ["10", 10, 5, 5] holds a value that is not'),
        (ann(2, [10, 10, 5]), "bad_box", "bbox [10, 10, 5] is not [x, y, width, height]"),
        (ann(2, None), "bad_box", "it has no bbox, and no polygon segmentation"),
        ("not an annotation", "bad_annotation", "annotation #1: is a str"),
    ],
    ids=[
        "dup-ann-id",
        "unknown-image",
        "unknown-category",
        "text-bbox",
        "short-bbox",
        "no-bbox",
        "not-object",
    ],
)
def test_a_broken_annotation_is_quarantined_with_its_rule_and_the_rest_lands(
    bad: Any, rule: str, says: str
) -> None:
    out = run({FILE: coco([ann(1), bad])}, ["images/a.jpg"])
    assert_rows(rows(out), [SQUARE_BOX])
    [p] = out.problems
    assert p.rule == rule and p.file == FILE
    assert p.reason.startswith(f"{FILE}: annotation ")
    assert says in p.reason


def test_negative_zero_and_outside_boxes_reach_base_and_are_refused() -> None:
    anns = [
        ann(1),
        ann(2, (100, 100, -20, 30)),
        ann(3, (100, 100, 0, 30)),
        ann(4, (600, 400, 100, 100)),
    ]
    out = run({FILE: coco(anns)}, ["images/a.jpg"])
    assert_rows(rows(out), [SQUARE_BOX])
    got = {p.where: (p.rule, p.reason) for p in out.problems}
    rule, reason = got["annotation id 2"]
    assert rule == "bad_box" and reason.endswith("size -20x30 px is not positive")
    assert got["annotation id 3"][0] == "bad_box"
    assert got["annotation id 4"] == (
        "box_outside_image",
        f"{FILE}: annotation id 4 of images/a.jpg: box (600, 400)-(700, 500) lies outside the "
        "640x480 image",
    )
    assert out.labels["images/a.jpg"].quarantined == 3


def test_duplicate_image_ids_are_harmless_when_identical_and_quarantined_when_not() -> None:
    a = {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}
    b = {"id": 2, "file_name": "b.jpg", "width": 640, "height": 480}
    other = {"id": 2, "file_name": "c.jpg", "width": 640, "height": 480}
    anns = [ann(1), {**ann(2), "image_id": 2}]
    out = run({FILE: coco(anns, images=[a, a, b, other])}, ["images/a.jpg", "images/b.jpg"])
    assert_rows(rows(out), [SQUARE_BOX])
    [p] = out.problems
    assert p.rule == "duplicate_id" and p.where == "annotation id 2"
    assert "image id 2 is declared twice ('b.jpg' and 'c.jpg')" in p.reason


def test_an_image_the_batch_lacks_is_reported_with_the_file_name() -> None:
    out = run({FILE: coco([ann(1)])}, ["images/other.jpg"])
    [p] = out.problems
    assert p.rule == "image_not_in_batch"
    assert p.reason.startswith(f"{FILE}: annotation id 1 of a.jpg: names image a.jpg")


def test_an_image_without_a_size_cannot_place_its_boxes() -> None:
    images = [{"id": 1, "file_name": "a.jpg", "width": "640"}]
    out = run({FILE: coco([ann(1)], images=images)}, ["images/a.jpg"])
    assert [p.rule for p in out.problems] == ["image_size_unknown"]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"images": [', "not valid JSON"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
        (b"[]", "a COCO file is a JSON object"),
        (b'{"annotations": []}', "'images' must be a list; it is missing"),
        (b'{"images": {}, "annotations": []}', "'images' must be a list; it is a dict"),
        (b'{"images": [], "annotations": 3}', "'annotations' must be a list; it is a int"),
    ],
    ids=["truncated", "not-utf8", "a-list", "no-images", "images-dict", "annotations-int"],
)
def test_a_malformed_file_is_quarantined_whole_and_the_other_files_land(
    raw: bytes, says: str
) -> None:
    files = {"annotations/bad.json": raw, FILE: coco([ann(1)])}
    out = run(files, ["images/a.jpg"])
    rule, reason = out.bad_files["annotations/bad.json"]
    assert rule == "bad_annotation_file"
    assert reason.startswith("annotations/bad.json: ") and says in reason
    assert_rows(rows(out), [SQUARE_BOX])


def test_a_file_over_the_size_limit_is_refused_unread() -> None:
    raw = coco([ann(1)])
    out = run({FILE: raw}, ["images/a.jpg"], max_bytes=len(raw) - 1)
    rule, reason = out.bad_files[FILE]
    assert rule == "annotation_too_large" and reason.startswith(f"{FILE}: {len(raw):,} bytes")
    assert out.labels == {} and out.seen == 0


def test_ten_thousand_images_with_one_broken_annotation_land_the_other_9999() -> None:
    n = 10_000
    images = [
        {"id": i, "file_name": f"f{i:05d}.jpg", "width": 640, "height": 480} for i in range(n)
    ]
    anns = [
        {"id": 1000 + i, "image_id": i, "category_id": 1, "bbox": [64, 48, 128, 96]}
        for i in range(n)
    ]
    anns[4321]["bbox"] = [64, 48, "wide", 96]
    out = run({FILE: coco(anns, images=images)}, [f"images/f{i:05d}.jpg" for i in range(n)])
    assert (out.seen, out.boxes, len(out.problems)) == (n, n - 1, 1)
    assert sum(1 for x in out.labels.values() if x.boxes) == n - 1
    [p] = out.problems
    assert (p.rule, p.where, p.image) == ("bad_box", "annotation id 5321", "images/f04321.jpg")
