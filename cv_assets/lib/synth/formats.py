"""The synthetic generator's annotations in every format of the landing contract (v2).

``batches.py`` renders the scenes and writes the images; this module writes the *annotations* of a
non-YOLO batch from the generator's ground-truth boxes, where the contract puts them::

    ultralytics  data.yaml (``names`` a list) + labels/<stem>.txt, ids indexing that list
    coco         annotations/instances.json  (bbox [x, y, w, h] in pixels)
    voc          annotations/<stem>.xml      (one Pascal VOC file per image)
    cvat         annotations/annotations.xml (CVAT for images 1.1)
    labelstudio  annotations/export.json     (rectanglelabels in percent of the image)

``yolo`` (``labels/<stem>.txt``, six decimals) stays in ``batches.py``, unchanged.

Each writer is shaped to catch a converter that maps classes by index: the Ultralytics ``names``
and the COCO categories list the classes in the reverse of the platform's order, and COCO's
category ids are neither contiguous nor 0- or 1-based. Coordinates are written with ``repr``
(shortest exact round trip), so converting back and normalising gives the generator's boxes to
within float rounding, far below 1e-6. An unlabelled image is named by no annotation file at all;
a batch with no labelled image has no annotation file (images only).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from cv_assets.lib.synth.scenes import Box

FORMATS: tuple[str, ...] = ("yolo", "ultralytics", "coco", "voc", "cvat", "labelstudio")
LABELS: tuple[str, ...] = ("full", "partial", "none")
LABEL_STUDIO_UPLOAD = "/data/upload/1/"
"""Label Studio's prefix for an uploaded file in ``data.image`` (project 1)."""


@dataclass(frozen=True)
class Sample:
    """One landed image and its ground truth, as the annotation writers see it."""

    image: str  # file name under images/, e.g. batch-0000_00003.jpg
    width: int
    height: int
    boxes: tuple[Box, ...] | None  # normalised (class, cx, cy, w, h); None: unlabelled

    @property
    def stem(self) -> str:
        return Path(self.image).stem


def labels_kind(n_unlabelled: int, n_images: int) -> str:
    """``batch.json``'s ``labels``: what the images carry, from how many are unlabelled."""
    if n_unlabelled == 0:
        return "full"
    return "none" if n_unlabelled >= n_images else "partial"


def pixel_box(box: Box, width: float, height: float) -> tuple[float, float, float, float]:
    """A normalised ``(class, cx, cy, w, h)`` as ``(x_min, y_min, x_max, y_max)`` in pixels."""
    _, cx, cy, w, h = box
    return (
        (cx - w / 2) * width,
        (cy - h / 2) * height,
        (cx + w / 2) * width,
        (cy + h / 2) * height,
    )


def coco_category_ids(classes: Sequence[str]) -> dict[str, int]:
    """Class name -> COCO category id: 2, 7, 12, ... so that ids are never list positions."""
    return {name: 2 + 5 * k for k, name in enumerate(classes)}


def ultralytics_names(classes: Sequence[str]) -> list[str]:
    """``data.yaml``'s ``names``: the platform's classes reversed, so ids are not the batch's."""
    return list(reversed(classes))


def box_error(truth: Sequence[Box], got: Sequence[Box]) -> float:
    """The largest coordinate difference between ground truth and converted boxes of one image.

    Each true box is matched to the unused converted box of its class that is nearest (boxes may
    share a centre coordinate, so sorting both sides is not a safe pairing). ``inf`` when the
    counts differ or a true box has no partner of its class.
    """
    if len(truth) != len(got):
        return float("inf")
    free = list(got)
    worst = 0.0
    for t in truth:
        errors = [
            (max(abs(a - b) for a, b in zip(t[1:], g[1:], strict=True)), k)
            for k, g in enumerate(free)
            if g[0] == t[0]
        ]
        if not errors:
            return float("inf")
        err, k = min(errors)
        worst = max(worst, err)
        free.pop(k)
    return worst


def _num(value: float) -> str:
    return repr(float(value))


def _labelled(samples: Sequence[Sample]) -> list[tuple[Sample, tuple[Box, ...]]]:
    return [(s, s.boxes) for s in samples if s.boxes is not None]


