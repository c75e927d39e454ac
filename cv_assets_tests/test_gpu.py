"""Opt-in GPU tier (``pytest -m gpu`` on a CUDA machine): the asset trains on the GPU by itself."""

import pytest

from cv_assets.lib.tracking import runs as tracking
from cv_assets_tests.support.jobs import ingest, materialized, train

pytestmark = pytest.mark.gpu


def test_device_auto_trains_on_cuda_and_records_it(cfg, instance):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.fail("the gpu tier needs a CUDA device; run it with -m gpu on a GPU machine")
    ingest(cfg, instance, batches=2, images=24, size=96)
    result = train(cfg, instance, {"device": "auto", "epochs": 2})
    assert result.success
    model = materialized(result, "yolo_model")
    assert model is not None
    run = tracking.client(cfg.mlflow_tracking_uri).get_run(str(model["mlflow_run_id"]))
    assert run.data.params["resolved_device"] == "0"
    assert materialized(result, "mobile_model") is not None  # export still runs on the CPU
