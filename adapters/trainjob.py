"""A Kubeflow Trainer `TrainJob` that runs the project's training entry point under torchrun.

The job references a torch ClusterTrainingRuntime (`torch-distributed` in a default Trainer
install), which starts `numNodes` pods and sets the `PET_*` variables that torchrun reads
(node count, rank, rendezvous address), so the command needs no distributed flags of its
own. The training config comes from a ConfigMap mounted at `CONFIG_DIR`; `--set KEY=VALUE`
arguments override single keys of it (Katib trials use them to pass hyperparameters).
Training reads local files and writes checkpoints with renames, so data and runs live on
PersistentVolumeClaims mounted at `DATA_DIR` (read-only) and `RUNS_DIR`; every node mounts
them, so multi-node jobs need ReadOnlyMany / ReadWriteMany volumes (only rank 0 writes).

The same `trainjob_spec` is the trial template of the Katib Experiment (`adapters.katib`),
so a tuning trial and a training run start the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml
from kubeflow_trainer_api import models as tm

from model_code.training.config import TrainConfig
from model_code.training.schema import to_dict
from model_code.variants import get_variant
from adapters import IMAGE

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
NODE_CONTAINER = "node"
"""Container name the torch runtime gives each training pod (Katib's primary container)."""
CONFIG_DIR = "/etc/aurora"
CONFIG_FILE = "train.yaml"
DATA_DIR = "/data"
RUNS_DIR = "/runs"
ENTRY_POINT = ("torchrun", "-m", "model_code.training")
PATCH_MANAGER = "aurora-mlops.io/trainjob"


@dataclass(frozen=True)
class GpuPool:
    """Where GPU pods may run: node labels to select and taints to tolerate.

    The defaults fit nodes labelled by NVIDIA's GPU feature discovery and tainted the way
    GPU node pools usually are (`nvidia.com/gpu:NoSchedule`); set your pool's own labels.
    """

    node_selector: Mapping[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: tuple[Mapping[str, str], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )


@dataclass(frozen=True)
class Resources:
    """Size of a job: nodes, GPUs (one torchrun process each), CPU and memory per node."""

    num_nodes: int = 2
    gpus_per_node: int = 8
    cpu: str = "32"
    memory: str = "256Gi"
    shm: str = "32Gi"
    """Size of /dev/shm (memory-backed), which DataLoader worker processes share batches through."""

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.gpus_per_node < 0:
            raise ValueError(f"need num_nodes >= 1 and gpus_per_node >= 0, got {self}")


def config_map_name(variant: str) -> str:
    return f"aurora-train-{get_variant(variant).slug}"


def train_command(overrides: Sequence[str] = ()) -> list[str]:
    """The container command: torchrun on the training module, config, `--set` overrides."""
    command = [*ENTRY_POINT, "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"]
    for item in overrides:
        command += ["--set", item]
    return command


def trainjob_spec(
    variant: str,
    *,
    image: str = IMAGE,
    resources: Resources = Resources(),
    pool: GpuPool = GpuPool(),
    overrides: Sequence[str] = (),
    runtime: str = "torch-distributed",
    config_name: str | None = None,
    data_claim: str | None = "aurora-data",
    runs_claim: str | None = None,
) -> tm.TrainerV1alpha1TrainJobSpec:
    """The `spec` of a TrainJob training `variant` with the config in its ConfigMap.

    `data_claim` / `runs_claim`: PersistentVolumeClaims mounted at `DATA_DIR` (read-only)
    and `RUNS_DIR`; None mounts nothing there.
    """
    # No CPU limit: throttling a data-loading process slows every GPU waiting on it.
    limits: dict[str, Any] = {"memory": resources.memory}
    if resources.gpus_per_node:
        limits["nvidia.com/gpu"] = str(resources.gpus_per_node)
    requests = {"cpu": resources.cpu, **limits}
    trainer = tm.TrainerV1alpha1Trainer(
        image=image,
        command=train_command(overrides),
        numNodes=resources.num_nodes,
        numProcPerNode=max(resources.gpus_per_node, 1),
        resourcesPerNode=tm.IoK8sApiCoreV1ResourceRequirements.from_dict(
            {"requests": requests, "limits": limits}),
    )
    volumes = [
        {"name": "config", "configMap": {"name": config_name or config_map_name(variant)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": resources.shm}},
    ]
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "dshm", "mountPath": "/dev/shm"}]
    for volume, claim, path, read_only in (("data", data_claim, DATA_DIR, True), ("runs", runs_claim, RUNS_DIR, False)):
        if claim:
            volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
            mounts.append({"name": volume, "mountPath": path, "readOnly": read_only})
    pod = {
        "nodeSelector": dict(pool.node_selector),
        "tolerations": [dict(t) for t in pool.tolerations],
        "volumes": volumes,
        "containers": [{"name": NODE_CONTAINER, "volumeMounts": mounts}],
    }
    patch = {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": NODE_CONTAINER, "template": {"spec": {"template": {"spec": pod}}}},
        ]}}},
    }
    return tm.TrainerV1alpha1TrainJobSpec(
        runtimeRef=tm.TrainerV1alpha1RuntimeRef(
            apiGroup="trainer.kubeflow.org", kind="ClusterTrainingRuntime", name=runtime),
        trainer=trainer,
        runtimePatches=[tm.TrainerV1alpha1RuntimePatch.from_dict(patch)],
    )


