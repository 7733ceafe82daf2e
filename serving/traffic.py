"""Traffic rollouts of a predictor through the Kubernetes API: the changes KServe documents, as JSON
merge patches (RFC 7386) of the InferenceService, each naming the model it serves.

A model (`served.ServedModel`) is a registry version's checkpoint at its immutable URI in the
artifact store and its digest: the predictor container's first two environment variables
(the storage URI it loads, the digest it must find) and the annotations
`aurora-mlops.io/model` (the record as JSON) and `aurora-mlops.io/model-version`.

- **deploy**: serve a model on all traffic (a new revision); any canary ends.
- **canary**: a new model (a new revision) with `canaryTrafficPercent: N`. KServe sends N %
  of requests to the new revision and the rest to the last revision rolled out to 100 %. A
  canary already running takes a new percentage alone.
- **promote**: remove `canaryTrafficPercent`: the latest revision takes all traffic.
- **rollback**, during a canary: `canaryTrafficPercent: 0` pins all traffic to the last
  rolled-out revision at once, and the spec's model goes back to the stable one (a new
  revision of the stable model is made, with no traffic until the next promote). After a
  rollout finished there is no older revision left to pin: the rollback is a deploy of the
  model given.

The stable and canary models are kept in annotations while a canary runs, so a rollback needs
no arguments. Patches that replace the container list carry `metadata.resourceVersion`, so
the API server refuses them (409) if the object changed since it was read.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from model_code.errors import DataError
from serving.manifests import (API_VERSION, CANARY_ANNOTATION, CONTAINER, DIGEST_ENV, MODEL_ANNOTATION, MODEL_ENV,
                               NAMESPACE, STABLE_ANNOTATION, VERSION_ANNOTATION, model_annotations, service_name)
from serving.served import ServedModel

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "inferenceservices"
FIELD_MANAGER = "auroraops"


@dataclass(frozen=True)
class Traffic:
    """One traffic target of the predictor, as KServe reports it."""

    revision: str | None
    percent: int
    tag: str | None
    latest: bool


@dataclass(frozen=True)
class RolloutStatus:
    """Where a rollout stands: the spec's model and canary share, and KServe's revisions."""

    name: str
    namespace: str
    ready: bool
    model: ServedModel
    """The model of the spec: what the latest revision serves."""
    stable: ServedModel | None
    """During a canary: the model of the last rolled-out revision."""
    canary_percent: int | None
    """`canaryTrafficPercent`; None when no canary runs (all traffic to the latest revision)."""
    latest_ready_revision: str | None = None
    latest_rolled_out_revision: str | None = None
    previous_rolled_out_revision: str | None = None
    traffic: tuple[Traffic, ...] = field(default_factory=tuple)

    @property
    def phase(self) -> str:
        """`stable`, `canary` (some traffic on the new revision) or `pinned` (canary at 0 %)."""
        if self.canary_percent is None:
            return "stable"
        return "pinned" if self.canary_percent == 0 else "canary"

    @property
    def model_uri(self) -> str:
        return self.model.uri

    def to_dict(self) -> dict:
        return {**asdict(self), "phase": self.phase}


def _container(isvc: dict) -> dict:
    containers = isvc.get("spec", {}).get("predictor", {}).get("containers") or []
    for c in containers:
        if c.get("name") == CONTAINER:
            return c
    name = isvc.get("metadata", {}).get("name")
    raise DataError(f"InferenceService {name}: spec.predictor.containers has no {CONTAINER!r} "
                    f"(found {[c.get('name') for c in containers]}); it is not an auroraops predictor")


def _env_value(isvc: dict, name: str) -> str | None:
    for env in _container(isvc).get("env") or []:
        if env.get("name") == name and "value" in env:
            return env["value"]
    return None


def current_model(isvc: dict) -> ServedModel:
    """The model of the spec: the `aurora-mlops.io/model` annotation, or (an object a rollout
    has not touched) the container's storage URI and digest."""
    text = _annotations(isvc).get(MODEL_ANNOTATION)
    if text:
        return ServedModel.from_json(text)
    uri = _env_value(isvc, MODEL_ENV)
    if uri is None:
        raise DataError(f"InferenceService {isvc['metadata'].get('name')}: container {CONTAINER!r} "
                        f"sets no env {MODEL_ENV} with a value")
    return ServedModel(uri=uri, sha256=_env_value(isvc, DIGEST_ENV) or "")


def current_uri(isvc: dict) -> str:
    return current_model(isvc).uri


