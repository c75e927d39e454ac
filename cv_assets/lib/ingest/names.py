"""The landing contract's name rules: which landed names may become paths in the store.

Intake quarantines a file whose name breaks them, and the raw copy, the review export and the
cloud tests copy only the names they allow, so every part of the platform agrees on one rule.
"""

from __future__ import annotations

import re

from cv_assets.lib.ingest.landing import clip, display_name

IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
LABEL_EXTS = {".txt"}
PORTABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


# A path component, and a whole path inside the batch, longer than this is not copied: the raw
# copy's key must stay within every store's limit (S3 keys: 1,024 bytes, with the prefixes).
MAX_NAME_CHARS = 200
MAX_PATH_CHARS = 512


def name_problem(path: str) -> tuple[str, str] | None:
    """``(rule, reason)`` when a landed name is unsafe to use as a path in the store, else None.

    Names that are not UTF-8 (on Linux they arrive as surrogate escapes) are shown with ``\\xff``
    escapes, so that the quarantine table, the logs and JSON can hold them.
    """
    parts = path.split("/")  # not PurePosixPath: it would hide "a//b" and "a/./b" in S3 keys
    if len(path) <= MAX_PATH_CHARS and all(
        len(p) <= MAX_NAME_CHARS and PORTABLE_NAME.fullmatch(p) for p in parts
    ):
        return None
    shown = clip(display_name(path))
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "undecodable_name", (
            f"{shown}: file name is not valid UTF-8 (bytes shown as \\x escapes); not copied"
        )
    longest = max((len(p) for p in parts), default=0)
    if len(path) > MAX_PATH_CHARS or longest > MAX_NAME_CHARS:
        return "name_too_long", (
            f"{shown}: name too long ({len(path):,} characters, longest part {longest:,}; the "
            f"limits are {MAX_NAME_CHARS} a part and {MAX_PATH_CHARS} in all); not copied"
        )
    return "non_portable_name", (
        f"{clip(repr(path))}: file name is not portable (allowed: letters, digits, '.', '_', "
        "'-'; no path separators or '..'); not copied"
    )


def is_portable_path(path: str) -> bool:
    return name_problem(path) is None
