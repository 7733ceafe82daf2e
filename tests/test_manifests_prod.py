"""Every kustomization under manifests/ built offline and checked as a cluster would check it.

`kubectl kustomize` renders each directory once (module fixture). Core kinds are validated with
kubernetes-validate in strict mode against Kubernetes 1.32, the version of the kubectl that
renders them (kubernetes-validate knows 1.x up to 1.37; an older target is the safer one);
custom resources against their CRDs' schemas in tests/schemas/ (strict, see SOURCES.md). Then
the project's own rules: pod security on every container, resources, one image reference,
least-privilege RBAC, default-deny network policies, disruption budgets in prod; and checkov on
the rendered overlays.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator

from k8s_schemas import SCHEMAS, errors, katib_validator, strict, trainjob_validator
from kserve_schemas import graph_validator, isvc_validator

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = MANIFESTS / "overlays"
K8S_VERSION = "1.32"
CHECKOV = ROOT / ".checkov-venv" / "bin" / "checkov"
NAMESPACE = "aurora"
# Secrets the manifests may name; the operator creates them (docs/runbooks/install.md).
SECRETS = {"aurora-s3", "aurora-mlflow-db"}
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

pytestmark = pytest.mark.usefixtures("kubectl")


def kustomization_dirs() -> list[Path]:
    """Every directory kubectl can build: kustomizations, not Components (those need a parent)."""
    dirs = []
    for path in sorted(MANIFESTS.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind", "Kustomization") == "Kustomization":
            dirs.append(path.parent)
    return dirs


def build(path: Path) -> tuple[Path, list[dict] | str]:
    proc = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if proc.returncode:
        return path, proc.stderr.strip()
    return path, [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[Path, list[dict] | str]:
    """Directory -> its objects, or kubectl's error message when it does not build."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(build, kustomization_dirs()))


@pytest.fixture(scope="module")
def objects(rendered) -> list[tuple[str, dict]]:
    """(directory, object) for every object of every directory that builds."""
    return [(str(d.relative_to(ROOT)), o) for d, objs in rendered.items() if isinstance(objs, list)
            for o in objs]


def overlay_objects(rendered, env: str) -> list[dict]:
    out = rendered[OVERLAYS / env]
    assert isinstance(out, list), out
    return out


def under(rendered, env: str) -> dict[str, list[dict]]:
    """Every directory of one environment's overlays (the whole system, the platform, each
    variant, the canary and A/B overlays) -> its objects."""
    base = OVERLAYS / env
    out = {str(d.relative_to(ROOT)): objs for d, objs in rendered.items() if d == base or base in d.parents}
    assert all(isinstance(o, list) for o in out.values()), out
    return out


def name_of(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- schemas --------------------------------------------------------------------------------

@functools.cache
def _crd_validator(relpath: str) -> Draft202012Validator:
    crd = yaml.load((SCHEMAS / relpath).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = crd["spec"]["versions"]
    # Go's RE2 reads `^(?i)(abort|warn)?$`; Python's re wants inline flags first.
    text = json.dumps(version["schema"]["openAPIV3Schema"]).replace("^(?i)(abort|warn)?$", "(?i)^(abort|warn)?$")
    return Draft202012Validator(strict(json.loads(text)))


def experiment_errors(obj: dict) -> list[str]:
    trial = obj["spec"]["trialTemplate"]["trialSpec"]
    return errors(katib_validator(), obj) + [
        f"trialSpec: {e}" for e in errors(trainjob_validator(), {**trial, "metadata": {"name": "trial"}})]


CUSTOM = {
    ("serving.kserve.io/v1beta1", "InferenceService"): lambda o: errors(isvc_validator(), o),
    ("serving.kserve.io/v1alpha1", "InferenceGraph"): lambda o: errors(graph_validator(), o),
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): lambda o: errors(trainjob_validator(), o),
    ("kubeflow.org/v1beta1", "Experiment"): experiment_errors,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): lambda o: errors(
        _crd_validator("monitoring.coreos.com/monitoring.coreos.com_servicemonitors.yaml"), o),
    ("monitoring.coreos.com/v1", "PrometheusRule"): lambda o: errors(
        _crd_validator("monitoring.coreos.com/monitoring.coreos.com_prometheusrules.yaml"), o),
    ("monitoring.coreos.com/v1", "PodMonitor"): lambda o: errors(
        _crd_validator("monitoring.coreos.com/monitoring.coreos.com_podmonitors.yaml"), o),
}


