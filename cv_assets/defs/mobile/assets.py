"""The challenger's app files: ONNX fp32, int8 and .ort; LiteRT and Core ML; each proven."""

import dagster as dg

from cv_assets.defs.automation.conditions import downstream_condition
from cv_assets.defs.common import OWNERS
from cv_assets.defs.mobile.checks import (
    INT8_CHECK,
    PARITY_CHECK,
    PLATFORM_CHECK,
    parity_results,
    parity_table,
)
from cv_assets.defs.mobile.config import MobileConfig
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.mobile.build import build_mobile_release
from cv_assets.lib.mobile.export import EXPORT_CODE_VERSION, ExportFailed
from cv_assets.lib.mobile.platforms import export_python
from cv_assets.lib.mobile.release import failure_reason
from cv_assets.lib.training.records import ModelEvaluation, YoloModel
from cv_assets.resources.storage import ArtifactStoreResource, MlflowResource, PlatformSettings


@dg.asset(
    group_name="mobile",
    kinds={"onnx", "mlflow"},  # Dagster shows three kinds; s3 takes the third
    owners=OWNERS,
    code_version=EXPORT_CODE_VERSION,
    check_specs=[PARITY_CHECK, INT8_CHECK, PLATFORM_CHECK],
    automation_condition=downstream_condition(),
)
def mobile_model(
    context: dg.AssetExecutionContext,
    config: MobileConfig,
    yolo_model: YoloModel,
    model_evaluation: ModelEvaluation,
    training_dataset: TrainingDataset,
    artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
    settings: PlatformSettings,
):  # unannotated: with check specs, Dagster would type the output Nothing and skip the IO manager
    """The app files (ONNX fp32, int8, .ort, LiteRT, Core ML), each proven on the test split."""
    store = artifacts.store
    try:
        rec = build_mobile_release(
            store,
            yolo_model,
            model_evaluation,
            training_dataset,
            config.quantization.scheme(),
            config.budgets(),
            opset=config.opset or None,
            force=config.force,
            mlflow_client=mlflow.client(),
            export_python=export_python(settings.export_python),
            platforms=config.platforms and settings.phone_files,
        )
    except ExportFailed as e:
        # Earlier releases live under their own keys and the champion's tags still name them.
        raise dg.Failure(
            description=f"{e}. The champion's mobile files are unchanged and still available.",
            allow_retries=False,
        ) from None
    s, files = rec["summary"], rec["files"]
    context.log.info(f"app file: {s['app_format']} ({s['app_reason']}); reused={rec['reused']}")
    withheld = {f: failure_reason(r) for f, r in s["files"].items() if not r["passed"]}
    for fmt, why in withheld.items():
        context.log.warning(f"{fmt} is not shipped: {why}")
    return dg.MaterializeResult(
        value=rec,
        data_version=dg.DataVersion(rec["key"]),
        metadata={
            "app_format": s["app_format"],
            "app_reason": s["app_reason"],
            "parity": dg.MetadataValue.md(parity_table(s)),
            **{f"{fmt}_uri": dg.MetadataValue.path(f["uri"]) for fmt, f in files.items()},
            "model_card": dg.MetadataValue.md(
                store.get_bytes(store.key_of(rec["model_card"]["uri"])).decode()
            ),
            "usability_report": dg.MetadataValue.path(rec["usability_report"]["uri"]),
            "withheld": dg.MetadataValue.json(withheld),
            "opset": s["opset"],
            "reused_existing_files": rec["reused"],
        },
        check_results=parity_results(s),
    )
