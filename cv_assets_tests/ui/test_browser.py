"""The UI as a person meets it: Debian's Chromium, driven by Playwright, against `dagster dev`.

The instance is prepared the way the platform fills it (intake, then one tiny training) and the
webserver and the daemon run on 127.0.0.1. Screenshots go to the test's tmp_path; with
``UPDATE_SCREENSHOTS=1`` the ones the README shows are also written to ``docs/screenshots/``.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from cv_assets import read_side
from cv_assets.dev.home import REPO
from cv_assets.dev.procs import stop_group
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets_tests.support.field import store_events
from cv_assets_tests.support.jobs import ingest, train
from cv_assets_tests.support.processes import cli, free_port
from cv_assets_tests.ui.lineage_ui import check_lineage_in_ui, metadata_row

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README_SHOTS = REPO / "docs" / "screenshots"
GRAPH_ASSETS = ("training_dataset", "yolo_model", "model_evaluation", "champion_model")
# The sensors whose first tick decides what the daemon does with an instance that already holds
# data: validated_batch_sensor would monitor every intaken batch once a champion exists, and the
# automation sensor evaluates the retraining conditions.
FIRST_TICK = ("validated_batch_sensor", "retrain_automation")
WAIT_S = 240


class DagsterDev:
    """`dagster dev` (webserver and daemon) on 127.0.0.1, as `make ui` starts it."""

    def __init__(self, cfg: PlatformConfig, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = dict(os.environ) | {
            # Sensors tick once when the daemon starts and not again during the test: a dataset
            # materialized from the UI would otherwise start the eager retraining downstream,
            # which is the closed loop's business (the demo and the daemon tests), not the UI's.
            "CV_ASSETS_SENSOR_INTERVAL": "900",
        }
        cmd = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_until(self, what: str, ready, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert self.proc.poll() is None, f"dagster dev exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s\n{self.tail()}"
            time.sleep(1)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        # It exits within seconds; a run still draining is not what this test is about.
        stop_group(self.proc, signal.SIGINT, grace_s=20)


def first_ticks_done(instance: dg.DagsterInstance, names: tuple[str, ...]) -> bool:
    states = {
        s.instigator_name: s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    }
    for name in names:
        state = states.get(name)
        if state is None:
            return False
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if not ticks or ticks[0].status not in (TickStatus.SKIPPED, TickStatus.SUCCESS):
            return False
    return True


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict[str, Any]:
    md = read_side.latest_metadata(instance, asset)
    assert md is not None, f"{asset} was never materialized"
    return md


def as_js_number(x: float) -> str:
    """How the UI prints a float: JavaScript's shortest form (0.5, 1, 0.00002; not 1.0, 2e-05)."""
    return f"{Decimal(repr(float(x))).normalize():f}"


@pytest.fixture
def shots(tmp_path: Path):
    """Saves a screenshot to tmp_path, and to docs/screenshots/ when asked to."""
    out = tmp_path / "screenshots"
    out.mkdir()
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"

    def save(target, name: str, readme: bool = False) -> Path:
        path = out / name
        target.screenshot(path=str(path))
        if update and readme:
            README_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, README_SHOTS / name)
        return path

    return save


@pytest.fixture
def dagster_dev(cfg: PlatformConfig, instance, tmp_path: Path) -> Iterator[DagsterDev]:
    """Intake done and one tiny training done, with the webserver and the daemon running.

    The daemon starts between intake and training, as it would have on a real deployment: its
    first ticks see the intaken batches before any champion exists.
    """
    ingest(cfg, instance, batches=2, images=24, size=96)
    dev = DagsterDev(cfg, tmp_path / "dagster_dev.log")
    try:
        dev.wait_until("webserver answers", dev.answers)
        dev.wait_until("first sensor ticks", lambda: first_ticks_done(instance, FIRST_TICK))
        result = train(cfg, instance)
        assert result.success
        yield dev
    finally:
        dev.stop()


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run .ci/browser.sh")
    with sync_playwright() as p:
        # CI runs as root in a container, where Chromium's own sandbox cannot start; the only
        # page it opens is our UI on 127.0.0.1.
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(60_000)
        yield context.new_page()
        browser.close()


