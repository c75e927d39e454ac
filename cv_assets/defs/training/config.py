"""Run configuration of training and the gate (shown in the launchpad, with defaults).

The classes here hold the code's defaults: for training, the measured recipe (``TrainParams``).
A team's recipe (``CV_ASSETS_TRAIN``, ``CV_ASSETS_GATE``) reaches runs through ``train_config``
and ``gate_config``, which ``build_defs(cfg)`` calls with the platform's configuration: runs that
automation launches carry no run config of their own, so the recipe must be the schema's defaults,
and the launchpad shows them.
"""

from collections.abc import Mapping
from typing import Any, TypeVar

import dagster as dg
from pydantic import Field, create_model

from cv_assets.defs.mobile.config import MobileConfig
from cv_assets.lib.mobile.release import Budgets
from cv_assets.lib.training.gate import GateSettings
from cv_assets.lib.training.search import Search
from cv_assets.lib.training.yolo import TrainParams

_P = TrainParams()
C = TypeVar("C", bound=dg.Config)


class SearchConfig(dg.Config):
    """The hyperparameter search (``hpo_sweep`` turns it on): an Optuna study of ``trials``
    trainings whose best feasible one, by validation mAP50-95, is the challenger."""

    trials: int = Field(default=0, description="0: train once; K: run K trials (an Optuna study)")
    strategy: str = Field(
        default="tpe",
        description="'tpe' (Optuna's TPE, seeded by `seed`), 'random', or 'grid' (the first K "
        "points of the grid of the listed values)",
    )
    pruner: str = Field(
        default="median",
        description="stop weak trials early on their per-epoch val mAP50-95: 'median', "
        "'hyperband' or 'none'",
    )
    lr0: list[float] = Field(
        default=[0.001, 0.002, 0.004],
        description="tpe and random: lr0 is drawn log-uniformly between the smallest and the "
        "largest of these; grid: these values; empty: the training's lr0",
    )
    imgsz: list[int] = Field(
        default=[], description="input sizes to choose from; empty: the training's imgsz"
    )
    model_yaml: list[str] = Field(
        default=[], description="architecture YAMLs to choose from; empty: the training's"
    )
    constraints: bool = Field(
        default=True,
        description="export each trial to ONNX and hold it to mobile_model's max_latency_ms and "
        "max_file_mb: a trial over budget is recorded and never the challenger",
    )
    timeout_minutes: float = Field(
        default=0.0, description="start no trial after this many minutes (0: no limit)"
    )

    def search(self, seed: int, budgets: Budgets | None) -> Search:
        """The worker's ``Search``; raises ``ValueError`` naming a wrong setting."""
        b = budgets if self.constraints else None
        lists = {"lr0": self.lr0, "imgsz": self.imgsz, "model_yaml": self.model_yaml}
        return Search(
            trials=self.trials,
            strategy=self.strategy,
            space={k: v for k, v in lists.items() if v},
            seed=seed,
            pruner=self.pruner,
            timeout_s=self.timeout_minutes * 60,
            max_latency_ms=b.max_latency_ms if b else None,
            max_file_mb=b.max_file_mb if b else None,
        )


def mobile_budgets(run_config: Mapping[str, Any]) -> Budgets:
    """The latency and size budgets ``mobile_model`` judges by in this run: its run config's
    (``ops.mobile_model.config``), else ``MobileConfig``'s defaults. A search holds its trials to
    these, so the challenger it picks is one the app files can be made of."""
    ops = run_config.get("ops") or {}
    return MobileConfig(**((ops.get("mobile_model") or {}).get("config") or {})).budgets()


