"""Run configuration of training and the gate (shown in the launchpad, with defaults)."""

from typing import TypeVar

import dagster as dg
from pydantic import Field

from cv_assets.lib.core.settings import gate_defaults_from_env, train_defaults_from_env
from cv_assets.lib.training.gate import GateSettings
from cv_assets.lib.training.yolo import TrainParams

# The team's training recipe (CV_ASSETS_TRAIN) becomes the defaults, because runs that automation
# launches carry no run config of their own; the launchpad shows these values.
_RECIPE = train_defaults_from_env()
_GATE = gate_defaults_from_env()
T = TypeVar("T")  # CV_ASSETS_GATE, for the same reason


def _d(name: str, default: T) -> T:
    return _RECIPE.get(name, default)


class SearchConfig(dg.Config):
    trials: int = Field(default=0, description="0: train once; K: try K configurations (HPO)")
    strategy: str = Field(default="grid", description="'grid' or 'random'")
    lr0: list[float] = Field(default=[0.001, 0.002, 0.004], description="search space for lr0")
    imgsz: list[int] = Field(default=[160], description="search space for imgsz")
    model_yaml: list[str] = Field(default=["yolo11n.yaml"], description="model sizes to try")


class TrainConfig(dg.Config):
    model_yaml: str = Field(
        default=_d("model_yaml", "yolo11n.yaml"),
        description="Ultralytics architecture YAML (never *.pt weights)",
    )
    epochs: int = Field(default=_d("epochs", 20), description="training epochs")
    imgsz: int = Field(default=_d("imgsz", 160), description="square input size in pixels")
    batch: int = Field(default=_d("batch", 32), description="batch size")
    lr0: float = Field(
        default=_d("lr0", 0.0015), description="initial learning rate (AdamW, cosine)"
    )
    seed: int = Field(default=_d("seed", 0), description="random seed (deterministic training)")
    patience: int = Field(
        default=_d("patience", 100), description="early-stopping patience in epochs"
    )
    device: str = Field(
        default=_d("device", "auto"), description="'auto' (CUDA when present), 'cpu' or '0'"
    )
    workers: int = Field(
        default=_d("workers", -1),
        description="data-loading processes; -1: none on the CPU, 8 on a GPU",
    )
    mosaic: float = Field(
        default=_d("mosaic", 0.0),
        description="mosaic augmentation probability; off by default, because at small imgsz "
        "it halves every object's size",
    )
    scale: float = Field(
        default=_d("scale", 0.5),
        description="random rescale augmentation (+-scale); lower keeps small objects visible",
    )
    warmup_epochs: float = Field(
        default=_d("warmup_epochs", 3.0), description="learning-rate warmup, in epochs"
    )
    warm_start: bool = Field(
        default=_d("warm_start", False),
        description="start from the champion's weights instead of from scratch",
    )
    force: bool = Field(
        default=_d("force", False),
        description="train even if these weights exist for this dataset and config",
    )
    min_train_images: int = Field(
        default=_d("min_train_images", 16), description="refuse datasets smaller than this"
    )
    min_val_images: int = Field(
        default=_d("min_val_images", 2), description="refuse datasets smaller than this"
    )
    min_test_images: int = Field(
        default=_d("min_test_images", 2), description="refuse datasets smaller than this"
    )
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


_unknown = sorted(set(_RECIPE) - set(TrainConfig.model_fields))
if _unknown:
    raise ValueError(f"CV_ASSETS_TRAIN: unknown training settings {_unknown}")
TrainConfig(**_RECIPE)  # a wrong type fails at load, naming the field, not in a run hours later


class GateConfig(dg.Config):
    min_map50: float = Field(
        default=_GATE.get("min_map50", 0.5), description="absolute floor on the test split"
    )
    epsilon: float = Field(
        default=_GATE.get("epsilon", 0.0),
        description="challenger mAP50-95 must be >= champion's minus epsilon",
    )
    device: str = Field(default=_GATE.get("device", "auto"), description="device for evaluation")
    shadow_batches: int = Field(
        default=_GATE.get("shadow_batches", 2),
        description="also score challenger and champion on the held-out images of this many "
        "newest landed batches (0: off)",
    )
    shadow_gate: bool = Field(
        default=_GATE.get("shadow_gate", False),
        description="make the shadow score a gate criterion (challenger >= champion - epsilon)",
    )
    bootstrap_resamples: int = Field(
        default=_GATE.get("bootstrap_resamples", 1000),
        description="paired bootstrap resamples of the test images for the interval of the "
        "challenger-minus-champion mAP50-95 (0: no interval)",
    )
    confidence: float = Field(
        default=_GATE.get("confidence", 0.95), description="the interval's confidence level"
    )
    require_interval: bool = Field(
        default=_GATE.get("require_interval", False),
        description="the interval's lower bound must clear -epsilon: a gain that the test "
        "split's noise could explain does not promote",
    )
    class_epsilon: float | None = Field(
        default=_GATE.get("class_epsilon"),
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


_unknown = sorted(set(_GATE) - set(GateConfig.model_fields))
if _unknown:
    raise ValueError(f"CV_ASSETS_GATE: unknown gate settings {_unknown}")
GateConfig(**_GATE)
