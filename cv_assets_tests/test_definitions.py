import json

import dagster as dg
import pytest

from cv_assets.definitions import build_defs

pytestmark = pytest.mark.unit


def test_every_asset_has_description_group_owner_and_kind(cfg):
    graph = build_defs(cfg).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_batch", "validated_batch", "batch_features"} <= keys
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and "\n" not in node.description.strip(), key
        assert node.group_name != "default", key
        assert node.owners, key
        assert node.kinds, key


def test_kinds_say_what_each_asset_uses_and_s3_only_when_artifacts_are_in_a_bucket(cfg):
    from dataclasses import replace

    local = build_defs(cfg).resolve_asset_graph()
    kinds = {k.to_user_string(): local.get(k).kinds for k in local.get_all_asset_keys()}
    assert "pandera" in kinds["validated_batch"]
    assert "evidently" in kinds["drift_report"]
    assert {"pytorch", "mlflow"} <= kinds["yolo_model"]
    assert "onnx" in kinds["mobile_model"]
    assert not any("s3" in k for k in kinds.values())
    on_s3 = build_defs(replace(cfg, artifacts_root="s3://bucket/cv")).resolve_asset_graph()
    for key in on_s3.get_all_asset_keys():
        # Dagster shows at most three kinds per asset.
        assert on_s3.get(key).kinds == kinds[key.to_user_string()] | {"s3"}, key
        assert len(on_s3.get(key).kinds) <= 3, key


