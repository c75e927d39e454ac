"""Where yolo_model's training runs, as the environment says (CV_ASSETS_TRAINING_*): each
setting read, and each mistake refused with the variable's name and the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cv_assets.lib.core.settings import PlatformConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
POD_SPEC = REPO / "deploy" / "helm" / "training-pod.yaml"
RUN_TASK = REPO / "deploy" / "ecs" / "training-run-task.json"


def from_env(tmp_path: Path, **env: str) -> PlatformConfig:
    return PlatformConfig.from_env({"CV_ASSETS_HOME": str(tmp_path), **env})


def refused(tmp_path: Path, **env: str) -> str:
    with pytest.raises(ValueError) as e:
        from_env(tmp_path, **env)
    return str(e.value)


def test_training_runs_beside_the_run_unless_configured_otherwise(tmp_path: Path) -> None:
    cfg = from_env(tmp_path)
    assert cfg.training_launcher == "subprocess"
    assert not cfg.training_pod_spec and not cfg.training_run_task
    assert from_env(tmp_path, CV_ASSETS_TRAINING_LAUNCHER="").training_launcher == "subprocess"


def test_an_unknown_launcher_is_refused_with_the_choices(tmp_path: Path) -> None:
    msg = refused(tmp_path, CV_ASSETS_TRAINING_LAUNCHER="kubernetes")
    assert msg == "CV_ASSETS_TRAINING_LAUNCHER='kubernetes': expected one of subprocess, k8s, ecs"


def test_k8s_reads_the_pod_spec_file_image_and_namespace(tmp_path: Path) -> None:
    cfg = from_env(
        tmp_path,
        CV_ASSETS_TRAINING_LAUNCHER="k8s",
        CV_ASSETS_TRAINING_POD_SPEC=str(POD_SPEC),
        CV_ASSETS_TRAINING_IMAGE="registry.example.com/cv-assets:0.1.0-cuda",
        CV_ASSETS_TRAINING_NAMESPACE="training",
    )
    assert cfg.training_launcher == "k8s"
    assert cfg.training_pod_spec == yaml.safe_load(POD_SPEC.read_text())
    assert cfg.training_image == "registry.example.com/cv-assets:0.1.0-cuda"
    assert cfg.training_namespace == "training"
    # The document itself, as JSON, is taken as well as a path.
    inline = {"containers": [{"name": "training"}]}
    cfg = from_env(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="k8s", CV_ASSETS_TRAINING_POD_SPEC=json.dumps(inline)
    )
    assert cfg.training_pod_spec == inline
    assert cfg.training_image is None and cfg.training_namespace is None


def test_k8s_without_a_readable_pod_spec_is_refused_naming_the_variable(tmp_path: Path) -> None:
    assert refused(tmp_path, CV_ASSETS_TRAINING_LAUNCHER="k8s").startswith(
        "CV_ASSETS_TRAINING_LAUNCHER=k8s needs CV_ASSETS_TRAINING_POD_SPEC: a Kubernetes PodSpec"
    )
    missing = tmp_path / "nowhere.yaml"
    msg = refused(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="k8s", CV_ASSETS_TRAINING_POD_SPEC=str(missing)
    )
    assert msg.startswith(f"CV_ASSETS_TRAINING_POD_SPEC={missing}: no such file")
    broken = tmp_path / "broken.yaml"
    broken.write_text("containers: [name: training\n")
    msg = refused(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="k8s", CV_ASSETS_TRAINING_POD_SPEC=str(broken)
    )
    assert msg.startswith(f"CV_ASSETS_TRAINING_POD_SPEC={broken}: not valid YAML or JSON")
    listed = tmp_path / "list.yaml"
    listed.write_text("- name: training\n")
    msg = refused(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="k8s", CV_ASSETS_TRAINING_POD_SPEC=str(listed)
    )
    assert msg == (
        f"CV_ASSETS_TRAINING_POD_SPEC={listed}: expected a mapping (a Kubernetes PodSpec), got list"
    )


def test_a_pod_spec_with_a_literal_credential_is_refused(tmp_path: Path) -> None:
    spec = yaml.safe_load(POD_SPEC.read_text())
    spec["containers"][0]["env"] = [
        {"name": "YOLO_OFFLINE", "value": "1"},  # not a credential: fine as a value
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "MLFLOW_TRACKING_URI", "value": "https://user:token@mlflow.example.com"},
    ]
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(spec))
    k8s = {"CV_ASSETS_TRAINING_LAUNCHER": "k8s", "CV_ASSETS_TRAINING_POD_SPEC": str(path)}
    msg = refused(tmp_path, **k8s)
    assert msg.startswith(
        "CV_ASSETS_TRAINING_POD_SPEC: containers[0].env gives MLFLOW_TRACKING_URI as a literal "
        "value"
    )
    assert "Secret" in msg and "token" not in msg
    spec["containers"][0]["env"].pop()  # by reference only: taken
    path.write_text(yaml.safe_dump(spec))
    cfg = from_env(tmp_path, **k8s)
    assert cfg.training_pod_spec["containers"][0]["env"][1]["name"] == "AWS_SECRET_ACCESS_KEY"


def test_a_setting_of_another_launcher_is_refused_not_ignored(tmp_path: Path) -> None:
    # A pod spec with the launcher left at its default would train on the run's node, silently.
    msg = refused(tmp_path, CV_ASSETS_TRAINING_POD_SPEC=str(POD_SPEC))
    assert msg == (
        "CV_ASSETS_TRAINING_POD_SPEC is set, but CV_ASSETS_TRAINING_LAUNCHER=subprocess does not "
        "read it: set CV_ASSETS_TRAINING_LAUNCHER=k8s, or unset CV_ASSETS_TRAINING_POD_SPEC"
    )
    msg = refused(
        tmp_path,
        CV_ASSETS_TRAINING_LAUNCHER="k8s",
        CV_ASSETS_TRAINING_POD_SPEC=str(POD_SPEC),
        CV_ASSETS_TRAINING_RUN_TASK=str(RUN_TASK),
    )
    assert msg.startswith("CV_ASSETS_TRAINING_RUN_TASK is set, but CV_ASSETS_TRAINING_LAUNCHER=k8s")


def test_ecs_reads_the_run_task_request_and_checks_it(tmp_path: Path) -> None:
    cfg = from_env(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="ecs", CV_ASSETS_TRAINING_RUN_TASK=str(RUN_TASK)
    )
    assert cfg.training_launcher == "ecs"
    assert cfg.training_run_task == json.loads(RUN_TASK.read_text())
    msg = refused(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="ecs", CV_ASSETS_TRAINING_RUN_TASK='{"cluster": "c"}'
    )
    assert msg.startswith(
        "CV_ASSETS_TRAINING_RUN_TASK: the RunTask request names no taskDefinition"
    )
    key = {"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}
    leaky = {
        "taskDefinition": "cv-assets-training",
        "overrides": {"containerOverrides": [{"name": "training", "environment": [key]}]},
    }
    msg = refused(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="ecs", CV_ASSETS_TRAINING_RUN_TASK=json.dumps(leaky)
    )
    assert msg.startswith(
        "CV_ASSETS_TRAINING_RUN_TASK: overrides.containerOverrides[0].environment gives "
        "AWS_SECRET_ACCESS_KEY as a literal value"
    )
