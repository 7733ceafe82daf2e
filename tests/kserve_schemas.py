"""Strict validators of KServe's InferenceService and InferenceGraph (CRDs in schemas/serving.kserve.io)."""

from __future__ import annotations

import functools

import yaml
from jsonschema import Draft202012Validator

from k8s_schemas import SCHEMAS, strict

CRDS = SCHEMAS / "serving.kserve.io"


@functools.cache
def _validator(plural: str) -> Draft202012Validator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the InferenceService CRD is 1.9 MB
    crd = yaml.load((CRDS / f"serving.kserve.io_{plural}.yaml").read_text(), Loader=loader)
    (version,) = crd["spec"]["versions"]
    return Draft202012Validator(strict(version["schema"]["openAPIV3Schema"]))


def isvc_validator() -> Draft202012Validator:
    """InferenceService (serving.kserve.io/v1beta1), unknown fields rejected."""
    return _validator("inferenceservices")


def graph_validator() -> Draft202012Validator:
    """InferenceGraph (serving.kserve.io/v1alpha1), unknown fields rejected."""
    return _validator("inferencegraphs")


def merge_patch(target, patch):
    """`target` with the JSON merge patch `patch` applied (RFC 7386), as the API server applies
    `application/merge-patch+json`: objects merge key by key, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
