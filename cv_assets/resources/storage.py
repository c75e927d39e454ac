"""Resources over the artifact store and the landing zone (local paths or ``s3://``)."""

from functools import lru_cache

import dagster as dg

from cv_assets.lib.landing import LandingZone
from cv_assets.lib.store import ArtifactStore


@lru_cache(maxsize=8)
def _store(root: str, endpoint: str | None) -> ArtifactStore:
    return ArtifactStore(root, s3_endpoint_url=endpoint)


@lru_cache(maxsize=8)
def _zone(root: str, endpoint: str | None) -> LandingZone:
    return LandingZone(root, s3_endpoint_url=endpoint)


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where weights, datasets, tables and reports are written, atomically and with a sha256."""

    root: str
    s3_endpoint_url: str | None = None

    @property
    def store(self) -> ArtifactStore:
        return _store(self.root, self.s3_endpoint_url)


class LandingZoneResource(dg.ConfigurableResource):
    """The landing zone that producers write batches into (read-only for the platform)."""

    root: str
    s3_endpoint_url: str | None = None

    @property
    def zone(self) -> LandingZone:
        return _zone(self.root, self.s3_endpoint_url)


class PlatformSettings(dg.ConfigurableResource):
    """Platform-wide facts that every asset must agree on."""

    classes: list[str]
    home: str
