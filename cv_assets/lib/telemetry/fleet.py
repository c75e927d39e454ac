"""A simulated fleet of app installs: the telemetry a day of real phones would post.

``simulate_day`` makes contract-valid events (``contract.validate_batch`` accepts every one of
them) by doing what the app does: each event renders a synthetic camera frame with
``lib/synth``, measures it with ``lib/ingest``'s ``image_stats`` (the intake's own measure), runs
the given ONNX detector on it with ``OnnxDetector`` and reports the top-K detections as fractions
of the frame. A :class:`FleetCohort` gives the installs of one device model a ``Shift`` (darker
frames, another class mix), which is what field drift must find.

Every event gets a frame of its own, drawn independently: a pool of frames reused within a day
would make the cohorts' samples repeat each other and inflate the drift test's false alarms.
What is cached is the detector session, per file and process; ``workers`` spreads the installs
over processes, each install with its own seeded generators, so the events do not depend on it.

``malformed_events`` makes events that break one contract rule each, for tests and the demo.
"""

from __future__ import annotations

import base64
import io
import math
import multiprocessing
import random
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from cv_assets.lib.core.onnx_detect import OnnxDetector
from cv_assets.lib.ingest.images import image_stats
from cv_assets.lib.ingest.labels import canonical_label_text
from cv_assets.lib.synth.scenes import Shift, render_scene


@dataclass(frozen=True)
class Device:
    """A phone model of the fleet, with the runtimes and delegates its app build uses."""

    model: str
    os: str
    os_version: str
    runtimes: tuple[tuple[str, str], ...]  # (runtime, delegate) pairs an install may use
    latency_ms: float  # median model run time on this phone
    weight: float = 1.0  # relative share of installs


DEVICES: tuple[Device, ...] = (
    Device("Pixel 8", "android", "14", (("onnxruntime", "xnnpack"), ("litert", "gpu")), 18.0),
    Device("Galaxy S23", "android", "14", (("onnxruntime", "nnapi"), ("litert", "gpu")), 15.0),
    Device("iPhone15,2", "ios", "17.5", (("coreml", "ane"),), 9.0),
    Device("Moto G54", "android", "13", (("onnxruntime", "cpu"), ("litert", "xnnpack")), 41.0),
)
APP_VERSIONS: tuple[str, ...] = ("2.14.1", "2.15.0")
TRUTH = "_truth"  # a sent frame's true boxes, carried out of the workers, never posted


@dataclass(frozen=True)
class FleetCohort:
    """The installs of ``device_model`` see frames changed by ``shift``."""

    device_model: str
    shift: Shift = field(default_factory=Shift)


@dataclass(frozen=True)
class Install:
    install_id: str
    device: Device
    app_version: str
    runtime: str
    delegate: str
    consent_image: bool
    shift: Shift


@lru_cache(maxsize=4)
def _detector(path: str) -> OnnxDetector:
    # One thread: on a small machine two intra-op threads ran a 320 px YOLO11n slower than one;
    # parallelism comes from ``workers`` instead.
    return OnnxDetector(path, threads=1)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_installs(
    n: int,
    rng: random.Random,
    cohorts: Sequence[FleetCohort] = (),
    devices: Sequence[Device] = DEVICES,
    app_versions: Sequence[str] = APP_VERSIONS,
    consent_share: float = 0.3,
) -> list[Install]:
    """``n`` installs spread over ``devices`` (by weight) and ``app_versions`` (uniformly)."""
    shifts = {c.device_model: c.shift for c in cohorts}
    out = []
    for _ in range(n):
        device = rng.choices(list(devices), weights=[d.weight for d in devices])[0]
        runtime, delegate = rng.choice(device.runtimes)
        out.append(
            Install(
                install_id=_uuid(rng),
                device=device,
                app_version=rng.choice(list(app_versions)),
                runtime=runtime,
                delegate=delegate,
                consent_image=rng.random() < consent_share,
                shift=shifts.get(device.model, Shift()),
            )
        )
    return out


