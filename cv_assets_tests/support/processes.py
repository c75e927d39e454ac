"""Other processes the tests start: the CLI, ``dagster dev``, servers on free loopback ports."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def group_gone(pgid: int, within_s: float = 3.0) -> bool:
    """No process left in the group (a killed child may take a moment to be reaped by init)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
        if not out.stdout.strip():
            return True
        time.sleep(0.1)
    return False


def training_workers(parent: int | None = None) -> list[int]:
    """Pids of training processes (``cv_assets.training_worker``) alive, those of ``parent``
    only when given (other tests on the machine may be training too)."""
    out = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"cv_assets.training_worker" not in cmd.read_bytes():
                continue
            # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, not ")".
            ppid = int((cmd.parent / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if parent is None or ppid == parent:
            out.append(int(cmd.parent.name))
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    """``cv-assets ARGS`` in a child process, as a user runs it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "cv_assets.cli", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=120,
    )


class Daemon:
    """``dagster dev`` (webserver and daemon) on the repository's workspace, in its own group.

    ``env`` is what the platform reads, beside ``os.environ``; the output goes to ``log``.
    """

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log_path = log
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = ["dev", "-h", "127.0.0.1", "-p", "0", "-w", str(REPO / "workspace.yaml")]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", *cmd],
            cwd=REPO,
            env=dict(os.environ) | self.env,
            stdout=open(self.log_path, "ab"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def wait(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        """Polls ``done`` every 2 s; fails with the log's tail if the process dies or time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, self.tail()
            assert "Error loading repository location" not in self.tail(), self.tail()
            if done():
                return
            time.sleep(2)
        raise AssertionError(f"timed out waiting for {what}\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]
