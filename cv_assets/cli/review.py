"""``cv-assets review export`` and ``review import``: the review queue, through a person and back.

``export`` turns the newest ``review_queue`` of a batch into a folder a reviewer edits: the images
exactly as they landed, their current labels, the champion's predictions as suggestions, the
ranked list and the crops. ``import`` checks the edited labels with the platform's own label rules
and, only if every file passes, lands the folder as a new batch in the landing contract whose
``batch.json`` (written last) says ``source: review:<batch>``; intake then accepts its images as
corrections of the labels they had, and the next dataset version carries the new labels.
"""

import argparse
import csv
import errno
import io
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.read_side import latest_metadata, open_instance, open_store

EXPORT_RECORD = "review.json"
REVIEWED = ("images", "labels")  # the subfolders import reads; the others are for the reviewer
QUEUE_ASSET = "review_queue"
README = """\
Review of batch {batch} (champion v{version}): {items} items on {images} images.

review.csv     the items, most severe first: rank, kind, stem, score, details, crop
crops/         each item's region: the label's box in green, the champion's in magenta
images/        the images exactly as they landed (do not edit)
labels/        their current labels: correct these, one box a line, "class cx cy w h",
               normalised to [0, 1]; an empty file means no objects
predictions/   the champion's boxes (confidence >= {conf}) in the same format, as
               suggestions: copy lines from here into labels/ where the champion is right

Classes: {classes}

When done:  cv-assets review import {folder}
Every label file is checked first; if any line breaks a rule nothing is sent. The folder then
lands as a new batch (source "review:{batch}") whose labels replace the current ones.
"""


class ReviewCliError(Exception):
    """A refusal the user can act on; ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def newest_queue(cfg: PlatformConfig, batch_id: str) -> dict[str, Any] | None:
    """Metadata of the newest ``review_queue`` materialization of ``batch_id``, if any."""
    instance = open_instance(cfg)
    try:
        return latest_metadata(instance, QUEUE_ASSET, batch_id)
    finally:
        instance.dispose()


def _read_table(store: Any, md: dict[str, Any]) -> Any:
    import pandas as pd

    from cv_assets.lib.core.store import sha256_bytes

    uri = str(md["table"])
    data = store.get_bytes(store.key_of(uri))
    if sha256_bytes(data) != md.get("table_sha256"):
        raise ReviewCliError(f"{uri}: sha256 differs from the materialization's; refusing it", 2)
    return pd.read_parquet(io.BytesIO(data))


def export_review(
    cfg: PlatformConfig, batch_id: str, out: Path | None = None, top: int | None = None
) -> str:
    """Write the review folder of ``batch_id``'s newest queue; returns what to tell the user."""
    from cv_assets.lib.core import layout

    md = newest_queue(cfg, batch_id)
    if md is None:
        raise ReviewCliError(
            f"no review queue for batch {batch_id!r}: materialize review_queue for that partition "
            "first (it needs a champion)",
            2,
        )
    store = open_store(cfg)
    table = _read_table(store, md)
    if top is not None:
        table = table[table["rank"] <= top]
    if table.empty:
        return f"the review queue of {batch_id} is empty: nothing to review"
    out = out or Path(f"review-{batch_id}")
    if out.exists() and any(out.iterdir()):
        raise ReviewCliError(f"{out}: already exists and is not empty; choose another --out", 2)
    for sub in ("images", "labels", "predictions", "crops"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    labels: dict[str, str] = {}
    for r in table.drop_duplicates("stem").itertuples(index=False):
        stem, source = str(r.stem), str(r.source)
        # The bytes as landed, not the standardised copy: the same sha256 is what makes the
        # re-landed image a correction of this sample rather than a new one.
        raw = store.get_bytes(f"{layout.raw_files(batch_id)}/{source}")
        (out / "images" / PurePosixPath(source).name).write_bytes(raw)
        label = store.get_bytes(store.key_of(str(r.label_uri)))
        (out / "labels" / f"{stem}.txt").write_bytes(label)
        (out / "predictions" / f"{stem}.txt").write_text(str(r.predictions))
        labels[stem] = label.decode()
    for r in table.itertuples(index=False):
        (out / "crops" / str(r.crop)).write_bytes(store.get_bytes(store.key_of(str(r.crop_uri))))
    with open(out / "review.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "kind", "stem", "score", "details", "crop"])
        for r in table.itertuples(index=False):
            w.writerow([r.rank, r.kind, r.stem, r.score, r.details, f"crops/{r.crop}"])
    version = md.get("champion_version")
    record = {
        "batch_id": batch_id,
        "champion_version": version,
        "table_uri": md["table"],
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels": labels,
    }
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=1))
    (out / "README.txt").write_text(
        README.format(
            batch=batch_id,
            version=version,
            items=len(table),
            images=len(labels),
            conf=f"{float(md.get('conf_min', 0.0)):.3g}",
            classes=", ".join(f"{i} {c}" for i, c in enumerate(cfg.classes)),
            folder=out,
        )
    )
    return f"{len(table)} items on {len(labels)} images of {batch_id} -> {out} (see README.txt)"