def _with_model(isvc: dict, model: ServedModel) -> list[dict]:
    """The predictor's containers list with the storage URI and digest of `model` (a merge
    patch replaces lists whole, so the patch carries all of it)."""
    containers = copy.deepcopy(isvc["spec"]["predictor"]["containers"])
    for c in containers:
        if c.get("name") != CONTAINER:
            continue
        values = {MODEL_ENV: model.uri, DIGEST_ENV: model.sha256}
        for env in c.setdefault("env", []):
            if env.get("name") in values:
                env["value"] = values.pop(env["name"])
        if MODEL_ENV in values:
            raise DataError(f"InferenceService {isvc['metadata'].get('name')}: container {CONTAINER!r} "
                            f"sets no env {MODEL_ENV}")
        c["env"] += [{"name": k, "value": v} for k, v in values.items()]
    return containers


def _canary_percent(isvc: dict) -> int | None:
    return isvc.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")


def _annotations(isvc: dict) -> dict:
    return isvc.get("metadata", {}).get("annotations") or {}


def _metadata(isvc: dict, annotations: dict) -> dict:
    """The metadata part of a patch: annotations, and the resourceVersion the patch builds on."""
    version = isvc["metadata"].get("resourceVersion")
    return {"annotations": annotations, **({"resourceVersion": version} if version else {})}


def _serving(model: ServedModel) -> dict:
    """Annotations naming `model` as the spec's, with a version annotation removed when it has none."""
    return {VERSION_ANNOTATION: None, **model_annotations(model)}


def _check_percent(percent: int) -> None:
    if not isinstance(percent, int) or isinstance(percent, bool) or not 1 <= percent <= 99:
        raise DataError(f"--percent: canary traffic must be an integer from 1 to 99, got {percent!r} "
                        "(use promote for 100, rollback for 0)")


def _same(a: ServedModel, b: ServedModel) -> bool:
    return a.uri == b.uri and a.sha256 == b.sha256


def deploy_patch(isvc: dict, model: ServedModel) -> dict:
    """Serve `model` on all traffic; a running canary ends (its annotations go)."""
    name = isvc["metadata"]["name"]
    if _same(model, current_model(isvc)) and _canary_percent(isvc) is None:
        raise DataError(f"InferenceService {name} already serves {model.label} on all traffic")
    return {"metadata": _metadata(isvc, {**_serving(model), STABLE_ANNOTATION: None, CANARY_ANNOTATION: None}),
            "spec": {"predictor": {"canaryTrafficPercent": None, "containers": _with_model(isvc, model)}}}


def canary_patch(isvc: dict, percent: int, model: ServedModel | None = None) -> dict:
    """Start a canary of `model` at `percent` %, or move a running canary to `percent` % (no model)."""
    _check_percent(percent)
    name, running = isvc["metadata"]["name"], STABLE_ANNOTATION in _annotations(isvc)
    if model is None:
        if not running and _canary_percent(isvc) is None:
            raise DataError(f"InferenceService {name}: no canary is running; start one with --model URI")
        return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}
    current = current_model(isvc)
    stable = ServedModel.from_json(_annotations(isvc)[STABLE_ANNOTATION]) if running else current
    if _same(model, current):
        raise DataError(f"InferenceService {name} already serves {model.label} in its spec: a canary needs a "
                        "different model (a new revision)")
    if _same(model, stable):
        raise DataError(f"{model.label} is the stable model of {name}; to go back to it use rollback")
    return {
        "metadata": _metadata(isvc, {**_serving(model), STABLE_ANNOTATION: stable.to_json(),
                                     CANARY_ANNOTATION: model.to_json()}),
        "spec": {"predictor": {"canaryTrafficPercent": percent, "containers": _with_model(isvc, model)}},
    }


def promote_patch(isvc: dict) -> dict:
    """Give the latest revision all traffic: remove `canaryTrafficPercent` and the canary notes."""
    if _canary_percent(isvc) is None:
        raise DataError(f"InferenceService {isvc['metadata']['name']}: no canary to promote "
                        "(spec.predictor.canaryTrafficPercent is not set)")
    return {"metadata": {"annotations": {STABLE_ANNOTATION: None, CANARY_ANNOTATION: None}},
            "spec": {"predictor": {"canaryTrafficPercent": None}}}


