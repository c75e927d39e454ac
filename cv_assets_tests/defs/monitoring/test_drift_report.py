"""drift_report on a real instance: a brightness-shifted batch drifts, an ordinary one does not."""

import base64
import io
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from cv_assets.cli.status import collect_status
from cv_assets.definitions import build_defs
from cv_assets.defs.automation.sensors import drift_sensor
from cv_assets.defs.monitoring.sensors import validated_batch_sensor
from cv_assets.lib.tracking import runs as tracking
from cv_assets.resources.environment import platform_resources
from cv_assets.resources.storage import PlatformSettings
from cv_assets_tests.support.jobs import QUIET, ingest, materialized, train

pytestmark = pytest.mark.slow


def test_shifted_batch_drifts_against_the_champions_training_data(small_home, instance):
    cfg = small_home
    assert train(cfg, instance).success
    (same,) = ingest(cfg, instance, batches=1, images=48, size=96, seed=50)
    (bright,) = ingest(
        cfg, instance, batches=1, images=48, size=96, seed=51, shift=["brightness=0.25"]
    )
    job = build_defs(cfg).resolve_job_def("batch_monitoring_job")
    reports = {}
    for b in (same, bright):
        r = job.execute_in_process(partition_key=b, instance=instance, run_config=QUIET)
        assert r.success
        reports[b] = materialized(r, "drift_report")
    shifted, ordinary = reports[bright], reports[same]
    assert shifted is not None and ordinary is not None
    assert shifted["drifted"] is True and "brightness" in str(shifted["drifted_columns"])
    assert float(ordinary["drift_share"]) < float(shifted["drift_share"])
    html = Path(str(shifted["report"]))
    assert html.is_file() and "brightness" in html.read_text()
    assert Path(str(shifted["report_json"])).is_file()
    # What the UI shows: the chart inline, and links to the same report in MLflow.
    chart = str(shifted["chart"])
    assert chart.startswith("![drift per column](data:image/png;base64,")
    png = base64.b64decode(chart.split(",", 1)[1].rstrip(")"))
    assert Image.open(io.BytesIO(png)).size[1] > 100
    run_id = str(shifted["mlflow_run"]).rsplit("/", 1)[1]
    assert str(shifted["report_html"]).endswith(f"/runs/{run_id}/artifactPath/drift/report.html")
    client = tracking.client(cfg.mlflow_tracking_uri)
    run = client.get_run(run_id)
    assert run.data.tags["cv_assets/batch"] == bright and run.info.status == "FINISHED"
    assert run.data.metrics["drift_share"] == pytest.approx(float(shifted["drift_share"]))
    logged = Path(client.download_artifacts(run_id, "drift/report.html"))
    assert logged.read_bytes() == html.read_bytes()
    status = collect_status(cfg)
    drift = {d["batch_id"]: d for d in status["drift"]}
    assert drift[bright]["drifted"] is True and drift[same]["report_uri"] == str(ordinary["report"])
    # The same monitoring run measured live accuracy and built the review queue of each batch.
    perf = {p["batch_id"]: p for p in status["performance"]}
    assert set(perf) == {same, bright} and perf[bright]["in_training_data"] is False
    assert {r["batch_id"] for r in status["review"]} == {same, bright}
    assert [t["trigger"] for t in status["trainings"]] == ["manual"]


def test_drift_without_a_champion_says_what_to_do_first(cfg, instance):
    (b,) = ingest(cfg, instance, batches=1, images=12, size=96)
    job = build_defs(cfg).resolve_job_def("batch_monitoring_job")
    r = job.execute_in_process(
        partition_key=b, instance=instance, run_config=QUIET, raise_on_error=False
    )
    failure = next(e for e in r.all_events if e.event_type_value == "STEP_FAILURE")
    assert "champion_model has not been materialized yet" in str(failure.event_specific_data)


def test_sensors_request_drift_then_one_retraining_per_drift_event_after_cooldown(
    small_home, instance
):
    cfg = small_home
    resources, defs = platform_resources(cfg), build_defs(cfg)

    def tick(sensor, cursor=None, cooldown_s=1800):
        res = resources | {
            "settings": PlatformSettings(
                classes=list(cfg.classes), home=str(cfg.home), retrain_cooldown_s=cooldown_s
            )
        }
        with (
            dg.partition_loading_context(dynamic_partitions_store=instance),
            dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=res, definitions=defs
            ) as ctx,
        ):
            return sensor(cfg).evaluate_tick(ctx)

    # Before any champion, a validated batch gets no drift run (and is not retried later).
    early = tick(validated_batch_sensor)
    assert not early.run_requests and early.cursor
    assert train(cfg, instance).success
    (same,) = ingest(cfg, instance, batches=1, images=48, size=96, seed=50)
    (bright,) = ingest(cfg, instance, batches=1, images=48, size=96, shift=["brightness=0.25"])
    first = tick(validated_batch_sensor, early.cursor)
    requested = first.run_requests or []
    assert [r.partition_key for r in requested] == [same, bright]  # every new batch
    req = requested[1]
    assert req.partition_key == bright and req.job_name in (None, "batch_monitoring_job")
    assert not tick(validated_batch_sensor, first.cursor).run_requests  # nothing new: no repeat
    job = build_defs(cfg).resolve_job_def("batch_monitoring_job")
    assert job.execute_in_process(partition_key=bright, instance=instance, run_config=QUIET).success
    # The training run above is recent: within the cooldown the drift is noted, not acted on.
    cooled = tick(drift_sensor)
    assert not cooled.run_requests and "cooldown" in str(cooled.skip_message)
    fired = tick(drift_sensor, cooldown_s=0)
    (retrain,) = fired.run_requests or []
    assert retrain.run_key == f"drift:{bright}:v1" and retrain.tags["cv_assets/trigger"] == "drift"
    assert "brightness" in retrain.tags["cv_assets/drift_columns"]
    assert not tick(drift_sensor, fired.cursor, cooldown_s=0).run_requests
