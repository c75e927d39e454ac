"""The release channel's signing key (a secret: the PEM reaches the resource as dg.EnvVar)."""

from typing import Any

import dagster as dg
from pydantic import Field

from cv_assets.lib.mobile.releases import KEY_FILE_VAR, KEY_VAR, signing_key


class ReleaseSigningResource(dg.ConfigurableResource):
    """Signs release manifests; without a key, nothing is published."""

    key_file: str | None = Field(
        default=None, description=f"the private key's path ({KEY_FILE_VAR})"
    )
    key_pem: str | None = Field(default=None, description=f"the private key itself ({KEY_VAR})")
    stable: str = Field(default="manual", description="'auto': stable follows beta on its own")

    @property
    def configured(self) -> bool:
        return bool(self.key_pem or self.key_file)

    def key(self) -> Any:
        return signing_key(self.key_pem, self.key_file)
