"""Annotation rounds against the real Label Studio server on 127.0.0.1.

The person is played by the test through Label Studio's own HTTP API (the endpoints its web page
calls): annotations are submitted, skipped, edited and deleted there, and the platform collects
them as it would a person's. Intake is the real intake job on a real instance.
"""

from __future__ import annotations

import io
import json
import socket
import time
from datetime import UTC, datetime

import pandas as pd
import pytest
import requests

from cv_assets.lib.annotation.collect import ANNOTATION_FILE, collect_round
from cv_assets.lib.annotation.labelstudio import (
    LabelStudio,
    LabelStudioAuthError,
    LabelStudioUnavailable,
    label_config,
)
from cv_assets.lib.annotation.rounds import new_round_id
from cv_assets.lib.annotation.start import label_issues, push_round
from cv_assets.lib.core import layout
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.read_side import open_store
from cv_assets_tests.support.jobs import QUIET, ingest, run_intake
from cv_assets_tests.support.labelstudio import Person, rect
from cv_assets_tests.support.processes import free_port

pytestmark = [pytest.mark.integration]

CLASSES = ["square", "circle", "triangle"]


def pool_of(cfg: PlatformConfig, instance, n: int, seed: int) -> tuple[str, pd.DataFrame]:
    """A batch landed without labels and taken in: its unlabelled pool, as a round sees it."""
    (bid,) = ingest(cfg, instance, images=n, size=96, seed=seed, unlabelled_fraction=1.0)
    store = open_store(cfg)
    pool = pd.read_parquet(io.BytesIO(store.get_bytes(layout.validated_table(bid, "unlabelled"))))
    pool = pool.assign(batch_id=bid, uncertainty=[1 - i / n for i in range(len(pool))])
    return bid, pool


def proposals_for(pool: pd.DataFrame) -> pd.DataFrame:
    """One proposed circle in the middle of every image (what the champion said)."""
    return pd.DataFrame({"sha256": pool["sha256"], "stem": pool["stem"], "class_id": 1,
                         "class": "circle", "confidence": 0.3, "cx": 0.5, "cy": 0.5,
                         "w": 0.25, "h": 0.25})  # fmt: skip


def start(cfg, server, pool, rid=None):
    client = LabelStudio(server.url, server.token)
    rid = rid or new_round_id(datetime.now(UTC))
    started = push_round(
        client, open_store(cfg), rid, server.files_root / rid, pool, proposals_for(pool),
        CLASSES, "champion-v1", datetime.now(UTC).isoformat(),
    )  # fmt: skip
    return client, started.manifest


def test_a_round_pushes_tasks_with_predictions_and_serves_only_its_images(cfg, instance,
                                                                          labelstudio):  # fmt: skip
    _, pool = pool_of(cfg, instance, 6, seed=81)
    _, m = start(cfg, labelstudio, pool)
    person = Person(labelstudio)
    tasks = person.tasks(m["project"])
    assert len(tasks) == 6 and all(e["task_id"] for e in m["tasks"])
    # Most uncertain first: the order the person meets them in.
    assert [t["data"]["cv_sha256"] for t in tasks] == list(pool["sha256"])
    pred = person.task(tasks[0]["id"])["predictions"][0]
    assert pred["model_version"] == "champion-v1" and len(pred["result"]) == 1
    assert pred["result"][0]["value"]["rectanglelabels"] == ["circle"]
    assert pred["result"][0]["value"]["x"] == pytest.approx(37.5)
    # The project's labelling config is the platform's class list.
    project = requests.get(f"{labelstudio.url}/api/projects/{m['project']}", headers=person.h,
                           timeout=30).json()  # fmt: skip
    assert project["label_config"] == label_config(CLASSES)
    # Label Studio serves the round's images (the bytes intake standardised) to a signed-in user...
    img = requests.get(f"{labelstudio.url}{tasks[0]['data']['image']}", headers=person.h,
                       timeout=30)  # fmt: skip
    store = open_store(cfg)
    assert img.status_code == 200
    assert img.content == store.get_bytes(store.key_of(pool["image_uri"].iloc[0]))
    # ...but nothing outside the round's folder, and nothing to a visitor without a session.
    other = labelstudio.files_root / "not-a-round"
    other.mkdir(exist_ok=True)
    (other / "x.jpg").write_bytes(img.content)
    for d in ("not-a-round/x.jpg", "../data/label_studio.sqlite3"):
        outside = requests.get(f"{labelstudio.url}/data/local-files/?d={d}", headers=person.h,
                               timeout=30)  # fmt: skip
        assert outside.status_code in (403, 404, 500) and outside.content != img.content, d
    anonymous = requests.get(f"{labelstudio.url}{tasks[0]['data']['image']}", timeout=30,
                             allow_redirects=False)  # fmt: skip
    assert anonymous.status_code != 200 or anonymous.content != img.content


