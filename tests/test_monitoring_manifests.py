"""manifests/monitoring/ rendered with kubectl kustomize and checked as the cluster would check it.

ServiceMonitor and PrometheusRule against the Prometheus Operator CRDs (strict; see
schemas/SOURCES.md), core kinds with kubernetes-validate (strict), then the project's rules:
every metric an alert or a dashboard panel reads is one the code declares, least privilege,
pod security.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator
from prometheus_client import REGISTRY

import monitoring.telemetry  # noqa: F401  (declares the aurora_live_*, aurora_drift_* series)
import serving.telemetry  # noqa: F401  (declares the aurora_request_* series)
from k8s_schemas import SCHEMAS, errors, strict

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "manifests" / "monitoring"
CRDS = SCHEMAS / "monitoring.coreos.com"

pytestmark = pytest.mark.usefixtures("kubectl")


@functools.cache
def crd_validator(name: str) -> Draft202012Validator:
    crd = yaml.load((CRDS / f"monitoring.coreos.com_{name}.yaml").read_text(),
                    Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = crd["spec"]["versions"]
    # Go's RE2 reads `^(?i)(abort|warn)?$`; Python's re wants inline flags first.
    text = json.dumps(version["schema"]["openAPIV3Schema"]).replace("^(?i)(abort|warn)?$", "(?i)^(abort|warn)?$")
    return Draft202012Validator(strict(json.loads(text)))


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict]:
    out = subprocess.run(["kubectl", "kustomize", str(MONITORING)], capture_output=True, text=True, check=True)
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout)}


def _declared() -> set[str]:
    """Every sample name the code's aurora_* metrics expose (histogram buckets, counter totals...)."""
    names = set()
    for metric in REGISTRY.collect():
        if metric.name.startswith("aurora_"):
            base = metric.name
            names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_info"}
    return names


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\baurora_[a-z0-9_]+", expr))


def test_objects_render_and_validate_strictly(objects):
    assert set(objects) == {
        ("ServiceMonitor", "aurora-predictors"), ("PrometheusRule", "aurora-alerts"),
        ("ConfigMap", "aurora-grafana-dashboard"), ("ServiceAccount", "aurora-retrain-trigger"),
        ("Role", "aurora-retrain-trigger"), ("RoleBinding", "aurora-retrain-trigger"),
        ("NetworkPolicy", "allow-drift-check-egress"), ("CronJob", "aurora-drift-check-medium-range"),
    }
    for (kind, name), obj in objects.items():
        assert obj["metadata"]["namespace"] == "aurora", (kind, name)
        if kind == "ServiceMonitor":
            assert errors(crd_validator("servicemonitors"), obj) == []
        elif kind == "PrometheusRule":
            assert errors(crd_validator("prometheusrules"), obj) == []
        else:
            kubernetes_validate.validate(obj, "1.32", strict=True)


def test_strict_schemas_catch_misspelt_fields(objects):
    rule = json.loads(json.dumps(objects[("PrometheusRule", "aurora-alerts")]))
    rule["spec"]["groups"][0]["rules"][0]["for_"] = "10m"
    rule["spec"]["groups"][0]["partial_response_strategy"] = "abort"  # valid: the rewritten pattern
    assert errors(crd_validator("prometheusrules"), rule) == [
        "spec/groups/0/rules/0: Additional properties are not allowed ('for_' was unexpected)"]
    monitor = json.loads(json.dumps(objects[("ServiceMonitor", "aurora-predictors")]))
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert any("interval" in e for e in errors(crd_validator("servicemonitors"), monitor))


def test_alerts_cover_latency_errors_drift_skill_and_jobs_with_declared_metrics(objects):
    rules = [r for g in objects[("PrometheusRule", "aurora-alerts")]["spec"]["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r for r in rules}
    assert {"AuroraPredictorLatencyP99High", "AuroraPredictorErrorRateHigh", "AuroraInputDriftDetected",
            "AuroraLiveSkillDegraded", "AuroraForecastJobsFailing"} <= set(by_name)
    assert "histogram_quantile(0.99" in by_name["AuroraPredictorLatencyP99High"]["expr"]
    declared = _declared()
    for rule in rules:
        used = _metrics_in(rule["expr"])
        assert used and used <= declared, (rule["alert"], used - declared)
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]


def test_dashboard_is_a_labelled_configmap_whose_panels_read_declared_metrics(objects):
    cm = objects[("ConfigMap", "aurora-grafana-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["aurora-mlops.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*map(_metrics_in, exprs))
    assert used <= _declared(), used - _declared()
    assert {"aurora_live_rmse", "aurora_drift_share", "aurora_request_seconds_bucket", "aurora_jobs"} <= used
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_servicemonitor_scrapes_the_model_server_of_every_predictor(objects):
    spec = objects[("ServiceMonitor", "aurora-predictors")]["spec"]
    assert {"key": "serving.kserve.io/inferenceservice", "operator": "Exists"} in spec["selector"]["matchExpressions"]
    assert spec["namespaceSelector"] == {"matchNames": ["aurora"]}
    assert {e.get("targetPort") or e.get("port") for e in spec["endpoints"]} == {8080, "http-usermetric"}


def test_drift_check_may_create_pipeline_runs_and_nothing_more(objects):
    role = objects[("Role", "aurora-retrain-trigger")]
    assert role["rules"] == [
        {"apiGroups": ["pipelines.kubeflow.org"], "resources": ["runs"], "verbs": ["create"]},
        {"apiGroups": ["pipelines.kubeflow.org"], "resources": ["experiments"], "verbs": ["get", "list"]},
    ]
    binding = objects[("RoleBinding", "aurora-retrain-trigger")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aurora-retrain-trigger", "namespace": "aurora"}]
    assert objects[("ServiceAccount", "aurora-retrain-trigger")]["automountServiceAccountToken"] is False

    cron = objects[("CronJob", "aurora-drift-check-medium-range")]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid" and cron["jobTemplate"]["spec"]["backoffLimit"] == 0
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "aurora-retrain-trigger" and pod["automountServiceAccountToken"] is False
    (token,) = [v for v in pod["volumes"] if v["name"] == "kfp-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/aurora-mlops/aurora-mlops:0.1.0"
    assert container["args"][:4] == ["monitor", "check", "--variant", "medium-range"]
    # The arguments parse with the real command line.
    from auroraops.cli import build_parser

    args = build_parser().parse_args(container["args"])
    assert args.host.startswith("http://ml-pipeline.kubeflow") and args.state.startswith("s3://")
    # Pod security.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"requests", "limits"} <= set(container["resources"])
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    labels = cron["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    policy = objects[("NetworkPolicy", "allow-drift-check-egress")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
