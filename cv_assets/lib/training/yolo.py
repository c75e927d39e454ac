"""Ultralytics YOLO, fully offline: training from a model YAML, and prediction as plain arrays.

Nothing here downloads: training starts from an architecture YAML (never ``*.pt`` from a hub),
Ultralytics' own plots (which fetch fonts) and integrations (MLflow, hub sync) are off, and the
platform logs to MLflow itself. Weights are loaded only after their sha256 is checked.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from cv_assets.lib.core.store import sha256_file

log = logging.getLogger(__name__)

INTEGRATIONS = ("sync", "mlflow", "tensorboard", "wandb", "clearml", "comet", "dvc", "raytune")


def prepare_ultralytics(config_dir: str | os.PathLike[str] | None = None) -> None:
    """Offline mode and integrations off, before Ultralytics trains or predicts.

    Ultralytics' own MLflow callback would open a second, unowned run in a database of its
    choosing; the platform logs to MLflow itself.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    default = Path.home() / ".cache" / "cv_assets" / "ultralytics"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir or default))
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    from ultralytics import settings
    from ultralytics.utils import patches

    off = {k: False for k in INTEGRATIONS if settings.get(k)}
    if off:
        settings.update(off)
    # Ultralytics patches PIL.Image.open process-wide: on any unidentified image it tries to
    # pip-install pi-heif. Offline that turns "not an image" into ModuleNotFoundError in any
    # code of the process that opens images. The platform accepts JPEG and PNG only.
    patches._pil_plugins_registered = True


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class TrainParams:
    # The defaults are the measured recipe (README, "Training recipe"): what `make demo` trains
    # with, so a team that sets nothing gets the numbers the README shows.
    model_yaml: str = "yolo11n.yaml"
    epochs: int = 21
    imgsz: int = 224
    batch: int = 16
    lr0: float = 0.003
    optimizer: str = "AdamW"
    seed: int = 0
    patience: int = 100
    device: str = "auto"
    cos_lr: bool = True
    workers: int = -1  # -1: 0 on the CPU (processes only compete for its cores), 8 on a GPU
    cache: bool = True
    mosaic: float = 0.0
    scale: float = 0.25  # random rescale augmentation, +-scale; lower keeps small objects
    warmup_epochs: float = 1.0  # Ultralytics' 3 spends a seventh of a 21-epoch run warming up

    def as_params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainOutcome:
    weights: Path
    run_dir: Path
    metrics: dict[str, float]
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


class WeightsMismatch(ValueError):
    pass


class UnsafeWeights(ValueError):
    pass


# Where the classes of a YOLO checkpoint live: the network's building blocks, nothing else.
_MODEL_MODULES = (
    "torch.nn.modules",
    "ultralytics.nn.modules",
    "ultralytics.nn.tasks",
)


@cache
def _model_classes() -> tuple[type, ...]:
    """Every ``nn.Module`` class of torch and Ultralytics: what a checkpoint may name."""
    import importlib
    import inspect
    import pkgutil

    import torch

    found: set[type] = set()
    for root in _MODEL_MODULES:
        mod = importlib.import_module(root)
        names = [root]
        if hasattr(mod, "__path__"):
            names += [f"{root}.{m.name}" for m in pkgutil.iter_modules(mod.__path__)]
        for name in names:
            sub = importlib.import_module(name)
            for _, obj in inspect.getmembers(sub, inspect.isclass):
                if issubclass(obj, torch.nn.Module) and obj.__module__.startswith(_MODEL_MODULES):
                    found.add(obj)
    # A training checkpoint (last.pt, resumable) also holds the run's arguments: Ultralytics'
    # namespace of plain values, rebuilt by setting attributes, never by a call.
    from ultralytics.utils import IterableSimpleNamespace

    found.add(IterableSimpleNamespace)
    return tuple(sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}"))


def safe_checkpoint(path: Path) -> Path:
    """``path`` if unpickling it can only rebuild tensors and model classes.

    A torch checkpoint is a pickle, and Ultralytics loads it with ``weights_only=False``, so a
    crafted file runs code on load, whatever hash was recorded for it. Before Ultralytics sees a
    file, torch's restricted unpickler (``weights_only=True``) reads it with an allowlist of the
    network's own classes (torch and Ultralytics ``nn.Module`` subclasses): anything else, an
    ``os.system`` or ``builtins.eval`` reduce, is refused without being called.
    """
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(list(_model_classes())):
            torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError, ValueError) as e:
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it calls {named.group(1)}" if named else f"{type(e).__name__}"
        raise UnsafeWeights(
            f"{path}: refusing to load: not a checkpoint of model classes only ({what}); torch "
            "checkpoints are pickles, and this one would run code outside the network"
        ) from None
    return path


def verified_weights(path: Path, sha256: str) -> Path:
    """``path`` if its content still hashes to ``sha256`` and it unpickles to model classes only
    (``safe_checkpoint``): loading unknown bytes would run pickle."""
    got = sha256_file(path)
    if got != sha256:
        raise WeightsMismatch(
            f"{path}: sha256 is {got}, the artifact record says {sha256}; refusing to load it "
            "(torch checkpoints are pickles: unverified bytes could run code)"
        )
    return safe_checkpoint(path)


