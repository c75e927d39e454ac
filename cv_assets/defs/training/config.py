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

from cv_assets.lib.training.gate import GateSettings
from cv_assets.lib.training.yolo import TrainParams

_P = TrainParams()
C = TypeVar("C", bound=dg.Config)


class SearchConfig(dg.Config):
    trials: int = Field(default=0, description="0: train once; K: try K configurations (HPO)")
    strategy: str = Field(default="grid", description="'grid' or 'random'")
    lr0: list[float] = Field(default=[0.001, 0.002, 0.004], description="search space for lr0")
    imgsz: list[int] = Field(default=[_P.imgsz], description="search space for imgsz")
    model_yaml: list[str] = Field(default=[_P.model_yaml], description="model sizes to try")


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
