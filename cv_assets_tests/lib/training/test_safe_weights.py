"""Weights are unpickled only when they hold the network's classes, whatever hash is recorded."""

import pytest
import torch

from cv_assets.lib.core.store import sha256_file
from cv_assets.lib.training.yolo import (
    UnsafeWeights,
    WeightsMismatch,
    safe_checkpoint,
    verified_weights,
)
from cv_assets_tests.support.models import RunsAShellCommand

pytestmark = pytest.mark.unit


def test_a_crafted_pickle_is_refused_even_when_its_hash_is_the_recorded_one(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "best.pt"
    torch.save({"model": RunsAShellCommand(marker)}, evil)
    with pytest.raises(UnsafeWeights, match=r"best.pt: refusing to load: .*it calls posix.system"):
        verified_weights(evil, sha256_file(evil))
    assert not marker.exists()  # refused before anything in it ran


def test_a_checkpoint_of_network_classes_is_loaded(tmp_path):
    from ultralytics.nn.modules.conv import Conv

    ok = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Sequential(Conv(3, 4), torch.nn.Upsample(scale_factor=2))}, ok)
    assert verified_weights(ok, sha256_file(ok)) == ok


def test_other_bytes_than_recorded_are_refused_naming_both_hashes(tmp_path):
    f = tmp_path / "best.pt"
    torch.save({"model": torch.nn.Identity()}, f)
    with pytest.raises(WeightsMismatch, match=f"sha256 is {sha256_file(f)}, the artifact record"):
        verified_weights(f, "0" * 64)


def test_a_truncated_checkpoint_is_refused_with_the_file_named(tmp_path):
    f = tmp_path / "cut.pt"
    torch.save({"model": torch.nn.Identity()}, f)
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(UnsafeWeights, match=r"cut\.pt: refusing to load"):
        safe_checkpoint(f)