def _jpeg_b64(img: Image.Image, quality: int = 80) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _detections(raw: np.ndarray) -> list[dict[str, Any]]:
    """``OnnxDetector.detect`` rows as contract detections; a box clipped to nothing is dropped."""
    out = []
    for x1, y1, x2, y2, conf, cls in raw.tolist():
        box = [round(min(max(v, 0.0), 1.0), 5) for v in (x1, y1, x2, y2)]
        if box[0] < box[2] and box[1] < box[3]:
            out.append(
                {
                    "class_id": int(cls),
                    "confidence": round(min(max(conf, 0.0), 1.0), 5),
                    "box": box,
                }
            )
    return out


@dataclass(frozen=True)
class _DayPlan:
    """What every install of a day shares (picklable, for worker processes)."""

    detector_path: str
    model_version: str
    model_sha256: str
    day: str
    seed: int
    events_per_install: int
    frame_size: int
    top_k: int
    conf: float
    low_confidence: float
    random_share: float


def _install_events(plan: _DayPlan, index: int, inst: Install) -> list[dict[str, Any]]:
    """One install's events of the day; its own generators, so any split of installs across
    processes gives the same events."""
    rng = random.Random(f"{plan.seed}:{plan.day}:{index}")
    frames = np.random.default_rng([plan.seed, date.fromisoformat(plan.day).toordinal(), index])
    detector = _detector(plan.detector_path)
    events = []
    for _ in range(plan.events_per_install):
        img, boxes = render_scene(frames, plan.frame_size, inst.shift)
        stats = image_stats(img)
        raw = detector.detect(np.asarray(img)[..., ::-1], conf=plan.conf, max_det=plan.top_k)
        dets = _detections(raw)
        best = max((d["confidence"] for d in dets), default=0.0)
        if best < plan.low_confidence:
            sampling = "low_confidence"
        elif rng.random() < plan.random_share:
            sampling = "random"
        else:
            sampling = "none"
        second = rng.randrange(86_400)
        event: dict[str, Any] = {
            "event_id": _uuid(rng),
            "time": f"{plan.day}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z",
            "install_id": inst.install_id,
            "app_version": inst.app_version,
            "os": inst.device.os,
            "os_version": inst.device.os_version,
            "device_model": inst.device.model,
            "runtime": inst.runtime,
            "delegate": inst.delegate,
            "model_version": plan.model_version,
            "model_sha256": plan.model_sha256,
            "input": {"width": img.width, "height": img.height}
            | {k: round(v, 6) for k, v in stats.items()},
            "detections": dets,
            "latency_ms": round(inst.device.latency_ms * math.exp(rng.gauss(0, 0.25)), 2),
            "sampling": sampling,
            "consent_image": inst.consent_image,
        }
        if sampling != "none" and inst.consent_image:
            event["image"] = _jpeg_b64(img)
            event[TRUTH] = canonical_label_text(boxes)  # what a careful labeller would draw
        events.append(event)
    return events


def _chunk_events(plan: _DayPlan, chunk: list[tuple[int, Install]]) -> list[dict[str, Any]]:
    return [e for i, inst in chunk for e in _install_events(plan, i, inst)]


