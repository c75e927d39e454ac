"""Fixtures for real (tiny) trainings and exports: a home with intake done."""

import pytest

from cv_assets_tests.support.jobs import ingest


@pytest.fixture
def small_home(cfg, instance):
    """Two intaken batches of 24 small images: enough for a 2-epoch training at imgsz 64."""
    ingest(cfg, instance, batches=2, images=24, size=96)
    return cfg