def schema_errors(obj: dict) -> list[str]:
    """Violations of the object's schema; an object no schema covers is itself an error."""
    check = CUSTOM.get((obj["apiVersion"], obj["kind"]))
    if check:
        return check(obj)
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {obj['apiVersion']} {obj['kind']}: add its CRD to tests/schemas"]
    except kubernetes_validate.ValidationError as e:
        return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    return []


def test_every_kustomization_builds(rendered):
    assert len(rendered) >= 15, sorted(map(str, rendered))
    failed = {str(d.relative_to(ROOT)): out for d, out in rendered.items() if isinstance(out, str)}
    assert failed == {}


def test_every_object_is_valid_against_its_schema(objects):
    seen = set()
    found = []
    for where, obj in objects:
        key = json.dumps(obj, sort_keys=True)
        if key in seen:  # the same object rendered by several directories is checked once
            continue
        seen.add(key)
        found += [f"{where}: {name_of(obj)}: {e}" for e in schema_errors(obj)]
    assert found == []


def test_schemas_catch_what_the_cluster_would_reject(rendered):
    objs = overlay_objects(rendered, "prod")
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    assert any("securityContex" in e for e in schema_errors(typo))
    isvc = json.loads(json.dumps(next(o for o in objs if o["kind"] == "InferenceService")))
    isvc["spec"]["predictor"]["minReplica"] = 2
    assert any("minReplica" in e for e in schema_errors(isvc))
    assert schema_errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


# --- pod security and resources -------------------------------------------------------------

def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """(label, pod spec) for every pod an object would create, as far as the object defines it."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        return [("pod", spec)]
    if kind == "CronJob":
        return [("pod", spec["jobTemplate"]["spec"]["template"]["spec"])]
    if kind in POD_KINDS:
        return [("pod", spec["template"]["spec"])]
    if kind == "InferenceService":
        return [(part, spec[part]) for part in ("predictor", "transformer", "explainer") if part in spec]
    if kind == "TrainJob":
        return trainjob_pods(spec)
    if kind == "Experiment":
        return trainjob_pods(spec["trialTemplate"]["trialSpec"]["spec"])
    return []


def trainjob_pods(spec: dict) -> list[tuple[str, dict]]:
    """A TrainJob's pod as it patches it; the trainer container gets the image and resources."""
    pods = []
    for patch in spec.get("runtimePatches", []):
        for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            pod = json.loads(json.dumps(job["template"]["spec"]["template"]["spec"]))
            for container in pod.get("containers", []):
                container["image"] = spec["trainer"]["image"]
                container["resources"] = spec["trainer"].get("resourcesPerNode", {})
            pods.append((f"trainjob {job['name']}", pod))
    return pods


def container_problems(pod: dict, container: dict) -> list[str]:
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    found = []
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot") and sc.get("runAsNonRoot") is not False):
        found.append("runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True:
        found.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
        found.append("capabilities do not drop ALL (or add some)")
    if (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        found.append("seccompProfile is not RuntimeDefault")
    if sc.get("privileged"):
        found.append("privileged")
    resources = container.get("resources", {})
    for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
        missing = [k for k in keys if k not in resources.get(part, {})]
        if missing:
            found.append(f"resources.{part} lacks {', '.join(missing)}")
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    if not any(m["mountPath"] == "/tmp" and m["name"] in empty_dirs for m in container.get("volumeMounts", [])):
        found.append("no writable emptyDir at /tmp")
    limits = resources.get("limits", {})
    if "nvidia.com/gpu" in limits:
        if pod.get("nodeSelector", {}).get("nvidia.com/gpu.present") != "true" and not pod.get("nodeSelector"):
            found.append("GPU container without a GPU node selector")
        if not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])):
            found.append("GPU container without the nvidia.com/gpu toleration")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    return found


