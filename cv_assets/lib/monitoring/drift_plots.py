"""The drift summary as a chart: one bar per feature column, its K-S p-value against the threshold.

A person reads "which columns moved, and by how much" at a glance; the numbers stay in the table
beside it. Drawn like the other charts (lib/core/plots.py): matplotlib's object API, bundled fonts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from cv_assets.lib.core.plots import DPI, RENDER_LOCK, figure_png

# p-values this small are all "certainly drifted"; capping keeps the other bars readable.
_P_FLOOR = 1e-30


def drift_chart_png(
    columns: Mapping[str, Mapping[str, Any]], threshold: float, drift_share: float
) -> bytes:
    """Horizontal bars of -log10(p) per column; drifted columns red, the threshold a dashed line."""
    if not columns:
        raise ValueError("no columns to chart")
    names = list(columns)
    scores = [-math.log10(max(float(columns[c]["p_value"]), _P_FLOOR)) for c in names]
    drifted = [bool(columns[c]["drifted"]) for c in names]
    cut = -math.log10(threshold)
    with RENDER_LOCK:
        fig = Figure(figsize=(6.0, 0.9 + 0.28 * len(names)), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        colors = ["#d62728" if d else "#9e9e9e" for d in drifted]
        ax.barh(range(len(names)), scores, color=colors)
        ax.axvline(cut, color="black", linestyle="--", linewidth=1)
        ax.text(cut, len(names) - 0.4, f" p = {threshold:g}", fontsize=7, va="bottom")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("-log10(K-S p-value): further right = more drift", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        n = sum(drifted)
        ax.set_title(
            f"Drift share {drift_share:.2f}: {n} of {len(names)} columns drifted", fontsize=10
        )
        return figure_png(fig)
