"""Annotation benchmark (issue 17): does choosing what a person labels pay?

One human budget (64 labels) spent on one unlabelled pool two ways: the images that
``select_for_labelling`` picks (the seed model's uncertainty, spread by ``image_features``) and
64 picked at random. Each arm fine-tunes the same seed model on its labelled set plus the 64
newly labelled images (labelling = revealing the generator's true boxes), and both are scored
with the platform's metric code on one held-out test set. Repeated over seeds, each with its own
pool, random draw and training seed; the seed model and the test set are shared.

The pool is built like field traffic: scenes arrive in bursts of near-duplicate frames (a camera
that keeps shooting one view), and 45 % of scenes come from a harder condition (dusk: darker,
flatter, softer, smaller objects) that the seed model saw little of (16 of its 160 images).
The test set has one frame per scene, from the same mix.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks.bench_intake import _fresh
from benchmarks.common import QUICK, Result
from cv_assets.lib.annotation.proposals import FLOOR, image_uncertainty
from cv_assets.lib.annotation.select import image_features, select_for_labelling
from cv_assets.lib.core.metrics import evaluate_detections, read_yolo_truth
from cv_assets.lib.dataset.snapshot import data_yaml
from cv_assets.lib.synth.scenes import CLASSES, Box, Shift, render_scene
from cv_assets.lib.training.yolo import TrainParams, predict_yolo, train_yolo

SIZE = 128  # rendered side and training imgsz: the cost of a run grows with its square
BUDGET = 64  # labels a person gives per arm
HARD_SHARE = 0.45  # share of field scenes in the harder condition
NORMAL = Shift()
# Dusk: darker and flatter, a little soft, objects further away.
HARD = Shift(brightness=-0.25, contrast=0.55, blur=4.0, scale=0.7)

Frame = tuple[str, Image.Image, list[Box], bool]  # stem, image, true boxes, hard condition


def _next_frame(
    image: Image.Image, boxes: list[Box], rng: np.random.Generator, px: int = 4
) -> tuple[Image.Image, list[Box]]:
    """The same scene a moment later: moved up to ``px`` pixels, a brightness step, fresh sensor
    noise; the boxes move with it (clipped to the frame, dropped under 2 px)."""
    a = np.asarray(image, dtype=np.float32)
    s = a.shape[0]
    dx, dy = (int(v) for v in rng.integers(-px, px + 1, size=2))
    padded = np.pad(a, ((px, px), (px, px), (0, 0)), mode="edge")
    a = padded[px + dy : px + dy + s, px + dx : px + dx + s]  # content moves by (-dx, -dy)
    a = a + rng.uniform(-12.0, 12.0) + rng.normal(0.0, 4.0, a.shape)
    moved: list[Box] = []
    for cls, cx, cy, w, h in boxes:
        x0, x1 = max(cx - w / 2 - dx / s, 0.0), min(cx + w / 2 - dx / s, 1.0)
        y0, y1 = max(cy - h / 2 - dy / s, 0.0), min(cy + h / 2 - dy / s, 1.0)
        if (x1 - x0) * s >= 2 and (y1 - y0) * s >= 2:
            moved.append((cls, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), moved


def _scenes(seed: int, part: str, n: int, hard: Sequence[bool], max_burst: int) -> list[Frame]:
    """``n`` scenes, scene ``i`` in the hard condition when ``hard[i]``, each as a burst of
    1..``max_burst`` frames (1 = one frame per scene)."""
    frames: list[Frame] = []
    tag = sum(map(ord, part))
    for i in range(n):
        rng = np.random.default_rng([seed, tag, i])
        image, boxes = render_scene(rng, SIZE, HARD if hard[i] else NORMAL)
        for j in range(int(rng.integers(1, max_burst + 1))):
            frame, fboxes = (image, boxes) if j == 0 else _next_frame(image, boxes, rng)
            if fboxes:
                frames.append((f"{part}{i:04d}_{j}", frame, fboxes, hard[i]))
    return frames


def _field_mix(seed: int, n: int) -> list[bool]:
    return list(np.random.default_rng([seed, 99]).random(n) < HARD_SHARE)


def _write(root: Path, frames: list[Frame]) -> list[Path]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, image, boxes, _ in frames:
        path = root / "images" / f"{stem}.jpg"
        image.save(path, "JPEG", quality=90)
        lines = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)
        (root / "labels" / f"{stem}.txt").write_text(lines)
        paths.append(path)
    return paths


def _dataset(root: Path, train: Sequence[Path], val: Sequence[Path]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.txt").write_text("\n".join(map(str, train)) + "\n")
    for split in ("val", "test"):
        (root / f"{split}.txt").write_text("\n".join(map(str, val)) + "\n")
    (root / "data.yaml").write_text(data_yaml(CLASSES, str(root)))
    return root / "data.yaml"


def _label_of(image: Path) -> Path:
    return image.parent.parent / "labels" / f"{image.stem}.txt"


def _map50(weights: Path, images: Sequence[Path]) -> float:
    preds = predict_yolo(weights, [str(p) for p in images], SIZE, device="cpu")
    truths = [read_yolo_truth(_label_of(p).read_text()) for p in images]
    return evaluate_detections(preds, truths, len(CLASSES)).map50


def _uncertainty(weights: Path, pool: list[Frame], paths: list[Path]) -> pd.DataFrame:
    """One row per pooled image with the platform's ``uncertainty`` (``image_uncertainty`` of
    the boxes over the proposals' floor), as ``pre_annotations`` scores it."""
    preds = predict_yolo(weights, [str(p) for p in paths], SIZE, device="cpu", conf=FLOOR)
    u = [image_uncertainty([float(c) for c in p[:, 4] if c >= FLOOR]) for p in preds]
    return pd.DataFrame({"stem": [f[0] for f in pool], "uncertainty": u})


