"""A crash during intake: the killed runs are failed by the worker health check and retried.

``dagster dev`` is killed outright (SIGKILL to its process group: webserver, daemon, code server
and the run workers it started) while intakes run. Nothing is left to end the runs it was
executing, so they stay STARTED and hold the only ``cv_assets_intake`` slot. After a restart, the
monitoring daemon asks ``LocalRunLauncher`` whether their workers still exist, fails them, frees
their slots, and the run retry daemon re-executes them: every batch is validated exactly once.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType, EngineEventData
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.synth.batches import BatchSummary
from cv_assets.resources.run_launcher import LAUNCHED_ON_TAG, STARTED_PROCESS, worker_status
from cv_assets_tests.support.landing import land
from cv_assets_tests.support.processes import Daemon

ENV = {
    "CV_ASSETS_SENSOR_INTERVAL": "2",
    # Intake only: the batches must not cross the volume trigger of a training.
    "CV_ASSETS_RETRAIN_MIN_IMAGES": "100000",
}
IMAGES, SIZE = 48, 256
# From the kill: the restart (~15 s on two cores), a health check every 10 s, slots freed 15 s
# after a run ends, then the retries and the waiting intakes, one at a time (measured: failed
# after 8-17 s, all validated after 59-71 s, in five runs).
FAILED_WITHIN_S = 120
VALIDATED_WITHIN_S = 180
STARTING, STARTED = dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED
STEP_START, MATERIALIZATION = DagsterEventType.STEP_START, DagsterEventType.ASSET_MATERIALIZATION
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


class Dev(Daemon):
    """``dagster dev`` with intake-only settings (``ENV``), whose ``stop`` also reaps its group."""

    def stop(self) -> None:
        """SIGINT, then SIGKILL to what is left of its process group (a code server whose run
        is still executing outlives ``dagster dev``)."""
        group = self.proc.pid if self.proc else None
        self.kill(signal.SIGINT)
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def _intakes(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(job_name="intake_job")))


def _validated(instance: dg.DagsterInstance) -> Counter[str]:
    recs = instance.fetch_materializations(dg.AssetKey("validated_batch"), limit=1000).records
    return Counter(r.partition_key for r in recs if r.partition_key)


def _inside_intake_step(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Intake runs inside their intake step (holding the only cv_assets_intake slot), before
    validated_batch is materialized; none while a run is between launch and start (a worker
    killed before it starts its run is failed by start_timeout_seconds, not the health check)."""
    runs = instance.get_runs(dg.RunsFilter(statuses=[STARTING, STARTED]))
    if any(r.status == STARTING for r in runs):
        return []
    inside = []
    for run in (r for r in runs if r.job_name == "intake_job"):
        events = instance.all_logs(run.run_id, of_type={STEP_START, MATERIALIZATION})
        started = any(e.step_key == "intake" for e in events if e.is_dagster_event)
        validated = any(
            e.asset_materialization
            and e.asset_materialization.asset_key.path == ["validated_batch"]
            for e in events
        )
        if started and not validated:
            inside.append(run)
    return inside


def _kill_inside_an_intake_step(
    cfg: PlatformConfig, instance: dg.DagsterInstance, dev: Dev, landed: int
) -> list[BatchSummary]:
    """SIGKILL ``dagster dev`` and its process group while an intake is inside its step.

    The step lasts well under a second and the next run is usually STARTING meanwhile, so a
    window may pass uncaught: when every landed batch is validated, one more lands (up to three);
    alone in the queue, its run is never overlapped by a STARTING one. Returns those batches.
    """
    more: list[BatchSummary] = []
    deadline, checked = time.monotonic() + 300, 0.0
    while not _inside_intake_step(instance):
        assert time.monotonic() < deadline, f"no intake was caught in its step\n{dev.tail()}"
        assert dev.proc is not None and dev.proc.poll() is None, dev.tail()
        if time.monotonic() - checked > 1:
            checked = time.monotonic()
            if len(_validated(instance)) == landed + len(more) and len(more) < 3:
                more += land(cfg, batches=1, seed=11 + len(more), images=IMAGES, size=SIZE)
        time.sleep(0.05)
    dev.kill()  # the whole process group: webserver, daemon, code server, run workers
    return more


def _intake_slot_holders(instance: dg.DagsterInstance) -> set[str]:
    info = instance.event_log_storage.get_concurrency_info("cv_assets_intake")
    return {slot.run_id for slot in info.claimed_slots}


