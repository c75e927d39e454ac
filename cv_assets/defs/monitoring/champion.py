"""What every monitoring asset starts from: the champion it takes as input, with its ONNX file.

The champion comes from the ``champion_model`` input (its latest materialization, which a CLI
promotion or rollback also writes), never from the registry alias at run time: what the UI's
lineage shows is what was measured.
"""

from dataclasses import fields
from typing import Any

import dagster as dg

from cv_assets.lib.tracking.registry import ModelVersion

_FIELDS = {f.name for f in fields(ModelVersion)}


def champion_with_onnx(champion_model: dict[str, Any], what: str) -> ModelVersion:
    """The input's champion, or a clear failure that says ``what`` needs it and what to run."""
    if not champion_model.get("version") or not (champion_model.get("mobile") or {}).get(
        "onnx_uri"
    ):
        raise dg.Failure(
            description=f"no champion with mobile files yet: {what} through the champion's ONNX "
            "file (run training_job first, or approve a pending model with `cv-assets promote`)",
            allow_retries=False,
        )
    return ModelVersion(**{k: v for k, v in champion_model.items() if k in _FIELDS})
