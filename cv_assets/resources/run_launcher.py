"""The run launcher of the embedded default: Dagster's own, plus a health check of its workers.

``DefaultRunLauncher`` asks the code server to start each run in a process of its own, and has no
health check (``supports_check_run_worker_health`` is False). A run worker killed outright (the OOM
killer, a SIGKILL of ``dagster dev`` and its process group) cannot report its end, so its run stays
STARTED, holding its pool slots, until ``dagster/max_runtime``. With this launcher the monitoring
daemon asks every ``run_monitoring.poll_interval_seconds`` whether each STARTED run's worker
process still exists, and fails the run when it does not (``monitor_started_run`` in
``dagster/_daemon/monitoring/run_monitoring.py``); the run retry daemon then re-executes it from
the failed step, and ``free_slots_after_run_end_seconds`` later its pool slots are handed back.

The worker reports its own pid: ``_run_in_subprocess`` in ``dagster/_grpc/impl.py`` logs the
engine event "Started process for run (pid: N)." with ``pid`` in its metadata, before the run
starts. A pid is only read on the machine that launched the run, through a code server on
loopback; anywhere else (a code server in another container, another host) the check answers
RUNNING and ``dagster/max_runtime`` stays the backstop, because Dagster fails a run on any other
answer, UNKNOWN included.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

import dagster as dg
import psutil  # a requirement of ultralytics; Dagster itself needs it only on Windows
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

if TYPE_CHECKING:
    from dagster._core.events.log import EventLogEntry

# The engine event a run worker started by a code server logs first (dagster/_grpc/impl.py).
STARTED_PROCESS = "Started process for run (pid: "
# Which machine launched the run; its pids mean nothing anywhere else.
LAUNCHED_ON_TAG = "cv_assets/launched_on"
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
# /proc's boot time has whole seconds, so a process's start time may read up to a second late.
START_TIME_SLACK_S = 2.0


class LocalRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers the monitoring daemon can check by pid."""

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(
            context.dagster_run.run_id, {LAUNCHED_ON_TAG: socket.gethostname()}
        )
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """FAILED when the process that reported itself as the run's worker no longer exists.

        RUNNING whenever that cannot be told from here: Dagster fails the run on any other status.
        """
        where = _elsewhere(run.tags)
        if where:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"not checked: {where}")
        started = _worker_started_event(self._instance, run.run_id)
        if started is None:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, "not checked: the run worker has not reported its pid"
            )
        pid = _pid_of(started)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not checked: no pid in the event")
        return worker_status(pid, started.timestamp)


def worker_status(pid: int, reported_at: float) -> CheckRunHealthResult:
    """Whether the run worker that reported ``pid`` at ``reported_at`` (epoch s) still runs.

    A pid the system has since given to another process is told apart by its start time: the
    worker started before it reported its pid, a newcomer after.
    """
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        zombie = proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} no longer exists",
            run_worker_id=str(pid),
        )
    except psutil.AccessDenied:
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"not checked: pid {pid} is not ours")
    if zombie:
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} has exited", run_worker_id=str(pid)
        )
    if started > reported_at + START_TIME_SLACK_S:
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} no longer exists (pid {pid} is now a process started "
            f"{started - reported_at:.0f} s after the worker reported it)",
            run_worker_id=str(pid),
        )
    return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))


def _elsewhere(tags: Mapping[str, str]) -> str | None:
    """Why the run's worker is not a process of this machine, or None when it is."""
    launched_on = tags.get(LAUNCHED_ON_TAG)
    if launched_on != socket.gethostname():
        return f"launched on {launched_on or 'an unknown host'}, not {socket.gethostname()}"
    grpc = json.loads(tags.get(GRPC_INFO_TAG) or "{}")
    if grpc.get("socket"):
        return None
    host = grpc.get("host")
    if host not in LOOPBACK:
        return f"the code server that started the worker is on {host or 'an unknown host'}"
    return None


def _worker_started_event(instance: dg.DagsterInstance, run_id: str) -> EventLogEntry | None:
    engine_events = instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
    started = [e for e in engine_events if e.message.startswith(STARTED_PROCESS)]
    return started[-1] if started else None


def _pid_of(event: EventLogEntry) -> int | None:
    data = event.dagster_event.engine_event_data if event.dagster_event else None
    pid = data.metadata.get("pid") if data else None
    try:
        return int(str(pid.value)) if pid is not None else None
    except ValueError:
        return None
