"""Canary rollouts of a predictor through the Kubernetes API: the changes KServe documents,
as JSON merge patches (RFC 7386) of the InferenceService.

- **canary**: new model URI (a new revision) and `canaryTrafficPercent: N`. KServe sends N %
  of requests to the new revision and the rest to the last revision rolled out to 100 %.
  A canary already running takes a new percentage alone.
- **promote**: remove `canaryTrafficPercent`: the latest revision takes all traffic.
- **rollback**, during a canary: `canaryTrafficPercent: 0` pins all traffic to the last
  rolled-out revision at once, and the spec's model URI goes back to the stable one (a new
  revision of the stable model is made, with no traffic until the next promote). After a
  rollout finished there is no older revision left to pin: the rollback is a rollout of the
  URI given, with `canaryTrafficPercent` removed.

The stable and canary URIs are kept in annotations while a canary runs, so a rollback needs
no arguments. Patches that replace the container list carry `metadata.resourceVersion`, so
the API server refuses them (409) if the object changed since it was read.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from model_code.errors import DataError
from serving.manifests import (API_VERSION, CANARY_ANNOTATION, CONTAINER, MODEL_ENV, NAMESPACE,
                               STABLE_ANNOTATION, service_name)

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
    model_uri: str
    """The URI of the spec: what the latest revision serves."""
    stable_uri: str | None
    """During a canary: the URI of the last rolled-out revision."""
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


def current_uri(isvc: dict) -> str:
    """The model URI of the spec: env `AURORA_MODEL_URI` of the predictor container."""
    for env in _container(isvc).get("env") or []:
        if env.get("name") == MODEL_ENV and "value" in env:
            return env["value"]
    raise DataError(f"InferenceService {isvc['metadata'].get('name')}: container {CONTAINER!r} "
                    f"sets no env {MODEL_ENV} with a value")


def _with_uri(isvc: dict, uri: str) -> list[dict]:
    """The predictor's containers list with the model URI replaced (a merge patch replaces
    lists whole, so the patch carries all of it)."""
    current_uri(isvc)  # the variable must exist
    containers = copy.deepcopy(isvc["spec"]["predictor"]["containers"])
    for c in containers:
        if c.get("name") == CONTAINER:
            for env in c["env"]:
                if env.get("name") == MODEL_ENV:
                    env["value"] = uri
    return containers


def _canary_percent(isvc: dict) -> int | None:
    return isvc.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")


def _annotations(isvc: dict) -> dict:
    return isvc.get("metadata", {}).get("annotations") or {}


def _metadata(isvc: dict, annotations: dict) -> dict:
    """The metadata part of a patch: annotations, and the resourceVersion the patch builds on."""
    version = isvc["metadata"].get("resourceVersion")
    return {"annotations": annotations, **({"resourceVersion": version} if version else {})}


def _check_percent(percent: int) -> None:
    if not isinstance(percent, int) or isinstance(percent, bool) or not 1 <= percent <= 99:
        raise DataError(f"--percent: canary traffic must be an integer from 1 to 99, got {percent!r} "
                        "(use promote for 100, rollback for 0)")


def canary_patch(isvc: dict, percent: int, uri: str | None = None) -> dict:
    """Start a canary of `uri` at `percent` %, or move a running canary to `percent` % (no uri)."""
    _check_percent(percent)
    name, running = isvc["metadata"]["name"], STABLE_ANNOTATION in _annotations(isvc)
    if uri is None:
        if not running and _canary_percent(isvc) is None:
            raise DataError(f"InferenceService {name}: no canary is running; start one with --model-uri URI")
        return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}
    if not uri.strip():
        raise DataError("--model-uri: empty URI")
    stable = _annotations(isvc).get(STABLE_ANNOTATION) if running else current_uri(isvc)
    if uri == current_uri(isvc):
        raise DataError(f"InferenceService {name} already serves {uri} in its spec: a canary needs a "
                        "different model URI (a new revision)")
    if uri == stable:
        raise DataError(f"--model-uri {uri} is the stable model of {name}; to go back to it use rollback")
    return {
        "metadata": _metadata(isvc, {STABLE_ANNOTATION: stable, CANARY_ANNOTATION: uri}),
        "spec": {"predictor": {"canaryTrafficPercent": percent, "containers": _with_uri(isvc, uri)}},
    }


def promote_patch(isvc: dict) -> dict:
    """Give the latest revision all traffic: remove `canaryTrafficPercent` and the canary notes."""
    if _canary_percent(isvc) is None:
        raise DataError(f"InferenceService {isvc['metadata']['name']}: no canary to promote "
                        "(spec.predictor.canaryTrafficPercent is not set)")
    return {"metadata": {"annotations": {STABLE_ANNOTATION: None, CANARY_ANNOTATION: None}},
            "spec": {"predictor": {"canaryTrafficPercent": None}}}


def rollback_patch(isvc: dict, uri: str | None = None) -> dict:
    """Send all traffic back to the stable model (see the module docstring for both cases)."""
    name = isvc["metadata"]["name"]
    notes = _metadata(isvc, {STABLE_ANNOTATION: None, CANARY_ANNOTATION: None})
    if _canary_percent(isvc) is not None:
        target = uri or _annotations(isvc).get(STABLE_ANNOTATION)
        predictor: dict[str, Any] = {"canaryTrafficPercent": 0}
        if target and target != current_uri(isvc):
            predictor["containers"] = _with_uri(isvc, target)
        return {"metadata": notes, "spec": {"predictor": predictor}}
    if not uri:
        raise DataError(f"InferenceService {name}: no canary is running, so there is no revision to pin; "
                        "roll out the previous model with --model-uri URI")
    if uri == current_uri(isvc):
        raise DataError(f"InferenceService {name} already serves {uri}")
    return {"metadata": notes,
            "spec": {"predictor": {"canaryTrafficPercent": None, "containers": _with_uri(isvc, uri)}}}


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
        model_uri=current_uri(isvc), stable_uri=_annotations(isvc).get(STABLE_ANNOTATION),
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

    def canary(self, percent: int, uri: str | None = None) -> RolloutStatus:
        return status_of(self.patch(canary_patch(self.get(), percent, uri)))

    def promote(self) -> RolloutStatus:
        return status_of(self.patch(promote_patch(self.get())))

    def rollback(self, uri: str | None = None) -> RolloutStatus:
        return status_of(self.patch(rollback_patch(self.get(), uri)))
