"""The global asset graph's GraphQL queries with 10,000 batch partitions (issue 6).

The queries are not written here: they are captured from the UI itself (Debian's Chromium, driven
by Playwright, opening the global asset lineage on the real ``dagster_webserver``), then each is
replayed with urllib against the same server. The result is the slowest one's median.

The embedded-default instance holds what a platform that took in 10,000 batches holds: 10,000
dynamic partitions and one materialization per partition of every asset partitioned by them, with
a few numeric metadata entries each. The events are Dagster's own objects turned into the rows
``store_event`` writes, inserted in bulk; each asset's newest goes through
``report_runless_asset_event``. Every answer must be free of errors and one must count all the
partitions as materialized, so the numbers cannot come from an empty instance. The replays are
warm (Dagster caches each asset's partition status once computed, and a running platform keeps
it current batch by batch); the browser's cold first load is in the details.
"""

import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.bench_intake import _fresh, _home
from benchmarks.common import QUICK, Result
from cv_assets.dev.procs import stop_group

# Numeric metadata in the spirit of what each asset records (counts, sizes, scores).
META: dict[str, dict[str, float]] = {
    "raw_batch": {"files": 16, "bytes": 412_345},
    "validated_batch": {"landed": 16, "accepted": 15, "quarantined": 1},
    "batch_features": {"rows": 15, "boxes": 41},
    "drift_report": {"drifted_columns": 1, "share_drifted": 0.08},
    "review_queue": {"items": 3, "max_severity": 0.71},
    "champion_performance": {"map50": 0.62, "images": 15},
}


def _fill(instance: Any, keys: list[Any], ids: list[str]) -> None:
    """One materialization per partition of every key, as intake and monitoring leave them."""
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.events import StepMaterializationData as Step
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

    from cv_assets.defs.ingest.partitions import BATCHES

    instance.add_dynamic_partitions(BATCHES, ids)
    storage = instance.event_log_storage
    kind = DagsterEventType.ASSET_MATERIALIZATION.value
    t0 = time.time() - 3600
    for key in keys:
        meta = META[key.to_user_string()]

        def mat(i: int, key=key, meta=meta) -> dg.AssetMaterialization:
            return dg.AssetMaterialization(key, partition=ids[i], metadata=meta | {"seq": i})

        def row(i: int) -> dict[str, Any]:
            # What report_runless_asset_event builds, made into the row store_event inserts.
            event = DagsterEvent(kind, job_name=RUNLESS_JOB_NAME, event_specific_data=Step(mat(i)))
            # error_info, level, user_message, run_id, timestamp, step_key, job_name, event
            entry = (None, logging.INFO, "", RUNLESS_RUN_ID, t0 + i * 0.01, None, RUNLESS_JOB_NAME)
            return storage._event_to_row(EventLogEntry(*entry, event))

        # One report per event costs ~10 ms (two SQLite engines and commits each): 10 min for
        # 60,000. The same rows go in as one insert per shard instead.
        rows = [row(i) for i in range(len(ids) - 1)]
        for conn_cm in (storage.run_connection(RUNLESS_RUN_ID), storage.index_connection()):
            with conn_cm as conn:
                conn.execute(SqlEventLogStorageTable.insert(), rows)
        # The newest one through the public path: it writes the asset's index row itself.
        instance.report_runless_asset_event(mat(len(ids) - 1))


def _capture(url: str) -> list[dict[str, Any]]:
    """Every GraphQL query the asset-graph page sends until its nodes show their status."""
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: run .ci/browser.sh"
    seen: list[dict[str, Any]] = []
    pending: set[Any] = set()

    def started(req: Any) -> None:
        if req.method == "POST" and req.url.split("?")[0].endswith("/graphql"):
            pending.add(req)

    def finished(req: Any) -> None:
        if req in pending:
            pending.discard(req)
            seen.append((req.post_data_json or {}) | {"browser_ms": req.timing["responseEnd"]})

    with sync_playwright() as p:
        # Same launch as the UI tests: root in a container, where Chromium's sandbox cannot start.
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.set_default_timeout(180_000)
        expect.set_options(timeout=180_000)
        page.on("request", started)
        page.on("requestfinished", finished)
        page.on("requestfailed", lambda req: pending.discard(req))
        page.goto(f"{url}/asset-groups")
        expect(page.get_by_text("Global asset lineage")).to_be_visible()
        # A fresh instance greets its first visitor with a dialog over the graph; groups start
        # collapsed, and a person expands them to see the assets (as the UI test does).
        page.get_by_role("button", name="Skip").click()
        page.get_by_role("button", name="settings", exact=True).click()
        page.get_by_role("menuitem", name="Expand all groups").click()
        page.keyboard.press("Escape")
        for name in META.keys() - {"champion_performance"}:  # shown shortened, "champ…"
            label = page.get_by_text(name, exact=True)
            # Green once the live query's partition health says every partition is materialized.
            expect(label.locator("xpath=..")).to_have_attribute("style", re.compile("green"))
        # "networkidle" is sticky after the first load; wait for the page's own queries to stop.
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            page.wait_for_timeout(250)
            if pending:
                quiet_since = time.monotonic()
        browser.close()
    return seen