def test_collected_annotations_land_once_as_human_labels_with_provenance(cfg, instance,
                                                                         labelstudio):  # fmt: skip
    pool_bid, pool = pool_of(cfg, instance, 6, seed=82)
    client, m = start(cfg, labelstudio, pool)
    store, zone = open_store(cfg), ArtifactStore(cfg.landing_root)
    person = Person(labelstudio)
    t = person.tasks(m["project"])
    same = person.task(t[0]["id"])["predictions"][0]["result"]
    person.annotate(t[0], same)  # the champion was right
    fixed = person.annotate(t[1], [rect("square", 10, 10, 30, 30)])  # the person corrects it
    person.annotate(t[2], [], was_cancelled=True)  # skipped
    # t[3]: never opened. t[4]: three bad boxes. t[5]: deleted in Label Studio.
    person.annotate(t[4], [rect("zebra", 10, 10, 20, 20), rect("square", 90, 90, 30, 30),
                           rect("circle", 40, 40, 0, 0)])  # fmt: skip
    person.delete_task(t[5])

    now = datetime.now(UTC)
    out = collect_round(client, store, zone, m, CLASSES, now)
    assert out.counts == {"pushed": 6, "completed": 3, "corrected": 2, "skipped": 1, "open": 1,
                          "deleted": 1, "not_pushed_by_round": 0, "landed": 3}  # fmt: skip
    assert out.batch_id and out.landed_now == 3
    bid = out.batch_id
    marker = json.loads(zone.get_bytes(f"{bid}/batch.json"))
    assert marker["format"] == "labelstudio" and marker["source"] == f"labelstudio:{m['round_id']}"
    prov = marker["provenance"][f"images/{m['tasks'][1]['file']}"]
    assert prov["task"] == t[1]["id"] and prov["annotation"] == fixed
    assert prov["project"] == m["project"] and prov["round"] == m["round_id"]
    assert isinstance(prov["annotator"], int)
    assert sorted(zone.list(f"{bid}/images/")) == sorted(
        f"{bid}/images/{m['tasks'][i]['file']}" for i in (0, 1, 4)
    )

    # Collected again: nothing new, nothing landed twice.
    again = collect_round(client, store, zone, m, CLASSES, now)
    assert again.batch_id is None and again.counts["completed"] == 3
    assert len([k for k in zone.list("") if k.endswith("batch.json")]) == 2  # the pool's + one

    # Intake takes the labels in as human labels that supersede the pool's images.
    r = run_intake(cfg, instance, bid, run_config=QUIET)
    assert r.success
    samples = pd.read_parquet(io.BytesIO(store.get_bytes(layout.validated_table(bid, "samples"))))
    assert sorted(samples["sha256"]) == sorted(pool["sha256"].iloc[[0, 1]])
    assert set(samples["label_source"]) == {"human"}
    assert all(s.startswith(f"{pool_bid}/") for s in samples["supersedes"])
    row = samples[samples["sha256"] == pool["sha256"].iloc[1]].iloc[0]
    assert json.loads(row["provenance"])["annotation"] == fixed
    assert store.get_bytes(store.key_of(row["label_uri"])).decode().startswith("0 ")  # a square
    # The three bad boxes are quarantined, each with its rule; their image stays unlabelled.
    problems = pd.read_parquet(io.BytesIO(store.get_bytes(
        layout.validated_table(bid, "annotation_problems"))))  # fmt: skip
    assert sorted(problems["rule"]) == ["bad_box", "box_outside_image", "unknown_class"]
    assert set(problems["file"]) == {ANNOTATION_FILE} and problems["reason"].str.len().min() > 0
    unl = pd.read_parquet(io.BytesIO(store.get_bytes(layout.validated_table(bid, "unlabelled"))))
    assert list(unl["sha256"]) == [pool["sha256"].iloc[4]]

    # A person edits a completed label later: it lands again, once, as the newer label.
    person.edit(fixed, [rect("triangle", 12, 12, 30, 30)])
    later = collect_round(client, store, zone, m, CLASSES, datetime.now(UTC))
    assert later.batch_id and later.batch_id != bid and later.landed_now == 1
    assert collect_round(client, store, zone, m, CLASSES, datetime.now(UTC)).batch_id is None