def test_landing_sensor_is_on_by_default(cfg):
    sensor = build_defs(cfg).resolve_sensor_def("landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_acceptance_check_is_blocking(cfg):
    from cv_assets.defs.ingest.assets import intake

    (spec,) = [s for s in intake.check_specs if s.name == "acceptance_rate_ok"]
    assert spec.blocking and spec.asset_key == dg.AssetKey("validated_batch")


def _from_env(monkeypatch, env: dict[str, str]):
    """The configuration a code server would read from this environment, in this process."""
    from cv_assets.lib.core.settings import PlatformConfig

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return PlatformConfig.from_env()


def test_deployment_training_tags_reach_every_training_run_source(cfg, monkeypatch):
    tags = {"cv_assets/gpu_pool": "a", "dagster-k8s/config": {"pod_spec_config": {"x": 1}}}
    env_cfg = _from_env(monkeypatch, {"CV_ASSETS_TRAINING_RUN_TAGS": json.dumps(tags)})
    defs = build_defs(env_cfg)
    automation = defs.resolve_sensor_def("retrain_automation")
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    sources = [
        defs.resolve_job_def("training_job").tags,
        defs.resolve_job_def("hpo_sweep").tags,
        dict(automation.run_tags),
    ]
    for run_tags in sources:
        assert run_tags["cv_assets/gpu_pool"] == "a"
        assert json.loads(run_tags["dagster-k8s/config"]) == {"pod_spec_config": {"x": 1}}
        assert run_tags["cv_assets/stage"] == "training"
    # Built from the configuration it is given, not from whatever the process read at import.
    plain = build_defs(cfg).resolve_job_def("training_job").tags
    assert "cv_assets/gpu_pool" not in plain and plain["cv_assets/stage"] == "training"


def _default(defs: dg.Definitions, asset: str, field: str):
    node = defs.resolve_assets_def(asset).op
    assert node.config_schema is not None
    return node.config_schema.config_type.fields[field].default_value  # type: ignore[union-attr]


def test_training_recipe_from_the_environment_is_checked_at_load(cfg, monkeypatch):
    from dataclasses import replace

    with pytest.raises(ValueError) as bad:
        build_defs(_from_env(monkeypatch, {"CV_ASSETS_TRAIN": json.dumps({"epoch": 3})}))
    assert "unknown training settings ['epoch']" in str(bad.value)
    with pytest.raises(ValueError) as wrong:
        build_defs(replace(cfg, train_defaults={"epochs": "many"}))
    assert "epochs" in str(wrong.value)
    ok = build_defs(_from_env(monkeypatch, {"CV_ASSETS_TRAIN": json.dumps({"epochs": 7})}))
    assert _default(ok, "yolo_model", "epochs") == 7
    # A setting the recipe leaves alone keeps the code's default, the measured recipe.
    assert _default(ok, "yolo_model", "imgsz") == 224
    with pytest.raises(ValueError) as gate:
        build_defs(replace(cfg, gate_defaults={"min_map": 0.5}))
    assert "unknown gate settings ['min_map']" in str(gate.value)
    strict = build_defs(replace(cfg, gate_defaults={"min_map50": 0.8}))
    assert _default(strict, "model_evaluation", "min_map50") == 0.8


def test_settings_that_shape_sensors_and_schedules_come_from_the_configuration(cfg):
    from dataclasses import replace

    tuned = replace(cfg, sensor_interval_s=7, retrain_cron="15 1 * * *", retrain_schedule_on=True)
    defs = build_defs(tuned)
    for name in ("landing_sensor", "validated_batch_sensor", "drift_sensor", "retrain_automation"):
        assert defs.resolve_sensor_def(name).minimum_interval_seconds == 7, name
    schedule = defs.resolve_schedule_def("retrain_schedule")
    assert schedule.cron_schedule == "15 1 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    default = build_defs(cfg)
    assert default.resolve_sensor_def("landing_sensor").minimum_interval_seconds == 15
    assert default.resolve_schedule_def("retrain_schedule").default_status == (
        dg.DefaultScheduleStatus.STOPPED
    )


def test_a_password_in_the_tracking_uri_is_shown_as_its_variable_and_resolves_at_run_time(
    cfg, instance, monkeypatch
):
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import serialize_value

    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.resources.storage import ArtifactStoreResource, MlflowResource

    secret = "pa55-w0rd-7f3a"
    uri = f"postgresql://mlflow:{secret}@127.0.0.1:5432/mlflow"
    endpoint = f"http://minio:{secret}@127.0.0.1:9000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CV_ASSETS_S3_ENDPOINT_URL", endpoint)
    defs = build_defs(PlatformConfig.from_env())
    # What the UI's Resources page is drawn from: the repository snapshot the code server serves.
    snap = RepositorySnap.from_def(defs.get_repository_def())
    shown = {r.name: r.configured_values for r in snap.resources or []}
    assert secret not in serialize_value(snap)
    assert getattr(shown["mlflow"]["tracking_uri"], "name", None) == "MLFLOW_TRACKING_URI"
    assert getattr(shown["artifacts"]["s3_endpoint_url"], "name", None) == (
        "CV_ASSETS_S3_ENDPOINT_URL"
    )
    # In a run, the resources hold the real values.
    seen: dict[str, str | None] = {}

    @dg.asset
    def probe(mlflow: MlflowResource, artifacts: ArtifactStoreResource) -> None:
        seen.update(tracking_uri=mlflow.tracking_uri, endpoint=artifacts.s3_endpoint_url)

    built = defs.resources or {}
    resources = {k: built[k] for k in ("mlflow", "artifacts", "io_manager")}
    assert dg.materialize([probe], resources=resources, instance=instance).success
    assert seen == {"tracking_uri": uri, "endpoint": endpoint}


def test_the_embedded_default_tracking_uri_stays_a_literal_sqlite_path(cfg):
    mlflow = (build_defs(cfg).resources or {})["mlflow"]
    assert mlflow.tracking_uri == cfg.mlflow_tracking_uri
    assert mlflow.tracking_uri.startswith("sqlite:///")


@pytest.mark.asset
def test_the_shadow_score_skips_batches_without_labelled_images(instance):
    from cv_assets.defs.training.assets import newest_batches

    for batch, accepted in (("b1", 40), ("b2", 30), ("field", 0), ("old", None)):
        meta = {} if accepted is None else {"accepted": accepted}
        instance.report_runless_asset_event(
            dg.AssetMaterialization("validated_batch", partition=batch, metadata=meta)
        )
    # Newest first; unlabelled frames have nothing to score; a record from before the count
    # existed is taken as labelled.
    assert newest_batches(instance, ["b1", "b2", "field", "old"], 2) == ["old", "b2"]
    assert newest_batches(instance, ["b1", "b2", "field"], 3) == ["b2", "b1"]
