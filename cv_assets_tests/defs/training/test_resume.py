"""A killed training resumes from its newest checkpoint in the artifact store: the epochs done
before the kill are not repeated, in one MLflow run, with one weights record."""

import json
import os
import signal
import threading
import time

import dagster as dg
import pytest

from cv_assets.definitions import build_defs
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.checkpoints import Checkpoints, newest_epoch
from cv_assets.lib.training.train import train_and_record
from cv_assets.lib.training.yolo import TrainParams
from cv_assets.read_side import open_store
from cv_assets.resources.io_manager import record_key
from cv_assets_tests.support.jobs import QUIET, materialized, train
from cv_assets_tests.support.processes import training_workers

pytestmark = pytest.mark.slow


def _logs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.user_message]


def _epoch_numbers(lines: list[str]) -> list[int]:
    return [int(ln.split("/")[0].split()[1]) for ln in lines if ln.startswith("epoch ")]


def test_a_worker_killed_after_epoch_k_resumes_at_k_on_the_steps_retry(small_home, instance):
    store, me, killed = open_store(small_home), os.getpid(), []

    def kill_after_two_epochs() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            records = [k for k in store.list("training/checkpoints/") if k.endswith(".json")]
            if records and newest_epoch(store, records[0].split("/")[2]) >= 2:
                for pid in training_workers(parent=me):  # this test's worker only
                    os.kill(pid, signal.SIGKILL)
                killed.append(records[0].split("/")[2])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_two_epochs, daemon=True)
    killer.start()
    result = train(small_home, instance, {"epochs": 5})
    killer.join(timeout=5)
    assert killed, "the training finished before it could be killed"
    assert result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" in events
    lines = _logs(instance, result.run_id)
    (resumed,) = [ln for ln in lines if ln.startswith("resuming training")]
    k = int(resumed.split("after epoch ")[1].split()[0])
    assert k >= 2, resumed
    # After the resume, epochs k+1..5 only: nothing before the kill is trained again.
    assert _epoch_numbers(lines[lines.index(resumed) :]) == list(range(k + 1, 6))
    assert max(_epoch_numbers(lines[: lines.index(resumed)])) <= k
    model = materialized(result, "yolo_model")
    assert model is not None and model["resumed_after_epoch"] == k and model["epochs"] == 5
    # One MLflow run, its curves without a repeated step; one weights record; no checkpoints.
    c = tracking.client(small_home.mlflow_tracking_uri)
    runs = c.search_runs([tracking.experiment_id(c)], f"tags.cache_key = '{killed[0]}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["resumed_after_epoch"] == str(k)
    steps = [m.step for m in c.get_metric_history(runs[0].info.run_id, "train/box_loss")]
    assert steps == sorted(set(steps)) and steps[-(5 - k) :] == list(range(k + 1, 6))
    assert len(store.list("models/")) == 2  # best.pt and record.json of the one training
    assert store.list(f"training/checkpoints/{killed[0]}/") == []


class Killed(BaseException):
    """Stands for a kill inside the training (raised from its epoch callback)."""


def _stop_after(epoch: int):
    def progress(ep: int, row: dict[str, float]) -> None:
        if ep == epoch:
            raise Killed

    return progress


def test_a_corrupt_checkpoint_is_refused_by_its_hash(small_home, instance):
    job = build_defs(small_home).resolve_job_def("training_job")
    job.execute_in_process(
        instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey("training_dataset")]
    )
    store = open_store(small_home)
    dataset = json.loads(store.get_bytes(record_key("training_dataset", None)))
    c = tracking.client(small_home.mlflow_tracking_uri)
    # The experiment as the worker makes it: its artifacts in the home, not ./mlruns.
    tracking.experiment_id(c, artifact_location=small_home.mlflow_artifact_root)
    params = TrainParams(epochs=4, imgsz=64, batch=16)
    with pytest.raises(Killed):
        train_and_record(store, dataset, params, c, progress=_stop_after(3))
    (key,) = {k.split("/")[2] for k in store.list("training/checkpoints/")}
    ckpts = Checkpoints(store, key)
    assert [e["epoch"] for e in ckpts.entries()] == [3, 2]
    torn = store.local_path(f"{ckpts.prefix}/last-3.pt")
    assert torn is not None
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    said, seen = [], []
    rec = train_and_record(
        store, dataset, params, c, progress=lambda ep, _: seen.append(ep), say=said.append
    )
    assert said[0].startswith("checkpoint of epoch 3 refused:") and "sha256" in said[0]
    assert said[1].startswith(f"resuming training {key} after epoch 2 of 4")
    assert seen == [3, 4] and rec.get("resumed_after_epoch") == 2 and rec["epochs_run"] == 4
    assert c.get_run(rec["mlflow_run_id"]).info.status == "FINISHED"

    # Every checkpoint bad: training starts over from epoch 1, in a new MLflow run, and says so.
    again = TrainParams(epochs=3, imgsz=64, batch=16, seed=1)
    with pytest.raises(Killed):
        train_and_record(store, dataset, again, c, progress=_stop_after(2))
    (key2,) = {k.split("/")[2] for k in store.list("training/checkpoints/")}
    killed_run = Checkpoints(store, key2).entries()[0]["mlflow_run_id"]
    assert c.get_run(killed_run).info.status == "FAILED"
    for name in ("last-1.pt", "last-2.pt"):
        path = store.local_path(f"training/checkpoints/{key2}/{name}")
        assert path is not None
        path.write_bytes(b"\0" * 64)
    said.clear()
    seen.clear()
    rec2 = train_and_record(
        store, dataset, again, c, progress=lambda ep, _: seen.append(ep), say=said.append
    )
    assert said[-1] == "no checkpoint passed its hash: training starts over from epoch 1"
    assert seen == [1, 2, 3] and rec2.get("resumed_after_epoch") == 0
    assert rec2["mlflow_run_id"] != killed_run