def ultralytics_train_args(params: TrainParams, data_yaml: Path, out_dir: Path) -> dict[str, Any]:
    """Exactly what the platform passes to ``YOLO.train``; the benchmark's direct run too."""
    device = resolve_device(params.device)
    return {
        "data": str(data_yaml),
        "project": str(out_dir),
        "name": "train",
        "exist_ok": True,
        "epochs": params.epochs,
        "imgsz": params.imgsz,
        "batch": params.batch,
        "lr0": params.lr0,
        "optimizer": params.optimizer,  # "auto" would silently ignore lr0
        "seed": params.seed,
        "patience": params.patience,
        "device": device,
        "cos_lr": params.cos_lr,
        "workers": params.workers if params.workers >= 0 else (0 if device == "cpu" else 8),
        "cache": params.cache,
        "mosaic": params.mosaic,
        "scale": params.scale,
        "warmup_epochs": params.warmup_epochs,
        "deterministic": True,
        "plots": False,  # Ultralytics' plots download a font; the platform draws its own
        "amp": device != "cpu",
        "verbose": False,
    }


def train_yolo(
    data_yaml: Path,
    out_dir: Path,
    params: TrainParams,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    warm_start: Path | None = None,
    resume: tuple[Path, Path | None] | None = None,
    on_checkpoint: Callable[[int, Path, Path | None], None] | None = None,
) -> TrainOutcome:
    """Train and return the best weights with the final validation metrics.

    ``resume`` (a verified ``last.pt`` and ``best.pt``) continues a killed training after the
    epochs it holds; ``on_checkpoint(epochs_done, last, best or None)`` sees each epoch's
    checkpoint (``best`` only when that epoch was the best so far).
    """
    prepare_ultralytics()
    from ultralytics import YOLO

    run_dir = out_dir / "train"
    args = ultralytics_train_args(params, data_yaml, out_dir)
    if resume is not None:
        model = YOLO(str(resume[0]))
        if resume[1] is not None:
            # The best epoch may be behind the kill: its weights stay the candidate.
            (run_dir / "weights").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(resume[1], run_dir / "weights" / "best.pt")
        # save_dir: the checkpoint names the killed process's folder, which is gone.
        args |= {"resume": True, "save_dir": str(run_dir)}
    else:
        model = YOLO(params.model_yaml)
        if warm_start is not None:
            model.load(str(warm_start))
        if getattr(model.model.model[-1], "one2one_cv2", None) is not None:  # type: ignore[union-attr]
            # YOLO26's end-to-end head is what ships: validation (and so best.pt and a search's
            # objective) scores it, not the one-to-many branch that only helps training. A resume
            # keeps the checkpoint's setting.
            args["nms"] = False
    history: list[dict[str, float]] = []
    started = [False]

    def _epoch_start(trainer: Any) -> None:
        started[0] = True

    def _epoch_end(trainer: Any) -> None:
        # Ultralytics fires this once more for the final validation of best.pt, with no epoch
        # started before it: that one is the final result, not an epoch.
        if not started[0]:
            return
        started[0] = False
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        row = {k: float(v) for k, v in losses.items()}
        row |= {k: float(v) for k, v in (trainer.metrics or {}).items()}
        row |= {f"lr/pg{i}": float(g["lr"]) for i, g in enumerate(trainer.optimizer.param_groups)}
        history.append(row)
        if on_epoch is not None:
            on_epoch(trainer.epoch + 1, row)  # counted from the first epoch, resumed or not

    def _saved(trainer: Any) -> None:
        if on_checkpoint is not None:
            improved = trainer.best_fitness == trainer.fitness and trainer.best.is_file()
            on_checkpoint(trainer.epoch + 1, trainer.last, trainer.best if improved else None)

    model.add_callback("on_train_epoch_start", _epoch_start)
    model.add_callback("on_fit_epoch_end", _epoch_end)
    model.add_callback("on_model_save", _saved)
    t0 = time.perf_counter()
    result: Any = model.train(**args)
    seconds = time.perf_counter() - t0
    weights = run_dir / "weights" / "best.pt"
    if not weights.is_file():
        weights = run_dir / "weights" / "last.pt"
    final = {k: float(v) for k, v in (getattr(result, "results_dict", None) or {}).items()}
    last = history[-1] if history else {}
    # Epochs behind the weights, those before a resume included.
    trainer = getattr(model, "trainer", None)
    epochs = int(trainer.epoch) + 1 if history and trainer is not None else len(history)
    return TrainOutcome(weights, run_dir, final or last, epochs, seconds, history)


def predict_yolo(
    weights: Path,
    images: Sequence[str],
    imgsz: int,
    device: str = "auto",
    conf: float = 0.001,
    iou: float = 0.7,
    batch: int = 16,
) -> list[np.ndarray]:
    """Per image, (M, 6) ``[x1, y1, x2, y2, conf, cls]`` normalised to [0, 1].

    ``conf`` is low on purpose: mAP integrates over every confidence, as Ultralytics' val does.
    A model with an end-to-end head (YOLO26) predicts with it, NMS-free, as its app files do
    (``nms=False``; Ultralytics' default would use its one-to-many head and NMS).
    """
    prepare_ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(weights))
    head = getattr(model.model, "model", [None])[-1]
    end2end = {"nms": False} if getattr(head, "one2one_cv2", None) is not None else {}
    out: list[np.ndarray] = []
    dev = resolve_device(device)
    for i in range(0, len(images), batch):
        chunk = list(images[i : i + batch])
        results: Any = model.predict(
            chunk,
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            device=dev,
            max_det=300,
            rect=False,  # the square letterbox of the exported files, so parity is like for like
            verbose=False,
            **end2end,
        )
        for r in results:
            b: Any = r.boxes
            if b is None or len(b) == 0:
                out.append(np.zeros((0, 6)))
                continue
            cols = [
                b.xyxyn.cpu().numpy(),
                b.conf.cpu().numpy()[:, None],
                b.cls.cpu().numpy()[:, None],
            ]
            out.append(np.concatenate(cols, axis=1))
    return out
