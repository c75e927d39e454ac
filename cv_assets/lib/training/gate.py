"""The blessing gate: when a challenger may replace the champion, and the reasons, in words.

Criteria, in order: an absolute mAP50 floor; mAP50-95 no worse than the champion's minus
``epsilon``; optionally, the lower bound of a paired-bootstrap interval on the difference above
``-epsilon`` (a gain the test split's noise could have made is not a gain); optionally, no class's
AP50-95 falling more than ``class_epsilon`` below the champion's; optionally, the shadow score on
the newest batches. Every verdict carries its reasons, which the UI, MLflow and refusals quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cv_assets.lib.core.metrics import DetectionMetrics
from cv_assets.lib.training.bootstrap import BootstrapResult


@dataclass(frozen=True)
class GateSettings:
    min_map50: float = 0.5
    epsilon: float = 0.0
    bootstrap_resamples: int = 1000  # 0: no interval
    confidence: float = 0.95
    require_interval: bool = False  # the interval's lower bound must clear -epsilon
    class_epsilon: float | None = None  # None: per-class changes are shown, not judged
    shadow_gate: bool = False


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str]
    interval: dict[str, Any] | None = None
    class_changes: list[dict[str, Any]] = field(default_factory=list)


def class_changes(
    challenger: DetectionMetrics, champion: DetectionMetrics, classes: Sequence[str]
) -> list[dict[str, Any]]:
    """AP50-95 of each class the test split holds, champion vs challenger."""
    return [
        {
            "class": name,
            "instances": challenger.n_instances[i],
            "champion": round(champion.ap_per_class[i], 4),
            "challenger": round(challenger.ap_per_class[i], 4),
            "change": round(challenger.ap_per_class[i] - champion.ap_per_class[i], 4),
        }
        for i, name in enumerate(classes)
        if challenger.n_instances[i] > 0
    ]


def gate(
    challenger: DetectionMetrics,
    champion: DetectionMetrics | None,
    min_map50: float,
    epsilon: float,
    *,
    interval: BootstrapResult | None = None,
    require_interval: bool = False,
    class_epsilon: float | None = None,
    classes: Sequence[str] = (),
) -> GateDecision:
    """TFX-style blessing: an absolute floor, then no regression against the champion."""
    reasons, passed = [], True
    if challenger.map50 >= min_map50:
        reasons.append(f"mAP50 {challenger.map50:.3f} >= floor {min_map50:.3f}")
    else:
        passed = False
        reasons.append(f"mAP50 {challenger.map50:.3f} is below the floor {min_map50:.3f}")
    if champion is None:
        reasons.append("no champion yet: the floor is the only criterion")
        return GateDecision(passed, reasons)
    if challenger.map50_95 >= champion.map50_95 - epsilon:
        reasons.append(
            f"mAP50-95 {challenger.map50_95:.3f} >= champion {champion.map50_95:.3f} - "
            f"epsilon {epsilon:g}"
        )
    else:
        passed = False
        reasons.append(
            f"mAP50-95 {challenger.map50_95:.3f} is below champion {champion.map50_95:.3f} - "
            f"epsilon {epsilon:g}: the champion stays"
        )
    if interval is not None:
        ok = interval.low >= -epsilon
        text = (
            f"mAP50-95 challenger - champion {interval.delta:+.3f}, "
            f"{interval.confidence:.0%} interval [{interval.low:+.3f}, {interval.high:+.3f}] "
            f"(paired bootstrap, {interval.n_images} test images, {interval.n_resamples} resamples)"
        )
        if not require_interval:
            reasons.append(f"{text}, not a criterion")
        elif ok:
            reasons.append(f"{text}: lower bound >= -epsilon {epsilon:g}")
        else:
            passed = False
            reasons.append(
                f"{text}: lower bound is below -epsilon {epsilon:g}; the test split cannot rule "
                "out a regression, the champion stays"
            )
    changes = class_changes(challenger, champion, classes) if classes else []
    if class_epsilon is not None and changes:
        fell = [c for c in changes if c["change"] < -class_epsilon]
        if fell:
            passed = False
            worst = ", ".join(f"{c['class']} {c['change']:+.3f}" for c in fell)
            reasons.append(
                f"per class: AP50-95 fell more than class_epsilon {class_epsilon:g} ({worst}): "
                "the champion stays"
            )
        else:
            reasons.append(f"per class: no AP50-95 fell more than class_epsilon {class_epsilon:g}")
    return GateDecision(
        passed, reasons, interval.as_dict() if interval is not None else None, changes
    )


def shadow_verdict(
    decision: GateDecision,
    shadow: dict[str, Any] | None,
    epsilon: float,
    as_gate: bool,
) -> GateDecision:
    """The decision with the shadow scores (newest batches) beside it, or inside it if
    ``as_gate``: then the challenger must not fall behind the champion there either."""
    keep = {"interval": decision.interval, "class_changes": decision.class_changes}
    if not shadow or not shadow.get("champion"):
        note = ["shadow: no champion to compare on the newest batches"] if shadow else []
        return GateDecision(decision.passed, [*decision.reasons, *note], **keep)
    ch, cp = shadow["challenger"]["map50_95"], shadow["champion"]["map50_95"]
    where = f"shadow ({shadow['images']} held-out images of {', '.join(shadow['batches'])})"
    if not as_gate:
        note = f"{where}: mAP50-95 {ch:.3f} vs champion {cp:.3f}, not a criterion"
        return GateDecision(decision.passed, [*decision.reasons, note], **keep)
    ok = ch >= cp - epsilon
    note = f"{where}: mAP50-95 {ch:.3f} {'>=' if ok else 'is below'} champion {cp:.3f} - "
    return GateDecision(
        decision.passed and ok, [*decision.reasons, f"{note}epsilon {epsilon:g}"], **keep
    )