def build_trainjob(
    name: str, variant: str, *, namespace: str | None = None, **spec_args: Any
) -> tm.TrainerV1alpha1TrainJob:
    """A complete TrainJob object (see `trainjob_spec` for the arguments)."""
    metadata = {"name": name, "labels": {"app.kubernetes.io/part-of": "aurora-mlops",
                                         "aurora-mlops.io/variant": variant}}
    if namespace:
        metadata["namespace"] = namespace
    return tm.TrainerV1alpha1TrainJob(
        apiVersion=API_VERSION,
        kind=KIND,
        metadata=tm.IoK8sApimachineryPkgApisMetaV1ObjectMeta.from_dict(metadata),
        spec=trainjob_spec(variant, **spec_args),
    )


def config_map(variant: str, text: str, *, namespace: str | None = None,
               name: str | None = None) -> dict:
    """The ConfigMap that holds a training config file, as the jobs mount it."""
    metadata: dict[str, Any] = {"name": name or config_map_name(variant)}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
            "data": {CONFIG_FILE: text}}


def config_text(cfg: TrainConfig) -> str:
    """A training config as the YAML file `load_config` reads (every key, checked values)."""
    return yaml.safe_dump(to_dict(cfg.validate()), sort_keys=False)


def training_objects(cfg: TrainConfig, *, name: str | None = None, namespace: str | None = None,
                     text: str | None = None, **spec_args: Any) -> tuple[dict, tm.TrainerV1alpha1TrainJob]:
    """The ConfigMap holding `cfg` (or `text`, a config file that loads as `cfg`) and the
    TrainJob that trains with it."""
    name = name or f"aurora-{get_variant(cfg.variant).slug}"
    job = build_trainjob(name, cfg.variant, namespace=namespace, **spec_args)
    return config_map(cfg.variant, text or config_text(cfg), namespace=namespace), job


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (config files in ConfigMaps) as `|` blocks people can read."""


_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    # PyYAML follows YAML 1.1, in which `1e-05` is a string and needs no quotes; kubectl
    # reads YAML 1.2, in which it is a number. Quote every string that looks like one.
    style = "|" if "\n" in text else "'" if _NUMBER.fullmatch(text) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(*objects: Any) -> str:
    """Kubernetes objects (API models or dicts) as one multi-document YAML text."""
    docs = [o.to_dict() if hasattr(o, "to_dict") else o for o in objects]
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
