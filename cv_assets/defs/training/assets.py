"""Training assets: the challenger's weights, its evaluation against the champion, the champion."""

from pathlib import Path

import dagster as dg

from cv_assets.defs.automation.conditions import downstream_condition
from cv_assets.defs.common import OWNERS
from cv_assets.defs.training.champion import champion_metadata
from cv_assets.defs.training.checks import GATE_CHECK, gate_result
from cv_assets.defs.training.config import (
    GateConfig,
    TrainConfig,
    gate_config,
    mobile_budgets,
    train_config,
)
from cv_assets.defs.training.metadata import evaluation_metadata, model_metadata, test_metrics
from cv_assets.defs.training.pipes import TrainingRetryable, train_in_worker, worker_extras
from cv_assets.lib.core.files import scratch_dir
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.dataset.snapshot import DatasetTooSmall, check_trainable
from cv_assets.lib.mobile.records import MobileModel
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.promotion import (
    PromotionRefused,
    champion_data_version,
    decide_champion,
)
from cv_assets.lib.training.records import ChampionModel, ModelEvaluation, YoloModel
from cv_assets.lib.training.train import TRAIN_CODE_VERSION, evaluate_challenger
from cv_assets.resources.storage import ArtifactStoreResource, MlflowResource
from cv_assets.resources.training import TrainingLauncher


def newest_batches(instance: dg.DagsterInstance, in_dataset: list[str], k: int) -> list[str]:
    """The ``k`` most recently validated batches that the dataset holds (the newest world), of
    those with labelled images: a batch of unlabelled frames has nothing to score on."""
    held, newest = set(in_dataset), []
    recs = instance.fetch_materializations(dg.AssetKey("validated_batch"), limit=max(50, 5 * k))
    for rec in recs.records:
        part, mat = rec.partition_key, rec.asset_materialization
        accepted = mat.metadata.get("accepted") if mat else None
        labelled = accepted is None or accepted.value != 0  # an older record has no count
        if k and part in held and part not in newest and labelled:
            newest.append(part)
        if len(newest) >= k:
            break
    return newest


# Evaluation and registration are cheap to retry (MLflow or the store briefly unreachable).
RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


def training_assets(cfg: PlatformConfig) -> list[dg.AssetsDefinition]:
    """The group's assets, with the platform's training recipe and gate as config defaults."""
    train, gate = train_config(cfg.train_defaults), gate_config(cfg.gate_defaults)
    return [yolo_model_asset(train), model_evaluation_asset(gate), champion_model]


def yolo_model_asset(config_class: type[TrainConfig]) -> dg.AssetsDefinition:
    @dg.asset(
        name="yolo_model",
        group_name="training",
        kinds={"pytorch", "mlflow"},
        owners=OWNERS,
        code_version=TRAIN_CODE_VERSION,
        pool="cv_assets_training",
        automation_condition=downstream_condition(),
        config_schema=config_class.to_fields_dict(),
    )
    def yolo_model(
        context: dg.AssetExecutionContext,
        training_dataset: TrainingDataset,
        artifacts: ArtifactStoreResource,
        mlflow: MlflowResource,
        pipes: TrainingLauncher,
    ) -> dg.MaterializeResult[YoloModel]:
        """YOLO weights trained offline from a model YAML on one dataset version, in MLflow."""
        # The training runs in its own process through Dagster Pipes (defs/training/pipes.py).
        config, store = config_class(**context.op_config), artifacts.store
        try:
            check_trainable(
                training_dataset["counts"], config.minimums(), training_dataset["version"]
            )
            client = mlflow.client()
        except DatasetTooSmall as e:
            raise dg.Failure(description=str(e), allow_retries=False) from None
        except tracking.TrackingUnavailable as e:
            # Only an unreachable tracking server is worth retrying; a bug or bad data is not.
            raise dg.RetryRequested(max_retries=2, seconds_to_wait=5) from e
        warm = None
        if config.warm_start and (champ := mlflow.registry(store).champion()):
            warm = (champ.weights_uri, champ.weights_sha256)  # the worker fetches and checks it
        try:
            # A search holds each trial to the budgets this run's mobile_model will judge by.
            search = config.search.search(config.seed, mobile_budgets(context.run.run_config))
        except ValueError as e:
            raise dg.Failure(description=str(e), allow_retries=False) from None
        extras = worker_extras(
            training_dataset, config.params().as_params(), search.as_dict(),
            store=store, artifact_root=mlflow.artifact_root, force=config.force,
            warm_start=warm, code_version=_code_version(context),
            # Every MLflow run names the Dagster run, asset and partition that made it.
            run_tags=tracking.dagster_tags(context.run.run_id, "yolo_model"),
        )  # fmt: skip
        # Secrets reach the worker as its environment only (defs/training/pipes.py).
        env = {"MLFLOW_TRACKING_URI": mlflow.tracking_uri,
               "CV_ASSETS_S3_ENDPOINT_URL": artifacts.s3_endpoint_url or ""}  # fmt: skip
        try:
            rec = train_in_worker(context, pipes, store, env, extras)
        except TrainingRetryable as e:
            context.log.warning(str(e))
            raise dg.RetryRequested(max_retries=2, seconds_to_wait=e.wait_s) from e
        link = tracking.run_url(mlflow.ui_url, tracking.experiment_id(client), rec["mlflow_run_id"])
        context.log.info(f"weights {rec['weights']['sha256'][:12]} reused={rec['reused']}")
        return dg.MaterializeResult(
            value=rec,
            data_version=dg.DataVersion(rec["weights"]["sha256"]),
            metadata=model_metadata(rec, link),
        )

    return yolo_model


