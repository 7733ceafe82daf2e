"""How each pipeline task runs on a cluster: GPUs, resources, caching, retries, credentials.

Set in one place so every pipeline treats a step the same way. The local runner ignores
resources, node selectors and tolerations (it warns about them; `pipelines.runner` keeps
those warnings quiet), and honours caching and retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp import kubernetes
from kfp.dsl import PipelineTask

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
S3_SECRET = "aurora-s3"
"""Secret with keys AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (optional: IRSA or workload
identity work without it). The endpoint of a non-AWS store comes as AWS_ENDPOINT_URL."""
RUN_AS_USER = 10001
"""The image's non-root user (Dockerfile)."""


@dataclass(frozen=True)
class Step:
    """What one kind of task asks of the cluster."""

    cpu: str
    memory: str
    gpu: bool = False
    cache: bool = True
    retries: int = 0


# Caching: a step caches only when its inputs fully determine its outputs. Data paths do
# not (a file can change under the same name), so validate always runs and hands on the
# data's SHA-256, which becomes part of every later step's cache key. Evaluate, register,
# promote and the outcome record read or write the registry, whose state changes between
# runs, so they never cache. Augment, tune and train are pure functions of (data hash,
# config, seed) and are the expensive steps: a re-run after a kill starts at the first
# step that did not finish.
#
# Retries: only where a failure can be transient. GPU steps run on node pools that are
# often preemptible, so they retry twice with a back-off; a step failing on bad data or a
# bad config would fail again, so validate and prepare do not retry. Register and promote
# are idempotent (a retried register with the same run id and weights returns the version
# it made; moving an alias twice is moving it once), so they retry through a registry
# server's hiccups.
#
# Resources: validate reads the data chunk by chunk (256 MiB blocks), prepare holds the
# whole series in memory, train/tune/evaluate hold the full model (~5 GB fp32) and its
# data loaders; the registry steps only move files.
STEPS = {
    "validate": Step(cpu="2", memory="8Gi", cache=False),
    "prepare": Step(cpu="2", memory="32Gi"),
    "tune": Step(cpu="8", memory="64Gi", gpu=True, retries=2),
    "tune-katib": Step(cpu="500m", memory="1Gi", retries=2),  # only waits for the Experiment
    "train": Step(cpu="8", memory="64Gi", gpu=True, retries=2),
    # Pruning and distillation train, so the step asks for a GPU (int8 models are timed on the
    # node's CPUs, where their kernels run); it is pure (model, data hash, options): it caches.
    "compress": Step(cpu="8", memory="64Gi", gpu=True, retries=2),
    "evaluate": Step(cpu="8", memory="64Gi", gpu=True, cache=False, retries=2),
    "score-champion": Step(cpu="8", memory="64Gi", gpu=True, cache=False, retries=2),
    "register": Step(cpu="1", memory="4Gi", cache=False, retries=2),
    "promote": Step(cpu="500m", memory="1Gi", cache=False, retries=2),
    "record-outcome": Step(cpu="500m", memory="1Gi", cache=False, retries=2),
    "canary": Step(cpu="500m", memory="1Gi", cache=False, retries=2),  # a patch through the API: idempotent
}


def configure(task: PipelineTask, kind: str, *, retries: bool = True) -> PipelineTask:
    """Apply `STEPS[kind]` to `task`; `retries` False for local runs, where a failure is not transient."""
    step = STEPS[kind]
    task.set_caching_options(enable_caching=step.cache)
    if retries and step.retries:
        task.set_retry(num_retries=step.retries, backoff_duration="60s", backoff_factor=2.0)
    task.set_cpu_request(step.cpu).set_cpu_limit(step.cpu)
    task.set_memory_request(step.memory).set_memory_limit(step.memory)
    if step.gpu:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
        kubernetes.add_node_selector(task, *GPU_NODE_LABEL)
        kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    kubernetes.use_secret_as_env(task, S3_SECRET, {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                                   "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
                                 optional=True)
    kubernetes.set_security_context(task, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, run_as_non_root=True)
    return task
