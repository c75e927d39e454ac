"""The telemetry contract: every rule refuses its event with a reason naming the field."""

import base64
import random

import pytest

from cv_assets.lib.telemetry.contract import MAX_DETECTIONS, BatchError, validate_batch
from cv_assets_tests.telemetry.service import jpeg_b64, make_event

pytestmark = pytest.mark.unit

KNOWN = {"1": 3, "2": 3}


def judge(*events, max_image_bytes=512 * 1024):
    doc = {"schema_version": 1, "events": list(events)}
    accepted, rejected = validate_batch(doc, KNOWN, max_image_bytes)
    assert len(accepted) + len(rejected) == len(events)
    return accepted, rejected


def reason_of(event, **kw) -> str:
    accepted, rejected = judge(make_event(random.Random(0)), event, **kw)
    assert len(accepted) == 1 and len(rejected) == 1, rejected
    assert rejected[0]["index"] == 1
    return rejected[0]["reason"]


def test_realistic_batch_is_accepted_whole():
    rng = random.Random(7)
    events = [make_event(rng) for _ in range(200)]
    accepted, rejected = judge(*events)
    assert rejected == [] and accepted == events


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "body: expected a JSON object, got list"),
        ({"schema_version": 2, "events": []}, "schema_version: 2 is not supported"),
        ({"events": []}, "schema_version: None is not supported"),
        ({"schema_version": True, "events": []}, "schema_version: True is not supported"),
        ({"schema_version": 1}, "events: expected a list of events, missing"),
        ({"schema_version": 1, "events": {}}, "events: expected a list of events, got object"),
    ],
)
def test_wrong_envelope_rejects_the_whole_batch_with_one_reason(doc, reason):
    with pytest.raises(BatchError, match=reason.replace("(", r"\(")):
        validate_batch(doc, KNOWN)


def test_missing_unknown_and_mistyped_fields_are_named():
    e = make_event()
    del e["sampling"]
    e["user_name"] = "alice"
    e["latency_ms"] = "12"
    e["consent_image"] = 1
    e["input"]["width"] = 640.0
    reason = reason_of(e)
    assert "events[1]: unknown field 'user_name'" in reason
    assert "events[1].sampling: missing (required, string)" in reason
    assert "events[1].latency_ms: expected number, got string" in reason
    assert "events[1].consent_image: expected boolean, got number" in reason
    assert "events[1].input.width: expected integer, got number" in reason


def test_an_event_that_is_not_an_object_has_no_event_id():
    _, rejected = judge(make_event(), 42)
    assert rejected == [
        {"index": 1, "event_id": None, "reason": "events[1]: expected an object, got number"}
    ]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("event_id", "short", "events[1].event_id: 'short' must be 8..64 characters"),
        ("install_id", "x" * 65, "events[1].install_id: 'xxxx"),
        ("time", "2026-12-01 10:00:00", "events[1].time: '2026-12-01 10:00:00' is not an ISO"),
        ("time", "2026-02-30T10:00:00Z", "is not an ISO-8601 UTC time like 2026-12-01T10:00:00Z"),
        ("time", "2026-12-01T10:00:00+02:00", "events[1].time:"),
        ("app_version", "2.x", "events[1].app_version: '2.x' is not dotted integers"),
        ("os", "windows", "events[1].os: 'windows' is not one of android, ios, other"),
        ("runtime", "tensorrt", "events[1].runtime: 'tensorrt' is not one of onnxruntime"),
        ("delegate", "", "events[1].delegate: '' must be 1..32 characters"),
        ("device_model", "d" * 65, "events[1].device_model:"),
        ("model_sha256", "AB" * 32, "events[1].model_sha256: 'ABAB"),
        ("sampling", "all", "events[1].sampling: 'all' is not one of random, low_confidence"),
        ("latency_ms", -1, "events[1].latency_ms: -1.0 is not a finite number >= 0"),
        ("latency_ms", float("nan"), "events[1].latency_ms: nan is not a finite number >= 0"),
        ("latency_ms", float("inf"), "events[1].latency_ms: inf is not a finite number >= 0"),
    ],
)
def test_each_flat_rule_names_field_and_rule(field, value, reason):
    assert reason in reason_of(make_event(**{field: value}))


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("width", 0, "events[1].input.width: 0 is not > 0"),
        ("height", -5, "events[1].input.height: -5 is not > 0"),
        ("brightness", float("nan"), "events[1].input.brightness: nan is not a finite number"),
        ("sharpness", float("-inf"), "events[1].input.sharpness: -inf is not a finite number"),
        ("contrast", -0.5, "events[1].input.contrast: -0.5 is not a finite number >= 0"),
    ],
)
def test_input_rules_name_the_nested_field(key, value, reason):
    e = make_event()
    e["input"][key] = value
    assert reason in reason_of(e)


