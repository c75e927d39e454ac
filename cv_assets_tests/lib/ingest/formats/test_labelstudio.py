"""The Label Studio adapter through ``import_batch``: percent, rotation in pixels, versions."""

import json
import math
from typing import Any

import pytest

from cv_assets.lib.ingest.formats.base import Imported
from cv_assets_tests.support.imports import import_files

pytestmark = pytest.mark.unit
CLASSES = ["square", "circle", "triangle"]
FILE = "annotations/export.json"
# A non-square image: the rotation trap only shows where width != height.
W, H = 200, 100


def run(files, images, **kw) -> Imported:
    return import_files("labelstudio", files, images, CLASSES, **kw)


def rect(rid: str, x: Any, y: float, w: float, h: float, label: str = "square", **kw: Any):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": kw.pop("rotation", 0)}
    return {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "value": {**value, "rectanglelabels": [label]},
        **kw,
    }


def task(results: list[Any], image: str = "/data/upload/1/a.jpg", task_id: int = 7, **kw: Any):
    version = {
        "id": 30,
        "was_cancelled": False,
        "result": results,
        "updated_at": "2024-05-01T10:00:00.000000Z",
    }
    return {"id": task_id, "data": {"image": image}, "annotations": [version], **kw}


def export(*tasks: Any) -> dict[str, bytes]:
    return {FILE: json.dumps(list(tasks)).encode()}


def rows(out: Imported, image: str = "images/a.jpg") -> list[tuple]:
    return [(b.class_id, b.cx, b.cy, b.w, b.h) for b in out.labels[image].boxes]


def assert_rows(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0]
        assert g[1:] == pytest.approx(w[1:], abs=1e-9)


def test_percent_rectangles_become_normalised_boxes() -> None:
    out = run(
        export(task([rect("r1", 10, 20, 30, 40), rect("r2", 50, 0, 50, 100, "circle")])),
        ["images/a.jpg"],
    )
    assert_rows(rows(out), [(0, 0.25, 0.4, 0.3, 0.4), (1, 0.75, 0.5, 0.5, 1.0)])
    assert (out.seen, out.boxes, out.converted, out.problems) == (2, 2, 0, [])
    assert out.labels["images/a.jpg"].width == W and out.adapter == "cv_assets.labelstudio/1"