def rollback_patch(isvc: dict, model: ServedModel | None = None) -> dict:
    """Send all traffic back to the stable model (see the module docstring for both cases)."""
    name = isvc["metadata"]["name"]
    if _canary_percent(isvc) is not None:
        stable = _annotations(isvc).get(STABLE_ANNOTATION)
        target = model or (ServedModel.from_json(stable) if stable else None)
        predictor: dict[str, Any] = {"canaryTrafficPercent": 0}
        notes = {STABLE_ANNOTATION: None, CANARY_ANNOTATION: None}
        if target is not None and not _same(target, current_model(isvc)):
            predictor["containers"] = _with_model(isvc, target)
            notes.update(_serving(target))
        return {"metadata": _metadata(isvc, notes), "spec": {"predictor": predictor}}
    if model is None:
        raise DataError(f"InferenceService {name}: no canary is running, so there is no revision to pin; "
                        "deploy the previous model with --model URI")
    return deploy_patch(isvc, model)


def kubectl_deploy(variant: str, model: ServedModel, *, namespace: str = NAMESPACE, name: str | None = None) -> str:
    """The `kubectl patch` (a JSON patch) that serves `model` on an InferenceService as
    `deploy_patch` does, for operators who apply changes themselves. Its `test` operations make
    sure the variables it replaces are the storage URI and the digest."""
    import json

    def annotation(key: str) -> str:
        return "/metadata/annotations/" + key.replace("/", "~1")

    ops = [{"op": "test", "path": "/spec/predictor/containers/0/env/0/name", "value": MODEL_ENV},
           {"op": "replace", "path": "/spec/predictor/containers/0/env/0/value", "value": model.uri},
           {"op": "test", "path": "/spec/predictor/containers/0/env/1/name", "value": DIGEST_ENV},
           {"op": "replace", "path": "/spec/predictor/containers/0/env/1/value", "value": model.sha256},
           *({"op": "add", "path": annotation(k), "value": v} for k, v in model_annotations(model).items())]
    return (f"kubectl patch inferenceservice {name or service_name(variant)} -n {namespace} --type json "
            f"-p '{json.dumps(ops)}'")


def status_of(isvc: dict) -> RolloutStatus:
    """Read a rollout's state from an InferenceService object (spec, annotations, status)."""
    status = isvc.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    traffic = tuple(Traffic(revision=t.get("revisionName"), percent=int(t.get("percent") or 0),
                            tag=t.get("tag"), latest=bool(t.get("latestRevision")))
                    for t in predictor.get("traffic") or [])
    return RolloutStatus(
        name=isvc["metadata"]["name"], namespace=isvc["metadata"].get("namespace", ""), ready=ready,
        model=current_model(isvc),
        stable=ServedModel.from_json(_annotations(isvc)[STABLE_ANNOTATION]) if STABLE_ANNOTATION in _annotations(isvc)
        else None,
        canary_percent=_canary_percent(isvc),
        latest_ready_revision=predictor.get("latestReadyRevision"),
        latest_rolled_out_revision=predictor.get("latestRolledoutRevision"),
        previous_rolled_out_revision=predictor.get("previousRolledoutRevision"),
        traffic=traffic)


class Rollout:
    """The rollout of one InferenceService through a `kubernetes.client.CustomObjectsApi`."""

    def __init__(self, custom_api, variant: str, *, namespace: str = NAMESPACE, name: str | None = None,
                 dry_run: bool = False):
        self.api, self.namespace = custom_api, namespace
        self.name = name or service_name(variant)
        self.dry_run = dry_run
        """Server-side dry run: the API server checks and answers, and stores nothing."""

    def get(self) -> dict:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        except ApiException as e:
            if e.status == 404:
                raise DataError(f"InferenceService {self.namespace}/{self.name} not found") from e
            raise

    def status(self) -> RolloutStatus:
        return status_of(self.get())

    def patch(self, body: dict) -> dict:
        """Send one merge patch; a 409 (changed since read) becomes a DataError."""
        from kubernetes.client.exceptions import ApiException

        extra = {"dry_run": "All"} if self.dry_run else {}
        try:
            return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                           body, field_manager=FIELD_MANAGER, **extra)
        except ApiException as e:
            if e.status == 409:
                raise DataError(f"InferenceService {self.namespace}/{self.name} changed while it was being "
                                "patched; read its status and run the command again") from e
            if e.status == 422:
                raise DataError(f"InferenceService {self.namespace}/{self.name}: the API server refused "
                                f"the patch: {e.body}") from e
            raise

    def deploy(self, model: ServedModel) -> RolloutStatus:
        return status_of(self.patch(deploy_patch(self.get(), model)))

    def canary(self, percent: int, model: ServedModel | None = None) -> RolloutStatus:
        return status_of(self.patch(canary_patch(self.get(), percent, model)))

    def promote(self) -> RolloutStatus:
        return status_of(self.patch(promote_patch(self.get())))

    def rollback(self, model: ServedModel | None = None) -> RolloutStatus:
        return status_of(self.patch(rollback_patch(self.get(), model)))
