"""``make ui``'s launcher: the telemetry service lives exactly as long as the UI beside it."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cv_assets.dev.ui import run_beside
from cv_assets_tests.support.processes import group_gone

pytestmark = pytest.mark.unit


def _service(pidfile: Path) -> list[str]:
    """A service that writes its pid and honours SIGTERM: inside a long pytest session the signal
    may be ignored or blocked in this process, and a child inherits both (see test_procs.py)."""
    code = (
        "import os, signal, time; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
        "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    return [sys.executable, "-c", code]


def test_the_service_stops_when_the_ui_exits_and_the_uis_status_is_returned(tmp_path):
    pidfile = tmp_path / "service.pid"
    # The UI waits until the service runs, then exits as dg dev does after Ctrl-C.
    ui = ["bash", "-c", f"for i in $(seq 100); do [ -s {pidfile} ] && exit 3; sleep 0.1; done"]
    before = signal.getsignal(signal.SIGINT)
    t0 = time.monotonic()
    assert run_beside(_service(pidfile), {}, ui) == 3
    assert time.monotonic() - t0 < 10  # SIGTERM honoured, no wait for the SIGKILL fallback
    pid = int(pidfile.read_text())
    assert group_gone(pid, within_s=5.0)  # its own group: the pid is the group's id
    assert signal.getsignal(signal.SIGINT) is before  # this process's Ctrl-C works again


def test_the_service_stops_when_the_ui_cannot_start(tmp_path):
    pidfile = tmp_path / "service.pid"
    # The service is stopped before it could install its SIGTERM handler: the SIGKILL fallback
    # ends it, after a short grace here.
    with pytest.raises(FileNotFoundError):
        run_beside(_service(pidfile), {}, [str(tmp_path / "no-dg")], grace_s=2)
    out = subprocess.run(["pgrep", "-f", str(pidfile)], capture_output=True, text=True)
    assert out.stdout.strip() == ""