def test_a_rotated_rectangle_is_rotated_in_pixels_not_percent() -> None:
    # x = 50%, y = 20% of 200x100 is (100, 20) px; 20% x 20% is 40 x 20 px; turned 30 degrees
    # clockwise about (100, 20). By hand, with cos 30 = sqrt(3)/2 and sin 30 = 1/2, the corners
    # are (100, 20), (100 + 20 sqrt3, 40), (90 + 20 sqrt3, 30 + 10 sqrt3) and (90, 20 + 10 sqrt3):
    # x 90 .. 100 + 20 sqrt3, y 20 .. 40 + 10 sqrt3.
    r3 = math.sqrt(3)
    x1, x2, y1, y2 = 90, 100 + 20 * r3, 20, 40 + 10 * r3
    truth = (0, (x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H)
    # 90 degrees: the 40 x 40 px square at (100, 20) swings left to x 60..100, y 20..60. In
    # percent space it would be 40% wide and 20% high: the trap, a square made a flat box.
    quarter = (0, 80 / W, 40 / H, 40 / W, 40 / H)
    results = [rect("r1", 50, 20, 20, 20, rotation=30), rect("r2", 50, 20, 20, 40, rotation=90)]
    out = run(export(task(results)), ["images/a.jpg"])
    assert_rows(rows(out), [truth, quarter])
    assert [b.converted for b in out.labels["images/a.jpg"].boxes] == ["rotated", "rotated"]
    assert out.converted == 2


def test_a_full_turn_is_an_unrotated_box() -> None:
    out = run(export(task([rect("r1", 10, 20, 30, 40, rotation=360)])), ["images/a.jpg"])
    assert_rows(rows(out), [(0, 0.25, 0.4, 0.3, 0.4)])
    assert out.converted == 0


def test_a_polygon_becomes_its_bounding_box_counted_as_converted() -> None:
    poly = {
        "id": "p1",
        "type": "polygonlabels",
        "original_width": W,
        "original_height": H,
        "value": {"points": [[10, 10], [60, 30], [30, 90]], "polygonlabels": ["triangle"]},
    }
    out = run(export(task([poly])), ["images/a.jpg"])
    # x 20..120 px, y 10..90 px.
    assert_rows(rows(out), [(2, 70 / W, 50 / H, 100 / W, 80 / H)])
    assert out.labels["images/a.jpg"].boxes[0].converted == "polygon" and out.converted == 1


def test_the_newest_annotation_that_was_not_cancelled_is_the_one_read() -> None:
    versions = [
        {
            "id": 11,
            "was_cancelled": False,
            "updated_at": "2024-01-01T00:00:00Z",
            "result": [rect("old1", 0, 0, 10, 10), rect("old2", 20, 20, 10, 10)],
        },
        {
            "id": 13,
            "was_cancelled": False,
            "updated_at": "2024-03-01T00:00:00+00:00",
            "result": [rect("new", 10, 20, 30, 40)],
        },
        {
            "id": 12,
            "was_cancelled": True,
            "updated_at": "2024-06-01T00:00:00Z",
            "result": [rect("skipped", 0, 0, 50, 50)],
        },
    ]
    tasks = {
        "id": 7,
        "data": {"image": "a.jpg"},
        "annotations": versions,
        "predictions": [{"result": [rect("model", 0, 0, 90, 90)]}],
    }
    out = run(export(tasks), ["images/a.jpg"])
    assert_rows(rows(out), [(0, 0.25, 0.4, 0.3, 0.4)])
    assert out.seen == 1  # drafts and predictions are not objects


def test_a_task_with_no_live_annotation_labels_nothing() -> None:
    cancelled = task([rect("r1", 10, 20, 30, 40)], image="b.jpg", task_id=8)
    cancelled["annotations"][0]["was_cancelled"] = True
    unlabelled = {"id": 9, "data": {"image": "c.jpg"}, "annotations": []}
    empty = task([], image="d.jpg", task_id=10)  # submitted with nothing in it: a negative
    out = run(
        export(cancelled, unlabelled, empty), ["images/b.jpg", "images/c.jpg", "images/d.jpg"]
    )
    assert set(out.labels) == {"images/d.jpg"} and out.labels["images/d.jpg"].boxes == []
    assert out.seen == 0


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("/data/upload/3/3f2a1b9c-a.jpg", "3f2a1b9c-a.jpg"),
        ("https://bucket.example/frames/my%20a.jpg?X-Amz-Signature=abc", "my a.jpg"),
        ("/data/local-files/?d=frames/day1/a.jpg", "a.jpg"),
        ("s3://bucket/frames/a.jpg", "a.jpg"),
    ],
    ids=["upload", "signed-url", "local-files", "s3"],
)
def test_the_image_is_the_basename_of_data_image(image: str, name: str) -> None:
    out = run(export(task([rect("r1", 10, 20, 30, 40)], image=image)), [f"images/{name}"])
    assert len(out.labels[f"images/{name}"].boxes) == 1 and out.problems == []


def test_an_unknown_label_names_the_file_the_result_and_the_name_and_aliases_map() -> None:
    results = [rect("r1", 10, 20, 30, 40, "car"), rect("r2", 10, 20, 30, 40, "Fußgänger")]
    out = run(export(task(results)), ["images/a.jpg"], aliases={"car": "square"})
    assert_rows(rows(out), [(0, 0.25, 0.4, 0.3, 0.4)])
    [p] = out.problems
    assert (p.rule, p.where, p.file) == ("unknown_class", "task 7 result r2", FILE)
    assert p.reason.startswith(f"{FILE}: task 7 result r2 of images/a.jpg: category 'Fußgänger'")


def test_results_that_are_not_boxes_are_unsupported_and_attributes_are_not_objects() -> None:
    results = [
        rect("r1", 10, 20, 30, 40),
        # A per-region attribute (same id as r1) and a relation: not objects of their own.
        {"id": "r1", "type": "choices", "value": {"choices": ["occluded"]}},
        {"type": "relation", "from_id": "r1", "to_id": "k1", "direction": "right"},
        {"id": "c1", "type": "choices", "value": {"choices": ["daylight"]}},
        {
            "id": "k1",
            "type": "keypointlabels",
            "original_width": W,
            "original_height": H,
            "value": {"x": 5, "y": 5, "keypointlabels": ["square"]},
        },
        {"id": "b1", "type": "brushlabels", "value": {"rle": [1, 2], "brushlabels": ["circle"]}},
    ]
    out = run(export(task(results)), ["images/a.jpg"])
    assert len(out.labels["images/a.jpg"].boxes) == 1
    got = {p.where: p for p in out.problems}
    assert set(got) == {"task 7 result c1", "task 7 result k1", "task 7 result b1"}
    assert got["task 7 result c1"].rule == "image_level_label"  # "daylight": the whole image
    assert {got[w].rule for w in ("task 7 result k1", "task 7 result b1")} == {"unsupported_shape"}
    assert out.labels["images/a.jpg"].incomplete == ["unsupported_shape"] * 2
    assert "result type 'keypointlabels' is not a box or polygon" in got["task 7 result k1"].reason
    assert out.seen == 4