# Only regular files are read, each opened without following a link, relative to its folder's
# descriptor: a link (or a folder swapped for one while this runs) can never bring in a file from
# elsewhere. Non-blocking, so that a FIFO can never hang the import.
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
LINK_RULE = "review import reads only regular files inside the folder and never follows a link"


@dataclass
class ReviewFolder:
    """What ``review import`` read from a folder: bytes of regular files, each read once."""

    record: bytes | None = None  # review.json
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sub -> name -> bytes
    unexpected: list[str] = field(default_factory=list)  # harmless, but not a file: a folder
    refusals: list[str] = field(default_factory=list)  # links, FIFOs, devices: never read


def _link_or_special(rel: str, dir_fd: int, name: str, mode: int) -> str | None:
    """The refusal of an entry that is a link, FIFO, socket or device; None for a file or folder."""
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            target = "?"
        return f"{rel}: symbolic link (to {target}); {LINK_RULE} [symlink]"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = (
        "FIFO"
        if stat.S_ISFIFO(mode)
        else "socket"
        if stat.S_ISSOCK(mode)
        else "device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "special file"
    )
    return f"{rel}: a {kind}, not a regular file; {LINK_RULE} [not_a_regular_file]"


def _read_regular(dir_fd: int, name: str, rel: str, before: os.stat_result) -> bytes:
    """The bytes of the regular file ``before`` described; refused if it changed into a link."""
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:  # became a link since it was looked at
            raise ReviewCliError(f"{rel}: symbolic link; {LINK_RULE} [symlink]", 2) from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise ReviewCliError(f"{rel}: changed while being read; {LINK_RULE}", 2)
        return f.read()


def read_review_folder(folder: Path) -> ReviewFolder:
    """``review.json`` and the files directly in ``images/`` and ``labels/``, links refused.

    Entries whose name starts with "." (editors' swap and lock files) are skipped unread.
    """
    out = ReviewFolder()
    try:
        root = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise ReviewCliError(f"{folder}: cannot open the folder ({e.strerror})", 2) from None
    try:
        names = set(os.listdir(root))
        for name in sorted(names & {EXPORT_RECORD, *REVIEWED}):
            st = os.stat(name, dir_fd=root, follow_symlinks=False)
            if refusal := _link_or_special(name, root, name, st.st_mode):
                out.refusals.append(refusal)
            elif name == EXPORT_RECORD and stat.S_ISREG(st.st_mode):
                out.record = _read_regular(root, name, name, st)
            elif name in REVIEWED and stat.S_ISDIR(st.st_mode):
                out.files[name] = _read_subfolder(root, name, out)
            else:
                out.unexpected.append(name)
    finally:
        os.close(root)
    return out


def _read_subfolder(root: int, sub: str, out: ReviewFolder) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        dfd = os.open(sub, _OPEN_DIR, dir_fd=root)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):  # became a link since it was looked at
            out.refusals.append(f"{sub}: symbolic link; {LINK_RULE} [symlink]")
            return found
        raise
    try:
        for name in sorted(os.listdir(dfd)):
            if name.startswith("."):
                continue
            rel = f"{sub}/{name}"
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if refusal := _link_or_special(rel, dfd, name, st.st_mode):
                out.refusals.append(refusal)
            elif stat.S_ISDIR(st.st_mode):
                out.unexpected.append(rel)
            else:
                found[name] = _read_regular(dfd, name, rel, st)
    finally:
        os.close(dfd)
    return found