@pytest.mark.timeout(600)
def test_browser_shows_graph_materializes_from_ui_and_shows_model_metrics(
    dagster_dev: DagsterDev, cfg: PlatformConfig, instance, page, shots
):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    base = dagster_dev.url

    # (a) The global asset graph, every group expanded, names the assets a person looks for.
    page.goto(f"{base}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    # A fresh instance greets its first visitor with Dagster's newsletter dialog, a second after
    # the page loads; a person skips it, and the server remembers.
    nux = page.get_by_text("Join the Dagster community")
    page.get_by_role("button", name="Skip").click()
    expect(nux).to_be_hidden()
    page.get_by_role("button", name="settings", exact=True).click()  # the graph's gear menu
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.keyboard.press("Escape")
    for name in GRAPH_ASSETS:
        label = page.get_by_text(name, exact=True)
        expect(label).to_be_visible()
        # Zoomed out to the whole graph, a node tells its status by colour only (green: its
        # latest materialization succeeded); it arrives by a live-data query after the names.
        expect(label.locator("xpath=..")).to_have_attribute("style", re.compile("green"))
    shots(page, "asset_graph.png", readme=True)

    # (b) Materialize the dataset from its asset page; the UI's run succeeds.
    page.goto(f"{base}/assets/training_dataset")
    # The button's name includes its icon's: "materialization Materialize".
    page.get_by_role("button", name=re.compile(r"\bMaterialize$")).click()
    toast = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$"))
    expect(toast).to_be_visible()
    short = toast.inner_text().split()[-1]
    (run,) = [r for r in instance.get_runs() if r.run_id.startswith(short)]
    assert run.asset_selection == {dg.AssetKey("training_dataset")}
    assert not {"dagster/sensor_name", "dagster/schedule_name"} & set(run.tags)

    def finished() -> dg.DagsterRun | None:
        r = instance.get_run_by_id(run.run_id)
        return r if r is not None and r.is_finished else None

    page.get_by_role("link", name="View", exact=True).click()  # the toast's link
    expect(page).to_have_url(re.compile(f"/runs/{run.run_id}"))
    dagster_dev.wait_until("the UI's run to finish", lambda: finished() is not None)
    assert (done := finished()) is not None and done.status == dg.DagsterRunStatus.SUCCESS
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible()
    shots(page, "run.png")

    # (c) The model's evaluation page: its mAP and its plots; its gate on the Checks tab.
    meta = latest_metadata(instance, "model_evaluation")
    page.goto(f"{base}/assets/model_evaluation")
    expect(metadata_row(page, "pr_curve")).to_be_visible()
    shots(page, "model_page.png", readme=True)
    # The filter leaves the top-level rows only (vs_champion's table repeats the metric names).
    page.get_by_placeholder("Filter metadata keys").fill("map50")
    for key in ("map50", "map50_95"):
        expect(metadata_row(page, key).get_by_role("cell").last).to_have_text(
            as_js_number(meta[key])
        )
    page.get_by_placeholder("Filter metadata keys").fill("")
    plots = sorted(k for k, v in meta.items() if str(v).startswith("!["))
    assert "pr_curve" in plots and "confusion_matrix" in plots
    for key in plots:
        metadata_row(page, key).get_by_text("[Show Markdown]").click()
        img = page.get_by_role("dialog").get_by_role("img", name=key)
        expect(img).to_be_visible()
        assert (img.get_attribute("src") or "").startswith("data:image/png;base64,")
        assert img.evaluate("el => el.naturalWidth") > 0, f"{key}: the image did not decode"
        if key == "pr_curve":
            shots(page, "model_plot.png")
        page.get_by_role("dialog").get_by_role("button", name="Close").click()
        expect(page.get_by_role("dialog")).to_have_count(0)

    page.goto(f"{base}/assets/model_evaluation?view=checks")
    expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
    expect(page.get_by_text("challenger_beats_champion").first).to_be_visible()
    expect(page.get_by_text("Passed", exact=True)).to_be_visible()
    shots(page, "model_checks.png")

    # The weights' page: validation mAP and the link to the MLflow run.
    model = latest_metadata(instance, "yolo_model")
    page.goto(f"{base}/assets/yolo_model")
    page.get_by_placeholder("Filter metadata keys").fill("val_map50")
    expect(metadata_row(page, "val_map50").get_by_role("cell").last).to_have_text(
        as_js_number(model["val_map50"])
    )
    page.get_by_placeholder("Filter metadata keys").fill("mlflow_run")
    link = metadata_row(page, "mlflow_run").get_by_role("link").first  # text, then icon
    expect(link).to_have_attribute("href", str(model["mlflow_run"]))

    # (d) `cv-assets lineage` and the UI tell the same story, read off the pages a person opens.
    out = cli("lineage", "1", "--json")
    assert out.returncode == 0, out.stderr
    seen = check_lineage_in_ui(page, base, json.loads(out.stdout), instance)
    assert len(seen) == 3 + 2  # dataset, weights, mobile files; the two batches
    shots(page, "lineage_batch.png")

    # (e) A day of the apps' traffic: its cohorts and its sampled frames on their asset pages.
    day, n_events = field_day(cfg, instance)
    drift = read_side.latest_metadata(instance, "field_drift", day) or {}
    assert "device=moto" in str(drift["drifted_cohorts"])
    page.goto(f"{base}/assets/field_drift?view=partitions&partition={day}")
    expect(_cell_of(page, "n_events")).to_have_text(str(n_events))
    # A partition's page renders its Markdown in place: the cohort table, each verdict.
    cohorts = metadata_row(page, "cohorts").first
    for line in re.findall(r"^\|.*\|$", str(drift["cohorts"]), flags=re.M)[2:]:
        cohort, events, verdict, _cols = (c.strip() for c in line.strip("|").split("|"))
        row = cohorts.get_by_role("row").filter(has=page.get_by_text(cohort, exact=True))
        expect(row).to_contain_text(events)
        expect(row).to_contain_text(verdict)
    expect(cohorts.get_by_text("DRIFTED").first).to_be_visible()
    shots(page, "field_drift.png", readme=True)
    samples = latest_metadata(instance, "field_samples")
    page.goto(f"{base}/assets/field_samples?view=partitions&partition={day}")
    for key in ("landed_frames", "audit_frames"):
        expect(_cell_of(page, key)).to_have_text(str(samples[key]))
    expect(_cell_of(page, "field_batch")).to_have_text(str(samples["field_batch"]))


def _cell_of(page, key: str):
    return metadata_row(page, key).get_by_role("cell").nth(1)


def field_day(cfg: PlatformConfig, instance: dg.DagsterInstance) -> tuple[str, int]:
    """A day of a small fleet running the champion (the Moto installs' frames darker), stored as
    the ingest service stores it and judged in process. Ten days back: outside the window of
    field_day_sensor, so the daemon does not judge it a second time."""
    from cv_assets.definitions import build_defs
    from cv_assets.lib.synth.scenes import Shift
    from cv_assets.lib.telemetry.fleet import FleetCohort, simulate_day
    from cv_assets.lib.tracking.registry import read_champion

    store = read_side.open_store(cfg)
    champ = read_champion(store)
    assert champ is not None
    onnx = store.local_path(store.key_of(str(champ["mobile"]["onnx_uri"])))
    day = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")
    events = simulate_day(
        str(onnx), str(champ["version"]), str(champ["weights_sha256"]), day, installs=120,
        events_per_install=10, seed=9, cohorts=[FleetCohort("Moto G54", Shift(brightness=-0.3))],
        frame_size=96, random_share=0.2, consent_share=1.0, workers=2,
    )  # fmt: skip
    store_events(cfg, store, events, str(champ["version"]))
    job = build_defs(cfg).resolve_job_def("field_monitoring_job")
    rc = {"ops": {"field_drift": {"config": {"min_events": 60}}}}
    assert job.execute_in_process(partition_key=day, instance=instance, run_config=rc).success
    return day, len(events)
