"""KServe manifests under manifests/serving: kustomize builds, strict CRD validation, sizing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from k8s_schemas import errors
from kserve_schemas import graph_validator, isvc_validator, merge_patch
from model_code.variants import VARIANTS, get_variant
from serving import manifests
from serving.traffic import canary_patch
from serving.served import ServedModel

ROOT = Path(__file__).resolve().parents[1]
SERVING = ROOT / "manifests" / "serving"
KUSTOMIZATIONS = sorted(p.parent for p in SERVING.rglob("kustomization.yaml"))
needs_kubectl = pytest.mark.usefixtures("kubectl")


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def validator(doc: dict):
    return {"InferenceService": isvc_validator, "InferenceGraph": graph_validator}[doc["kind"]]()


def test_checked_in_manifests_are_what_the_code_renders():
    stale = [path for path, text in manifests.render_all().items()
             if not (ROOT / path).is_file() or (ROOT / path).read_text() != text]
    assert stale == [], "regenerate them with: python -m serving.manifests"


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(SERVING)) or ".")
def test_every_kustomization_builds_and_validates_strictly(path):
    docs = kustomize(path)
    assert docs, path
    for doc in docs:
        assert errors(validator(doc), doc) == [], f"{path}: {doc['kind']} {doc['metadata']['name']}"


def test_the_kustomizations_cover_every_variant_the_canary_and_ab():
    names = {str(p.relative_to(SERVING)) for p in KUSTOMIZATIONS}
    assert names == {".", "canary", "ab", *VARIANTS}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_predictor_pod_runs_the_serve_command_on_a_gpu_node_securely(variant):
    isvc = manifests.inference_service(variant)
    predictor = isvc["spec"]["predictor"]
    (c,) = predictor["containers"]
    assert c["name"] == "kserve-container" and c["image"] == "ghcr.io/aurora-mlops/aurora-mlops:0.1.0"
    assert c["args"] == ["serve", "--variant", variant, "--model", "$(AURORA_MODEL_URI)",
                         "--model-sha256", "$(AURORA_MODEL_SHA256)", "--host", "0.0.0.0",
                         "--http-port", "8080", "--grpc-port", "8081", "--autocast",
                         "--jobs-dir", f"s3://aurora-jobs/{variant}"]
    # As shipped, before a rollout pins a version: the registry's champion as a pod starts
    # (registered under the variant's slug: `aurora-medium-range-v1p5`).
    assert c["env"][:2] == [{"name": "AURORA_MODEL_URI",
                             "value": f"models:/{get_variant(variant).model_name}@champion"},
                            {"name": "AURORA_MODEL_SHA256", "value": ""}]
    pinned = manifests.inference_service(variant, model=ServedModel(
        uri="s3://aurora-mlflow/artifacts/3/abc/artifacts/model/artifacts/checkpoint.safetensors",
        sha256="sha256:" + "a" * 64, version="7", name=get_variant(variant).model_name))
    assert pinned["spec"]["predictor"]["containers"][0]["env"][1]["value"] == "sha256:" + "a" * 64
    assert pinned["metadata"]["annotations"]["aurora-mlops.io/model-version"] == "7"
    assert errors(validator(pinned), pinned) == []
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets["AWS_SECRET_ACCESS_KEY"] == {"name": "aurora-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert secrets["AWS_ENDPOINT_URL"]["optional"] is True
    assert c["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}

    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsUser"] == 10001  # the image's user (Dockerfile)
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert predictor["volumes"][0]["name"] == "tmp" and "emptyDir" in predictor["volumes"][0]

    res = c["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "1"
    assert res["limits"]["memory"] == res["requests"]["memory"]
    assert {"cpu", "memory", "ephemeral-storage"} <= set(res["requests"]) & set(res["limits"])
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert predictor["minReplicas"] == 1 <= predictor["maxReplicas"]
    assert predictor["scaleMetric"] == "concurrency"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert "canaryTrafficPercent" not in predictor


def test_container_args_parse_as_the_serve_command():
    from auroraops.cli import build_parser

    args = manifests.serve_args("high-res")
    args[args.index("$(AURORA_MODEL_URI)")] = "s3://aurora-mlflow/artifacts/3/abc/artifacts/model/artifacts/x.safetensors"
    args[args.index("$(AURORA_MODEL_SHA256)")] = "sha256:" + "a" * 64
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.host, parsed.model_sha256) == ("serve", "0.0.0.0", "sha256:" + "a" * 64)
    assert parsed.variant in ("high-res", ["high-res"])  # one variant, however serve collects them
    assert (parsed.http_port, parsed.grpc_port, parsed.autocast) == (8080, 8081, True)


def test_sizing_follows_the_grid_and_variables_of_each_variant():
    medium = manifests.sizing(get_variant("medium-range"))
    # One 0.25° input (2 history steps of 4 surface + 5x13 atmospheric fields, 3 statics) is
    # ~586 MB and one output step ~287 MB (float32).
    assert round(medium.input_bytes / 1e6) == 586 and round(medium.output_step_bytes / 1e6) == 287
    high = manifests.sizing(get_variant("high-res"))
    assert high.input_bytes == pytest.approx(medium.input_bytes * (1801 * 3600) / (721 * 1440))
    assert high.memory_gib > medium.memory_gib and high.cpu > medium.cpu
    wave = manifests.sizing(get_variant("wave"))
    assert wave.input_bytes > medium.input_bytes  # 18 more surface variables on the same grid
    for spec in VARIANTS.values():
        s = manifests.sizing(spec)
        floor = manifests.RUNTIME_GIB + manifests.WEIGHTS_GIB + 2 * (s.input_bytes + s.output_step_bytes) / 2**30
        assert floor < s.memory_gib <= floor * manifests.HEADROOM + 1
        assert s.tmp_gib > manifests.WEIGHTS_GIB + s.input_bytes / 2**30


def test_strict_validation_catches_typos_and_wrong_types():
    isvc = manifests.inference_service("wave")
    isvc["spec"]["predictor"]["canaryTrafficPercnt"] = 10  # Kubernetes would prune it silently
    isvc["spec"]["predictor"]["minReplicas"] = "1"
    isvc["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/v2/health/ready"
    found = errors(isvc_validator(), isvc)
    assert any("'canaryTrafficPercnt' was unexpected" in e for e in found)
    assert any(e.startswith("spec/predictor/minReplicas: '1' is not of type 'integer'") for e in found)
    assert any("'paht' was unexpected" in e for e in found)

    graph = manifests.splitter_graph("g", {"a": 30, "b": 70}, model="m")
    graph["spec"]["nodes"]["root"]["routerType"] = "Split"
    assert any("'Split' is not one of" in e for e in errors(graph_validator(), graph))
    with pytest.raises(ValueError, match="sum to 100"):
        manifests.splitter_graph("g", {"a": 30, "b": 60}, model="m")


@needs_kubectl
def test_canary_overlay_is_the_change_rollout_canary_makes():
    base = manifests.inference_service("medium-range")
    patch = canary_patch(base, 10, manifests.served_model("medium-range", "challenger"))
    (overlay,) = kustomize(SERVING / "canary")
    assert overlay == merge_patch(base, patch)
    assert overlay["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_ab_graph_splits_between_the_two_services_it_ships_with():
    isvc_a, isvc_b, graph = manifests.ab_objects("medium-range")
    assert errors(graph_validator(), graph) == []
    (root,) = graph["spec"]["nodes"].values()
    assert root["routerType"] == "Splitter"
    assert [(s["name"], s["weight"]) for s in root["steps"]] == [
        (isvc_a["metadata"]["name"], 50), (isvc_b["metadata"]["name"], 50)]
    for step, isvc in zip(root["steps"], (isvc_a, isvc_b)):
        name, ns = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
        # the model inside each service keeps the variant's name, so the URL names it
        assert step["serviceUrl"] == f"http://{name}.{ns}.svc.cluster.local/v2/models/aurora-medium-range/infer"
    uris = [i["spec"]["predictor"]["containers"][0]["env"][0]["value"] for i in (isvc_a, isvc_b)]
    assert uris == ["models:/aurora-medium-range@champion", "models:/aurora-medium-range@challenger"]
    assert json.loads(graph["metadata"]["annotations"]["aurora-mlops.io/models"]) == {
        "aurora-medium-range-a": "models:/aurora-medium-range@champion",
        "aurora-medium-range-b": "models:/aurora-medium-range@challenger"}
    # rendered from the registry, the graph names both versions
    v3, v4 = (ServedModel(uri=f"s3://x/{n}/checkpoint.safetensors", sha256=f"sha256:{n:064x}", version=str(n),
                          name="aurora-medium-range") for n in (3, 4))
    *_, pinned = manifests.ab_objects("medium-range", v3, v4)
    assert json.loads(pinned["metadata"]["annotations"]["aurora-mlops.io/models"]) == {
        "aurora-medium-range-a": "3", "aurora-medium-range-b": "4"}
