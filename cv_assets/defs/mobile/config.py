"""Run configuration of the mobile conversion: quantization scheme and parity budgets."""

import dagster as dg
from pydantic import Field

from cv_assets.lib.mobile.export import QuantScheme
from cv_assets.lib.mobile.release import Budgets


class QuantConfig(dg.Config):
    calibration_images: int = Field(
        default=64, description="training images that calibrate int8 activation ranges"
    )
    method: str = Field(default="minmax", description="calibration: minmax, entropy or percentile")
    per_channel: bool = Field(default=True, description="one int8 scale per output channel")
    symmetric_activations: bool = Field(default=False, description="zero point fixed at 128")
    float_head: bool = Field(
        default=True,
        description="keep the head's box/score decoding in float; False quantizes everything "
        "(scores then round to zero: mAP 0)",
    )

    def scheme(self) -> QuantScheme:
        return QuantScheme(
            self.calibration_images,
            self.method,
            self.per_channel,
            self.symmetric_activations,
            self.float_head,
        )


class MobileConfig(dg.Config):
    opset: int = Field(default=0, description="ONNX opset; 0 lets the exporter choose")
    fp32_tolerance: float = Field(
        default=0.005, description="fp32 and .ort from fp32: mAP50-95 at most this below PyTorch"
    )
    int8_tolerance: float = Field(
        default=0.01, description="int8 and .ort from int8: mAP50-95 at most this below PyTorch"
    )
    int8_max_size_ratio: float = Field(
        default=0.3, description="int8 file size as a fraction of fp32's, at most"
    )
    max_latency_ms: float = Field(
        default=100.0, description="per file: batch-1 CPU latency, 2 threads, at most"
    )
    max_file_mb: float = Field(default=25.0, description="per file: size in MiB, at most")
    platforms: bool = Field(
        default=True,
        description="also make the Android (.tflite, fp32 and int8) and iOS (.mlpackage) files, "
        "in the export environment (make export-install)",
    )
    force: bool = Field(
        default=False, description="convert again even if files exist for these weights"
    )
    quantization: QuantConfig = Field(default_factory=QuantConfig)

    def budgets(self) -> Budgets:
        return Budgets(
            self.fp32_tolerance,
            self.int8_tolerance,
            self.int8_max_size_ratio,
            self.max_latency_ms,
            self.max_file_mb,
        )