def _write_xml(path: Path, root: ET.Element) -> None:
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def _write_json(path: Path, payload: object, indent: int | None = None) -> None:
    text = json.dumps(payload, indent=indent, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def _sub(parent: ET.Element, tag: str, text: object = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = str(text)
    return el


def write_ultralytics(batch_dir: Path, samples: Sequence[Sample], classes: Sequence[str]) -> None:
    names = ultralytics_names(classes)
    ids = {name: k for k, name in enumerate(names)}
    labels_dir = batch_dir / "labels"
    labels_dir.mkdir(exist_ok=True)
    for s, boxes in _labelled(samples):
        lines = [
            f"{ids[classes[b[0]]]} {_num(b[1])} {_num(b[2])} {_num(b[3])} {_num(b[4])}\n"
            for b in boxes
        ]
        (labels_dir / f"{s.stem}.txt").write_text("".join(lines), encoding="utf-8")
    # Ultralytics reads train/val relative to ``path``; the batch is one flat split.
    data = {"path": ".", "train": "images", "val": "images", "nc": len(names), "names": names}
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    (batch_dir / "data.yaml").write_text(text, encoding="utf-8")


def write_coco(batch_dir: Path, samples: Sequence[Sample], classes: Sequence[str]) -> None:
    cat_ids = coco_category_ids(classes)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for image_id, (s, boxes) in enumerate(_labelled(samples), start=1):
        images.append({"id": image_id, "file_name": s.image, "width": s.width, "height": s.height})
        for b in boxes:
            x1, y1, x2, y2 = pixel_box(b, s.width, s.height)
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[classes[b[0]]],
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
    categories = [
        {"id": cat_ids[name], "name": name, "supercategory": "shape"} for name in reversed(classes)
    ]
    payload = {
        "info": {"description": "cv-assets synth"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    _write_json(batch_dir / "annotations" / "instances.json", payload)


def write_voc(batch_dir: Path, samples: Sequence[Sample], classes: Sequence[str]) -> None:
    for s, boxes in _labelled(samples):
        root = ET.Element("annotation")
        _sub(root, "folder", "images")
        _sub(root, "filename", s.image)
        size = _sub(root, "size")
        _sub(size, "width", s.width)
        _sub(size, "height", s.height)
        _sub(size, "depth", 3)
        _sub(root, "segmented", 0)
        for b in boxes:
            obj = _sub(root, "object")
            _sub(obj, "name", classes[b[0]])
            _sub(obj, "pose", "Unspecified")
            _sub(obj, "truncated", 0)
            _sub(obj, "difficult", 0)
            bndbox = _sub(obj, "bndbox")
            for tag, v in zip(
                ("xmin", "ymin", "xmax", "ymax"), pixel_box(b, s.width, s.height), strict=True
            ):
                _sub(bndbox, tag, _num(v))
        _write_xml(batch_dir / "annotations" / f"{s.stem}.xml", root)


def write_cvat(batch_dir: Path, samples: Sequence[Sample], classes: Sequence[str]) -> None:
    root = ET.Element("annotations")
    _sub(root, "version", "1.1")
    task = _sub(_sub(root, "meta"), "task")
    _sub(task, "name", batch_dir.name)
    _sub(task, "size", len(samples))
    labels = _sub(task, "labels")
    for name in classes:
        label = _sub(labels, "label")
        _sub(label, "name", name)
        _sub(label, "type", "rectangle")
    # CVAT numbers the task's frames from 0; unlabelled frames keep their number but are absent.
    for frame, s in enumerate(samples):
        if s.boxes is None:
            continue
        image = _sub(
            root, "image", id=str(frame), name=s.image, width=str(s.width), height=str(s.height)
        )
        for b in s.boxes:
            x1, y1, x2, y2 = pixel_box(b, s.width, s.height)
            _sub(
                image,
                "box",
                label=classes[b[0]],
                source="manual",
                occluded="0",
                xtl=_num(x1),
                ytl=_num(y1),
                xbr=_num(x2),
                ybr=_num(y2),
                z_order="0",
            )
    _write_xml(batch_dir / "annotations" / "annotations.xml", root)


def write_labelstudio(batch_dir: Path, samples: Sequence[Sample], classes: Sequence[str]) -> None:
    tasks: list[dict[str, object]] = []
    n_results = 0
    for task_id, (s, boxes) in enumerate(_labelled(samples), start=1):
        results: list[dict[str, object]] = []
        for b in boxes:
            n_results += 1
            x1, y1, x2, y2 = pixel_box(b, s.width, s.height)
            value = {
                "x": x1 / s.width * 100,
                "y": y1 / s.height * 100,
                "width": (x2 - x1) / s.width * 100,
                "height": (y2 - y1) / s.height * 100,
                "rotation": 0,
                "rectanglelabels": [classes[b[0]]],
            }
            results.append(
                {
                    "id": f"r{n_results}",
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "original_width": s.width,
                    "original_height": s.height,
                    "image_rotation": 0,
                    "origin": "manual",
                    "value": value,
                }
            )
        tasks.append(
            {
                "id": task_id,
                "data": {"image": LABEL_STUDIO_UPLOAD + s.image},
                "annotations": [
                    {"id": task_id, "completed_by": 1, "was_cancelled": False, "result": results}
                ],
                "predictions": [],
            }
        )
    _write_json(batch_dir / "annotations" / "export.json", tasks, indent=1)  # as LS exports


_WRITERS: dict[str, Callable[[Path, Sequence[Sample], Sequence[str]], None]] = {
    "ultralytics": write_ultralytics,
    "coco": write_coco,
    "voc": write_voc,
    "cvat": write_cvat,
    "labelstudio": write_labelstudio,
}


def write_annotations(
    fmt: str, batch_dir: Path, samples: Sequence[Sample], classes: Sequence[str]
) -> None:
    """Write ``samples``' annotations into ``batch_dir`` in format ``fmt`` (any but ``yolo``).

    Nothing is written when no sample is labelled: a ``labels: none`` batch is images only.
    """
    if fmt not in _WRITERS:
        raise ValueError(f"no annotation writer for format {fmt!r}; one of {', '.join(_WRITERS)}")
    if not _labelled(samples):
        return
    if fmt != "ultralytics":
        (batch_dir / "annotations").mkdir(exist_ok=True)
    _WRITERS[fmt](batch_dir, samples, classes)
