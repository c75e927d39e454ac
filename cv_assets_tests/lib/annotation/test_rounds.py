"""The pure parts of annotation rounds: tasks from proposals, and sorting a round's export."""

from datetime import UTC, datetime

import pandas as pd
import pytest
from defusedxml import ElementTree

from cv_assets.lib.annotation.labelstudio import label_config
from cv_assets.lib.annotation.rounds import (
    build_tasks,
    collect,
    image_file,
    is_corrected,
    landing_batch,
    new_round_id,
)
from cv_assets.lib.ingest.sources import BatchFormat

pytestmark = pytest.mark.unit

RID = "round-20261130-101500-ab12"


def chosen() -> pd.DataFrame:
    return pd.DataFrame({"sha256": ["h1", "h2"], "stem": ["a", "b"], "batch_id": ["b0", "b1"],
                         "image_uri": ["u1", "u2"], "width": [200, 100], "height": [100, 100],
                         "uncertainty": [0.9, 0.4]})  # fmt: skip


def boxes() -> pd.DataFrame:
    return pd.DataFrame({"sha256": ["h1"], "stem": ["a"], "class_id": [1], "class": ["circle"],
                         "confidence": [0.3], "cx": [0.5], "cy": [0.5], "w": [0.2],
                         "h": [0.4]})  # fmt: skip


def export(task_id: int, file: str, annotations: list[dict]) -> dict:
    return {"id": task_id, "data": {"image": f"/data/local-files/?d={RID}/{file}",
                                    "cv_round": RID}, "annotations": annotations}  # fmt: skip


def ann(i: int, result: list[dict], cancelled: bool = False, at: str = "2026-11-30T10:00") -> dict:
    return {"id": i, "result": result, "was_cancelled": cancelled, "updated_at": at,
            "completed_by": 7}  # fmt: skip


def test_tasks_carry_the_image_its_pool_identity_and_the_champions_boxes_in_percent():
    tasks, entries = build_tasks(RID, chosen(), boxes(), "champion-v3")
    assert [t["data"]["cv_sha256"] for t in tasks] == ["h1", "h2"]
    assert tasks[0]["data"]["image"] == f"/data/local-files/?d={RID}/b0__a.jpg"
    assert image_file(tasks[0]) == "b0__a.jpg" == entries[0]["file"]
    (p,) = tasks[0]["predictions"]
    assert p["model_version"] == "champion-v3" and p["score"] == pytest.approx(0.1)
    (r,) = p["result"]
    assert r["original_width"] == 200 and r["value"]["rectanglelabels"] == ["circle"]
    assert [r["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx([40, 30, 20, 40])
    assert tasks[1]["predictions"][0]["result"] == []  # the champion saw nothing there
    assert entries[0]["predicted"] == p["result"]


def test_the_labelling_config_names_the_classes_escaped():
    names = ["car", 'a "b" <c>', "it's"]
    root = ElementTree.fromstring(label_config(names))
    assert [lab.get("value") for lab in root.iter("Label")] == names


def test_a_corrected_label_is_one_that_differs_from_the_prediction():
    _, (e, _) = build_tasks(RID, chosen(), boxes(), "v")
    pred = e["predicted"]
    moved = [{**pred[0], "value": {**pred[0]["value"], "x": 50.0}}]
    other = [{**pred[0], "value": {**pred[0]["value"], "rectanglelabels": ["square"]}}]
    assert not is_corrected(pred, pred)
    assert is_corrected(moved, pred) and is_corrected(other, pred)
    assert is_corrected([], pred) and is_corrected(pred + pred, pred)


def test_collect_sorts_completed_skipped_open_deleted_and_lands_only_what_is_new():
    _, entries = build_tasks(RID, chosen(), boxes(), "v")
    manifest = {"round_id": RID, "project": 3, "tasks": entries}
    pred = entries[0]["predicted"]
    tasks = [
        export(1, "b0__a.jpg", [ann(10, pred), ann(11, [], cancelled=True, at="2026-12")]),
        export(2, "b1__b.jpg", [ann(12, [], cancelled=True)]),
        export(9, "zzz.jpg", [ann(13, pred)]),  # added by hand in Label Studio: not the round's
    ]
    out = collect(manifest, tasks, {})
    assert (out.completed, out.corrected, out.skipped, out.open, out.unknown) == (1, 0, 1, 0, 1)
    assert [t["id"] for t in out.to_land] == [1] and out.deleted == []
    # Already landed: nothing new. Task 2 gone from Label Studio: deleted.
    later = collect(manifest, tasks[:1], {"1": "10@2026-11-30T10:00"})
    assert later.to_land == [] and later.completed == 1 and len(later.deleted) == 1


def test_a_collected_batch_is_a_labelstudio_correction_of_human_labels_named_by_its_content():
    _, entries = build_tasks(RID, chosen(), boxes(), "v")
    manifest = {"round_id": RID, "project": 3, "tasks": entries}
    task = export(1, "b0__a.jpg", [ann(10, entries[0]["predicted"])])
    now = datetime(2026, 11, 30, tzinfo=UTC)
    bid, text, marker = landing_batch(manifest, [task], ["square", "circle"], now)
    assert bid.startswith(f"{RID}-") and landing_batch(manifest, [task], ["x"], now)[0] == bid
    fmt = BatchFormat.of(marker)
    assert (fmt.fmt, fmt.labels, fmt.correction, fmt.round, fmt.label_source) == (
        "labelstudio", "full", True, True, "human")  # fmt: skip
    assert marker["provenance"]["images/b0__a.jpg"] == {
        "annotator": 7, "task": 1, "annotation": 10, "updated_at": "2026-11-30T10:00",
        "project": 3, "round": RID}  # fmt: skip
    assert '"predictions"' not in text
    edited = export(1, "b0__a.jpg", [ann(10, [], at="2026-11-30T11:00")])
    assert landing_batch(manifest, [edited], ["x"], now)[0] != bid


def test_round_ids_sort_by_time_and_differ_when_started_together():
    now = datetime(2026, 11, 30, 10, 15, tzinfo=UTC)
    a, b = new_round_id(now), new_round_id(now)
    assert a.startswith("round-20261130-101500-") and a != b


def test_label_issue_tasks_predict_the_current_labels_and_say_why():
    issue = pd.DataFrame({"sha256": ["h9"], "stem": ["z"], "batch_id": ["b2"], "image_uri": ["u9"],
                          "width": [100], "height": [50], "uncertainty": [0.7],
                          "kind": ["label_issue"], "note": ["Check the labels: class_mismatch"],
                          "model_version": ["current-labels"]})  # fmt: skip
    both = pd.concat([chosen(), issue], ignore_index=True)  # the pool's rows get NaN there
    label = boxes().assign(sha256="h9", stem="z", confidence=1.0)
    tasks, entries = build_tasks(RID, both, pd.concat([boxes(), label]), "champion-v3")
    kinds = [(t["data"]["cv_kind"], t["predictions"][0]["model_version"]) for t in tasks]
    assert kinds == [("pool", "champion-v3"), ("pool", "champion-v3"),
                     ("label_issue", "current-labels")]  # fmt: skip
    assert tasks[0]["data"]["cv_note"] == "Unlabelled: the champion is unsure (uncertainty 0.90)"
    assert tasks[2]["data"]["cv_note"] == "Check the labels: class_mismatch"
    assert [e["kind"] for e in entries] == ["pool", "pool", "label_issue"]
    # No box anywhere (an empty table without columns): every prediction is empty.
    bare, _ = build_tasks(RID, chosen(), pd.DataFrame(), "v")
    assert [t["predictions"][0]["result"] for t in bare] == [[], []]
