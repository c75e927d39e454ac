"""Where ``yolo_model``'s training process runs: the ``pipes`` resource.

One interface, ``TrainingLauncher.run(context, extras, env)``, over three Dagster Pipes
clients, chosen by ``CV_ASSETS_TRAINING_LAUNCHER`` (``lib/core/settings.py``) in
``environment.training_launcher``:

- ``subprocess`` (the default): ``PipesSubprocessClient``, a child process of the run worker, on
  its machine, with its disk;
- ``k8s``: ``PipesK8sClient``, a pod of its own from the deployment's pod spec
  (``deploy/helm/training-pod.yaml``: the GPU, ``/dev/shm``, tolerations, a deadline), whose
  logs carry the Pipes messages back;
- ``ecs``: ``PipesECSClient``, a task of its own from the deployment's RunTask request
  (``deploy/ecs/training-run-task.json``), whose CloudWatch log stream carries them back.

The rest of the run stays where it was launched. A pod or a task has no share of the launcher's
disk, so ``training_launcher`` refuses those two unless the artifact store and MLflow are
services.

Secrets. Beside the launcher, the worker gets MLflow's tracking URI and the S3 endpoint as its
environment (``env``), never as Pipes extras. A pod or a task does not get them from here: values
passed to ``PipesK8sClient`` become literal ``env`` entries of the pod, which the API server keeps
and ``kubectl describe pod`` prints, and ECS container overrides are shown by ``DescribeTasks``.
The pod takes them from the Secret and ConfigMap its spec references (``envFrom``); the task from
its task definition (``secrets``, by ARN). Only the Pipes bootstrap variables (the context:
the run, the extras; no secret) travel with the request.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

import dagster as dg
from dagster import PipesClientCompletedInvocation

# The worker's own name for it (cv_assets/training_worker.py): the pid it dies with (prctl).
LAUNCHER_PID_VAR = "CV_ASSETS_LAUNCHER_PID"


class TrainingLauncher(dg.ConfigurableResource):
    """Runs the training worker as a Dagster Pipes process (``python -m module``)."""

    module: str = "cv_assets.training_worker"

    def client(self) -> dg.PipesClient:
        """The Pipes client this launcher runs the process with."""
        raise NotImplementedError

    def run(
        self,
        context: dg.AssetExecutionContext,
        extras: dict[str, Any],
        env: dict[str, str],
    ) -> PipesClientCompletedInvocation:
        """Runs the worker with ``extras`` until it ends; raises when it fails.

        ``env``: what the process needs from the launcher's environment (secrets included) when
        it runs beside it; a pod or task takes these from its own spec (the module docstring).
        """
        raise NotImplementedError


class SubprocessTrainingLauncher(TrainingLauncher):
    """The embedded default: a child process of the run worker (``PipesSubprocessClient``)."""

    def client(self) -> dg.PipesSubprocessClient:
        return dg.PipesSubprocessClient()

    def run(
        self,
        context: dg.AssetExecutionContext,
        extras: dict[str, Any],
        env: dict[str, str],
    ) -> PipesClientCompletedInvocation:
        # The worker dies with this process (training_worker.die_with_launcher): a run worker
        # killed outright cannot stop its children.
        return self.client().run(
            context=context,
            command=[sys.executable, "-m", self.module],
            extras=extras,
            env={**env, LAUNCHER_PID_VAR: str(os.getpid())},
        )


class K8sTrainingLauncher(TrainingLauncher):
    """A pod of its own (``PipesK8sClient``) from the deployment's pod spec."""

    pod_spec: dict[str, Any]
    # Empty: the run's own image (what the code server reported, the run pod's image).
    image: str | None = None
    # Empty: the run pod's namespace (or the kubeconfig's, or "default").
    namespace: str | None = None

    def client(self) -> dg.PipesClient:
        from dagster_k8s import PipesK8sClient  # only a Kubernetes deployment pays its import

        return PipesK8sClient()

    def pod_request(self, run_image: str | None) -> dict[str, Any]:
        """``PipesK8sClient.run``'s arguments besides the context and the extras: the image,
        the command and the spec. No ``env``: see the module docstring."""
        spec = copy.deepcopy(self.pod_spec)
        image = self.image or _first_container(spec).get("image") or run_image
        if not image:
            raise dg.Failure(
                "the training pod has no image: set CV_ASSETS_TRAINING_IMAGE, or an image in "
                "CV_ASSETS_TRAINING_POD_SPEC's first container (this run reported none of its own)"
            )
        return {
            "image": image,
            "command": ["python", "-m", self.module],
            "namespace": self.namespace,
            "base_pod_spec": spec,
        }

    def run(
        self,
        context: dg.AssetExecutionContext,
        extras: dict[str, Any],
        env: dict[str, str],
    ) -> PipesClientCompletedInvocation:
        origin = context.run.job_code_origin
        run_image = origin.repository_origin.container_image if origin else None
        client: Any = self.client()  # PipesK8sClient.run takes more than PipesClient.run
        return client.run(context=context, extras=extras, **self.pod_request(run_image))


