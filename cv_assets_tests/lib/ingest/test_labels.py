import pytest

from cv_assets.lib.ingest.labels import (
    canonical_label_text,
    label_table,
    parse_label_file,
    validate_labels,
)

pytestmark = pytest.mark.unit
CLASSES = ["square", "circle", "triangle"]


def errors_for(text: bytes, name: str = "labels/cat_003.txt"):
    return validate_labels(label_table([parse_label_file(name, text)]), CLASSES)


@pytest.mark.parametrize(
    ("line", "rule", "message"),
    [
        (
            "7 0.5 0.5 0.1 0.1",
            "class_out_of_range",
            "labels/cat_003.txt:2: class id 7 is outside 0..2 (classes: square, circle, triangle)",
        ),
        ("-1 0.5 0.5 0.1 0.1", "class_out_of_range", "class id -1 is outside 0..2"),
        ("1.5 0.5 0.5 0.1 0.1", "class_not_integer", ":2: class id 1.5 is not an integer"),
        ("1 1.35 0.5 0.1 0.1", "coords_outside", ":2: cx = 1.35 outside [0, 1]"),
        ("1 0.5 -0.2 0.1 0.1", "coords_outside", ":2: cy = -0.2 outside [0, 1]"),
        ("1 0.5 0.5 0 0.1", "zero_area_box", ":2: box has zero or negative size (w = 0, h = 0.1)"),
        ("1 0.5 0.5 0.1 -0.1", "coords_outside", "h = -0.1 outside [0, 1]"),
        ("1 0.5 nan 0.1 0.1", "nonfinite", ":2: NaN or inf is not a coordinate (cy=nan)"),
        ("1 0.5 0.5 inf 0.1", "nonfinite", "(w=inf)"),
        ("1 0.5 0.5 0.1", "wrong_columns", ":2: expected 5 columns (class cx cy w h), found 4"),
        ("1 0.5 0.5 0.1 0.1 0.9", "wrong_columns", "found 6"),
        ("1 0.5 0.5 abc 0.1", "non_numeric", ":2: 'abc' is not a number"),
    ],
)
def test_each_broken_line_is_reported_with_file_line_and_rule(line, rule, message):
    errs = errors_for(f"0 0.5 0.5 0.2 0.2\n{line}\n".encode())
    assert [(e.file, e.line, e.rule) for e in errs] == [("labels/cat_003.txt", 2, rule)]
    assert message in errs[0].message
    assert errs[0].message.startswith("labels/cat_003.txt:2: ")


def test_bom_crlf_and_blank_lines_are_accepted_and_line_numbers_stay_true():
    lf = parse_label_file("labels/a.txt", b"\xef\xbb\xbf0 0.5 0.5 0.2 0.2\r\n\r\n2 .1 .1 .1 .1\r\n")
    assert [r[0] for r in lf.rows] == [1, 3]
    assert validate_labels(label_table([lf]), CLASSES) == []


def test_empty_label_file_means_no_objects():
    lf = parse_label_file("labels/empty.txt", b"")
    assert lf.rows == [] and lf.unreadable is None


def test_non_utf8_label_file_is_unreadable_with_reason():
    lf = parse_label_file("labels/bin.txt", b"\xff\xfe\x00garbage")
    assert lf.unreadable is not None and "labels/bin.txt" in lf.unreadable


def test_lazy_validation_reports_every_broken_line_across_files():
    files = [
        parse_label_file(
            "labels/a.txt", b"9 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n1 2 0.5 0.1 0.1\n"
        ),
        parse_label_file("labels/b.txt", b"0 0.5 0.5 0.1\n"),
    ]
    errs = validate_labels(label_table(files), CLASSES)
    assert [(e.file, e.line, e.rule) for e in errs] == [
        ("labels/a.txt", 1, "class_out_of_range"),
        ("labels/a.txt", 3, "coords_outside"),
        ("labels/b.txt", 1, "wrong_columns"),
    ]


def test_canonical_text_clips_boxes_to_the_image():
    text = canonical_label_text([(1, 0.95, 0.5, 0.2, 0.2)])
    c, cx, _cy, w, _h = text.split()
    assert c == "1" and float(cx) + float(w) / 2 == pytest.approx(1.0)
    assert float(w) == pytest.approx(0.15)
    assert text.endswith("\n") and "\r" not in text


def test_validating_many_batches_does_not_accumulate_schema_checks():
    from cv_assets.lib.ingest.labels import LabelRows, label_schema

    before = len(LabelRows.to_schema().checks or [])
    for _ in range(5):
        errors_for(b"0 0.5 0.5 0.2 0.2\n")
    assert len(LabelRows.to_schema().checks or []) == before
    assert len(label_schema(3).checks or []) == before + 1


def test_a_label_file_over_the_box_limit_is_counted_not_parsed():
    import time

    raw = b"0 0.5 0.5 0.1 0.1\n\n" * 20_000
    t0 = time.perf_counter()
    lf = parse_label_file("labels/crowd.txt", raw, max_boxes=1000)
    assert time.perf_counter() - t0 < 0.5
    assert lf.n_boxes == 20_000 and lf.rows == [] and lf.unreadable is None
    small = parse_label_file("labels/ok.txt", b"0 0.5 0.5 0.1 0.1\n" * 3, max_boxes=1000)
    assert small.n_boxes == 3 and len(small.rows) == 3


def test_messages_quote_untrusted_tokens_and_long_class_lists_briefly():
    (err,) = errors_for(b"0 0.5 0.5 " + b"x" * 100_000 + b" 0.1\n")
    assert err.rule == "non_numeric" and len(err.message) < 200
    assert "more)" in err.message
    many = [f"c{i}" for i in range(5000)]
    inside = parse_label_file("labels/a.txt", b"4000 .5 .5 .1 .1\n")
    assert validate_labels(label_table([inside]), many) == []
    (err,) = validate_labels(
        label_table([parse_label_file("labels/a.txt", b"7000 .5 .5 .1 .1\n")]), many
    )
    assert err.rule == "class_out_of_range" and "c0, c1" in err.message
    assert "(4,990 more)" in err.message and len(err.message) < 200
