"""Training assets: the challenger's weights, its evaluation against the champion, the champion."""

from pathlib import Path
from typing import Any

import dagster as dg

from cv_assets.defs.automation.conditions import downstream_condition
from cv_assets.defs.common import OWNERS
from cv_assets.defs.training.champion import (
    champion_data_version,
    champion_metadata,
    champion_record,
)
from cv_assets.defs.training.checks import GATE_CHECK, gate_result
from cv_assets.defs.training.config import GateConfig, TrainConfig
from cv_assets.defs.training.metadata import evaluation_metadata, test_metrics
from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.report import md_table
from cv_assets.lib.dataset.snapshot import DatasetTooSmall, check_trainable
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.promotion import promotion_refusal, register_candidate
from cv_assets.lib.training.train import (
    TRAIN_CODE_VERSION,
    evaluate_challenger,
    search_space,
    train_and_record,
)
from cv_assets.resources.storage import ArtifactStoreResource, MlflowResource


def newest_batches(instance: dg.DagsterInstance, in_dataset: list[str], k: int) -> list[str]:
    """The ``k`` most recently validated batches that the dataset holds (the newest world)."""
    held, newest = set(in_dataset), []
    recs = instance.fetch_materializations(dg.AssetKey("validated_batch"), limit=max(50, 5 * k))
    for rec in recs.records:
        part = rec.partition_key
        if k and part in held and part not in newest:
            newest.append(part)
        if len(newest) >= k:
            break
    return newest


# Evaluation and registration are cheap to retry (MLflow or the store briefly unreachable).
RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