def _code_version(context: dg.AssetExecutionContext) -> str:
    return context.assets_def.code_versions_by_key[context.asset_key] or TRAIN_CODE_VERSION


def model_evaluation_asset(config_class: type[GateConfig]) -> dg.AssetsDefinition:
    @dg.asset(
        name="model_evaluation",
        group_name="training",
        kinds={"pytorch", "mlflow"},
        owners=OWNERS,
        code_version="1",
        check_specs=[GATE_CHECK],
        retry_policy=RETRY,
        automation_condition=downstream_condition(),
        config_schema=config_class.to_fields_dict(),
    )
    def model_evaluation(
        context: dg.AssetExecutionContext,
        yolo_model: YoloModel,
        training_dataset: TrainingDataset,
        artifacts: ArtifactStoreResource,
        mlflow: MlflowResource,
    ):
        """Challenger and current champion scored on the same frozen test split, in one run."""
        config = config_class(**context.op_config)
        store, client = artifacts.store, mlflow.client()
        champ = mlflow.registry(store).champion()
        champion = (
            (champ.version, champ.weights_uri, champ.weights_sha256, champ.imgsz) if champ else None
        )
        newest = newest_batches(
            context.instance, training_dataset["batches"], config.shadow_batches
        )
        out = evaluate_challenger(
            store, training_dataset, yolo_model, champion, config.settings(), config.device,
            shadow_batches=newest,
        )  # fmt: skip
        # The run that judged is named in the record, so a refusal in champion_model can cite it.
        record: ModelEvaluation = {**out.record, "dagster_run_id": context.run.run_id}
        run_id = yolo_model["mlflow_run_id"]
        tracking.log_metrics(client, run_id, test_metrics(out.summary, out.decision))
        with scratch_dir("plots") as tmp:
            for k, png in out.plots.items():
                (Path(tmp) / f"{k}.png").write_bytes(png)
                client.log_artifact(run_id, str(Path(tmp) / f"{k}.png"), "evaluation")
        yield dg.MaterializeResult(
            value=record,
            metadata=evaluation_metadata(out, record, champ.version if champ else None),
        )
        yield gate_result(out.decision, out.summary, out.champion)

    return model_evaluation


@dg.asset(
    group_name="training",
    kinds={"mlflow"},
    owners=OWNERS,
    code_version="2",
    retry_policy=RETRY,
    automation_condition=downstream_condition(),
)
def champion_model(
    context: dg.AssetExecutionContext,
    model_evaluation: ModelEvaluation,
    yolo_model: YoloModel,
    mobile_model: MobileModel,
    artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult[ChampionModel]:
    """The current champion: a gate-blessed challenger is registered and the alias moves to it."""
    reg = mlflow.registry(artifacts.store)
    try:
        # The gate's verdicts are re-read inside, so no way of starting this step bypasses them.
        decision = decide_champion(
            reg, artifacts.store, yolo_model, model_evaluation, mobile_model,
            who=f"gate (run {context.run.run_id[:8]})",
            require_approval=mlflow.require_approval,
            dagster_tags=tracking.dagster_tags(context.run.run_id, "champion_model"),
        )  # fmt: skip
    except PromotionRefused as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
    if decision.settled:
        context.log.warning(f"versions left half-registered, now failed: {decision.settled}")
    context.log.info(decision.action)
    record = decision.record
    return dg.MaterializeResult(
        value=record,
        data_version=dg.DataVersion(champion_data_version(record)),
        metadata=champion_metadata(reg, record, mlflow.ui_url, f"gate (run {context.run.run_id})"),
    )
