"""Each test run's durations, kept in a file for the next person (the terminal scrolls away)."""

import os
import shlex
import time
from collections import defaultdict
from pathlib import Path

import pytest

KEEP = 20  # the newest reports kept; older ones are deleted
WORST_FIRST = ("error", "failed", "xpassed", "xfailed", "skipped", "passed")


def reports_dir(config: pytest.Config) -> Path:
    """``.cv_assets/test-reports/`` in the repository (gitignored with the rest of .cv_assets)."""
    return config.rootpath / ".cv_assets" / "test-reports"


def write_durations(reporter: pytest.TerminalReporter, exitstatus: int) -> Path | None:
    """Every test's setup, call and teardown seconds, slowest first, in
    ``durations-<UTC time>-<pid>.txt``; None when no test ran (``--collect-only``)."""
    phases: dict[str, dict[str, float]] = defaultdict(dict)
    outcome: dict[str, str] = {}
    for category, reports in reporter.stats.items():
        for r in reports:
            if not isinstance(r, pytest.TestReport):
                continue
            phases[r.nodeid][r.when] = r.duration
            # A passed setup or teardown is filed under ""; keep the worst outcome of the three.
            if category in WORST_FIRST and WORST_FIRST.index(category) < WORST_FIRST.index(
                outcome.get(r.nodeid, "passed")
            ):
                outcome[r.nodeid] = category
    if not phases:
        return None
    rows = sorted(phases.items(), key=lambda kv: -sum(kv[1].values()))
    total = sum(sum(p.values()) for _, p in rows)
    args = shlex.join(reporter.config.invocation_params.args)
    lines = [
        f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  pytest {args}",
        f"# exit status {exitstatus}, {len(rows)} tests, {total:.1f} s in tests, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "# total_s  setup_s   call_s  teardown_s  outcome  test",
    ]
    for nodeid, p in rows:
        t = [p.get(w, 0.0) for w in ("setup", "call", "teardown")]
        lines.append(
            f"{sum(t):9.2f} {t[0]:8.2f} {t[1]:8.2f} {t[2]:11.2f}  "
            f"{outcome.get(nodeid, 'passed'):8} {nodeid}"
        )
    folder = reports_dir(reporter.config)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = folder / f"durations-{stamp}-{os.getpid()}.txt"
    path.write_text("\n".join(lines) + "\n")
    for old in sorted(folder.glob("durations-*.txt"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path