def simulate_day(
    detector_path: str,
    model_version: str,
    model_sha256: str,
    day: str,
    *,
    installs: int = 200,
    events_per_install: int = 10,
    seed: int = 0,
    cohorts: Sequence[FleetCohort] = (),
    frame_size: int = 320,
    top_k: int = 10,
    conf: float = 0.25,
    low_confidence: float = 0.5,
    random_share: float = 0.02,
    consent_share: float = 0.3,
    workers: int = 1,
    truth: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One day of events from ``installs`` installs, each posting ``events_per_install``.

    Args:
        detector_path: the ONNX (or ``.ort``) file that runs on the phones.
        model_version, model_sha256: what the events say ran (a registered version).
        day: ``YYYY-MM-DD``; event times fall within it (UTC).
        seed: with ``day``, fixes every install, frame and event id.
        cohorts: device models whose frames are shifted.
        frame_size: the camera frame's side in pixels (frames are square).
        top_k, conf: detections reported (the app's ``max_det`` and score threshold).
        low_confidence: events whose best detection scores under this (or that have none) are
            sampled as ``low_confidence``.
        random_share: the share of the other events sampled as ``random``.
        consent_share: the share of installs whose user allows a frame to be sent; only their
            sampled events carry a JPEG.
        workers: processes that render and detect (each runs the detector on one thread); the
            events are the same for any number.
        truth: if given, filled with each sent frame's true boxes (event id -> YOLO label text):
            the labels a person would give it, for a simulated audit.

    Returns the events sorted by time.
    """
    fleet = make_installs(
        installs, random.Random(f"{seed}:{day}"), cohorts, consent_share=consent_share
    )
    plan = _DayPlan(
        str(detector_path), model_version, model_sha256, day, seed, events_per_install,
        frame_size, top_k, conf, low_confidence, random_share,
    )  # fmt: skip
    indexed = list(enumerate(fleet))
    if workers <= 1:
        events = _chunk_events(plan, indexed)
    else:
        chunks = [indexed[w::workers] for w in range(workers)]
        # spawn: a forked child would inherit onnxruntime's threads in an unknown state.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = pool.map(_chunk_events, [plan] * workers, chunks)
            events = [e for part in parts for e in part]
    for e in events:
        boxes = e.pop(TRUTH, None)
        if boxes is not None and truth is not None:
            truth[e["event_id"]] = boxes
    events.sort(key=lambda e: (e["time"], e["event_id"]))
    return events


# Each fault, and the words of the rejection ``validate_batch`` gives an event that has it.
FAULTS: dict[str, str] = {
    "nan_box": "has a value outside [0, 1]",
    "unknown_model": "unknown model version",
    "image_without_consent": "an image is only allowed when consent_image is true",
    "missing_field": "device_model: missing (required, string)",
}
UNKNOWN_MODEL = "unregistered-0"


def malformed_events(
    n: int, seed: int = 0, model_version: str = "1", model_sha256: str = "0" * 64
) -> list[dict[str, Any]]:
    """``n`` events that each break one rule, cycling through :data:`FAULTS`.

    The fault is in the event id, ``bad-<fault>-<i>``, so a rejection can be traced back to it;
    everything else is valid for ``model_version``.
    """
    rng = random.Random(seed)
    names = list(FAULTS)
    out = []
    for i in range(n):
        fault = names[i % len(names)]
        event: dict[str, Any] = {
            "event_id": f"bad-{fault}-{i:04d}",
            "time": f"2026-12-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
            "install_id": _uuid(rng),
            "app_version": "2.14.1",
            "os": "android",
            "os_version": "14",
            "device_model": "Pixel 8",
            "runtime": "onnxruntime",
            "delegate": "xnnpack",
            "model_version": model_version,
            "model_sha256": model_sha256,
            "input": {
                "width": 320,
                "height": 320,
                "brightness": 0.45,
                "contrast": 0.2,
                "sharpness": 0.01,
            },
            "detections": [{"class_id": 0, "confidence": 0.9, "box": [0.1, 0.1, 0.4, 0.5]}],
            "latency_ms": 17.0,
            "sampling": "none",
            "consent_image": False,
        }
        if fault == "nan_box":
            event["detections"][0]["box"][2] = float("nan")
        elif fault == "unknown_model":
            event["model_version"] = UNKNOWN_MODEL
        elif fault == "image_without_consent":
            event["sampling"] = "random"
            event["image"] = _jpeg_b64(Image.new("RGB", (32, 32), (90, 90, 90)))
        else:
            del event["device_model"]
        out.append(event)
    return out
