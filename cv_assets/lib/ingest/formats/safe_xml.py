"""Safe XML for the XML adapters (Pascal VOC, CVAT): parsing that refuses DTDs and entities, and
the small readers both adapters share (numbers, text, names a person can read).

An annotation file comes from outside the platform. The standard library's parsers expand
entities, so a few hundred bytes of "billion laughs" grow to gigabytes, and an external entity
can read a local file (``/etc/passwd``) into a label. Every XML adapter parses through
``parse_root`` here, never through ``xml.etree`` directly, so no adapter can forget the guard.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, ParseError  # types and the error only, never parsing

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from cv_assets.lib.ingest.formats.base import AnnotationFileError
from cv_assets.lib.ingest.landing import clip, display_name

# What defusedxml stopped, in words. Entity bombs and external entities are declared in a DTD,
# so with forbid_dtd they arrive as DTDForbidden.
_REFUSED = {
    "DTDForbidden": "a DTD (<!DOCTYPE ...>, where entity bombs and external entities live) was",
    "EntitiesForbidden": "an entity declaration was",
    "ExternalReferenceForbidden": "an external reference was",
}
# A decimal number as annotation tools write it. float() alone would also take "nan", "inf" and
# "1_000", none of which a tool writes for a coordinate.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def parse_root(path: str, raw: bytes, root: str) -> Element:
    """The document element of ``raw``, which must be ``<root>``.

    Raises:
        AnnotationFileError: ``unsafe_xml`` for any DTD or entity declaration (never expanded,
            never fetched); ``bad_annotation_file`` for XML that is not well formed, an unknown
            encoding, or another root element.
    """
    try:
        # forbid_dtd refuses the DOCTYPE itself, so an entity is never even declared; the
        # entity and external-reference guards stay on as a second line.
        doc = SafeET.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        what = _REFUSED.get(type(e).__name__, "a DTD or entity was")
        raise AnnotationFileError(
            "unsafe_xml", f"{path}: {what} refused (the parser forbids DTDs and entities)"
        ) from None
    except ParseError as e:
        line, column = e.position
        what = str(e).split(": line ", 1)[0]
        raise AnnotationFileError(
            "bad_annotation_file",
            f"{path}: not well-formed XML at line {line}, column {column + 1}: {what}",
        ) from None
    except LookupError as e:  # an encoding the XML declaration names but Python lacks
        raise AnnotationFileError(
            "bad_annotation_file", f"{path}: cannot be decoded: {clip(str(e))}"
        ) from None
    if doc.tag != root:
        raise AnnotationFileError(
            "bad_annotation_file",
            f"{path}: the root element is <{shown(doc.tag)}>, expected <{root}>",
        )
    return doc


def number(text: str | None) -> float | None:
    """A decimal number, or None when ``text`` is missing, empty or not a plain number."""
    if text is None:
        return None
    text = text.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def child_text(elem: Element, tag: str) -> str | None:
    """The stripped text of ``elem``'s first ``<tag>`` child; None if absent, "" if empty."""
    child = elem.find(tag)
    if child is None:
        return None
    return (child.text or "").strip()


def shown(text: str | None, limit: int = 80) -> str:
    """A name or value from the file, as a reason quotes it: printable and bounded."""
    return "(missing)" if text is None else clip(display_name(text), limit)
