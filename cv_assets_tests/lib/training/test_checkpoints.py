"""Training checkpoints in the artifact store: the newest two kept, each refused by its hash."""

from pathlib import Path

import pytest
import torch

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.training.checkpoints import Checkpoints, newest_epoch


def _ckpt(path: Path, epoch: int) -> Path:
    # A real torch checkpoint of model classes only, as the restricted unpickler requires.
    torch.save({"epoch": epoch - 1, "model": torch.nn.Linear(2, 2)}, path)
    return path


@pytest.fixture
def ckpts(tmp_path: Path) -> Checkpoints:
    return Checkpoints(ArtifactStore(str(tmp_path / "store")), "abc123")


def _files(c: Checkpoints) -> list[str]:
    return sorted(k.rsplit("/", 1)[1] for k in c.store.list(c.prefix + "/"))


def test_the_newest_two_are_kept_and_the_best_carries_over(ckpts, tmp_path):
    for epoch, improved in ((1, True), (2, True), (3, False)):
        last = _ckpt(tmp_path / f"last{epoch}.pt", epoch)
        best = _ckpt(tmp_path / f"best{epoch}.pt", epoch) if improved else None
        ckpts.save(epoch, last, best, "run-1")
    entries = ckpts.entries()
    assert [e["epoch"] for e in entries] == [3, 2]
    assert entries[0]["best"] == entries[1]["best"]  # epoch 3 did not improve on epoch 2
    assert _files(ckpts) == ["best-2.pt", "checkpoint.json", "last-2.pt", "last-3.pt"]
    said: list[str] = []
    found = ckpts.find(tmp_path / "cache", said.append)
    assert found is not None and (found.epochs_done, found.mlflow_run_id) == (3, "run-1")
    assert found.best is not None and found.best.name == "best.pt" and said == []
    assert newest_epoch(ckpts.store, "abc123") == 3
    ckpts.clear()
    assert _files(ckpts) == [] and newest_epoch(ckpts.store, "abc123") == 0


def test_a_corrupt_checkpoint_is_refused_and_the_one_before_used(ckpts, tmp_path):
    for epoch in (1, 2):
        ckpts.save(epoch, _ckpt(tmp_path / f"l{epoch}.pt", epoch), None, "run-1")
    newest = ckpts.store.local_path(f"{ckpts.prefix}/last-2.pt")
    assert newest is not None
    newest.write_bytes(newest.read_bytes()[:-10])  # a torn upload
    said: list[str] = []
    found = ckpts.find(tmp_path / "cache", said.append)
    assert found is not None and found.epochs_done == 1
    assert len(said) == 1 and said[0].startswith("checkpoint of epoch 2 refused:")
    assert "sha256" in said[0]
    # Both bad: a fresh start, said.
    oldest = ckpts.store.local_path(f"{ckpts.prefix}/last-1.pt")
    assert oldest is not None
    oldest.write_bytes(b"not a checkpoint")
    said.clear()
    assert ckpts.find(tmp_path / "cache2", said.append) is None
    assert said[-1] == "no checkpoint passed its hash: training starts over from epoch 1"
    assert len(said) == 3


def test_an_unreadable_record_means_a_fresh_start_and_is_replaced(ckpts, tmp_path):
    ckpts.store.put_bytes(ckpts.record_key, b"{not json")
    said: list[str] = []
    assert ckpts.find(tmp_path / "cache", said.append) is None
    assert "checkpoint record refused" in said[0] and "starts over" in said[0]
    ckpts.save(1, _ckpt(tmp_path / "l1.pt", 1), None, "run-2")
    assert [e["epoch"] for e in ckpts.entries()] == [1]


def test_a_checkpoint_that_would_run_code_is_refused(ckpts, tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    bad = tmp_path / "evil.pt"
    torch.save({"epoch": 0, "x": Evil()}, bad)
    ckpts.save(1, bad, None, "run-1")  # its hash is right: the unpickler still refuses it
    said: list[str] = []
    assert ckpts.find(tmp_path / "cache", said.append) is None
    assert "refusing to load" in said[0]
    assert "os.system" in said[0] or "posix.system" in said[0]
