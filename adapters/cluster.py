"""Create tuning and training objects on a cluster through the Kubernetes API, and wait for them.

Calls go through `kubernetes.client` API objects the caller builds (from a kubeconfig or
the pod's service account, see `api_client`), so tests can point them at any server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from kubeflow_katib_api import models as km

from model_code.training.search_space import Param
from adapters.katib import GROUP, OBJECTIVE, PLURAL, VERSION


def api_client(context: str | None = None):
    """An ApiClient from the kubeconfig (or, inside a pod, the service account)."""
    from kubernetes import client, config

    try:
        config.load_kube_config(context=context)
    except config.ConfigException:
        config.load_incluster_config()
    return client.ApiClient()


def apply_config_map(core_api, config_map: dict) -> None:
    """Create the ConfigMap, or replace it when one of that name exists (HTTP 409)."""
    from kubernetes.client.exceptions import ApiException

    namespace, name = config_map["metadata"]["namespace"], config_map["metadata"]["name"]
    try:
        core_api.create_namespaced_config_map(namespace, config_map)
    except ApiException as e:
        if e.status != 409:
            raise
        core_api.replace_namespaced_config_map(name, namespace, config_map)


def create_experiment(custom_api, experiment: km.V1beta1Experiment) -> dict:
    """POST the Experiment through `custom_api` (a `kubernetes.client.CustomObjectsApi`)."""
    body = experiment.to_dict()
    namespace = body["metadata"].get("namespace")
    if not namespace:
        raise ValueError("the Experiment needs metadata.namespace to be created")
    return custom_api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


@dataclass(frozen=True)
class Outcome:
    """Where an Experiment stands: its condition, the best trial so far and its values."""

    name: str
    condition: str
    best_trial: str | None
    best_parameters: dict[str, Any]
    """Typed values by search-parameter name (e.g. {"lr": 0.0003, "lora": "full"})."""
    best_metric: float | None
    trials_succeeded: int
    trials_failed: int


def await_experiment(
    custom_api,
    name: str,
    namespace: str,
    *,
    space: Sequence[Param],
    timeout_s: float = 24 * 3600,
    poll_s: float = 30,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Poll until the Experiment has Succeeded or Failed; TimeoutError after `timeout_s`."""
    deadline = clock() + timeout_s
    while True:
        obj = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        outcome = outcome_of(km.V1beta1Experiment.from_dict(obj), space)
        if outcome.condition in ("Succeeded", "Failed"):
            return outcome
        if clock() >= deadline:
            raise TimeoutError(f"Experiment {namespace}/{name} still {outcome.condition} after {timeout_s:g} s")
        sleep(poll_s)


def outcome_of(experiment: km.V1beta1Experiment, space: Sequence[Param]) -> Outcome:
    """Read an Experiment's status: the current condition and the optimal trial."""
    status = experiment.status or km.V1beta1ExperimentStatus()
    condition = "Created"
    for c in status.conditions or []:  # Katib keeps one true condition: the current one
        if c.status == "True":
            condition = c.type
    best = status.current_optimal_trial
    by_name = {p.name: p for p in space}
    params = {a.name: by_name[a.name].parse(a.value) if a.name in by_name else a.value
              for a in (best.parameter_assignments or [] if best else [])}
    metric = None
    for m in (best.observation.metrics or [] if best and best.observation else []):
        if m.name == OBJECTIVE and m.min not in (None, "", "unavailable"):
            metric = float(m.min)
    return Outcome(
        name=experiment.metadata.name, condition=condition,
        best_trial=(best.best_trial_name or None) if best else None, best_parameters=params,
        best_metric=metric, trials_succeeded=status.trials_succeeded or 0,
        trials_failed=status.trials_failed or 0)
