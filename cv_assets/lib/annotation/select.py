"""Which unlabelled images a person labels next: the most uncertain, spread over appearance.

Uncertainty alone (``proposals.image_uncertainty``) wastes a labelling budget on bursts: a
camera that sends eight frames of one doubtful scene makes all eight top the list, and the
second to eighth label teach the model little the first did not. This module owns the two
pieces that stop that:

- ``image_features``: a cheap, deterministic appearance embedding (no learned weights), in which
  frames of one scene (a few pixels of jitter, a brightness step, fresh sensor noise) lie close
  and different scenes lie far;
- ``select_for_labelling``: greedy, uncertainty-weighted k-center selection over those features.
"""

from __future__ import annotations

import io
import logging
import math

import numpy as np
import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

THUMB = 16  # thumbnail side: layout survives, a few pixels of jitter and noise do not
HUE_BINS = 8
# Share of the squared distance given to layout (the grey thumbnail) vs colour (the hue
# histogram): layout separates scenes; colour breaks ties between scenes of similar layout.
LAYOUT_WEIGHT = 0.75
SELECTED_COLUMNS = ["rank", "uncertainty", "nearest_picked_distance", "pick"]
_SAMPLE = 2000  # candidates sampled for the default distance scale (pairs grow as n squared)


def image_features(data: bytes) -> np.ndarray:
    """A unit-length float32 appearance vector of an encoded image (JPEG or PNG bytes).

    Two parts, concatenated and weighted so the squared distance is ``0.75`` layout + ``0.25``
    colour:

    - layout: the ``16x16`` grey thumbnail (area average), minus its mean and divided by its
      norm, so a brightness or contrast step does not move it (a flat image gives zeros);
    - colour: an 8-bin hue histogram weighted by saturation, plus one bin for the grey share,
      normalised to sum 1 and square-rooted (the Hellinger embedding: Euclidean distance between
      such vectors is the Hellinger distance, up to a constant).

    Distances between two vectors lie in ``[0, 2]``; near-duplicates are typically under 0.3 and
    unrelated scenes around 1 or more. Deterministic: the same bytes give the same vector.
    """
    with Image.open(io.BytesIO(data)) as im:
        # JPEG decodes at 1/2..1/8 scale here, far cheaper; still a function of the bytes alone.
        im.draft("RGB", (4 * THUMB, 4 * THUMB))
        rgb = im.convert("RGB")
    small = rgb.resize((THUMB, THUMB), Image.Resampling.BOX)
    grey = np.asarray(small.convert("L"), dtype=np.float64).ravel()
    grey -= grey.mean()
    norm = float(np.linalg.norm(grey))
    layout = grey / norm if norm > 1e-6 else np.zeros_like(grey)

    hsv = np.asarray(rgb.resize((4 * THUMB, 4 * THUMB), Image.Resampling.BOX).convert("HSV"))
    hue = hsv[..., 0].ravel().astype(np.int64) * HUE_BINS // 256
    sat = hsv[..., 1].ravel().astype(np.float64) / 255.0
    hist = np.bincount(hue, weights=sat, minlength=HUE_BINS)
    hist = np.append(hist, float((1.0 - sat).sum()))
    colour = np.sqrt(hist / max(float(hist.sum()), 1e-12))

    parts = (math.sqrt(LAYOUT_WEIGHT) * layout, math.sqrt(1.0 - LAYOUT_WEIGHT) * colour)
    return np.concatenate(parts).astype(np.float32)


def _distances_to(features: np.ndarray, j: int) -> np.ndarray:
    return np.sqrt(np.maximum(((features - features[j]) ** 2).sum(axis=1), 0.0))


def default_distance_scale(features: np.ndarray) -> float:
    """Half the median pairwise distance: a candidate at least that far from every picked image
    counts as new. The median of all pairs sits between clusters even when every image has a
    near-duplicate, where the median nearest-neighbour distance would not. Over at most 2,000
    evenly spaced rows, so it stays cheap on a large pool."""
    n = len(features)
    if n < 2:
        return 0.0
    rows = features[np.linspace(0, n - 1, min(n, _SAMPLE)).round().astype(int)].astype(np.float64)
    sq = (rows**2).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * rows @ rows.T
    upper = np.sqrt(np.maximum(d2[np.triu_indices(len(rows), k=1)], 0.0))
    return 0.5 * float(np.median(upper))


