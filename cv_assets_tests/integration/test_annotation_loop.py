"""The whole human-in-the-loop path on a real instance and the real Label Studio server.

A champion is trained, pre-annotates a batch's unlabelled images, ``cv-assets annotate start``
pushes the most useful of them to Label Studio, a person labels some and skips one, the
``labelstudio_sensor`` lands what they completed, intake takes it in as human labels, and the
next dataset version trains on them. The second round never asks for an image twice.
"""

from __future__ import annotations

import io

import dagster as dg
import pandas as pd
import pytest

from cv_assets.definitions import build_defs
from cv_assets.lib.annotation.collect import manifests
from cv_assets.lib.core import layout
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.read_side import open_store
from cv_assets.resources.environment import platform_resources
from cv_assets_tests.support.jobs import QUIET, ingest, materialized, run_intake, train
from cv_assets_tests.support.labelstudio import Person, rect
from cv_assets_tests.support.processes import cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_round_goes_to_label_studio_and_its_labels_come_back_into_training(
    cfg, instance, labelstudio, monkeypatch
):
    # What a user exports after `make labelstudio`: the platform reads it through dg.EnvVar.
    monkeypatch.setenv("CV_ASSETS_LABELSTUDIO_URL", labelstudio.url)
    monkeypatch.setenv("CV_ASSETS_LABELSTUDIO_TOKEN", labelstudio.token)
    monkeypatch.setenv("CV_ASSETS_LABELSTUDIO_FILES", str(labelstudio.files_root))
    cfg = PlatformConfig.from_env()
    ingest(cfg, instance, batches=2, images=24, size=96)
    assert train(cfg, instance).success
    (bid,) = ingest(cfg, instance, images=16, size=96, seed=71, unlabelled_fraction=0.5)
    defs = build_defs(cfg)
    monitor = defs.resolve_job_def("batch_monitoring_job")
    assert monitor.execute_in_process(
        partition_key=bid, instance=instance, run_config=QUIET
    ).success

    started = cli("annotate", "start", "--k", "4", "--label-issues", "0")
    assert started.returncode == 0, started.stderr
    assert labelstudio.url in started.stdout and labelstudio.token not in started.stdout
    store = open_store(cfg)
    (m,) = list(manifests(store))
    assert len(m["tasks"]) == 4 and all(t["batch_id"] == bid for t in m["tasks"])
    # The run is on the instance like any other, its metadata without the token.
    rec = instance.get_latest_materialization_event(dg.AssetKey("annotation_round"))
    assert rec is not None and rec.asset_materialization is not None
    meta = rec.asset_materialization.metadata
    assert meta["pushed"].value == 4 and str(meta["label_studio"].value).startswith(labelstudio.url)
    assert labelstudio.token not in repr(meta)

    person = Person(labelstudio)
    tasks = person.tasks(m["project"])
    for t in tasks[:3]:
        person.annotate(t, [rect("circle", 20, 20, 40, 40)])
    person.annotate(tasks[3], [], was_cancelled=True)

    sensor = defs.get_sensor_def("labelstudio_sensor")
    with dg.build_sensor_context(instance=instance, resources=platform_resources(cfg)) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    (obs,) = result.asset_events
    assert isinstance(obs, dg.AssetObservation)
    counts = {k: v.value for k, v in obs.metadata.items()}
    assert counts["completed"] == 3 and counts["skipped"] == 1 and counts["landed"] == 3
    zone = open_store(cfg, cfg.landing_root)
    (landed,) = [
        k.split("/")[0]
        for k in zone.list("")
        if k.startswith(m["round_id"]) and k.endswith("/batch.json")
    ]

    assert run_intake(cfg, instance, landed, run_config=QUIET).success
    samples = pd.read_parquet(io.BytesIO(store.get_bytes(
        layout.validated_table(landed, "samples"))))  # fmt: skip
    assert len(samples) == 3 and set(samples["label_source"]) == {"human"}
    done = {t["data"]["cv_sha256"] for t in tasks[:3]}
    assert set(samples["sha256"]) == done

    # The next dataset version holds them; the next round asks for none of the four again.
    ds = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("training_dataset")})  # fmt: skip
    r = ds.execute_in_process(instance=instance, run_config=QUIET)
    snap = materialized(r, "training_dataset")
    assert snap is not None
    rows = pd.read_parquet(io.BytesIO(store.get_bytes(store.key_of(
        r.output_for_node("training_dataset")["samples"]["uri"]))))  # fmt: skip
    assert done <= set(rows["sha256"])
    status = cli("annotate", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"completed": 3' in status.stdout and '"landed": 3' in status.stdout
    again = cli("annotate", "start", "--k", "50", "--label-issues", "0")
    assert again.returncode == 0, again.stderr
    second = next(x for x in manifests(store) if x["round_id"] != m["round_id"])
    first_images = {t["sha256"] for t in m["tasks"]}
    assert first_images.isdisjoint({t["sha256"] for t in second["tasks"]})
    assert len(second["tasks"]) == 8 - 4  # the pool's other images, each once
