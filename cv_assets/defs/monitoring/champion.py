"""What every monitoring asset starts from: the champion it takes as input, with its ONNX file.

The champion comes from the ``champion_model`` input (its latest materialization, which a CLI
promotion or rollback also writes), never from the registry alias at run time: what the UI's
lineage shows is what was measured.
"""

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, cast

import dagster as dg

from cv_assets.lib.tracking.registry import ModelVersion
from cv_assets.lib.training.records import ChampionModel

_FIELDS = {f.name for f in fields(ModelVersion)}


def champion_with_onnx(champion_model: ChampionModel, what: str) -> ModelVersion:
    """The input's champion, or a clear failure that says ``what`` needs it and what to run."""
    if not champion_model.get("version") or not (champion_model.get("mobile") or {}).get(
        "onnx_uri"
    ):
        raise dg.Failure(
            description=f"no champion with mobile files yet: {what} through the champion's ONNX "
            "file (run training_job first, or approve a pending model with `cv-assets promote`)",
            allow_retries=False,
        )
    record = cast(Mapping[str, Any], champion_model)  # read as ModelVersion fields, by name
    return ModelVersion(**{k: v for k, v in record.items() if k in _FIELDS})
