"""The single entry point: every asset group's definitions, plus the platform's resources."""

import warnings

import dagster as dg

from cv_assets.defs.annotation import definitions as annotation
from cv_assets.defs.automation import definitions as automation
from cv_assets.defs.dataset import definitions as dataset
from cv_assets.defs.ingest import definitions as ingest
from cv_assets.defs.mobile import definitions as mobile
from cv_assets.defs.monitoring import definitions as monitoring
from cv_assets.defs.training import definitions as training
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.resources.environment import platform_resources


def build_defs(cfg: PlatformConfig) -> dg.Definitions:
    """Every definition for one configuration: sensors, schedules, jobs and config defaults are
    built from ``cfg``, so two configurations in one process give two honest sets."""
    with warnings.catch_warnings():
        # Beta, and used on purpose: ``use_user_code_server=True`` on the automation sensor lets
        # the volume and cooldown conditions (Python that reads the instance) run on the code
        # server. Silenced only while the sensor is built, and only this parameter's warning.
        warnings.filterwarnings(
            "ignore", message="Parameter `use_user_code_server`", category=dg.BetaWarning
        )
        # Preview, and used on purpose: map_resolved_asset_specs applies the settings-dependent
        # retraining condition, freshness policy and kind badges to the assembled specs.
        warnings.filterwarnings(
            "ignore",
            message="Function `Definitions.map_resolved_asset_specs`",
            category=dg.PreviewWarning,
        )
        merged = dg.Definitions.merge(
            *(
                group.build(cfg)
                for group in (ingest, dataset, training, mobile, monitoring, annotation)
            ),
            automation.build(cfg),
            # One process per run, not per step: on a 2-core machine, starting a Python process
            # that imports torch for every step costs more than any parallelism between steps
            # could win.
            dg.Definitions(resources=platform_resources(cfg), executor=dg.in_process_executor),
        )
        return with_storage_kinds(automation.with_retraining_policy(merged, cfg), cfg)


def with_storage_kinds(defs: dg.Definitions, cfg: PlatformConfig) -> dg.Definitions:
    """Every asset writes its files to the artifact store: when that is a bucket, the UI's kind
    badge says so (``s3``), beside what the asset computes with."""
    if not cfg.artifacts_root.startswith("s3://"):
        return defs
    return defs.map_resolved_asset_specs(func=lambda spec: spec.merge_attributes(kinds={"s3"}))


@dg.definitions
def defs() -> dg.Definitions:
    """What the code server, ``dagster dev`` and ``dg`` load: the configuration is read here,
    once per process, from the environment."""
    return build_defs(PlatformConfig.from_env())