def _post(url: str, op: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    body = {k: op[k] for k in ("operationName", "variables", "query") if k in op}
    req = urllib.request.Request(
        f"{url}/graphql", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        data = json.loads(r.read())
    return time.perf_counter() - t0, data


def _partition_counts(node: Any) -> list[tuple[int, int]]:
    """(numPartitions, numMaterialized) of every partitionStats in a response."""
    if isinstance(node, list):
        return [c for x in node for c in _partition_counts(x)]
    if not isinstance(node, dict):
        return []
    stats = node.get("partitionStats") or {}
    here = [(stats["numPartitions"], stats["numMaterialized"])] if stats else []
    return here + [c for v in node.values() for c in _partition_counts(v)]


def _serve(root: Path) -> tuple[subprocess.Popen, str]:
    """The real webserver on the prepared home (os.environ), as `make ui` runs it, sans daemon."""
    from cv_assets.dev.home import REPO
    from cv_assets_tests.support.processes import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w"]
    log = root / "webserver.log"
    with log.open("wb") as out:  # the child keeps its own handle
        proc = subprocess.Popen(
            [*cmd, str(REPO / "workspace.yaml")],
            cwd=REPO,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.5)
    stop_group(proc)
    raise RuntimeError(f"the webserver did not answer:\n{log.read_text()[-3000:]}")


def _reads(captured: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The distinct queries, named; the UI splits the graph's assets into batches."""
    ops: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for op in captured:
        if op.get("query", "").lstrip().startswith("mutation"):
            continue  # the dialog's "seen" flag: a write, not part of reading the graph
        sig = json.dumps([op.get("operationName"), op.get("variables")], sort_keys=True)
        if sig in seen:
            continue  # e.g. the code location's status, polled again
        seen.add(sig)
        label = op.get("operationName") or "anonymous"
        if keys := (op.get("variables") or {}).get("assetKeys"):
            label += f" ({len(keys)} asset{'s' if len(keys) > 1 else ''})"
        ops[label if label not in ops else f"{label} #{len(ops)}"] = op
    return ops


def graphql_asset_graph() -> Result:
    import dagster as dg

    from cv_assets.definitions import build_defs
    from cv_assets.defs.ingest.partitions import BATCHES

    n = 2000 if QUICK else 10_000
    t_start = time.perf_counter()
    root = _fresh("graphql_asset_graph")
    saved = dict(os.environ)
    try:
        cfg = _home(root)
        graph = build_defs(cfg).resolve_asset_graph()
        keys = sorted(
            k
            for k in graph.get_all_asset_keys()
            if getattr(graph.get(k).partitions_def, "name", None) == BATCHES
        )
        assert {k.to_user_string() for k in keys} == set(META), keys
        instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
        _fill(instance, keys, [f"lot-{i:05d}" for i in range(n)])
        assert len(instance.get_materialized_partitions(keys[0])) == n
        instance.dispose()
        t_fill = time.perf_counter() - t_start
        proc, url = _serve(root)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        captured = _capture(url)
        # Kept beside the home, so what was replayed can be read afterwards.
        (root / "operations.json").write_text(json.dumps(captured, indent=1))
        ops = _reads(captured)
        assert any("partitionStats" in op["query"] for op in ops.values()), list(ops)
        medians: dict[str, float] = {}
        counts: list[tuple[int, int]] = []
        for label, op in ops.items():
            answers = [_post(url, op) for _ in range(6)]  # the first is a warm-up
            for _, data in answers:
                assert "errors" not in data, (label, data["errors"])
            counts.extend(_partition_counts(answers[0][1]))
            medians[label] = statistics.median(dt for dt, _ in answers[1:])
        # The graph read the 10,000 partitions: its partition health counts them all.
        assert (n, n) in counts, sorted(set(counts))
    finally:
        stop_group(proc)

    slow = sorted(medians, key=medians.__getitem__, reverse=True)
    cold = max(ops, key=lambda k: ops[k]["browser_ms"])
    # The page's first load (the webserver's partition-status cache still cold) is what a person
    # waits for once; the replays are every later visit. The goal holds only if both meet it.
    value = max(medians[slow[0]], ops[cold]["browser_ms"] / 1e3)
    return Result(
        "graphql_asset_graph_10k",
        6,
        f"slowest GraphQL query of the global asset graph page, {n:,} batch partitions "
        f"x {len(keys)} assets, SQLite instance: the worse of the browser's first load and "
        "the warm replays (median of 5)",
        value,
        "s",
        "<= 2 s",
        value <= 2.0,
        "slowest: "
        + ", ".join(f"{s} {medians[s]:.3f} s" for s in slow[:3])
        + f"; {len(ops)} queries, all in sequence {sum(medians.values()):.2f} s; "
        f"browser's cold first load, slowest: {cold} {ops[cold]['browser_ms'] / 1e3:.2f} s; "
        f"set-up {t_fill:.0f} s, total {time.perf_counter() - t_start:.0f} s",
    )


BENCHMARKS = [graphql_asset_graph]
