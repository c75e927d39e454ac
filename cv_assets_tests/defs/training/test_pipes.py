"""The training as an external process through Dagster Pipes: its epochs in the run log, its
record back by key and hash, its failure in its own words."""

import json

import dagster as dg
import pytest

from cv_assets.defs.training.pipes import result_key
from cv_assets.read_side import open_store
from cv_assets_tests.support.jobs import materialized, train

pytestmark = pytest.mark.slow


def _logs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.user_message]


def test_the_worker_reports_each_epoch_and_its_record(small_home, instance):
    result = train(small_home, instance, {"epochs": 2})
    assert result.success
    lines = _logs(instance, result.run_id)
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("box " in e and "val mAP50 " in e and "val mAP50-95 " in e for e in epochs)
    model = materialized(result, "yolo_model")
    assert model is not None
    # The record came back through the store, at the run's key, as the worker wrote it.
    store = open_store(small_home)
    rec = json.loads(store.get_bytes(result_key(result.run_id)))
    assert rec["weights"]["sha256"] == model["weights_sha256"]
    assert rec["mlflow_run_id"] in str(model["mlflow_run"])
    # The tracking URI is never an extra: the Pipes context the worker read does not hold it.
    assert small_home.mlflow_tracking_uri not in "\n".join(lines)


def test_a_failing_worker_fails_the_step_with_its_own_words(small_home, instance):
    # An architecture Ultralytics does not know, found only inside the worker.
    result = train(small_home, instance, {"epochs": 1, "model_yaml": "no-such-model.yaml"})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.event_specific_data)
    assert "the training process failed:" in text and "no-such-model" in text
    error = json.loads(open_store(small_home).get_bytes(result_key(result.run_id) + ".error"))
    assert error["retryable"] is False and "Traceback" in error["traceback"]