class EcsTrainingLauncher(TrainingLauncher):
    """A task of its own (``PipesECSClient``) from the deployment's RunTask request.

    A request without ``cluster`` or ``networkConfiguration`` takes them from the ECS task this
    runs in (the run's), as the deployment's ``EcsRunLauncher`` does for runs
    (``use_current_ecs_task_config``): the training task lands in the run's cluster, subnets and
    security groups.
    """

    run_task: dict[str, Any]

    def client(self) -> dg.PipesClient:
        from dagster_aws.pipes import PipesECSClient

        return PipesECSClient()

    def run_task_params(self) -> dict[str, Any]:
        """The RunTask request: the deployment's, with the worker's command on its Pipes
        container (the first container override's; without one, the task definition's)."""
        params = copy.deepcopy(self.run_task)
        overrides = params.get("overrides", {}).get("containerOverrides") or []
        if overrides:
            overrides[0]["command"] = ["python", "-m", self.module]
        return params

    def pipes_container(self) -> str | None:
        overrides = self.run_task.get("overrides", {}).get("containerOverrides") or []
        return overrides[0].get("name") if overrides else None

    def run(
        self,
        context: dg.AssetExecutionContext,
        extras: dict[str, Any],
        env: dict[str, str],
    ) -> PipesClientCompletedInvocation:
        params = self.run_task_params()
        if not params.get("cluster") or not params.get("networkConfiguration"):
            params = _current_task_placement() | params
        client: Any = self.client()
        return client.run(
            context=context,
            run_task_params=params,
            extras=extras,
            pipes_container_name=self.pipes_container(),
        )


def _current_task_placement() -> dict[str, Any]:
    """The cluster and awsvpc network of the ECS task this process runs in."""
    import boto3
    from dagster_aws.ecs.tasks import get_current_ecs_task, get_current_ecs_task_metadata

    if not os.environ.get("ECS_CONTAINER_METADATA_URI_V4"):
        raise dg.Failure(
            "CV_ASSETS_TRAINING_RUN_TASK names no cluster or networkConfiguration, and this "
            "process is not an ECS task to take them from: add both to the RunTask request"
        )
    meta = get_current_ecs_task_metadata()
    task = get_current_ecs_task(boto3.client("ecs"), meta.task_arn, meta.cluster)
    details = [
        d
        for a in task.get("attachments", [])
        if a["type"] == "ElasticNetworkInterface"
        for d in a["details"]
    ]
    subnets = [d["value"] for d in details if d["name"] == "subnetId"]
    enis = [d["value"] for d in details if d["name"] == "networkInterfaceId"]
    groups: list[str] = []
    if enis:
        described = boto3.client("ec2").describe_network_interfaces(NetworkInterfaceIds=enis)
        for eni in described["NetworkInterfaces"]:
            groups += [g["GroupId"] for g in eni.get("Groups", []) if g["GroupId"] not in groups]
    vpc = {"subnets": subnets, "securityGroups": groups}
    return {"cluster": meta.cluster, "networkConfiguration": {"awsvpcConfiguration": vpc}}


def _first_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = spec.get("containers") or [{}]
    return containers[0]


def check_pod_spec(spec: dict[str, Any], image: str | None) -> None:
    """Raises ValueError unless ``spec`` makes a pod the training can run in: what
    ``PipesK8sClient`` itself builds from it (a valid ``V1PodSpec``, one container to give the
    image and command to, a restart policy other than Always)."""
    from dagster_k8s.pipes import build_pod_body

    try:
        build_pod_body(
            pod_name="cv-assets-training-check",
            image=image or "the-runs-image",
            command=["python"],  # any: only its presence is checked
            env_vars={},
            base_pod_meta=None,
            base_pod_spec=copy.deepcopy(spec),
        )
    except Exception as e:  # kubernetes' model errors and dagster_k8s' invariants alike
        raise ValueError(
            f"CV_ASSETS_TRAINING_POD_SPEC: not a pod spec the training can run in: {e}"
        ) from None
