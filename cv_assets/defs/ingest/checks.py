"""Checks on intake: a batch that is mostly rejects must not feed training."""

import dagster as dg

ACCEPTANCE_CHECK = dg.AssetCheckSpec(
    "acceptance_rate_ok",
    asset="validated_batch",
    blocking=True,
    description="At least min_acceptance_rate of the landed items were accepted.",
)


def acceptance_result(
    rate: float, threshold: float, counts: dict[str, int], reasons_md: str
) -> dg.AssetCheckResult:
    passed = rate >= threshold
    verdict = "meets" if passed else "is below"
    return dg.AssetCheckResult(
        check_name="acceptance_rate_ok",
        asset_key="validated_batch",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"acceptance rate {rate:.1%} {verdict} the threshold {threshold:.0%}",
        metadata=counts
        | {
            "acceptance_rate": round(rate, 4),
            "threshold": threshold,
            "top_reasons": dg.MetadataValue.md(reasons_md),
        },
    )
