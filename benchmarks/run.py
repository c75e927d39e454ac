"""``make bench``: run every ratio benchmark and write the table into benchmarks/README.md.

``python -m benchmarks.run [NAME ...]`` runs a subset; ``BENCH_QUICK=1`` uses small sizes.
"""

import sys
import time

from benchmarks import (
    bench_architecture,
    bench_automation,
    bench_drift,
    bench_field_drift,
    bench_graphql,
    bench_import,
    bench_intake,
    bench_label_issues,
    bench_labelstudio,
    bench_metrics,
    bench_mobile,
    bench_pipes,
    bench_postgres,
    bench_release,
    bench_selection,
    bench_telemetry,
    bench_training,
)
from benchmarks.common import README, Result, Skipped, save

DEFAULT = [
    *bench_intake.BENCHMARKS,
    *bench_import.BENCHMARKS,
    *bench_training.BENCHMARKS,
    *bench_pipes.BENCHMARKS,
    *bench_architecture.BENCHMARKS,
    *bench_mobile.BENCHMARKS,
    *bench_metrics.BENCHMARKS,
    *bench_drift.BENCHMARKS,
    *bench_label_issues.BENCHMARKS,
    *bench_automation.BENCHMARKS,
    *bench_postgres.BENCHMARKS,
    *bench_graphql.BENCHMARKS,
    *bench_selection.BENCHMARKS,
    *bench_labelstudio.BENCHMARKS,
    *bench_release.BENCHMARKS,
    *bench_telemetry.BENCHMARKS,
    *bench_field_drift.BENCHMARKS,
]
ALL = {fn.__name__: fn for fn in [*DEFAULT, *bench_training.GPU_BENCHMARKS]}


def main(argv: list[str]) -> int:
    # GPU benchmarks run only when named (on a GPU machine); their results are merged back.
    names = argv or [fn.__name__ for fn in DEFAULT]
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
        return 2
    results: list[Result] = []
    start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        try:
            r = ALL[name]()
        except Skipped as e:
            print(f"{name}: skipped, its earlier row is kept: {e}")
            continue
        results.append(r)
        save([r])  # keep what finished even if a later benchmark fails
        print(
            f"{r.name}: {r.value:.3g} {r.unit} (goal {r.goal}) "
            f"{'met' if r.passed else 'NOT met'} [{time.perf_counter() - t0:.0f}s] {r.details}"
        )
    print(f"{len(results)} benchmarks in {(time.perf_counter() - start) / 60:.1f} min")
    print(f"table written to {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
