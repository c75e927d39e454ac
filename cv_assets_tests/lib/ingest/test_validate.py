"""One validation pass without Dagster: the records it hands on, the tables it writes, refusals."""

import io
from pathlib import Path

import pandas as pd
import pytest

from cv_assets.lib.core import layout
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.images import ImageLimits
from cv_assets.lib.ingest.labels import LabelLimits
from cv_assets.lib.ingest.landing import BatchRefused, LandingZone
from cv_assets.lib.ingest.raw import copy_raw_batch
from cv_assets.lib.ingest.validate import validate_batch
from cv_assets.lib.synth.batches import CLASSES, write_batches

pytestmark = pytest.mark.unit


def _validate(tmp_path: Path, corrupt: float, **kw):
    (s,) = write_batches(tmp_path / "landing", 1, 20, seed=5, size=96, corrupt_fraction=corrupt)
    store = ArtifactStore(str(tmp_path / "artifacts"))
    raw = copy_raw_batch(LandingZone(str(tmp_path / "landing")), store, s.batch_id, CLASSES)
    kw = {"max_classes": 64, "min_acceptance_rate": 0.5} | kw
    v = validate_batch(store, raw, CLASSES, limits=ImageLimits(), label_limits=LabelLimits(), **kw)
    return s, store, v


def test_records_count_what_the_tables_hold_and_judge_the_acceptance_rate(tmp_path):
    s, store, v = _validate(tmp_path, corrupt=0.3, min_acceptance_rate=0.99)
    rec = v.validated
    assert rec["landed"] == s.files_landed == rec["accepted"] + rec["quarantined"]
    assert rec["quarantined"] == len(s.faults) > 0
    assert rec.get("acceptance_ok") is False  # below 99 %
    samples = pd.read_parquet(io.BytesIO(store.verify(rec["samples"])))
    quarantine = pd.read_parquet(io.BytesIO(store.verify(rec["quarantine"])))
    features = pd.read_parquet(io.BytesIO(store.verify(v.features["features"])))
    assert len(samples) == rec["accepted"] == len(features) == v.features["rows"]
    assert len(quarantine) == rec["quarantined"]
    assert rec["samples"]["uri"] == store.uri(layout.validated_table(s.batch_id, "samples"))
    assert "| rule | items |" in v.reasons_md and "| file | reason |" in v.preview_md


def test_a_clean_batch_passes_its_acceptance_rate(tmp_path):
    _, _, v = _validate(tmp_path, corrupt=0.0)
    assert v.validated.get("acceptance_ok") is True
    assert v.validated["quarantined"] == 0


def test_more_declared_classes_than_allowed_is_refused_before_any_table_is_written(tmp_path):
    with pytest.raises(BatchRefused, match=r"declares 3 classes, more than max_classes = 2"):
        _validate(tmp_path, corrupt=0.0, max_classes=2)
    store = ArtifactStore(str(tmp_path / "artifacts"))
    assert not list(store.list("validated/"))