def _problems(
    folder: ReviewFolder, classes: list[str]
) -> tuple[dict[str, str], dict[str, bytes], list[str]]:
    """Image names and label bytes by stem, and every problem, each naming file, line and rule."""
    from cv_assets.lib.ingest.labels import label_table, parse_label_file, validate_labels
    from cv_assets.lib.ingest.names import IMAGE_EXTS, is_portable_path

    images: dict[str, str] = {}
    labels: dict[str, bytes] = {}
    label_names: dict[str, str] = {}
    problems = [
        f"{rel}: unexpected file (expected {rel.split('/')[0]}/<stem>) [unexpected_file]"
        for rel in folder.unexpected
    ]
    for sub, exts in (("images", IMAGE_EXTS), ("labels", {".txt"})):
        for name, data in folder.files.get(sub, {}).items():
            rel, p = f"{sub}/{name}", PurePosixPath(name)
            if p.suffix.lower() not in exts or not is_portable_path(rel):
                problems.append(f"{rel}: unexpected file (expected {sub}/<stem>) [unexpected_file]")
            elif sub == "images":
                images[p.stem] = name
            else:
                labels[p.stem], label_names[p.stem] = data, name
    problems += [
        f"images/{n}: no label file labels/{s}.txt [missing_label]"
        for s, n in images.items()
        if s not in labels
    ]
    problems += [
        f"labels/{label_names[s]}: no image images/{s}.* [label_without_image]"
        for s in labels
        if s not in images
    ]
    parsed = [parse_label_file(f"labels/{label_names[s]}", d) for s, d in labels.items()]
    problems += [f"{f.unreadable} [label_not_utf8]" for f in parsed if f.unreadable]
    errors = validate_labels(label_table(f for f in parsed if not f.unreadable), classes)
    problems += [f"{e.message} [{e.rule}]" for e in errors]
    return images, labels, problems


def import_review(
    cfg: PlatformConfig, folder: Path, batch_id: str | None = None, now: datetime | None = None
) -> str:
    """Validate an edited review folder and land it as a correction batch; what to tell the user.

    Links (to a file, or an ``images/`` or ``labels/`` folder that is a link), FIFOs and devices
    are refused with exit status 2 before any label is looked at: a correction batch skips
    intake's duplicate check, so it must hold only what the reviewer's folder itself holds.
    """
    from cv_assets.lib.ingest.landing import BATCH_ID_RE, MARKER, is_valid_batch_id
    from cv_assets.lib.ingest.sources import CORRECTION_SOURCE_PREFIX

    read = read_review_folder(folder)
    if read.refusals:
        raise ReviewCliError(
            "\n".join(read.refusals)
            + f"\n{len(read.refusals)} link(s) or special file(s) in {folder}; nothing was landed",
            2,
        )
    try:
        record = json.loads(read.record or b"")
        orig = str(record["batch_id"])
    except (ValueError, TypeError, KeyError):
        raise ReviewCliError(
            f"{folder}: no readable {EXPORT_RECORD}; expected a folder written by "
            "`cv-assets review export`",
            2,
        ) from None
    images, labels, problems = _problems(read, list(cfg.classes))
    if problems:
        raise ReviewCliError(
            "\n".join(problems) + f"\n{len(problems)} problem(s) in {folder}; nothing was landed",
            1,
        )
    if not images:
        raise ReviewCliError(f"{folder}: no images to send; nothing was landed", 1)
    now = now or datetime.now(UTC)
    bid = batch_id or f"{orig}-review-{now:%Y%m%d%H%M%S}"
    if not is_valid_batch_id(bid):
        raise ReviewCliError(f"{bid!r} is not a valid batch id ({BATCH_ID_RE.pattern})", 2)
    zone = open_store(cfg, cfg.landing_root)
    if zone.list(f"{bid}/"):
        raise ReviewCliError(f"batch {bid!r} is already in the landing zone; use --batch-id", 2)
    for stem, name in images.items():  # the bytes validated above, not a second read
        zone.put_bytes(f"{bid}/images/{name}", read.files["images"][name])
        zone.put_bytes(f"{bid}/labels/{stem}.txt", labels[stem])
    source = f"{CORRECTION_SOURCE_PREFIX}{orig}"
    marker = {
        "batch_id": bid,
        "classes": list(cfg.classes),
        "created_at": now.isoformat(),
        "source": source,
    }
    # Written last: its presence is what makes the batch complete for the landing sensor.
    zone.put_bytes(f"{bid}/{MARKER}", json.dumps(marker, indent=1).encode())
    before = record.get("labels", {}) if isinstance(record, dict) else {}
    changed = sum(before.get(s) != data.decode("utf-8-sig") for s, data in labels.items())
    return (
        f"landed {len(images)} images ({changed} with changed labels) as batch {bid} "
        f"({source}) at {zone.uri(bid)}; intake accepts them as corrections"
    )


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    """``cv-assets review ...``: refusals are printed as one message each, with an exit status."""
    import sys

    try:
        if args.review_command == "export":
            msg = export_review(cfg, args.batch, args.out, args.top)
        else:
            msg = import_review(cfg, args.folder, args.batch_id)
    except ReviewCliError as e:
        print(f"cv-assets review {args.review_command}: {e}", file=sys.stderr)
        return e.code
    print(msg)
    return 0
