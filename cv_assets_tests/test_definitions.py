import dagster as dg
import pytest

from cv_assets.definitions import build_defs

pytestmark = pytest.mark.unit


def test_every_asset_has_description_group_owner_and_kind(cfg):
    graph = build_defs(cfg).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_batch", "validated_batch", "batch_features"} <= keys
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and "\n" not in node.description.strip(), key
        assert node.group_name != "default", key
        assert node.owners, key
        assert node.kinds, key


def test_landing_sensor_is_on_by_default(cfg):
    sensor = build_defs(cfg).resolve_sensor_def("landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_acceptance_check_is_blocking(cfg):
    from cv_assets.defs.ingest.assets import intake

    (spec,) = [s for s in intake.check_specs if s.name == "acceptance_rate_ok"]
    assert spec.blocking and spec.asset_key == dg.AssetKey("validated_batch")