def select_for_labelling(
    candidates: pd.DataFrame,
    features: np.ndarray,
    k: int,
    min_distance: float | None = None,
    *,
    distance_scale: float | None = None,
    uncertainty: str = "uncertainty",
    key: str = "stem",
) -> pd.DataFrame:
    """Pick ``k`` candidates for labelling: uncertain ones, but not two of the same scene.

    The rule is greedy, uncertainty-weighted k-center (Gonzalez's farthest-point greedy, as in
    the core-set selection of Sener & Savarese 2018, with each candidate's distance weighted by
    its uncertainty). With ``u`` a candidate's uncertainty and ``d`` its distance to the nearest
    image picked so far (``inf`` before the first pick), each step picks the argmax of::

        score = u * min(1, d / d0)

    so a candidate at least ``d0`` from every pick competes on uncertainty alone, and a
    near-duplicate of a pick is discounted in proportion to how close it is. Candidates within
    ``min_distance`` of a pick are never picked (a hard floor; the result may then hold fewer than
    ``k`` rows). Ties go to the larger ``d``, then the larger ``u``, then the smaller ``key``, so
    once every score is 0 (no uncertainty left) the rest is filled farthest-first.

    Args:
        candidates: one row per unlabelled image, with ``uncertainty`` and ``key`` columns (the
            ``images.parquet`` of ``pre_annotations``). A NaN uncertainty counts as 0.
        features: ``(len(candidates), D)``, row ``i`` for candidate ``i`` (``image_features``).
            Rows with a non-finite value cannot be placed, so they are never picked.
        k: how many to pick; more than the candidates picks them all.
        min_distance: hard minimum distance between any two picks (``None``: no floor).
        distance_scale: ``d0``; ``None`` takes ``default_distance_scale(features)``, and ``0``
            turns the discount off (pure uncertainty ranking, plus ``min_distance`` if given).
        uncertainty: the column holding each candidate's uncertainty.
        key: the column that breaks exact ties, for a deterministic result.

    Returns:
        The picked rows in the order a person should label them (most uncertain first, ties by
        ``key``), with the candidates' columns plus ``rank`` (1..), ``uncertainty`` (NaN read as
        0), ``nearest_picked_distance`` (to the closest other pick; NaN for a single pick) and
        ``pick`` (the greedy step, 1.., which shows why a row was chosen).
    """
    if k < 0:
        raise ValueError(f"select_for_labelling: k must be >= 0, got {k}")
    missing = [c for c in (uncertainty, key) if c not in candidates.columns]
    if missing:
        raise ValueError(f"select_for_labelling: candidates lack column(s) {', '.join(missing)}")
    feats = np.asarray(features, dtype=np.float64)
    if len(candidates) == 0 and feats.size == 0:
        feats = feats.reshape(0, feats.shape[-1] if feats.ndim == 2 else 0)
    if feats.ndim != 2 or len(feats) != len(candidates):
        raise ValueError(
            f"select_for_labelling: features must be (n_candidates, D) = ({len(candidates)}, D), "
            f"got shape {feats.shape}"
        )
    u = np.asarray(pd.to_numeric(candidates[uncertainty], errors="coerce"), dtype=np.float64)
    u = np.where(np.isfinite(u), u, 0.0)
    placed = np.isfinite(feats).all(axis=1)
    if not placed.all():
        log.warning(
            "%d candidate(s) have non-finite features and cannot be picked", (~placed).sum()
        )
    idx = np.flatnonzero(placed)
    # Candidates in tie-break order once, so argmax's first hit is the smallest key.
    idx = idx[np.argsort(candidates[key].astype(str).to_numpy()[idx], kind="stable")]
    f, uu = feats[idx], u[idx]
    d0 = default_distance_scale(f) if distance_scale is None else float(distance_scale)

    picks: list[int] = []
    d = np.full(len(idx), np.inf)
    open_ = np.ones(len(idx), dtype=bool)
    while len(picks) < min(k, len(idx)):
        if min_distance is not None:
            open_ &= d >= min_distance
        if not open_.any():
            log.info("only %d of %d picks are %s apart", len(picks), k, min_distance)
            break
        discount = np.minimum(1.0, d / d0) if d0 > 0 else np.ones_like(d)
        score = np.where(open_, uu * discount, -np.inf)
        # lexsort: last key is primary; argmax over the best score, then d, then u, then key.
        order = np.lexsort((np.arange(len(idx)), -uu, -np.where(open_, d, -np.inf), -score))
        j = int(order[0])
        picks.append(j)
        open_[j] = False
        d = np.minimum(d, _distances_to(f, j))

    return _label_order(candidates, idx, picks, f, uu, key)


def _label_order(
    candidates: pd.DataFrame,
    idx: np.ndarray,
    picks: list[int],
    f: np.ndarray,
    uu: np.ndarray,
    key: str,
) -> pd.DataFrame:
    rows = candidates.iloc[idx[picks]].reset_index(drop=True)
    near = np.full(len(picks), np.nan)
    if len(picks) > 1:
        chosen = f[picks]
        for i in range(len(picks)):
            dist = np.sqrt(((chosen - chosen[i]) ** 2).sum(axis=1))
            dist[i] = np.inf
            near[i] = dist.min()
    # The candidates' own uncertainty column is kept as given; ``uncertainty`` is what was used.
    out = rows.drop(columns=[c for c in SELECTED_COLUMNS if c in rows.columns]).assign(
        uncertainty=uu[picks], nearest_picked_distance=near, pick=np.arange(1, len(picks) + 1)
    )
    out = out.sort_values(
        ["uncertainty", key], ascending=[False, True], kind="stable", ignore_index=True
    )
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out
