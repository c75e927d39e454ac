"""``make ui``: the Dagster UI (``dg dev``) with the telemetry ingest service beside it.

The service (``python -m cv_assets.telemetry``) starts first, bound to 127.0.0.1 whatever
``CV_ASSETS_TELEMETRY_HOST`` says, on ``CV_ASSETS_TELEMETRY_PORT`` (8090 by default), with the token
of ``cv_assets.dev.telemetry`` (the environment's, else the one kept under ``$CV_ASSETS_HOME``). It
runs in a process group of its own, so the terminal's Ctrl-C reaches ``dg dev`` alone; once
``dg dev`` has shut down, the service is stopped with SIGTERM, which flushes its spool. Its log
lines share the terminal with Dagster's. A service that cannot start (the port taken by a
``make telemetry`` already running, say) says why there and leaves the UI running.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cv_assets.dev.procs import stop_group


def run_beside(
    service: Sequence[str],
    service_env: Mapping[str, str],
    ui: Sequence[str],
    grace_s: float = 30.0,
) -> int:
    """Runs ``ui`` in the foreground with ``service`` in a group of its own; ``ui``'s status.

    ``service`` is stopped when ``ui`` exits, however it exits: SIGTERM, then SIGKILL after
    ``grace_s``.
    """
    proc = subprocess.Popen(list(service), env=dict(service_env), start_new_session=True)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        fg = subprocess.Popen(list(ui))
        # Ctrl-C goes to the terminal's whole foreground group, ``dg dev`` included, which shuts
        # down its webserver and daemon on it: this process waits for that rather than dying
        # first. A SIGTERM (a killed make) is passed on as the SIGINT ``dg dev`` honours.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: fg.send_signal(signal.SIGINT))
        return fg.wait()
    finally:
        # Stopped before Ctrl-C may interrupt this process again: else the service would outlive it.
        stop_group(proc, signal.SIGTERM, grace_s=grace_s)
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])


def _dg() -> str:
    """The ``dg`` of this interpreter's environment (``make ui`` runs the venv's Python)."""
    beside = Path(sys.executable).with_name("dg")
    return str(beside) if beside.exists() else shutil.which("dg") or "dg"


def main(argv: Sequence[str] | None = None) -> int:
    from cv_assets.dev.home import prepare_home
    from cv_assets.dev.telemetry import service_env
    from cv_assets.lib.core.settings import PlatformConfig

    parser = argparse.ArgumentParser(prog="python -m cv_assets.dev.ui", description=__doc__)
    parser.add_argument("--port", type=int, default=3000, help="the Dagster UI's port")
    args = parser.parse_args(argv)
    cfg = PlatformConfig.from_env()
    prepare_home(cfg)
    try:
        env = service_env(cfg.home, os.environ) | {"CV_ASSETS_TELEMETRY_HOST": "127.0.0.1"}
    except ValueError as e:
        print(f"cv_assets.dev.ui: {e}", file=sys.stderr)
        return 2
    # dg dev loads the project from pyproject's [tool.dg] (code location `cv_assets`, the name
    # every cursor and run history is keyed by). It gets this process's environment: a token
    # read from the kept file goes to the service only.
    ui = [_dg(), "dev", "--host", "127.0.0.1", "--port", str(args.port)]
    try:
        return run_beside([sys.executable, "-m", "cv_assets.telemetry"], env, ui)
    except FileNotFoundError as e:
        why = f"cv_assets.dev.ui: {e.filename} not found: run `make install` first"
        print(why, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