def _describe(stems: Sequence[str], hard: dict[str, bool]) -> str:
    scenes = {s.rsplit("_", 1)[0] for s in stems}
    return f"{sum(hard[s] for s in stems)} dusk, {len(scenes)} scenes"


def selection_pays() -> Result:
    """mAP50 after labelling 64 selected vs 64 random images of one pool, over seeds."""
    seeds = [1, 2] if QUICK else [1, 2, 3]
    n_seed, n_pool, n_test, n_val = (48, 20, 40, 16) if QUICK else (160, 90, 160, 32)
    seed_epochs, tune_epochs = (3, 2) if QUICK else (30, 12)
    budget = 16 if QUICK else BUDGET
    root = _fresh("selection")
    t0 = time.perf_counter()

    # The labelled set the seed model learnt from: mostly daylight, a tenth at dusk.
    labelled = _write(
        root / "labelled", _scenes(0, "l", n_seed, [i % 10 == 9 for i in range(n_seed)], 1)
    )
    test = _write(root / "test", _scenes(0, "t", n_test, _field_mix(0, n_test), 1))
    val = _write(root / "val", _scenes(0, "v", n_val, _field_mix(1, n_val), 1))
    base = TrainParams(imgsz=SIZE, batch=16, device="cpu", epochs=seed_epochs, seed=0)
    seed_model = train_yolo(_dataset(root / "seed", labelled, val), root / "seed", base).weights
    seed_map = _map50(seed_model, test)
    tune = TrainParams(
        imgsz=SIZE, batch=16, device="cpu", epochs=tune_epochs, lr0=0.001, warmup_epochs=0.0
    )

    arms: dict[str, list[float]] = {"selected": [], "random": []}
    notes: list[str] = []
    for seed in seeds:
        pool = _scenes(seed, "p", n_pool, _field_mix(seed + 10, n_pool), 8)
        paths = _write(root / f"pool{seed}", pool)
        hard = {f[0]: f[3] for f in pool}
        scored = _uncertainty(seed_model, pool, paths)
        by_stem = dict(zip([f[0] for f in pool], paths, strict=True))
        feats = np.stack([image_features(by_stem[s].read_bytes()) for s in scored["stem"]])
        chosen = {
            "selected": list(select_for_labelling(scored, feats, budget)["stem"]),
            "random": sorted(np.random.default_rng(seed).choice(scored["stem"], budget, False)),
        }
        line = [f"seed {seed} ({len(pool)} pool frames, {sum(hard.values())} dusk)"]
        for arm, stems in chosen.items():
            train = [*labelled, *(by_stem[s] for s in stems)]
            out = root / f"{arm}{seed}"
            tuned = train_yolo(
                _dataset(out, train, val), out, TrainParams(**{**tune.as_params(), "seed": seed}),
                warm_start=seed_model,
            )  # fmt: skip
            arms[arm].append(_map50(tuned.weights, test))
            line.append(f"{arm} {arms[arm][-1]:.3f} ({_describe(stems, hard)})")
        notes.append(", ".join(line))

    mean = {a: statistics.mean(v) for a, v in arms.items()}
    sd = {a: statistics.stdev(v) if len(v) > 1 else 0.0 for a, v in arms.items()}
    gains = [100 * (s - r) for s, r in zip(arms["selected"], arms["random"], strict=True)]
    gain = statistics.mean(gains)
    minutes = (time.perf_counter() - t0) / 60
    return Result(
        "selection_vs_random_map50",
        17,
        f"test mAP50 after labelling {budget} of a bursty pool chosen by select_for_labelling "
        f"(uncertainty x diversity) vs at random, seed model fine-tuned {tune_epochs} epochs at "
        f"{SIZE} px; mean gain over {len(seeds)} seeds",
        gain,
        "points",
        "> 0 in every seed",
        all(g > 0 for g in gains),
        f"selected {mean['selected']:.3f} ± {sd['selected']:.3f}, random {mean['random']:.3f} ± "
        f"{sd['random']:.3f} (mean ± sd); per seed gain {', '.join(f'{g:+.1f}' for g in gains)}; "
        f"seed model {seed_map:.3f} ({n_seed} images, {seed_epochs} epochs); test {len(test)} "
        f"images ({HARD_SHARE:.0%} dusk scenes); " + "; ".join(notes) + f"; {minutes:.1f} min",
    )


BENCHMARKS = [selection_pays]