def test_an_interrupted_collection_does_not_land_twice(cfg, instance, labelstudio):
    _, pool = pool_of(cfg, instance, 2, seed=83)
    client, m = start(cfg, labelstudio, pool)
    store, zone = open_store(cfg), ArtifactStore(cfg.landing_root)
    person = Person(labelstudio)
    for task in person.tasks(m["project"]):
        person.annotate(task, [rect("circle", 20, 20, 30, 30)])
    first = collect_round(client, store, zone, m, CLASSES, datetime.now(UTC))
    # The process died after landing, before recording it: the record is gone.
    (store.local_path(layout.round_collected(m["round_id"])) or pytest.fail()).unlink()
    second = collect_round(client, store, zone, m, CLASSES, datetime.now(UTC))
    assert second.batch_id == first.batch_id  # the same batch, found complete, not landed again
    assert len([k for k in zone.list("") if k.endswith("batch.json")]) == 2


def test_a_wrong_token_is_refused_clearly_without_showing_it(labelstudio):
    secret = "0123456789abcdef-wrong-token"
    with pytest.raises(LabelStudioAuthError) as e:
        LabelStudio(labelstudio.url, secret).check()
    assert labelstudio.url in str(e.value) and "CV_ASSETS_LABELSTUDIO_TOKEN" in str(e.value)
    assert secret not in str(e.value)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"  # a personal access token's shape
    with pytest.raises(LabelStudioAuthError) as e:
        LabelStudio(labelstudio.url, jwt).check()
    assert jwt not in str(e.value) and "eyJ" not in str(e.value)
    assert LabelStudio(labelstudio.url, labelstudio.token).check() == "1.23.2"


