"""The CVAT for images 1.1 adapter through ``import_batch``: every shape a box or a reason."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import pytest

from cv_assets.lib.ingest.formats.base import Imported
from cv_assets_tests.support.imports import import_files

pytestmark = pytest.mark.unit
CLASSES = ["car", "person", "dog"]
FILE = "annotations/task.xml"


def cvat(*images: str) -> bytes:
    """A CVAT for images 1.1 file around ``<image>`` elements, as CVAT writes it."""
    meta = (
        "<meta><task><id>7</id><name>demo</name><mode>annotation</mode><labels><label>"
        "<name>car</name><type>any</type></label></labels></task></meta>"
    )
    body = "\n".join(images)
    return f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n{meta}\n{body}\n</annotations>'.encode()  # noqa: E501


def image(shapes: str, name: str = "a.jpg", ident: int = 0, width: object = 200,
          height: object = 100) -> str:  # fmt: skip
    return f'<image id="{ident}" name="{name}" width="{width}" height="{height}">{shapes}</image>'


def box(label: str = "car", xyxy: Sequence[object] = (10, 20, 50, 60), extra: str = "") -> str:
    x1, y1, x2, y2 = xyxy
    return (
        f'<box label="{label}" source="manual" occluded="0" xtl="{x1}" ytl="{y1}" xbr="{x2}" '
        f'ybr="{y2}" z_order="0"{extra}></box>'
    )


def run(files, images=("images/a.jpg",), classes=CLASSES, **kw) -> Imported:
    return import_files("cvat", files, images, classes, **kw)


def boxes_of(out: Imported, image_path: str = "images/a.jpg") -> list[tuple]:
    return [(*b.row(), b.converted) for b in out.labels[image_path].boxes]


def assert_boxes(got: Sequence[tuple], want: Sequence[tuple]) -> None:
    """Class ids and shapes exactly; normalised cx, cy, w, h within 1e-9 of the hand values."""
    assert [(r[0], r[5]) for r in got] == [(r[0], r[5]) for r in want]
    assert [v for r in got for v in r[1:5]] == pytest.approx(
        [v for r in want for v in r[1:5]], abs=1e-9
    )


def problems(out: Imported) -> list[tuple[str, str]]:
    return [(p.rule, p.reason) for p in out.problems]


def test_cvat_box_lands_as_written():
    out = run({FILE: cvat(image(box()))})
    assert_boxes(boxes_of(out), [(0, 0.15, 0.4, 0.2, 0.4, "")])
    labels = out.labels["images/a.jpg"]
    assert (labels.file, labels.width, labels.height) == (FILE, 200, 100)
    assert (out.seen, out.converted, out.problems, out.bad_files) == (1, 0, [], {})


def test_cvat_rotated_box_becomes_the_box_around_its_corners_on_a_non_square_image():
    # A 60x20 box centred at (70, 40) on a 200x100 image. Turned 90 degrees about its centre it
    # is 20x60; turned 30 degrees its corners span 2(30 cos 30 + 10 sin 30) = 2(15 sqrt3 + 5)
    # across and 2(30 sin 30 + 10 cos 30) = 2(15 + 5 sqrt3) down. Rotating in normalised
    # coordinates instead (the Label Studio trap) would skew both on this non-square image.
    rotated = "".join(
        box("dog", (40, 30, 100, 50), f' rotation="{r}"') for r in ("90.00", "30", "-30", "0.00")
    )
    out = run({FILE: cvat(image(rotated))})
    s3 = math.sqrt(3)
    w30, h30 = (15 * s3 + 5) / 100, (15 + 5 * s3) / 50
    assert_boxes(
        boxes_of(out),
        [
            (2, 0.35, 0.4, 0.1, 0.6, "rotated"),
            (2, 0.35, 0.4, w30, h30, "rotated"),
            (2, 0.35, 0.4, w30, h30, "rotated"),
            (2, 0.35, 0.4, 0.3, 0.2, ""),  # rotation 0 is an ordinary box
        ],
    )
    assert (out.converted, out.labels["images/a.jpg"].converted) == (3, 3)


def test_cvat_polygon_and_ellipse_become_their_bounding_boxes_counted_by_shape():
    shapes = (
        box()
        + '<polygon label="person" occluded="0" points="20.0,10.0;60,30;40,80.0" z_order="0"/>'
        + '<ellipse label="dog" cx="100" cy="50" rx="40" ry="20" occluded="0" z_order="0"/>'
        + '<ellipse label="dog" cx="100" cy="50" rx="40" ry="20" rotation="90"/>'
        + '<ellipse label="dog" cx="100" cy="50" rx="40" ry="20" rotation="45.00"/>'
        + box("car", (40, 30, 100, 50), ' rotation="90"')
    )
    out = run({FILE: cvat(image(shapes))})
    r45 = math.sqrt(1000)  # sqrt((40 cos 45)^2 + (20 sin 45)^2), across and down alike
    assert_boxes(
        boxes_of(out),
        [
            (0, 0.15, 0.4, 0.2, 0.4, ""),
            (1, 0.2, 0.45, 0.2, 0.7, "polygon"),  # x 20..60, y 10..80
            (2, 0.5, 0.5, 0.4, 0.4, "ellipse"),  # x 60..140, y 30..70
            (2, 0.5, 0.5, 0.2, 0.8, "ellipse"),  # turned: x 80..120, y 10..90
            (2, 0.5, 0.5, 2 * r45 / 200, 2 * r45 / 100, "ellipse"),
            (0, 0.35, 0.4, 0.1, 0.6, "rotated"),
        ],
    )
    by_shape = Counter(b.converted for b in out.labels["images/a.jpg"].boxes)
    assert by_shape == {"": 1, "polygon": 1, "ellipse": 3, "rotated": 1}
    assert (out.boxes, out.converted, out.problems) == (6, 5, [])


def test_cvat_shapes_without_a_box_are_counted_as_unsupported_never_dropped():
    shapes = (
        box()
        + '<polyline label="car" points="1,1;5,5"/>'
        + '<points label="person" points="3,3"/>'
        + '<mask label="dog" rle="1, 2, 3" left="1" top="1" width="3" height="2"/>'
        + '<cuboid label="car" xtl1="1" ytl1="1" xbl1="1" ybl1="5"/>'
        + '<skeleton label="person"><points label="1" points="2,2"/></skeleton>'
        + '<tag label="car" source="manual"></tag>'
        + '<tag label="dog"></tag>'
    )
    out = run({FILE: cvat(image(shapes))})
    assert out.seen == 8
    assert out.boxes == 1
    assert [(p.rule, p.where) for p in out.problems] == [
        ("unsupported_shape", "polyline 1"),
        ("unsupported_shape", "points 1"),
        ("unsupported_shape", "mask 1"),
        ("unsupported_shape", "cuboid 1"),
        ("unsupported_shape", "skeleton 1"),
        ("image_level_label", "tag 1"),
        ("image_level_label", "tag 2"),
    ]
    assert out.problems[5].reason == (
        f"{FILE}: tag 1 of image a.jpg: <tag> 'car' labels the whole image, not a region: not a box"
    )
    # The shapes leave objects unboxed: the image's labels are incomplete; the tags do not.
    assert out.labels["images/a.jpg"].incomplete == ["unsupported_shape"] * 5


@pytest.mark.parametrize(
    ("shape", "rule", "words"),
    [
        ('<box xtl="1" ytl="1" xbr="9" ybr="9"/>', "bad_annotation",
         "box 2 of image a.jpg: has no label, so its class is unknown"),
        ('<box label="car" xtl="1" ytl="1" xbr="9"/>', "bad_box",
         "box 2 of image a.jpg: 'car': ybr is missing"),
        ('<box label="car" xtl="one" ytl="1" xbr="9" ybr="9"/>', "bad_box",
         "box 2 of image a.jpg: 'car': xtl 'one' is not a number"),
        ('<box label="car" xtl="1" ytl="1" xbr="9" ybr="9" rotation="left"/>', "bad_box",
         "'car': rotation 'left' is not a number"),
        ('<box label="car" xtl="1" ytl="1" xbr="inf" ybr="9"/>', "bad_box",
         "'car': xbr 'inf' is not a number"),
        ('<polygon label="car" points="1,1;9,9"/>', "bad_box",
         "polygon 1 of image a.jpg: 'car': a polygon needs at least 3 points; it has 2"),
        ('<polygon label="car" points="1,1;9;4,4"/>', "bad_box",
         "polygon 1 of image a.jpg: 'car': point 2 '9' is not two numbers 'x,y'"),
        ('<polygon label="car"/>', "bad_box", "'car': points is missing"),
        ('<ellipse label="car" cx="9" cy="9" rx="3"/>', "bad_box", "'car': ry is missing"),
        ('<box label="car" xtl="50" ytl="1" xbr="10" ybr="9" rotation="30"/>', "bad_box",
         "box 2 of images/a.jpg: size -40x8 px is not positive"),
        ('<ellipse label="car" cx="9" cy="9" rx="-3" ry="2" rotation="10"/>', "bad_box",
         "ellipse 1 of images/a.jpg: size -6x4 px is not positive"),
        ('<polygon label="car" points="150,10;260,20;160,90"/>', "box_outside_image",
         "polygon 1 of images/a.jpg: box (150, 10)-(260, 90) lies outside the 200x100 image"),
        # A box inside the image whose turned corners leave it.
        ('<box label="car" xtl="0" ytl="0" xbr="60" ybr="20" rotation="45"/>',
         "box_outside_image", "box 2 of images/a.jpg: box ("),
    ],
)  # fmt: skip
def test_cvat_malformed_or_impossible_shape_is_quarantined_with_its_rule(shape, rule, words):
    out = run({FILE: cvat(image(box("dog") + shape))})
    assert len(out.problems) == 1, out.problems
    assert out.problems[0].rule == rule
    assert out.problems[0].reason.startswith(f"{FILE}: ")
    assert words in out.problems[0].reason
    assert (out.boxes, out.seen) == (1, 2)  # the good box still lands


def test_cvat_unicode_names_unknown_classes_and_aliases():
    shapes = box("Straßenbahn") + box("自転車") + box("auto")
    out = run({FILE: cvat(image(shapes, name="frames/ü.jpg"))}, images=["images/ü.jpg"],
              classes=["Straßenbahn", "vehicle"], aliases={"auto": "vehicle"})  # fmt: skip
    assert_boxes(
        boxes_of(out, "images/ü.jpg"),
        [(0, 0.15, 0.4, 0.2, 0.4, ""), (1, 0.15, 0.4, 0.2, 0.4, "")],
    )
    assert problems(out) == [
        (
            "unknown_class",
            f"{FILE}: box 2 of images/ü.jpg: category '自転車' is not one of the platform's "
            "classes (Straßenbahn, vehicle); map it with CV_ASSETS_CLASS_ALIASES",
        )
    ]


def test_cvat_image_the_batch_lacks_is_reported_and_the_others_land():
    raw = cvat(image(box()), image(box("dog") + box("car"), name="gone.jpg", ident=1),
               image("", name="empty.jpg", ident=2))  # fmt: skip
    out = run({FILE: raw}, images=["images/a.jpg", "images/empty.jpg"])
    assert [p.rule for p in out.problems] == ["image_not_in_batch"] * 2
    assert out.problems[0].reason.startswith(f"{FILE}: box 1 of gone.jpg: names image gone.jpg")
    assert_boxes(boxes_of(out), [(0, 0.15, 0.4, 0.2, 0.4, "")])
    assert out.labels["images/empty.jpg"].boxes == []  # named with no shapes: labelled, empty


def test_cvat_image_named_twice_keeps_the_first_and_refuses_the_seconds_shapes():
    raw = cvat(image(box()), image(box("dog"), ident=9))
    out = run({FILE: raw})
    assert_boxes(boxes_of(out), [(0, 0.15, 0.4, 0.2, 0.4, "")])
    assert problems(out) == [
        (
            "labelled_twice",
            f"{FILE}: box 1 of image a.jpg (id 9): the file names this image again; its <image> "
            "id 0 labels it",
        )
    ]


def test_cvat_image_without_a_size_quarantines_its_shapes():
    raw = cvat('<image id="0" name="a.jpg">' + box() + "</image>")
    out = run({FILE: raw})
    assert [p.rule for p in out.problems] == ["image_size_unknown"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (cvat('<image id="3" width="10" height="10"/>'), f"{FILE}: <image> 1 (id 3) has no name"),
        (cvat(image(box(), width="wide")), f"{FILE}: image a.jpg: width 'wide' is not a number"),
        (b'<annotations><version>1.1</version><track id="0" label="car"><box frame="0" '
         b'xtl="1" ytl="1" xbr="5" ybr="5" outside="0"/></track></annotations>',
         f"{FILE}: holds 1 <track> element(s), so it is CVAT for video 1.1"),
        (b"<annotation><filename>a.jpg</filename></annotation>",
         f"{FILE}: the root element is <annotation>, expected <annotations>"),
        (b"<annotations>\n<image id='0' name='a.jpg' width='2' height='2'>\n</annotations>",
         f"{FILE}: not well-formed XML at line 3, column 3: mismatched tag"),
    ],
)  # fmt: skip
def test_cvat_unreadable_file_is_refused_whole_and_the_batch_goes_on(raw, words):
    out = run({FILE: raw, "annotations/z.xml": cvat(image(box(), name="b.jpg"))},
              images=["images/a.jpg", "images/b.jpg"])  # fmt: skip
    rule, reason = out.bad_files[FILE]
    assert (rule, list(out.bad_files)) == ("bad_annotation_file", [FILE])
    assert reason.startswith(words)
    assert_boxes(boxes_of(out, "images/b.jpg"), [(0, 0.15, 0.4, 0.2, 0.4, "")])
