"""Shared pieces of the benchmarks: results, the machine description, the README table."""

import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
RESULTS = HERE / "results.json"
WORK = HERE / ".work"
QUICK = os.environ.get("BENCH_QUICK") == "1"


class Skipped(Exception):
    """A benchmark that cannot run here (it reads what another command made); its row stays."""


@dataclass
class Result:
    name: str  # stable id, one README row each
    issue: int
    measured: str  # what was compared, in words
    value: float
    unit: str  # "x" for ratios, "s", "MiB"
    goal: str  # e.g. "<= 1.3x"
    passed: bool
    details: str = ""
    machine: str = ""  # where it ran, when not this machine (the GPU check runs elsewhere)


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=HERE,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(results: list[Result]) -> None:
    """Merge into results.json (by name) and rewrite the README table."""
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"results": {}}
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for r in results:
        old["results"][r.name] = asdict(r) | {
            "date": stamp,
            "commit": _git_rev(),
            "machine": r.machine or machine(),
            "quick": QUICK,
        }
    RESULTS.write_text(json.dumps(old, indent=1, sort_keys=True))
    rows = sorted(old["results"].values(), key=lambda r: (r["issue"], r["name"]))
    lines = [
        "| issue | benchmark | measured | result | goal | met | date | machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        val = f"{r['value']:.3g}{r['unit'] if r['unit'] == 'x' else ' ' + r['unit']}"
        met = "yes" if r["passed"] else "**no**"
        lines.append(
            f"| {r['issue']} | `{r['name']}` | {r['measured']} | {val} | {r['goal']} | {met} "
            f"| {r['date']} | {r['machine']} |"
        )
    details = [f"- `{r['name']}`: {r['details']}" for r in rows if r["details"]]
    table = "\n".join(lines) + "\n\nDetails:\n\n" + "\n".join(details) + "\n"
    text = README.read_text() if README.exists() else ""
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin in text:
        text = re.sub(f"{begin}.*{end}", f"{begin}\n{table}{end}", text, flags=re.S)
    else:
        text += f"\n{begin}\n{table}{end}\n"
    README.write_text(text)