def security_problems(objs) -> list[str]:
    found = []
    for where, obj in objs:
        for label, pod in pod_specs(obj):
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                found += [f"{where}: {name_of(obj)} {label} container {container['name']}: {p}"
                          for p in container_problems(pod, container)]
    return found


def test_every_container_runs_unprivileged_read_only_with_resources(objects):
    # The generated training and tuning manifests leave pod security to the cluster's runtime;
    # every overlay adds it (manifests/components/hardening), and the overlays are checked here.
    deployed = [(w, o) for w, o in objects if w not in ("manifests/training", "manifests/tuning")]
    assert security_problems(deployed) == []


def test_security_check_finds_a_weakened_container(rendered):
    deployment = json.loads(json.dumps(next(o for o in overlay_objects(rendered, "dev")
                                            if o["kind"] == "Deployment")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del container["resources"]["limits"]
    problems = security_problems([("dev", deployment)])
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("resources.limits lacks memory" in p for p in problems)


def test_every_pod_template_is_covered(objects):
    # Every object that makes pods must be one pod_specs understands, or its pods go unchecked.
    kinds = {o["kind"] for _, o in objects}
    pod_makers = kinds & (POD_KINDS | {"InferenceService", "TrainJob", "Experiment"})
    assert {"Deployment", "InferenceService", "TrainJob", "Experiment"} <= pod_makers
    for _, obj in objects:
        if obj["kind"] in pod_makers:
            assert pod_specs(obj), name_of(obj)


# --- images ---------------------------------------------------------------------------------

def image_reference() -> str:
    """The one image every overlay deploys, as manifests/components/image sets it."""
    component = yaml.safe_load((MANIFESTS / "components" / "image" / "kustomization.yaml").read_text())
    (ref,) = {(i["newName"], i.get("digest"), i.get("newTag")) for i in component["images"]}
    name, digest, tag = ref
    return f"{name}@{digest}" if digest else f"{name}:{tag}"


def images(obj: dict) -> list[str]:
    return [c["image"] for _, pod in pod_specs(obj)
            for c in pod.get("initContainers", []) + pod.get("containers", [])]


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_overlays_deploy_the_one_configured_image(rendered, env):
    expected = image_reference()
    assert not expected.endswith(":latest")
    for where, objs in under(rendered, env).items():
        used = {i for o in objs for i in images(o)}
        assert used == {expected}, where


def test_image_reference_is_configurable_by_digest(rendered, tmp_path):
    # The same component with a digest instead of a tag changes every image of the overlay.
    digest = "sha256:" + "0" * 64
    component = MANIFESTS / "components" / "image"
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    config = yaml.safe_load((component / "kustomization.yaml").read_text())
    for image in config["images"]:
        image.pop("newTag")
        image["digest"] = digest
    (copy / "components" / "image" / "kustomization.yaml").write_text(yaml.safe_dump(config))
    _, objs = build(copy / "overlays" / "prod")
    assert isinstance(objs, list), objs
    assert {i for o in objs for i in images(o)} == {f"ghcr.io/aurora-mlops/aurora-mlops@{digest}"}


def test_no_latest_tags_anywhere(objects):
    bad = {f"{where}: {name_of(o)}: {i}" for where, o in objects for i in images(o)
           if i.endswith(":latest") or (":" not in i.rsplit("/", 1)[-1] and "@" not in i)}
    assert bad == set()


# --- credentials by reference ---------------------------------------------------------------

def secret_names(obj) -> set[str]:
    """Every Secret an object refers to by name (volumes, env, envFrom, service accounts)."""
    names = set()

    def walk(node, parent=None):
        if isinstance(node, dict):
            if parent in ("secretKeyRef", "secretRef") and "name" in node:
                names.add(node["name"])
            if parent == "secret" and "secretName" in node:
                names.add(node["secretName"])
            for key, value in node.items():
                walk(value, key)
        elif isinstance(node, list):
            for value in node:
                walk(value, parent)

    walk(obj)
    if obj["kind"] == "ServiceAccount":
        names |= {s["name"] for s in obj.get("secrets", [])}
    if obj["kind"] == "Role":
        names |= {n for r in obj["rules"] if "secrets" in r["resources"] for n in r.get("resourceNames", [])}
    return names


def test_no_credentials_in_manifests(objects):
    assert [name_of(o) for _, o in objects if o["kind"] == "Secret"] == []
    referenced = set().union(*(secret_names(o) for _, o in objects))
    assert referenced <= SECRETS, referenced - SECRETS
    suspicious = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY", re.IGNORECASE)
    literal = [f"{name_of(o)}: {e['name']}" for _, o in objects for _, pod in pod_specs(o)
               for c in pod.get("containers", []) for e in c.get("env", [])
               if suspicious.search(e["name"]) and not e["name"].endswith(("_PATH", "_FILE", "_DIR"))
               and "value" in e]
    assert literal == []


def test_install_runbook_names_every_secret_and_config_map():
    text = (ROOT / "docs" / "runbooks" / "install.md").read_text()
    missing = [s for s in sorted(SECRETS | {"aurora-mlflow"}) if s not in text]
    assert missing == []


# --- RBAC, network policies, disruption budgets ---------------------------------------------

def rules_of(objs, role: str) -> list[dict]:
    (found,) = [o for o in objs if o["kind"] == "Role" and o["metadata"]["name"] == role]
    return found["rules"]


def test_rbac_is_namespaced_and_least_privilege(rendered):
    objs = overlay_objects(rendered, "prod")
    assert not [name_of(o) for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for role in (o for o in objs if o["kind"] == "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (name_of(role), rule)
            if "secrets" in rule["resources"]:
                assert rule.get("resourceNames") and set(rule["verbs"]) <= {"get"}, (name_of(role), rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), (name_of(role), rule)
    assert rules_of(objs, "aurora-predictor") == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["aurora-s3"], "verbs": ["get"]}]
    tuning = {(g, r): set(rule["verbs"]) for rule in rules_of(objs, "aurora-tuning")
              for g in rule["apiGroups"] for r in rule["resources"]}
    assert "create" in tuning[("kubeflow.org", "experiments")]
    assert tuning[("kubeflow.org", "trials")] <= {"get", "list", "watch"}
    bindings = {o["metadata"]["name"]: o for o in objs if o["kind"] == "RoleBinding"}
    accounts = {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"}
    for binding in bindings.values():
        assert {s["name"] for s in binding["subjects"]} <= accounts, name_of(binding)


def test_retrain_trigger_can_only_create_pipeline_runs(rendered):
    # The trigger's account is the one bound to Kubeflow Pipelines' API (manifests/monitoring).
    objs = overlay_objects(rendered, "prod")
    roles = {o["metadata"]["name"]: o["rules"] for o in objs if o["kind"] == "Role"}
    kfp = {name for name, rules in roles.items() if any("pipelines.kubeflow.org" in r["apiGroups"] for r in rules)}
    assert kfp, "no role for the retrain trigger (manifests/monitoring)"
    for name in kfp:
        granted = {(r, v) for rule in roles[name] for g in rule["apiGroups"] for r in rule["resources"]
                   for v in rule["verbs"]}
        assert {g for rule in roles[name] for g in rule["apiGroups"]} == {"pipelines.kubeflow.org"}
        writes = {(r, v) for r, v in granted if v not in ("get", "list", "watch")}
        assert writes == {("runs", "create")}, (name, writes)
    bound = {b["roleRef"]["name"]: [s["name"] for s in b["subjects"]] for b in objs if b["kind"] == "RoleBinding"}
    triggers = {s for name in kfp for s in bound.get(name, [])}
    cronjobs = [o for o in objs if o["kind"] == "CronJob"]
    assert cronjobs and {c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
                         for c in cronjobs} <= triggers


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_network_policies_deny_by_default_and_allow_explicitly(rendered, env):
    policies = {o["metadata"]["name"]: o for o in overlay_objects(rendered, env) if o["kind"] == "NetworkPolicy"}
    deny = policies["default-deny-all"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = policies["allow-dns-egress"]["spec"]["egress"][0]["ports"]
    assert {(p["protocol"], p["port"]) for p in dns} == {("UDP", 53), ("TCP", 53)}
    predictor = policies["allow-predictor-ingress"]["spec"]
    assert predictor["podSelector"] == {"matchLabels": {"component": "predictor"}}
    sources = [s.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
               for s in predictor["ingress"][0]["from"]]
    assert {"istio-system", "knative-serving"} <= set(sources)
    scrape = policies["allow-prometheus-scrape"]["spec"]["ingress"][0]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    # No policy opens ingress to everyone.
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), policy["metadata"]["name"]


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_prod_has_replicas_and_disruption_budgets_dev_scales_down(rendered):
    for where, prod in under(rendered, "prod").items():
        budgets = [o for o in prod if o["kind"] == "PodDisruptionBudget"]
        for isvc in (o for o in prod if o["kind"] == "InferenceService"):
            assert isvc["spec"]["predictor"]["minReplicas"] >= 2, (where, name_of(isvc))
            assert isvc["spec"]["predictor"]["serviceAccountName"] == "aurora-predictor", where
            labels = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": "predictor"}
            assert [b for b in budgets if matches(b["spec"]["selector"], labels)], (where, name_of(isvc))
        for deployment in (o for o in prod if o["kind"] == "Deployment"):
            assert deployment["spec"]["replicas"] >= 2, where
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert [b for b in budgets if matches(b["spec"]["selector"], labels)], (where, name_of(deployment))
        assert all(b["spec"]["minAvailable"] == 1 for b in budgets), where
    for where, dev in under(rendered, "dev").items():
        assert all(o["spec"]["predictor"]["minReplicas"] == 0 for o in dev if o["kind"] == "InferenceService"), where
        assert not [o for o in dev if o["kind"] == "PodDisruptionBudget"], where
    assert {"manifests/overlays/prod/canary", "manifests/overlays/prod/ab"} <= set(under(rendered, "prod"))


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_everything_lives_in_the_namespace(rendered, env):
    objs = overlay_objects(rendered, env)
    (namespace,) = [o for o in objs if o["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"
    elsewhere = [name_of(o) for o in objs
                 if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != NAMESPACE]
    assert elsewhere == []


@pytest.mark.parametrize("variant", ["medium-range", "high-res", "air-pollution", "wave"])
def test_each_variant_deploys_alone(rendered, variant):
    for env in ("dev", "prod"):
        objs = rendered[OVERLAYS / env / variant]
        assert isinstance(objs, list), objs
        isvcs = [o for o in objs if o["kind"] == "InferenceService"]
        assert [o["metadata"]["name"] for o in isvcs] == [f"aurora-{variant}"]


# --- checkov --------------------------------------------------------------------------------

@pytest.mark.slow
def test_checkov_finds_no_failed_checks(rendered, tmp_path):
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: build it with `make .checkov-venv/.installed-from-lock` "
                    "(`make test` does)")
    for env in ("dev", "prod"):
        (tmp_path / f"{env}.yaml").write_text(yaml.safe_dump_all(overlay_objects(rendered, env), sort_keys=False))
    proc = subprocess.run([str(CHECKOV), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download",
                           "--output", "json"], capture_output=True, text=True, cwd=tmp_path)
    report = json.loads(proc.stdout)
    results = report["results"] if isinstance(report, dict) else report[0]["results"]
    failed = [f"{r['check_id']} {r['check_name']}: {r['resource']}" for r in results["failed_checks"]]
    assert failed == []
    assert results["passed_checks"], "checkov checked nothing"
    unexplained = [f"{r['check_id']}: {r['resource']}" for r in results["skipped_checks"]
                   if len((r.get("check_result", {}).get("suppress_comment") or "").strip()) < 20]
    assert unexplained == []


def test_every_alert_has_an_incident_runbook_section(rendered):
    text = (ROOT / "docs" / "runbooks" / "incidents.md").read_text()
    sections = set(re.findall(r"^## (\w+)", text, flags=re.M))
    alerts = {r["alert"] for o in overlay_objects(rendered, "prod") if o["kind"] == "PrometheusRule"
              for g in o["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts, "no alerts in the prod overlay"
    assert alerts - sections == set()
