"""Issue 18: a staged rollout reaches the share of installs it names.

10,000 synthetic install ids (uuid4 from a seeded generator, as apps make them once per install)
are placed by ``channel.in_rollout`` for one model version. The goal is that a 10% rollout reaches
10% ± 1 of them; the 1% and 50% shares are reported too, and every install reached at one
percentage must still be reached at every higher one (raising a rollout never drops an install).
"""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta

from benchmarks.common import QUICK, Result
from cv_assets.lib.mobile import channel as ch
from cv_assets.lib.mobile.contract import io_contract

PERCENTS = (1, 5, 10, 25, 50, 100)


def _manifest(percent: float) -> dict:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    return ch.build_manifest(
        channel="stable", model_version="7", sequence=1, previous_version="6",
        files=[{"platform": "onnx", "format": "onnx_int8", "url": ch.file_key("7", "m.onnx"),
                "sha256": "0" * 64, "size": 1}],
        contract=io_contract(320, ["square", "circle", "triangle"]), min_app_version="1.0",
        rollout_percent=percent, created_at=t0, expires_at=t0 + timedelta(days=30),
    )  # fmt: skip


def rollout_share() -> Result:
    # Fixed at 10,000 even with BENCH_QUICK: the goal's ±1 point needs the sample (sd 0.3 points).
    n = 10_000
    rng = random.Random(18)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]
    manifests = {p: _manifest(p) for p in PERCENTS}
    reached = {p: {i for i in ids if ch.in_rollout(i, manifests[p])} for p in PERCENTS}
    monotonic = all(reached[a] <= reached[b] for a, b in itertools.pairwise(PERCENTS))
    share = {p: 100 * len(reached[p]) / n for p in PERCENTS}
    ten = share[10]
    return Result(
        "release_rollout_share_10pct",
        18,
        f"share of {n:,} synthetic installs (seeded uuid4) a 10% rollout reaches "
        "(sha256 bucket of channel, version and install id)",
        round(ten, 2),
        "%",
        "10 ± 1 %",
        abs(ten - 10) <= 1 and monotonic,
        f"1%: {share[1]:.2f}%, 50%: {share[50]:.2f}%, 100%: {share[100]:.0f}%; "
        f"raising 1→5→10→25→50→100% only adds installs: {'yes' if monotonic else 'NO'}"
        + (" (BENCH_QUICK ignored: the sample size is the point)" if QUICK else ""),
    )


BENCHMARKS = [rollout_share]
