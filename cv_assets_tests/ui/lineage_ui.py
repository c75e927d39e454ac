"""`cv-assets lineage` against the UI: every link of a model's chain, read off the pages a person
opens in the browser.

Used by the browser test, and on any home (the demo's) by hand::

    python -m cv_assets_tests.ui.lineage_ui HOME [VERSION ...]

which starts dagster-webserver on the home, checks each version (all, by default) and prints what
it compared.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import Any

import dagster as dg

from cv_assets.dev.home import REPO
from cv_assets.dev.procs import stop_group
from cv_assets_tests.support.processes import free_port

WORKSPACE = ("-w", str(REPO / "workspace.yaml"))


def _materialization_ms(instance: dg.DagsterInstance, asset: str, run_id: str) -> int:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records
    (rec,) = [r for r in records if r.run_id == run_id]
    return int(rec.timestamp * 1000)


def metadata_row(page, key: str):
    """The row of an asset page's metadata table whose key is ``key``."""
    return page.get_by_role("row").filter(has=page.get_by_text(key, exact=True))


def _cell(page, key: str):
    return metadata_row(page, key).get_by_role("cell").nth(1)


def check_lineage_in_ui(page, base: str, doc: dict[str, Any], instance) -> list[str]:
    """Asserts that the UI shows what ``doc`` (``cv-assets lineage --json``) says; returns what
    was compared, one line each."""
    from playwright.sync_api import expect

    def open_event(asset: str, link: dict[str, Any]) -> str:
        """The asset's event made by the run lineage names; the UI links that very run."""
        run_id = link["dagster_run_id"]
        ms = _materialization_ms(instance, asset, run_id)
        page.goto(f"{base}/assets/{asset}?view=events&time={ms}")
        expect(page.locator(f'a[href^="/runs/{run_id}"]').first).to_be_visible()
        return run_id[:8]

    seen: list[str] = []
    d, w, m = doc["dataset"], doc["weights"], doc["mobile"]
    run = open_event("training_dataset", d["snapshot_in"])
    expect(_cell(page, "dataset_version")).to_have_text(d["version"])
    for b in doc["batches"]:
        expect(_cell(page, "batch_ids")).to_contain_text(b["batch_id"])
    seen.append(
        f"training_dataset in run {run}: version {d['version']}, {len(doc['batches'])} batches"
    )
    run = open_event("yolo_model", w["trained_in"])
    for key, value in (
        ("weights_sha256", w["sha256"]),
        ("dataset_version", d["version"]),
        ("mlflow_run_id", w["mlflow_run"]["run_id"]),
    ):
        expect(_cell(page, key)).to_have_text(value)
    seen.append(
        f"yolo_model in run {run}: weights {w['sha256'][:12]}, MLflow run "
        f"{w['mlflow_run']['run_id'][:12]}"
    )
    run = open_event("mobile_model", m["converted_in"])
    for f in m["files"]:
        expect(_cell(page, f"{f['format']}_uri")).to_have_text(f["uri"])
    seen.append(f"mobile_model in run {run}: " + ", ".join(f["format"] for f in m["files"]))
    for b in doc["batches"]:
        run_id = b["validated_in"]["dagster_run_id"]
        page.goto(f"{base}/assets/validated_batch?view=partitions&partition={b['batch_id']}")
        expect(page.locator(f'a[href^="/runs/{run_id}"]').first).to_be_visible()
        for key in ("landed", "accepted", "quarantined"):
            expect(_cell(page, key)).to_have_text(str(b[key]))
        seen.append(
            f"{b['batch_id']} validated in run {run_id[:8]}: {b['landed']} landed = "
            f"{b['accepted']} accepted + {b['quarantined']} quarantined"
        )
    return seen


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.read_side import registry_for

    home, *versions = argv
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": home})
    env = dict(os.environ, CV_ASSETS_HOME=home, DAGSTER_HOME=str(cfg.dagster_home))
    versions = versions or [v.version for v in registry_for(cfg).versions()]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), *WORKSPACE],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the webserver did not answer"
                time.sleep(1)
        with sync_playwright() as p:
            chromium = shutil.which("chromium")
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            for v in versions:
                out = subprocess.run(
                    [sys.executable, "-m", "cv_assets.cli", "lineage", str(v), "--json"],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                print(f"v{v}: the UI agrees with `cv-assets lineage {v}`:")
                for line in check_lineage_in_ui(page, base, json.loads(out.stdout), instance):
                    print(f"  {line}")
            browser.close()
    finally:
        instance.dispose()
        stop_group(server)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
