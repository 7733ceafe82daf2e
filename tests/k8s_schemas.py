"""Strict jsonschema validators for the custom resources the project renders (see schemas/SOURCES.md)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent / "schemas"
KATIB_SPEC = SCHEMAS / "kubeflow.org" / "katib_openapi-spec_swagger.json"
TRAINJOB_CRD = SCHEMAS / "trainer.kubeflow.org" / "trainer.kubeflow.org_trainjobs.yaml"


def strict(schema):
    """A copy of `schema` in which every object schema with `properties` rejects unknown keys."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.cache
def _katib_components() -> dict:
    return strict(json.loads(KATIB_SPEC.read_text())["components"])


def katib_validator(definition: str = "v1beta1.Experiment") -> Draft202012Validator:
    """Validator for one definition of Katib's OpenAPI document, e.g. `io.k8s.api.core.v1.ConfigMap`."""
    root = {"$ref": f"#/components/schemas/{definition}", "components": _katib_components()}
    return Draft202012Validator(root)


@functools.cache
def trainjob_validator() -> Draft202012Validator:
    """Validator for TrainJob objects: the CRD's only version's openAPIV3Schema, strict."""
    crd = yaml.safe_load(TRAINJOB_CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return Draft202012Validator(strict(version["schema"]["openAPIV3Schema"]))


def errors(validator: Draft202012Validator, instance) -> list[str]:
    """Every violation as `path: message`, sorted; empty when the instance is valid."""
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(instance))
