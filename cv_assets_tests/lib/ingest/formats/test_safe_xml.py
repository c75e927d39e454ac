"""Hostile and broken XML against both XML adapters (VOC, CVAT): refused, never expanded."""

from __future__ import annotations

import time

import pytest

from cv_assets.lib.ingest.formats import cvat, import_batch, voc
from cv_assets.lib.ingest.formats.base import AnnotationFileError, ParsedFile

pytestmark = pytest.mark.unit
CLASSES = ["car", "person"]
FILE = "annotations/a.xml"
REFUSED = "refused (the parser forbids DTDs and entities)"

# The same good file in each format: one car box on a 200x100 image a.jpg.
GOOD = {
    "voc": b"<annotation><filename>a.jpg</filename><size><width>200</width><height>100</height>"
    b"</size><object><name>car</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>50</xmax>"
    b"<ymax>60</ymax></bndbox></object><object><name>person</name><bndbox><xmin>1</xmin>"
    b"<ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>",
    "cvat": b'<annotations><version>1.1</version><image id="0" name="a.jpg" width="200" '
    b'height="100"><box label="car" xtl="10" ytl="20" xbr="50" ybr="60"/><polygon '
    b'label="person" points="1,2;3,4;2,3"/><tag label="car"/></image></annotations>',
}
ROOT = {"voc": "annotation", "cvat": "annotations"}
PARSE = {"voc": voc.parse, "cvat": cvat.parse}
FORMATS = pytest.mark.parametrize("fmt", ["voc", "cvat"])


def billion_laughs(root: str) -> bytes:
    """Ten levels of ten: 10**9 "lol"s (3 GB) if a parser expanded it; under 1 KB as written."""
    decls = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    doctype = f"<!DOCTYPE {root} [{''.join(decls)}]>"
    return f'<?xml version="1.0"?>{doctype}<{root}>&lol9;</{root}>'.encode()


def xxe(root: str) -> bytes:
    """An external entity that would read /etc/passwd into the image name."""
    name = "<filename>&xxe;</filename>" if root == "annotation" else '<image name="&xxe;"/>'
    return (
        f'<?xml version="1.0"?><!DOCTYPE {root} [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        f"<{root}>{name}</{root}>"
    ).encode()


def refusal(fmt: str, raw: bytes) -> tuple[str, str]:
    files = {FILE: raw}
    out = import_batch(fmt, [(FILE, len(raw))], files.__getitem__, ["images/a.jpg"], CLASSES)
    out.check_accounted()
    assert (out.seen, out.labels) == (0, {})
    return out.bad_files[FILE]


@FORMATS
def test_xml_bomb_is_refused_unexpanded(fmt):
    raw = billion_laughs(ROOT[fmt])
    assert len(raw) < 1024
    started = time.perf_counter()
    with pytest.raises(AnnotationFileError) as caught:
        PARSE[fmt](FILE, raw)
    assert time.perf_counter() - started < 1.0  # refused at the DOCTYPE, nothing expanded
    assert caught.value.rule == "unsafe_xml"
    rule, reason = refusal(fmt, raw)
    assert rule == "unsafe_xml"
    assert reason.startswith(f"{FILE}: ")
    assert REFUSED in reason


@FORMATS
def test_external_entity_is_refused_and_never_read(fmt):
    rule, reason = refusal(fmt, xxe(ROOT[fmt]))
    assert rule == "unsafe_xml"
    assert REFUSED in reason
    assert "root:" not in reason  # no line of /etc/passwd reached the reason


@FORMATS
def test_external_parameter_entity_is_refused(fmt):
    raw = f'<!DOCTYPE {ROOT[fmt]} [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><x/>'.encode()
    assert refusal(fmt, raw)[0] == "unsafe_xml"


@FORMATS
def test_any_dtd_is_refused_even_without_entities(fmt):
    root = ROOT[fmt]
    doctype = f'<!DOCTYPE {root} SYSTEM "x.dtd">'
    raw = GOOD[fmt].replace(f"<{root}>".encode(), f"{doctype}<{root}>".encode())
    rule, reason = refusal(fmt, raw)
    assert rule == "unsafe_xml"
    assert REFUSED in reason


@FORMATS
@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"<annotation><filename>&amp;&nbsp;</filename></annotation>",
         "not well-formed XML at line 1, column 28: undefined entity"),
        (b'<?xml version="1.0" encoding="klingon"?><a/>', "cannot be decoded: unknown encoding"),
        (b"\x00\x01garbage", "not well-formed XML at line 1, column 1"),
        (b"<root/>", "the root element is <root>, expected <"),
        (b'<annotation xmlns="urn:x"/>', "the root element is <{urn:x}annotation>, expected <"),
    ],
    ids=["undefined_entity", "unknown_encoding", "binary", "wrong_root", "namespaced_root"],
)  # fmt: skip
def test_malformed_xml_is_a_bad_annotation_file_naming_the_place(fmt, raw, words):
    with pytest.raises(AnnotationFileError) as caught:
        PARSE[fmt](FILE, raw)
    assert caught.value.rule == "bad_annotation_file"
    assert caught.value.reason.startswith(f"{FILE}: ")
    assert words in caught.value.reason


@FORMATS
def test_every_truncation_and_byte_flip_parses_or_is_refused_never_crashes(fmt):
    """Called directly (not through import_batch's safety net): only AnnotationFileError escapes,
    and every annotation element a parse returns is a box or a problem."""
    raw = GOOD[fmt]
    variants = [raw[:i] for i in range(len(raw))]
    variants += [raw[:i] + b"\xff" + raw[i + 1 :] for i in range(len(raw))]
    variants += [raw[:i] + b'"' + raw[i + 1 :] for i in range(len(raw))]
    parsed = 0
    for variant in variants:
        try:
            got = PARSE[fmt](FILE, variant)
        except AnnotationFileError as e:
            assert e.rule in ("bad_annotation_file", "unsafe_xml")
            assert e.reason.startswith(FILE)
            continue
        assert isinstance(got, ParsedFile)
        assert len(got.annotations) + len(got.problems) <= (3 if fmt == "cvat" else 2)
        parsed += 1
    assert parsed > 0
