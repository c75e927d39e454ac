"""Training checkpoints in the artifact store, so a killed training resumes where it stopped.

After each epoch Ultralytics writes ``last.pt`` (the weights, their EMA, the optimizer's state and
the epoch) and, when the epoch is the best so far, ``best.pt``. Both go to the store under
``training/checkpoints/<cache key>/``, and a record names their hashes and the MLflow run they
belong to. A training of the same cache key (the step's retry, a re-executed run, another node)
starts from there: the epochs done before the kill are not repeated, and the MLflow run goes on.

The record keeps the epoch before too: a checkpoint whose bytes no longer match their hash (a torn
upload, a bad disk) is refused and the one before is used; with none left, training starts over,
and says why. Checkpoints are pickles: they are loaded only after the hash and the restricted
unpickler (``verified_weights``) pass. They are deleted once the weights and their record are
stored.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.training.yolo import verified_weights

# The newest checkpoint and the one before it: enough to survive one bad upload.
KEEP = 2


@dataclass(frozen=True)
class Resume:
    """A verified checkpoint to resume from: ``epochs_done`` epochs are behind it."""

    epochs_done: int
    last: Path
    best: Path | None
    mlflow_run_id: str


def checkpoint_prefix(cache_key: str) -> str:
    return f"training/checkpoints/{cache_key}"


class Checkpoints:
    """The checkpoints of one training (one cache key) in the artifact store."""

    def __init__(self, store: ArtifactStore, cache_key: str) -> None:
        self.store, self.key = store, cache_key
        self.prefix = checkpoint_prefix(cache_key)
        self.record_key = f"{self.prefix}/checkpoint.json"

    def entries(self) -> list[dict[str, Any]]:
        """Newest first; raises ValueError for a record that is not the platform's JSON."""
        if not self.store.exists(self.record_key):
            return []
        try:
            entries = json.loads(self.store.get_bytes(self.record_key))["entries"]
            if not isinstance(entries, list):
                raise TypeError("entries is not a list")
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self.store.uri(self.record_key)}: unreadable ({e})") from None
        return entries

    def save(self, epochs_done: int, last: Path, best: Path | None, mlflow_run_id: str) -> None:
        """Store the checkpoint after epoch ``epochs_done``; ``best`` only when that epoch was the
        best so far (else the previous entry's best stands)."""
        try:
            old = self.entries()
        except ValueError:
            old = []  # an unreadable record is replaced by this good one
        last_ref = self.store.put_file(f"{self.prefix}/last-{epochs_done}.pt", last).as_dict()
        if best is not None:
            best_ref = self.store.put_file(f"{self.prefix}/best-{epochs_done}.pt", best).as_dict()
        else:
            best_ref = old[0]["best"] if old else None
        entry = {"epoch": epochs_done, "last": last_ref, "best": best_ref,
                 "mlflow_run_id": mlflow_run_id}  # fmt: skip
        kept = [entry, *[e for e in old if e["epoch"] < epochs_done][: KEEP - 1]]
        body = {"cache_key": self.key, "entries": kept}
        # The record goes last: it never names a file that is not fully stored.
        self.store.put_bytes(self.record_key, json.dumps(body, indent=1).encode())
        self._prune(kept)

    def _prune(self, kept: list[dict[str, Any]]) -> None:
        named = {self.store.key_of(f["uri"]) for e in kept for f in (e["last"], e["best"]) if f}
        for key in self.store.list(self.prefix + "/"):
            if key != self.record_key and key not in named:
                self.store.delete(key)

    def find(self, cache: Path, say: Callable[[str], None]) -> Resume | None:
        """The newest checkpoint whose files pass their hash, fetched into ``cache``; each one
        refused is said (``say``), and so is a fresh start after a refusal."""
        try:
            entries = self.entries()
        except ValueError as e:
            say(f"checkpoint record refused: {e}; training starts over from epoch 1")
            return None
        for e in entries:
            try:
                last = self._fetch(e["last"], cache / f"last-{e['epoch']}.pt")
                best = self._fetch(e["best"], cache / "best.pt") if e["best"] else None
            except (ValueError, OSError) as err:
                say(f"checkpoint of epoch {e['epoch']} refused: {err}")
                continue
            return Resume(int(e["epoch"]), last, best, str(e["mlflow_run_id"]))
        if entries:
            say("no checkpoint passed its hash: training starts over from epoch 1")
        return None

    def _fetch(self, ref: dict[str, Any], dest: Path) -> Path:
        """A private copy (Ultralytics must not write into the store) that passes its hash and
        holds only model classes."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        key = self.store.key_of(ref["uri"])
        local = self.store.local_path(key)
        if local is not None:
            shutil.copyfile(local, dest)
        else:
            self.store.download(key, dest)
        return verified_weights(dest, ref["sha256"])

    def clear(self) -> None:
        """Delete this training's checkpoints (its weights and record are stored)."""
        for key in self.store.list(self.prefix + "/"):
            if key != self.record_key:
                self.store.delete(key)
        if self.store.exists(self.record_key):
            self.store.delete(self.record_key)


def newest_epoch(store: ArtifactStore, cache_key: str) -> int:
    """Epochs behind the newest checkpoint of a training (0: none): for status and tests."""
    try:
        entries = Checkpoints(store, cache_key).entries()
    except ValueError:
        return 0
    return int(entries[0]["epoch"]) if entries else 0