def det(class_id=0, confidence=0.5, box=(0.1, 0.1, 0.5, 0.5)):
    return {"class_id": class_id, "confidence": confidence, "box": list(box)}


@pytest.mark.parametrize(
    ("d", "reason"),
    [
        (det(box=(0.8, 0.2, 0.2, 0.4)), "events[1].detections[1].box: x1 0.8 is not < x2 0.2"),
        (det(box=(0.1, 0.5, 0.2, 0.5)), "events[1].detections[1].box: y1 0.5 is not < y2 0.5"),
        (det(box=(0.1, 0.1, 1.2, 0.5)), "events[1].detections[1].box: [0.1, 0.1, 1.2, 0.5] has"),
        (det(box=(0.1, float("nan"), 0.2, 0.5)), "events[1].detections[1].box: [0.1, nan"),
        (det(box=(0.1, 0.2)), "events[1].detections[1].box: expected 4 numbers"),
        (det(confidence=1.5), "events[1].detections[1].confidence: 1.5 is not in [0, 1]"),
        (det(confidence=float("nan")), "events[1].detections[1].confidence: nan is not in"),
        (det(class_id=3), "events[1].detections[1].class_id: 3 is outside 0..2"),
        (det(class_id=True), "events[1].detections[1].class_id: expected integer, got boolean"),
        (
            {"class_id": 0, "box": [0, 0, 1, 1]},
            "detections[1].confidence: expected number, missing",
        ),
    ],
)
def test_detection_rules_name_the_detection(d, reason):
    assert reason in reason_of(make_event(detections=[det(), d]))


def test_more_than_top_k_detections_is_refused():
    e = make_event(detections=[det()] * (MAX_DETECTIONS + 1))
    assert "events[1].detections: 101 detections, more than the top-100" in reason_of(e)


def test_unknown_model_version_names_the_known_ones():
    reason = reason_of(make_event(model_version="v9"))
    assert reason == "events[1].model_version: unknown model version 'v9' (known: 1, 2)"


def test_class_id_is_bounded_by_that_models_class_count():
    doc = {"schema_version": 1, "events": [make_event(model_version="1", detections=[det(4)])]}
    assert validate_batch(doc, {"1": 5})[1] == []
    assert "class_id: 4 is outside 0..2" in validate_batch(doc, {"1": 3})[1][0]["reason"]


def test_image_with_consent_is_decoded_and_without_consent_refused():
    image = jpeg_b64()
    ok = make_event(consent_image=True, sampling="low_confidence", image=image)
    accepted, _ = judge(ok)
    assert accepted[0]["image"] == base64.b64decode(image)
    reason = reason_of(make_event(consent_image=False, image=image))
    assert reason == "events[1].image: an image is only allowed when consent_image is true"


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (base64.b64encode(b"\x89PNG\r\n").decode(), "is not a JPEG (starts with 89504e"),
        ("not base64!!", "events[1].image: is not valid base64"),
        (base64.b64encode(b"\xff\xd8\xff" + b"0" * 2000).decode(), "more than 1,000"),
    ],
)
def test_image_must_be_a_jpeg_within_the_size(image, reason):
    e = make_event(consent_image=True, image=image)
    assert reason in reason_of(e, max_image_bytes=1000)


def test_one_bad_event_does_not_hide_another():
    rng = random.Random(3)
    events = [make_event(rng) for _ in range(10)]
    events[2]["os"] = "beos"
    events[7]["latency_ms"] = float("nan")
    events[9]["detections"] = [det(box=(0.5, 0.5, 0.4, 0.6))]
    accepted, rejected = judge(*events)
    assert [r["index"] for r in rejected] == [2, 7, 9]
    assert [r["event_id"] for r in rejected] == [events[i]["event_id"] for i in (2, 7, 9)]
    assert len(accepted) == 7


def test_several_broken_fields_of_one_event_are_joined_in_one_rejection():
    e = make_event(os="beos", latency_ms=-3)
    reason = reason_of(e)
    assert "events[1].os:" in reason and "; " in reason and "events[1].latency_ms:" in reason
