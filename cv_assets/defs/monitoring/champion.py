"""What every monitoring asset starts from: the champion, with the ONNX file it is measured by."""

import dagster as dg

from cv_assets.lib.registry import ModelVersion
from cv_assets.lib.store import ArtifactStore
from cv_assets.resources.storage import MlflowResource


def champion_with_onnx(mlflow: MlflowResource, store: ArtifactStore, what: str) -> ModelVersion:
    """The champion, or a clear failure that says ``what`` needs it and what to run first."""
    champ = mlflow.registry(store).champion()
    if champ is None or not champ.mobile.get("onnx_uri"):
        raise dg.Failure(
            description=f"no champion with mobile files yet: {what} through the champion's ONNX "
            "file (run training_job first)",
            allow_retries=False,
        )
    return champ