def test_label_studio_down_is_retried_then_named(cfg, instance, labelstudio):
    port = free_port()
    with socket.socket() as s:  # nothing listens there
        assert s.connect_ex(("127.0.0.1", port)) != 0
    down = LabelStudio(f"http://127.0.0.1:{port}", "t0ken-not-shown", pause_s=0.05, retries=2)
    t0 = time.monotonic()
    with pytest.raises(LabelStudioUnavailable) as e:
        down.create_project("r", CLASSES)
    assert f"http://127.0.0.1:{port}" in str(e.value) and "3 attempts" in str(e.value)
    assert "t0ken-not-shown" not in str(e.value) and time.monotonic() - t0 < 10
    # A round that cannot reach Label Studio leaves nothing: no manifest, no files, no project.
    _, pool = pool_of(cfg, instance, 2, seed=84)
    rid = new_round_id(datetime.now(UTC))
    with pytest.raises(LabelStudioUnavailable):
        push_round(down, open_store(cfg), rid, labelstudio.files_root / rid, pool,
                   proposals_for(pool), CLASSES, "v1", "now")  # fmt: skip
    assert not open_store(cfg).exists(layout.round_manifest(rid))
    assert not (labelstudio.files_root / rid).exists()
    # Collecting while it is down raises before anything is written.
    _, m = start(cfg, labelstudio, pool)
    store, zone = open_store(cfg), ArtifactStore(cfg.landing_root)
    before = sorted(zone.list(""))
    with pytest.raises(LabelStudioUnavailable):
        collect_round(down, store, zone, m, CLASSES, datetime.now(UTC))
    assert sorted(zone.list("")) == before
    assert not store.exists(layout.round_collected(m["round_id"]))
    # And a deleted project closes its round instead of failing every collection.
    LabelStudio(labelstudio.url, labelstudio.token).delete_project(m["project"])
    gone = collect_round(LabelStudio(labelstudio.url, labelstudio.token), store, zone, m, CLASSES,
                         datetime.now(UTC))  # fmt: skip
    assert gone.project_deleted and gone.batch_id is None


def test_a_label_issue_goes_out_with_its_current_labels_and_its_correction_supersedes_them(
    cfg, instance, labelstudio
):
    (bid,) = ingest(cfg, instance, images=4, size=96, seed=86)
    store = open_store(cfg)
    samples = pd.read_parquet(io.BytesIO(store.get_bytes(layout.validated_table(bid, "samples"))))
    # What review_queue wrote for the batch: its two worst items (one image twice).
    queue = samples.head(2).assign(score=[0.9, 0.6], details="class_mismatch: label vs champion")
    queue = pd.concat([queue, queue.head(1).assign(score=0.3)], ignore_index=True)
    ref = store.put_bytes(f"review/{bid}/v1/queue.parquet", queue.to_parquet(index=False))
    rows, label_boxes = label_issues(store, {bid: {"table": ref.as_dict()}}, set(), 5, CLASSES)
    assert list(rows["sha256"]) == list(samples["sha256"].head(2))  # worst first, each once
    assert list(rows["note"]) == ["Check the labels: class_mismatch: label vs champion"] * 2
    first_label = store.get_bytes(store.key_of(samples["label_uri"].iloc[0])).decode()
    assert len(label_boxes[label_boxes["sha256"] == rows["sha256"].iloc[0]]) == len(
        first_label.splitlines())  # fmt: skip

    client = LabelStudio(labelstudio.url, labelstudio.token)
    rid = new_round_id(datetime.now(UTC))
    m = push_round(client, store, rid, labelstudio.files_root / rid, rows, label_boxes, CLASSES,
                   "champion-v1", "now").manifest  # fmt: skip
    person = Person(labelstudio)
    t = person.tasks(m["project"])
    shown = person.task(t[0]["id"])["predictions"][0]
    assert shown["model_version"] == "current-labels"
    assert len(shown["result"]) == len(first_label.splitlines())
    person.annotate(t[0], [rect("triangle", 10, 10, 30, 30)])  # corrected
    person.annotate(t[1], person.task(t[1]["id"])["predictions"][0]["result"])  # confirmed
    zone = ArtifactStore(cfg.landing_root)
    out = collect_round(client, store, zone, m, CLASSES, datetime.now(UTC))
    assert out.counts["completed"] == 2 and out.counts["corrected"] == 1 and out.batch_id
    assert run_intake(cfg, instance, out.batch_id, run_config=QUIET).success
    fixed = pd.read_parquet(io.BytesIO(store.get_bytes(
        layout.validated_table(out.batch_id, "samples"))))  # fmt: skip
    assert sorted(fixed["sha256"]) == sorted(rows["sha256"])
    assert all(s.startswith(f"{bid}/") for s in fixed["supersedes"])
    new = fixed[fixed["sha256"] == rows["sha256"].iloc[0]].iloc[0]
    assert store.get_bytes(store.key_of(new["label_uri"])).decode().startswith("2 ")