def _finished(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> bool:
    return all(r.is_finished for r in instance.get_runs(dg.RunsFilter([r.run_id for r in runs])))


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    (event,) = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    return event.message


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(480)
def test_sigkilled_intakes_are_failed_retried_and_every_batch_validated_once(cfg, tmp_path):
    landed = land(cfg, batches=4, seed=3, images=IMAGES, size=SIZE)
    dev = Dev(tmp_path / "dagster-dev.log", ENV)
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    try:
        dev.start()
        landed += _kill_inside_an_intake_step(cfg, instance, dev, len(landed))
        killed_at = time.monotonic()
        victims = [r for r in _intakes(instance) if r.status == STARTED]
        # Killed mid-step, holding the only slot, with nothing of validated_batch written yet.
        assert victims and {r.run_id for r in victims} == _intake_slot_holders(instance)
        assert _inside_intake_step(instance) == victims, "the step ended before the kill"
        # Two more batches land while it is down: they wait for the slot too.
        landed += land(cfg, batches=2, seed=5, images=IMAGES, size=SIZE)
        batch_ids = sorted(b.batch_id for b in landed)

        dev.start()
        dev.wait(
            "the killed intakes to be failed", lambda: _finished(instance, victims), FAILED_WITHIN_S
        )
        failed_after = time.monotonic() - killed_at
        dev.wait(
            "every batch validated and no run in progress",
            lambda: (
                set(_validated(instance)) == set(batch_ids)
                and not instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS))
            ),
            killed_at + VALIDATED_WITHIN_S - time.monotonic(),
        )
        validated_after = time.monotonic() - killed_at
        print(f"killed runs failed {failed_after:.0f} s, all validated {validated_after:.0f} s")

        for victim in victims:
            run = instance.get_run_by_id(victim.run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
            msg = _failure_message(instance, victim.run_id)
            assert "Detected run worker status FAILED" in msg, msg
            assert "no longer exists" in msg, msg
            # The run retry daemon re-executed it, and the retry succeeded.
            retry = instance.get_run_by_id(run.tags["dagster/auto_retry_run_id"])
            assert retry is not None and retry.status == dg.DagsterRunStatus.SUCCESS
            assert retry.tags["dagster/partition"] == victim.tags["dagster/partition"]
        time.sleep(6)  # three more sensor ticks: nothing is taken in again
        assert _validated(instance) == dict.fromkeys(batch_ids, 1)
        assert not instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS))
        assert not _intake_slot_holders(instance)
        succeeded = [r for r in _intakes(instance) if r.status == dg.DagsterRunStatus.SUCCESS]
        assert sorted(r.tags["dagster/partition"] for r in succeeded) == batch_ids
    finally:
        dev.stop()
        instance.dispose()


@pytest.mark.unit
def test_worker_status_tells_a_live_worker_from_a_killed_or_replaced_one():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        alive = worker_status(proc.pid, reported_at=time.time())
        assert alive.status == WorkerStatus.RUNNING, alive
        # The same pid, reported before this process started, belongs to another process now.
        reused = worker_status(proc.pid, reported_at=time.time() - 3600)
        assert reused.status == WorkerStatus.FAILED, reused
        assert "is now a process started" in (reused.msg or ""), reused.msg
        # Killed, not yet reaped by its parent (or by an init that does not reap): a zombie.
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        zombie = worker_status(proc.pid, reported_at=time.time())
        assert zombie.status == WorkerStatus.FAILED, zombie
        assert zombie.msg == f"run worker process {proc.pid} has exited"
    finally:
        proc.kill()
        proc.wait()
    dead = worker_status(proc.pid, reported_at=time.time())
    assert dead.status == WorkerStatus.FAILED, dead
    assert dead.msg == f"run worker process {proc.pid} no longer exists"


@pytest.mark.asset
def test_only_a_dead_worker_of_this_machine_fails_its_run(instance):
    """The health check only reads pids of this machine: a run started through a remote code
    server (compose, ECS) or launched from another host is left to dagster/max_runtime."""
    launcher = instance.run_launcher
    assert launcher.supports_check_run_worker_health
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer exists
    here = {LAUNCHED_ON_TAG: socket.gethostname()}
    cases = {
        "local": here | {GRPC_INFO_TAG: '{"host": "localhost", "port": 4266}'},
        "remote code server": here | {GRPC_INFO_TAG: '{"host": "code-server", "port": 4000}'},
        "another launcher host": {
            LAUNCHED_ON_TAG: "elsewhere",
            GRPC_INFO_TAG: '{"host": "localhost", "port": 4266}',
        },
    }
    status = {}
    pids = dict.fromkeys(cases, proc.pid) | {"local, alive": os.getpid()}
    cases["local, alive"] = cases["local"]
    for name, tags in cases.items():
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job(), tags=tags)
        instance.report_engine_event(
            f"{STARTED_PROCESS}{pids[name]}).", run, EngineEventData.in_process(pids[name])
        )
        status[name] = launcher.check_run_worker_health(run).status
    assert status == {
        "local": WorkerStatus.FAILED,
        "local, alive": WorkerStatus.RUNNING,
        "remote code server": WorkerStatus.RUNNING,
        "another launcher host": WorkerStatus.RUNNING,
    }