@dg.asset(
    group_name="training",
    kinds={"pytorch", "mlflow"},
    owners=OWNERS,
    code_version=TRAIN_CODE_VERSION,
    pool="cv_assets_training",
    automation_condition=downstream_condition(),
)
def yolo_model(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    training_dataset: dict[str, Any],
    artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """YOLO weights trained offline from a model YAML on one dataset version, tracked in MLflow."""
    store = artifacts.store
    try:
        check_trainable(training_dataset["counts"], config.minimums(), training_dataset["version"])
        client = mlflow.client()
    except DatasetTooSmall as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
    except tracking.TrackingUnavailable as e:
        # Only an unreachable tracking server is worth retrying; a bug or bad data is not.
        raise dg.RetryRequested(max_retries=2, seconds_to_wait=5) from e
    # The champion's weights must stay on disk until training has loaded them (on S3 they are a
    # download into this scratch folder).
    with scratch_dir("warm") as tmp:
        warm = None
        if config.warm_start and (champ := mlflow.registry(store).champion()):
            warm = (local_file(store, champ.weights_uri, Path(tmp)), champ.weights_sha256)
        try:
            rec = _train(context, config, training_dataset, store, client, warm)
        except tracking.TrackingUnavailable as e:
            raise dg.RetryRequested(max_retries=2, seconds_to_wait=5) from e
    link = tracking.run_url(mlflow.ui_url, tracking.experiment_id(client), rec["mlflow_run_id"])
    context.log.info(f"weights {rec['weights']['sha256'][:12]} reused={rec['reused']}")
    return dg.MaterializeResult(
        value=rec,
        data_version=dg.DataVersion(rec["weights"]["sha256"]),
        metadata={
            "weights": dg.MetadataValue.path(rec["weights"]["uri"]),
            "weights_sha256": rec["weights"]["sha256"],
            "dataset_version": rec["dataset_version"],
            "val_map50": round(rec["val_map50"], 4),
            "val_map50_95": round(rec["val_map50_95"], 4),
            "epochs": rec["epochs_run"],
            "train_seconds": rec["train_seconds"],
            "reused_existing_weights": rec["reused"],
            "mlflow_run_id": rec["mlflow_run_id"],
            "mlflow_run": dg.MetadataValue.url(link),
            **({"search": dg.MetadataValue.md(rec["search_md"])} if "search_md" in rec else {}),
        },
    )


def _train(context, config: TrainConfig, dataset, store, client, warm) -> dict[str, Any]:
    """One training, or K trainings as MLflow child runs keeping the best by validation mAP."""
    code = context.assets_def.code_versions_by_key[context.asset_key] or TRAIN_CODE_VERSION
    # Every MLflow run names the Dagster run, asset and partition that made it.
    tags = tracking.dagster_tags(context.run.run_id, "yolo_model")
    s = config.search
    if s.trials <= 0:
        return train_and_record(
            store,
            dataset,
            config.params(),
            client,
            force=config.force,
            warm_start=warm,
            code_version=code,
            run_tags=tags,
        )
    space = {"lr0": s.lr0, "imgsz": s.imgsz, "model_yaml": s.model_yaml}
    parent = tracking.start_run(client, "hpo_sweep", {"dataset_version": dataset["version"]} | tags)
    trials = []
    for i, override in enumerate(search_space(s.strategy, s.trials, space, config.seed)):
        context.log.info(f"trial {i + 1}/{s.trials}: {override}")
        trials.append(
            train_and_record(
                store,
                dataset,
                config.params(**override),
                client,
                force=config.force,
                warm_start=warm,
                code_version=code,
                parent_run=parent,
                run_name=f"trial-{i + 1}",
                run_tags=tags,
            )
        )
    client.set_terminated(parent, "FINISHED")
    best = max(trials, key=lambda r: (r["val_map50_95"], r["val_map50"]))
    rows = [
        (
            t["params"]["model_yaml"],
            t["params"]["imgsz"],
            t["params"]["lr0"],
            round(t["val_map50"], 3),
            round(t["val_map50_95"], 3),
            "best" if t is best else "",
        )
        for t in trials
    ]
    table = md_table(rows, ["model", "imgsz", "lr0", "val mAP50", "val mAP50-95", ""])
    return best | {"search_md": table, "search_parent_run": parent}


@dg.asset(
    group_name="training",
    kinds={"pytorch", "mlflow"},
    owners=OWNERS,
    code_version="1",
    check_specs=[GATE_CHECK],
    retry_policy=RETRY,
    automation_condition=downstream_condition(),
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: GateConfig,
    yolo_model: dict[str, Any],
    training_dataset: dict[str, Any],
    artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
):
    """Challenger and current champion scored on the same frozen test split, in the same run."""
    store, client = artifacts.store, mlflow.client()
    champ = mlflow.registry(store).champion()
    champion = (
        (champ.version, champ.weights_uri, champ.weights_sha256, champ.imgsz) if champ else None
    )
    out = evaluate_challenger(
        store,
        training_dataset,
        yolo_model,
        champion,
        config.settings(),
        config.device,
        shadow_batches=newest_batches(
            context.instance, training_dataset["batches"], config.shadow_batches
        ),
    )
    # The run that judged is named in the record, so a refusal in champion_model can cite it.
    record: dict[str, Any] = {**out.record, "dagster_run_id": context.run.run_id}
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
    model_evaluation: dict[str, Any],
    yolo_model: dict[str, Any],
    mobile_model: dict[str, Any],
    artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """The current champion: a gate-blessed challenger is registered and the alias moves to it."""
    # The gate's verdicts are re-read here, so no way of starting this step can bypass them.
    if refusal := promotion_refusal(model_evaluation, yolo_model, mobile_model):
        raise dg.Failure(description=refusal, allow_retries=False)
    reg = mlflow.registry(artifacts.store)
    tags = tracking.dagster_tags(context.run.run_id, "champion_model")
    mv = register_candidate(reg, artifacts.store, yolo_model, model_evaluation, mobile_model, tags)
    who = f"gate (run {context.run.run_id[:8]})"
    # An earlier registration that died before its decision is closed, visibly (status, history).
    if settled := reg.settle_interrupted(mv.version, who):
        context.log.warning(f"versions left half-registered, now failed: {settled}")
    champ = reg.champion()
    why = "; ".join(model_evaluation["gate"]["reasons"])
    pending = None
    if champ and champ.version == mv.version:
        reg.publish_champion()
        action = "unchanged: already the champion"
    elif mlflow.require_approval:
        reg.hold_for_approval(mv.version, "gate", why)
        pending = mv.version
        action = f"pending_approval: run `cv-assets promote {mv.version}` to promote it"
    else:
        reg.promote(mv.version, who, why)
        action = f"promoted: v{mv.version} is the champion"
    context.log.info(action)
    record = champion_record(reg, action, pending)
    return dg.MaterializeResult(
        value=record,
        data_version=dg.DataVersion(champion_data_version(record)),
        metadata=champion_metadata(reg, record, mlflow.ui_url, f"gate (run {context.run.run_id})"),
    )
