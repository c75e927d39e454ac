"""Run configuration of training and the gate (shown in the launchpad, with defaults)."""

import dagster as dg
from pydantic import Field

from cv_assets.lib.yolo import TrainParams


class SearchConfig(dg.Config):
    trials: int = Field(default=0, description="0: train once; K: try K configurations (HPO)")
    strategy: str = Field(default="grid", description="'grid' or 'random'")
    lr0: list[float] = Field(default=[0.001, 0.002, 0.004], description="search space for lr0")
    imgsz: list[int] = Field(default=[160], description="search space for imgsz")
    model_yaml: list[str] = Field(default=["yolo11n.yaml"], description="model sizes to try")


class TrainConfig(dg.Config):
    model_yaml: str = Field(
        default="yolo11n.yaml", description="Ultralytics architecture YAML (never *.pt weights)"
    )
    epochs: int = Field(default=20, description="training epochs")
    imgsz: int = Field(default=160, description="square input size in pixels")
    batch: int = Field(default=32, description="batch size")
    lr0: float = Field(default=0.0015, description="initial learning rate (AdamW, cosine)")
    seed: int = Field(default=0, description="random seed (deterministic training)")
    patience: int = Field(default=100, description="early-stopping patience in epochs")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or '0'")
    workers: int = Field(
        default=-1, description="data-loading processes; -1: none on the CPU, 8 on a GPU"
    )
    mosaic: float = Field(
        default=0.0,
        description="mosaic augmentation probability; off by default, because at small imgsz "
        "it halves every object's size",
    )
    scale: float = Field(
        default=0.5,
        description="random rescale augmentation (+-scale); lower keeps small objects visible",
    )
    warmup_epochs: float = Field(default=3.0, description="learning-rate warmup, in epochs")
    warm_start: bool = Field(
        default=False, description="start from the champion's weights instead of from scratch"
    )
    force: bool = Field(
        default=False, description="train even if these weights exist for this dataset and config"
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
        default=0.0, description="challenger mAP50-95 must be >= champion's minus epsilon"
    )
    device: str = Field(default="auto", description="device for evaluation")
