"""The Pascal VOC adapter through ``import_batch``: boxes, rules and reasons a user would read."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

import pytest

from cv_assets.lib.ingest.formats import import_batch
from cv_assets.lib.ingest.formats.base import Imported
from cv_assets_tests.support.imports import import_files

pytestmark = pytest.mark.unit
CLASSES = ["car", "person", "dog"]

Obj = tuple[str, Sequence[object]]  # (name, (xmin, ymin, xmax, ymax)) as written


def voc(
    filename: str | None = "a.jpg",
    objects: Sequence[Obj] = (("car", (10, 20, 50, 60)),),
    size: tuple[object, object] | None = (200, 100),
    extra: str = "",
) -> bytes:
    """A VOC file as LabelImg and CVAT write it (continuous pixel coordinates)."""
    parts = ["<annotation><folder>images</folder>"]
    if filename is not None:
        parts.append(f"<filename>{escape(filename)}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>")
        parts.append("<depth>3</depth></size>")
    for name, box in objects:
        corners = "".join(
            f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
        )
        parts.append(
            f"<object><name>{escape(name)}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox>{corners}</bndbox></object>"
        )
    parts.append(f"{extra}</annotation>")
    return "\n".join(parts).encode()


def run(files, images=("images/a.jpg",), classes=CLASSES, **kw) -> Imported:
    return import_files("voc", files, images, classes, **kw)


Row = tuple[int, float, float, float, float]


def rows(out: Imported, image: str = "images/a.jpg") -> list[Row]:
    return [b.row() for b in out.labels[image].boxes]


def assert_boxes(got: Sequence[Row], want: Sequence[Row]) -> None:
    """Class ids exactly; normalised cx, cy, w, h within 1e-9 of the hand-computed values."""
    assert [r[0] for r in got] == [r[0] for r in want]
    assert [v for r in got for v in r[1:]] == pytest.approx(
        [v for r in want for v in r[1:]], abs=1e-9
    )


def only_problem(out: Imported) -> tuple[str, str]:
    assert len(out.problems) == 1, out.problems
    return out.problems[0].rule, out.problems[0].reason


def test_voc_box_is_read_as_continuous_pixels_and_normalised_on_a_non_square_image():
    objects = [("car", (10, 20, 50, 60)), ("dog", ("12.5", "0", "200", "99.5"))]
    out = run({"annotations/a.xml": voc(objects=objects)})
    # car: x 10..50 of 200, y 20..60 of 100; dog: x 12.5..200, y 0..99.5 (continuous, as written).
    assert_boxes(rows(out), [(0, 0.15, 0.4, 0.2, 0.4), (2, 106.25 / 200, 0.4975, 0.9375, 0.995)])
    labels = out.labels["images/a.jpg"]
    assert (labels.file, labels.width, labels.height) == ("annotations/a.xml", 200, 100)
    assert (out.seen, out.boxes, out.converted, out.problems, out.bad_files) == (2, 2, 0, [], {})
    assert out.adapter.startswith("cv_assets.voc/")


def test_voc_difficult_object_stays_an_ordinary_box():
    raw = voc(objects=[]).replace(
        b"</annotation>",
        b"<object><name>person</name><difficult>1</difficult><truncated>1</truncated>"
        b"<occluded>1</occluded><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>20</xmax>"
        b"<ymax>10</ymax></bndbox></object></annotation>",
    )
    out = run({"annotations/a.xml": raw})
    assert_boxes(rows(out), [(1, 0.05, 0.05, 0.1, 0.1)])
    assert (out.crowd, out.converted) == (0, 0)


def test_voc_unicode_file_and_class_names_land():
    out = run(
        {"annotations/café.xml": voc("JPEGImages/café.jpg", [("Straßenbahn", (0, 0, 100, 50))])},
        images=["images/café.jpg"],
        classes=["Straßenbahn", "猫"],
    )
    assert_boxes(rows(out, "images/café.jpg"), [(0, 0.25, 0.25, 0.5, 0.5)])


def test_voc_unknown_name_is_quarantined_naming_file_object_and_name():
    out = run({"annotations/a.xml": voc(objects=[("car", (0, 0, 10, 10)),
                                                  ("bus", (0, 0, 10, 10))])})  # fmt: skip
    rule, reason = only_problem(out)
    assert rule == "unknown_class"
    assert reason.startswith("annotations/a.xml: object 2 of images/a.jpg: category 'bus'")
    assert "CV_ASSETS_CLASS_ALIASES" in reason
    assert (out.boxes, out.labels["images/a.jpg"].quarantined) == (1, 1)


def test_voc_alias_maps_another_tools_name_to_the_platform_class():
    out = run({"annotations/a.xml": voc()}, classes=["vehicle", "person"],
              aliases={"car": "vehicle"})  # fmt: skip
    assert_boxes(rows(out), [(0, 0.15, 0.4, 0.2, 0.4)])


@pytest.mark.parametrize(
    ("box", "rule", "words"),
    [
        ((50, 20, 10, 60), "bad_box", "size -40x40 px is not positive"),
        ((10, 20, 10, 60), "bad_box", "size 0x40 px is not positive"),
        ((150, 20, 250, 60), "box_outside_image", "(150, 20)-(250, 60) lies outside the 200x100"),
        ((-5, 20, 50, 60), "box_outside_image", "lies outside the 200x100 image"),
    ],
)
def test_voc_negative_size_or_box_outside_the_image_is_quarantined(box, rule, words):
    out = run({"annotations/a.xml": voc(objects=[("car", box)])})
    got_rule, reason = only_problem(out)
    assert got_rule == rule
    assert reason.startswith("annotations/a.xml: object 1 of images/a.jpg: ")
    assert words in reason
    assert out.boxes == 0


@pytest.mark.parametrize(
    ("obj", "rule", "words"),
    [
        ("<object><name>car</name></object>", "bad_box", "object 2 of image a.jpg: 'car' has no "
         "<bndbox>"),
        ("<object><name>car</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax></bndbox>"
         "</object>", "bad_box", "object 2 of image a.jpg: 'car': <bndbox><ymax> is missing"),
        ("<object><name>car</name><bndbox><xmin>ten</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9"
         "</ymax></bndbox></object>", "bad_box", "'car': <bndbox><xmin> 'ten' is not a number"),
        ("<object><name>car</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9"
         "</ymax></bndbox></object>", "bad_box", "<bndbox><xmin> 'nan' is not a number"),
        ("<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
         "</object>", "bad_annotation", "object 2 of image a.jpg: has no <name>"),
    ],
)  # fmt: skip
def test_voc_object_with_a_missing_or_non_numeric_field_is_a_problem_not_a_crash(obj, rule, words):
    raw = voc(objects=[("dog", (0, 0, 20, 10))], extra=obj)
    out = run({"annotations/a.xml": raw})
    got_rule, reason = only_problem(out)
    assert got_rule == rule
    assert reason.startswith("annotations/a.xml: ")
    assert words in reason
    assert (out.problems[0].where, out.problems[0].image) == ("object 2", "images/a.jpg")
    assert out.boxes == 1  # the good object still lands


def test_voc_person_layout_parts_are_annotations_of_their_own_never_dropped():
    part = (
        "<object><name>person</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>100</xmax>"
        "<ymax>100</ymax></bndbox><part><name>hand</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
        "<xmax>11</xmax><ymax>12</ymax></bndbox></part></object>"
    )
    out = run({"annotations/a.xml": voc(objects=[], extra=part)})
    rule, reason = only_problem(out)
    assert rule == "unknown_class"
    assert "object 1 part 1 of images/a.jpg: category 'hand'" in reason
    out = run({"annotations/a.xml": voc(objects=[], extra=part)}, classes=["person", "hand"])
    assert_boxes(rows(out), [(0, 0.25, 0.5, 0.5, 1.0), (1, 0.03, 0.07, 0.05, 0.1)])


def test_voc_file_without_objects_labels_its_image_with_no_boxes():
    out = run({"annotations/a.xml": voc(objects=[])})
    assert out.labels["images/a.jpg"].boxes == []
    assert (out.seen, out.problems) == (0, [])


def test_voc_missing_size_quarantines_each_box_as_image_size_unknown():
    out = run({"annotations/a.xml": voc(size=None)})
    rule, reason = only_problem(out)
    assert rule == "image_size_unknown"
    assert reason.startswith("annotations/a.xml: object 1 of images/a.jpg: ")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (voc(filename=None), "annotations/a.xml: <annotation> has no <filename>"),
        (voc(filename=" "), "annotations/a.xml: <annotation> has no <filename>"),
        (voc(size=("wide", 100)), "annotations/a.xml: <size><width> 'wide' is not a number"),
        (b"<annotations><image/></annotations>",
         "annotations/a.xml: the root element is <annotations>, expected <annotation>"),
        (b"<annotation>\n<filename>a.jpg</filename>\n<object></bndbox></annotation>",
         "annotations/a.xml: not well-formed XML at line 3, column 11: mismatched tag"),
        (b"", "annotations/a.xml: not well-formed XML at line 1, column 1: no element found"),
    ],
)  # fmt: skip
def test_voc_unreadable_file_is_refused_whole_and_the_batch_goes_on(raw, words):
    files = {"annotations/a.xml": raw, "annotations/b.xml": voc("b.jpg")}
    out = run(files, images=["images/a.jpg", "images/b.jpg"])
    rule, reason = out.bad_files["annotations/a.xml"]
    assert (rule, list(out.bad_files)) == ("bad_annotation_file", ["annotations/a.xml"])
    assert reason.startswith(words)
    assert_boxes(rows(out, "images/b.jpg"), [(0, 0.15, 0.4, 0.2, 0.4)])


def test_voc_file_naming_an_image_the_batch_lacks_is_reported_with_both_names():
    files = {"annotations/a.xml": voc(), "annotations/ghost.xml": voc("ghost.jpg")}
    out = run(files)
    rule, reason = only_problem(out)
    assert rule == "image_not_in_batch"
    assert reason.startswith("annotations/ghost.xml: object 1 of ghost.jpg: names image ghost.jpg")
    assert set(out.labels) == {"images/a.jpg"}


def test_voc_file_over_the_size_limit_is_refused_unread():
    raw = voc()

    def read(path: str) -> bytes:
        raise AssertionError(f"{path} was read")

    out = import_batch("voc", [("annotations/a.xml", len(raw))], read, ["images/a.jpg"],
                       CLASSES, max_bytes=len(raw) - 1)  # fmt: skip
    rule, reason = out.bad_files["annotations/a.xml"]
    assert rule == "annotation_too_large"
    assert reason.startswith(f"annotations/a.xml: {len(raw):,} bytes exceeds")
    assert (out.seen, out.labels) == (0, {})
