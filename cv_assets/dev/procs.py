"""Stopping a server started in its own process group (``start_new_session=True``)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 30.0) -> None:
    """``sig`` to the whole group, ``grace_s`` to exit, then SIGKILL.

    The group, not the process: ``dagster dev`` and the webserver start children (the daemon, code
    servers) that would outlive a signal sent to the parent alone. ``dagster dev`` shuts down on
    SIGINT (its Ctrl-C path) and ignores SIGTERM.
    """
    for s, wait in ((sig, grace_s), (signal.SIGKILL, 30.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
