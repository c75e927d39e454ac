"""Label Studio, where people label the images of annotation rounds."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from cv_assets.lib.annotation.labelstudio import TOKEN_VAR, LabelStudio, LabelStudioAuthError


class LabelStudioResource(dg.ConfigurableResource):
    """The Label Studio server of annotation rounds, and the folder it serves their images from."""

    url: str = Field(description="Label Studio's root URL (CV_ASSETS_LABELSTUDIO_URL)")
    # dg.EnvVar(CV_ASSETS_LABELSTUDIO_TOKEN) when set: the UI shows the variable's name only.
    token: str | None = Field(default=None, description=f"API token ({TOKEN_VAR})")
    files_root: str = Field(
        description="Label Studio's local-files document root (CV_ASSETS_LABELSTUDIO_FILES): a "
        "round copies its images to <files_root>/<round>/"
    )

    def client(self) -> LabelStudio:
        if not self.token:
            raise LabelStudioAuthError(
                f"no Label Studio token: set {TOKEN_VAR} for Label Studio at {self.url} "
                "(`make labelstudio` prints one)"
            )
        return LabelStudio(self.url, self.token)

    def round_folder(self, round_id: str) -> Path:
        return Path(self.files_root).expanduser().absolute() / round_id
