"""The single entry point: every asset group's definitions, plus the platform's resources."""

import warnings

import dagster as dg

from cv_assets.defs.automation import definitions as automation
from cv_assets.defs.dataset import definitions as dataset
from cv_assets.defs.ingest import definitions as ingest
from cv_assets.defs.mobile import definitions as mobile
from cv_assets.defs.monitoring import definitions as monitoring
from cv_assets.defs.training import definitions as training
from cv_assets.lib.settings import PlatformConfig
from cv_assets.resources.environment import platform_resources

# Output(data_version=...) is marked beta; it is what makes staleness in the UI truthful.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_defs(cfg: PlatformConfig | None = None) -> dg.Definitions:
    cfg = cfg or PlatformConfig.from_env()
    merged = dg.Definitions.merge(
        ingest.defs,
        dataset.defs,
        training.defs,
        mobile.defs,
        monitoring.defs,
        automation.defs,
        # One process per run, not per step: on a 2-core machine, starting a Python process that
        # imports torch for every step costs more than any parallelism between steps could win.
        dg.Definitions(resources=platform_resources(cfg), executor=dg.in_process_executor),
    )
    return with_storage_kinds(automation.with_retraining_policy(merged, cfg), cfg)


def with_storage_kinds(defs: dg.Definitions, cfg: PlatformConfig) -> dg.Definitions:
    """Every asset writes its files to the artifact store: when that is a bucket, the UI's kind
    badge says so (``s3``), beside what the asset computes with."""
    if not cfg.artifacts_root.startswith("s3://"):
        return defs
    return defs.map_resolved_asset_specs(func=lambda spec: spec.merge_attributes(kinds={"s3"}))


defs = build_defs()
