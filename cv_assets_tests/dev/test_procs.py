import signal
import subprocess
import time

import pytest

from cv_assets.dev.procs import stop_group
from cv_assets_tests.support.processes import group_gone

pytestmark = pytest.mark.unit


def _clean_signals() -> None:
    # A child inherits ignored and blocked signals: inside a long pytest session SIGTERM may be
    # either in this process. A server started from a shell has the defaults; so does this one.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _group(script: str) -> subprocess.Popen:
    # A parent with a child, as dagster dev has: the child must go too.
    return subprocess.Popen(
        ["bash", "-c", script], start_new_session=True, preexec_fn=_clean_signals
    )


def test_the_whole_group_stops_on_the_signal_it_honours():
    proc = _group("sleep 60 & wait")
    time.sleep(0.3)
    t0 = time.monotonic()
    stop_group(proc, signal.SIGTERM, grace_s=10)
    assert proc.returncode is not None and time.monotonic() - t0 < 5
    assert group_gone(proc.pid)


def test_a_group_that_ignores_the_signal_is_killed_after_the_grace_period():
    proc = _group("trap '' INT; sleep 60 & wait")
    time.sleep(0.3)
    t0 = time.monotonic()
    stop_group(proc, signal.SIGINT, grace_s=1)
    took = time.monotonic() - t0
    assert proc.returncode == -signal.SIGKILL and 1 <= took < 10
    assert group_gone(proc.pid)
    stop_group(proc)  # already gone: nothing to do, no error