def test_a_result_without_the_image_size_cannot_be_placed() -> None:
    r = rect("r1", 10, 20, 30, 40)
    del r["original_width"], r["original_height"]
    out = run(export(task([r])), ["images/a.jpg"])
    [p] = out.problems
    assert p.rule == "image_size_unknown" and p.where == "task 7 result r1"


@pytest.mark.parametrize(
    ("result", "rule", "says"),
    [
        (rect("r2", "10", 20, 30, 40), "bad_box", "holds a value that is not a number"),
        (
            {
                **rect("r2", 10, 20, 30, 40),
                "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": []},
            },
            "bad_label",
            "rectanglelabels [] is not exactly one category",
        ),
        (
            {**rect("r2", 10, 20, 30, 40), "image_rotation": 90},
            "unsupported_shape",
            "the image was rotated 90 degrees in Label Studio",
        ),
        (
            {
                "id": "r2",
                "type": "polygonlabels",
                "original_width": W,
                "original_height": H,
                "value": {"points": [[1, 2], [3, "x"], [5, 6]], "polygonlabels": ["square"]},
            },
            "bad_box",
            'point [3, "x"] is not an [x, y] pair of numbers',
        ),
        ("r2", "bad_annotation", "is a str, not an object"),
        (rect("r2", 90, 20, 30, 40), "box_outside_image", "lies outside the 200x100 image"),
        (rect("r2", 10, 20, -5, 40), "bad_box", "size -10x40 px is not positive"),
    ],
    ids=["text", "no-label", "turned-image", "bad-point", "not-object", "outside", "negative"],
)
def test_a_broken_result_is_quarantined_with_its_rule_and_the_rest_lands(
    result: Any, rule: str, says: str
) -> None:
    out = run(export(task([rect("r1", 10, 20, 30, 40), result])), ["images/a.jpg"])
    assert_rows(rows(out), [(0, 0.25, 0.4, 0.3, 0.4)])
    [p] = out.problems
    assert p.rule == rule and p.reason.startswith(f"{FILE}: task 7 result ")
    assert says in p.reason


def test_a_repeated_task_id_and_a_second_task_for_one_image_are_quarantined() -> None:
    first = task([rect("r1", 10, 20, 30, 40)])
    same_id = task([rect("r2", 10, 20, 30, 40)], image="b.jpg")
    same_image = task([rect("r3", 10, 20, 30, 40)], image="/data/upload/2/a.jpg", task_id=8)
    out = run(export(first, same_id, same_image), ["images/a.jpg", "images/b.jpg"])
    assert len(out.labels["images/a.jpg"].boxes) == 1
    # a.jpg keeps its first labelling, complete; b.jpg's only task was refused: it has no boxes
    # and its labels are incomplete (it goes to the unlabelled pool, not to training).
    assert out.labels["images/a.jpg"].incomplete == []
    assert out.labels["images/b.jpg"].boxes == [] and out.labels["images/b.jpg"].incomplete
    got = {p.where: (p.rule, p.reason) for p in out.problems}
    assert got["task 7 result r2"][0] == "duplicate_id"
    assert got["task 8 result r3"] == (
        "labelled_twice",
        f"{FILE}: task 8 result r3: image 'a.jpg' is already labelled by task 7 of this file, "
        "which wins",
    )


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'[{"id": 1,', "not valid JSON"),
        (b'{"id": 1, "data": {}}', "a Label Studio JSON export is a list of tasks"),
        (b"null", "this one is a NoneType"),
    ],
    ids=["truncated", "one-task-object", "null"],
)
def test_a_malformed_export_is_quarantined_whole_and_the_other_files_land(
    raw: bytes, says: str
) -> None:
    files = {"annotations/bad.json": raw, **export(task([rect("r1", 10, 20, 30, 40)]))}
    out = run(files, ["images/a.jpg"])
    rule, reason = out.bad_files["annotations/bad.json"]
    assert rule == "bad_annotation_file"
    assert reason.startswith("annotations/bad.json: ") and says in reason
    assert len(out.labels["images/a.jpg"].boxes) == 1


def test_a_task_that_is_not_an_object_is_quarantined_not_dropped() -> None:
    out = run({FILE: b'[3, {"id": 1, "data": {}, "annotations": {"result": []}}]'}, [])
    assert [(p.where, p.rule) for p in out.problems] == [
        ("task #0", "bad_annotation"),
        ("task 1", "bad_annotation"),
    ]


def test_an_export_over_the_size_limit_is_refused_unread() -> None:
    files = export(task([rect("r1", 10, 20, 30, 40)]))
    out = run(files, ["images/a.jpg"], max_bytes=100)
    assert out.bad_files[FILE][0] == "annotation_too_large" and out.seen == 0
