"""When the dataset is re-snapshotted, which retrains everything downstream of it.

``training_dataset`` materializes when enough new accepted data has landed (volume), or when the
model is past its freshness policy and any new data exists (freshness), never while intake is
still writing a batch (debounce) nor within the cooldown after the last training. Every part is
labelled, so the UI's automation tab says which one held a retraining back.

The custom conditions (volume, cooldown) read the instance, so they are evaluated on the code
server (``use_user_code_server=True`` on the automation sensor). Freshness is Dagster's own
``freshness_failed`` condition, read through ``asset_matches`` on the model.
"""

from datetime import timedelta

import dagster as dg

from cv_assets.defs.automation.state import last_training_start, new_accepted_data
from cv_assets.lib.core.settings import PlatformConfig


def _all_or_nothing(context: dg.AutomationContext, ok: bool) -> dg.AutomationResult:
    subset = context.candidate_subset if ok else context.get_empty_subset()
    return dg.AutomationResult(context=context, true_subset=subset)


class _Labelled(dg.AutomationCondition):
    """A custom condition with the UI label given at construction (as ``with_label`` does)."""

    def __init__(self, label: str) -> None:
        self._label = label

    def get_label(self) -> str | None:
        return self._label

    @property
    def description(self) -> str:
        return self._label

    @property
    def requires_cursor(self) -> bool:
        return False  # stateless: everything is read from the instance on each tick


def _skipped(context: dg.AutomationContext) -> bool:
    # An earlier part of the AND already ruled this tick out: skip the instance queries.
    return context.candidate_subset.is_empty


class NewAcceptedImages(_Labelled):
    """At least ``min_images`` accepted images in batches the newest dataset does not hold."""

    def __init__(self, min_images: int, label: str) -> None:
        super().__init__(label)
        self.min_images = min_images

    @property
    def name(self) -> str:
        return f"new_accepted_images(>={self.min_images})"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:  # type: ignore[override]
        if _skipped(context):
            return _all_or_nothing(context, False)
        new = new_accepted_data(context.asset_graph_view.instance)
        if new.images:
            context.log.info(f"{new.describe()}; threshold {self.min_images}")
        return _all_or_nothing(context, new.images >= self.min_images)


class CooldownPassed(_Labelled):
    """No training run (of any trigger) was started in the last ``seconds``."""

    def __init__(self, seconds: int, label: str) -> None:
        super().__init__(label)
        self.seconds = seconds

    @property
    def name(self) -> str:
        return f"cooldown_passed({self.seconds}s)"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:  # type: ignore[override]
        if _skipped(context):
            return _all_or_nothing(context, False)
        started = last_training_start(context.asset_graph_view.instance, self.seconds)
        return _all_or_nothing(context, started is None)


def model_freshness(cfg: PlatformConfig) -> dg.FreshnessPolicy:
    """The model is stale once it is older than ``CV_ASSETS_MODEL_MAX_AGE_H`` (warned at half)."""
    fail = timedelta(hours=cfg.model_max_age_h)
    # Dagster refuses windows under a minute; a warning that early would be noise anyway.
    warn = fail / 2 if fail / 2 >= timedelta(minutes=1) else None
    return dg.FreshnessPolicy.time_window(
        fail_window=max(fail, timedelta(minutes=1)), warn_window=warn
    )


def training_dataset_condition(cfg: PlatformConfig) -> dg.AutomationCondition:
    volume = NewAcceptedImages(
        cfg.retrain_min_images,
        f"volume: >= {cfg.retrain_min_images} newly accepted images since the last dataset",
    )
    # The freshness daemon's latest verdict on the model's FreshnessPolicy (model_freshness).
    model_stale = dg.AutomationCondition.asset_matches(
        "yolo_model", dg.AutomationCondition.freshness_failed()
    ).with_label(f"freshness: yolo_model older than {cfg.model_max_age_h:g} h")
    stale = (model_stale & NewAcceptedImages(1, "any newly accepted image")).with_label(
        "freshness: stale model and any new data"
    )
    debounce = (~dg.AutomationCondition.any_deps_in_progress()).with_label(
        "debounce: no intake in progress"
    )
    cooldown = CooldownPassed(
        cfg.retrain_cooldown_s,
        f"cooldown: no training started in the last {cfg.retrain_cooldown_s} s",
    )
    idle = (~dg.AutomationCondition.in_progress()).with_label("not already running")
    # Cheap parts first: each narrows what the next one must evaluate.
    return (idle & debounce & cooldown & (volume | stale)).with_label("retrain when")


def downstream_condition() -> dg.AutomationCondition:
    """Everything downstream of the dataset runs eagerly, in the same run as the dataset, but
    never past a failed blocking check: a re-run of ``model_evaluation`` whose gate failed (or of
    ``mobile_model`` whose parity failed) must not let the eager condition promote the model."""
    return (
        dg.AutomationCondition.eager()
        & dg.AutomationCondition.all_deps_blocking_checks_passed().with_label(
            "every upstream blocking check passed"
        )
    ).with_label("eager, behind the blocking checks")