class TrainConfig(dg.Config):
    model_yaml: str = Field(
        default=_P.model_yaml,
        description="Ultralytics architecture YAML (never *.pt weights)",
    )
    epochs: int = Field(default=_P.epochs, description="training epochs")
    imgsz: int = Field(default=_P.imgsz, description="square input size in pixels")
    batch: int = Field(default=_P.batch, description="batch size")
    lr0: float = Field(default=_P.lr0, description="initial learning rate (AdamW, cosine)")
    seed: int = Field(default=_P.seed, description="random seed (deterministic training)")
    patience: int = Field(default=_P.patience, description="early-stopping patience in epochs")
    device: str = Field(default=_P.device, description="'auto' (CUDA when present), 'cpu' or '0'")
    workers: int = Field(
        default=_P.workers,
        description="data-loading processes; -1: none on the CPU, 8 on a GPU",
    )
    mosaic: float = Field(
        default=_P.mosaic,
        description="mosaic augmentation probability; off by default, because at small imgsz "
        "it halves every object's size",
    )
    scale: float = Field(
        default=_P.scale,
        description="random rescale augmentation (+-scale); lower keeps small objects visible",
    )
    warmup_epochs: float = Field(
        default=_P.warmup_epochs, description="learning-rate warmup, in epochs"
    )
    warm_start: bool = Field(
        default=False,
        description="start from the champion's weights instead of from scratch",
    )
    force: bool = Field(
        default=False,
        description="train even if these weights exist for this dataset and config",
    )
    min_train_images: int = Field(default=16, description="refuse datasets smaller than this")
    min_val_images: int = Field(default=2, description="refuse datasets smaller than this")
    min_test_images: int = Field(default=2, description="refuse datasets smaller than this")
    search: SearchConfig = Field(
        default_factory=SearchConfig, description="hyperparameter search (hpo_sweep sets trials)"
    )

    def params(self, **override: object) -> TrainParams:
        base = {
            k: getattr(self, k)
            for k in (
                "model_yaml",
                "epochs",
                "imgsz",
                "batch",
                "lr0",
                "seed",
                "patience",
                "device",
                "workers",
                "mosaic",
                "scale",
                "warmup_epochs",
            )
        }
        return TrainParams(**(base | override))  # type: ignore[arg-type]

    def minimums(self) -> dict[str, int]:
        return {
            "train": self.min_train_images,
            "val": self.min_val_images,
            "test": self.min_test_images,
        }


class GateConfig(dg.Config):
    min_map50: float = Field(default=0.5, description="absolute floor on the test split")
    epsilon: float = Field(
        default=0.0,
        description="challenger mAP50-95 must be >= champion's minus epsilon",
    )
    device: str = Field(default="auto", description="device for evaluation")
    shadow_batches: int = Field(
        default=2,
        description="also score challenger and champion on the held-out images of this many "
        "newest landed batches (0: off)",
    )
    shadow_gate: bool = Field(
        default=False,
        description="make the shadow score a gate criterion (challenger >= champion - epsilon)",
    )
    bootstrap_resamples: int = Field(
        default=1000,
        description="paired bootstrap resamples of the test images for the interval of the "
        "challenger-minus-champion mAP50-95 (0: no interval)",
    )
    confidence: float = Field(default=0.95, description="the interval's confidence level")
    require_interval: bool = Field(
        default=False,
        description="the interval's lower bound must clear -epsilon: a gain that the test "
        "split's noise could explain does not promote",
    )
    class_epsilon: float | None = Field(
        default=None,
        description="no class's AP50-95 may fall more than this below the champion's (unset: "
        "each class's change is shown, not judged)",
    )

    def settings(self) -> GateSettings:
        return GateSettings(
            min_map50=self.min_map50,
            epsilon=self.epsilon,
            bootstrap_resamples=self.bootstrap_resamples,
            confidence=self.confidence,
            require_interval=self.require_interval,
            class_epsilon=self.class_epsilon,
            shadow_gate=self.shadow_gate,
        )


def with_defaults(base: type[C], defaults: Mapping[str, Any], var: str, what: str) -> type[C]:
    """``base`` with some fields' defaults replaced (their descriptions kept). An unknown name or
    a wrong type fails when the definitions load, naming the variable and the field, not in a
    run hours later."""
    unknown = sorted(set(defaults) - set(base.model_fields))
    if unknown:
        known = ", ".join(sorted(base.model_fields))
        raise ValueError(f"{var}: unknown {what} settings {unknown} (known: {known})")
    base(**defaults)  # validates each value against its field's type
    fields: dict[str, Any] = {
        name: (
            base.model_fields[name].annotation,
            Field(default=value, description=base.model_fields[name].description),
        )
        for name, value in defaults.items()
    }
    return create_model(base.__name__, __base__=base, **fields)


def train_config(recipe: Mapping[str, Any]) -> type[TrainConfig]:
    return with_defaults(TrainConfig, recipe, "CV_ASSETS_TRAIN", "training")


def gate_config(defaults: Mapping[str, Any]) -> type[GateConfig]:
    return with_defaults(GateConfig, defaults, "CV_ASSETS_GATE", "gate")
