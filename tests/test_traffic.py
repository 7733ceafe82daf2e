"""`auroraops rollout`: the merge patches sent through the Kubernetes client, checked by a small
API server on 127.0.0.1 that applies them and validates the result against KServe's CRD; the
models they serve resolved from a real MLflow registry (sqlite) to their versions' artifacts;
and the skill-gated canary decision."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from k8s_schemas import errors
from kserve_schemas import isvc_validator, merge_patch
from kube_api import JsonApiHandler
from model_code.errors import DataError
from serving import manifests
from serving.canary_decision import Ops, Rule, Target, canary_decision, load_skill
from serving.traffic import Rollout, canary_patch, deploy_patch, promote_patch, rollback_patch, status_of
from serving.served import ServedModel


def version(n: int, variant: str = "medium-range") -> ServedModel:
    """A registry version's record as rollouts carry it (its artifact URI as MLflow records it)."""
    return ServedModel(uri=f"s3://aurora-mlflow/artifacts/1/run{n}/artifacts/model/artifacts/checkpoint.safetensors",
                       sha256=f"sha256:{n:064x}", version=str(n), name=f"aurora-{variant}")


V1, V2, V3 = version(1), version(2), version(3)
PATH = "/apis/serving.kserve.io/v1beta1/namespaces/aurora/inferenceservices/aurora-medium-range"
STATUS = {
    "conditions": [{"type": "Ready", "status": "True"}],
    "components": {"predictor": {
        "latestReadyRevision": "aurora-medium-range-predictor-00002",
        "latestRolledoutRevision": "aurora-medium-range-predictor-00001",
        "traffic": [
            {"tag": "latest", "revisionName": "aurora-medium-range-predictor-00002", "latestRevision": True,
             "percent": 10},
            {"tag": "prev", "revisionName": "aurora-medium-range-predictor-00001", "latestRevision": False,
             "percent": 90}]}},
}


class _KubeApi(JsonApiHandler):
    """GET and PATCH (merge patch) of InferenceServices; a patched object that fails the CRD's
    strict schema is refused with 422, a stale resourceVersion with 409."""

    def _status(self, code: int, message: str) -> None:
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message})

    def do_GET(self):
        store = self.server.store
        path = urlsplit(self.path).path
        self.server.requests.append(("GET", path, None, None))
        if path not in store:
            return self._status(404, "not found")
        return self._send(200, store[path])

    def do_PATCH(self):
        store = self.server.store
        url = urlsplit(self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(("PATCH", url.path, self.headers["Content-Type"], body,
                                     parse_qs(url.query)))
        if self.headers["Content-Type"] != "application/merge-patch+json":
            return self._status(415, f"unsupported patch type {self.headers['Content-Type']}")
        current = store.get(url.path)
        if current is None:
            return self._status(404, "not found")
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            return self._status(409, "the object has been modified")
        patched = merge_patch(current, body)
        problems = errors(isvc_validator(), patched)
        if problems:
            return self._status(422, "; ".join(problems))
        patched["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        if "All" not in parse_qs(url.query).get("dryRun", []):
            store[url.path] = patched
        return self._send(200, patched)


@pytest.fixture
def kube():
    from kubernetes import client

    server = ThreadingHTTPServer(("127.0.0.1", 0), _KubeApi)
    isvc = manifests.inference_service("medium-range", model=V1)  # as `rollout deploy` of version 1 leaves it
    isvc["metadata"]["resourceVersion"] = "1"
    server.store, server.requests = {PATH: isvc}, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    with client.ApiClient(config) as api:
        yield client.CustomObjectsApi(api), server
    server.shutdown()


def _patches(server) -> list[dict]:
    return [r[3] for r in server.requests if r[0] == "PATCH"]


def env(isvc: dict) -> dict:
    return {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["containers"][0]["env"][:2]}


def test_canary_promote_cycle_sends_kserves_documented_changes(kube):
    api, server = kube
    rollout = Rollout(api, "medium-range")
    base = copy.deepcopy(server.store[PATH])

    state = rollout.canary(10, V2)
    method, path, content_type, body, query = server.requests[-1]
    assert (method, path, content_type) == ("PATCH", PATH, "application/merge-patch+json")
    assert query == {"fieldManager": ["auroraops"]}
    containers = copy.deepcopy(base["spec"]["predictor"]["containers"])
    containers[0]["env"][0]["value"], containers[0]["env"][1]["value"] = V2.uri, V2.sha256  # the list whole
    assert body == {
        "metadata": {"resourceVersion": "1", "annotations": {
            "aurora-mlops.io/model-version": "2", "aurora-mlops.io/model": V2.to_json(),
            "aurora-mlops.io/stable-model": V1.to_json(), "aurora-mlops.io/canary-model": V2.to_json()}},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "containers": containers}},
    }
    stored = server.store[PATH]
    assert errors(isvc_validator(), stored) == []
    assert (state.phase, state.model, state.stable, state.canary_percent) == ("canary", V2, V1, 10)
    assert env(stored) == {"AURORA_MODEL_URI": V2.uri, "AURORA_MODEL_SHA256": V2.sha256}
    # everything but the model, the traffic share and the notes is untouched
    assert stored["spec"]["predictor"]["containers"][0]["args"] == base["spec"]["predictor"]["containers"][0]["args"]
    assert {k: v for k, v in stored["spec"]["predictor"].items() if k not in ("canaryTrafficPercent", "containers")} \
        == {k: v for k, v in base["spec"]["predictor"].items() if k != "containers"}

    rollout.canary(50)  # the next step of the same canary: the share alone
    assert _patches(server)[-1] == {"spec": {"predictor": {"canaryTrafficPercent": 50}}}

    state = rollout.promote()
    assert _patches(server)[-1] == {
        "metadata": {"annotations": {"aurora-mlops.io/stable-model": None, "aurora-mlops.io/canary-model": None}},
        "spec": {"predictor": {"canaryTrafficPercent": None}}}
    stored = server.store[PATH]
    assert "canaryTrafficPercent" not in stored["spec"]["predictor"]
    assert stored["metadata"]["annotations"]["aurora-mlops.io/model-version"] == "2"
    assert (state.phase, state.model, state.stable) == ("stable", V2, None)
    assert errors(isvc_validator(), stored) == []


def test_rollback_during_a_canary_pins_the_stable_revision_and_restores_its_model(kube):
    api, server = kube
    rollout = Rollout(api, "medium-range")
    rollout.canary(20, V2)
    state = rollout.rollback()
    body = _patches(server)[-1]
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert body["spec"]["predictor"]["containers"][0]["env"][:2] == [
        {"name": "AURORA_MODEL_URI", "value": V1.uri}, {"name": "AURORA_MODEL_SHA256", "value": V1.sha256}]
    assert body["metadata"] == {"resourceVersion": "2", "annotations": {
        "aurora-mlops.io/stable-model": None, "aurora-mlops.io/canary-model": None,
        "aurora-mlops.io/model-version": "1", "aurora-mlops.io/model": V1.to_json()}}
    assert (state.phase, state.model, state.canary_percent) == ("pinned", V1, 0)
    assert errors(isvc_validator(), server.store[PATH]) == []

    # the next canary starts from the pinned state; promoting a pin gives the latest revision all traffic
    state = rollout.canary(10, V3)
    assert (state.stable, state.model, state.canary_percent) == (V1, V3, 10)


def test_deploy_and_a_rollback_after_a_finished_rollout_serve_the_model_given_on_all_traffic(kube):
    api, server = kube
    rollout = Rollout(api, "medium-range")
    with pytest.raises(DataError, match="no canary is running.*--model"):
        rollout.rollback()
    state = rollout.rollback(V3)
    body = _patches(server)[-1]
    assert body["spec"]["predictor"]["canaryTrafficPercent"] is None
    assert env(server.store[PATH]) == {"AURORA_MODEL_URI": V3.uri, "AURORA_MODEL_SHA256": V3.sha256}
    assert (state.phase, state.model) == ("stable", V3)
    rollout.canary(10, V2)
    state = rollout.deploy(V1)  # deploy ends a canary
    assert (state.phase, state.model, state.stable) == ("stable", V1, None)
    assert "aurora-mlops.io/canary-model" not in server.store[PATH]["metadata"]["annotations"]
    with pytest.raises(DataError, match="already serves aurora-medium-range/1 on all traffic"):
        rollout.deploy(V1)


def test_bad_requests_are_refused_before_anything_is_sent(kube):
    api, server = kube
    rollout = Rollout(api, "medium-range")
    for percent in (0, 100, 150, -5):
        with pytest.raises(DataError, match="--percent: canary traffic must be an integer from 1 to 99"):
            rollout.canary(percent, V2)
    with pytest.raises(DataError, match="already serves aurora-medium-range/1 in its spec: a canary needs a "
                                        "different model"):
        rollout.canary(10, V1)
    with pytest.raises(DataError, match="no canary is running; start one with --model"):
        rollout.canary(30)
    with pytest.raises(DataError, match="no canary to promote"):
        rollout.promote()
    with pytest.raises(DataError, match="InferenceService aurora/aurora-nope not found"):
        Rollout(api, "medium-range", name="aurora-nope").status()
    assert _patches(server) == []


def test_stale_objects_conflict_and_invalid_patches_are_refused_by_the_server(kube):
    api, server = kube
    rollout = Rollout(api, "medium-range")
    stale = rollout.get()
    rollout.canary(10, V2)  # resourceVersion 1 -> 2
    with pytest.raises(DataError, match="changed while it was being patched"):
        rollout.patch(rollback_patch(stale, V3))
    with pytest.raises(DataError, match="refused the patch: .*'canaryTrafficPercnt' was unexpected"):
        rollout.patch({"spec": {"predictor": {"canaryTrafficPercnt": 5}}})
    assert server.store[PATH]["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_dry_run_is_checked_by_the_server_and_changes_nothing(kube):
    api, server = kube
    before = copy.deepcopy(server.store[PATH])
    state = Rollout(api, "medium-range", dry_run=True).canary(10, V2)
    assert state.canary_percent == 10
    assert server.requests[-1][4] == {"dryRun": ["All"], "fieldManager": ["auroraops"]}
    assert server.store[PATH] == before


def test_patches_applied_to_the_manifest_stay_valid_at_every_step():
    isvc = manifests.inference_service("high-res")  # as shipped: the champion alias as a pod starts
    assert env(isvc) == {"AURORA_MODEL_URI": "models:/aurora-high-res@champion", "AURORA_MODEL_SHA256": ""}
    h7, h8 = version(7, "high-res"), version(8, "high-res")
    steps = [lambda o: deploy_patch(o, h7), lambda o: canary_patch(o, 10, h8), lambda o: canary_patch(o, 60),
             rollback_patch, lambda o: canary_patch(o, 5, h8), promote_patch, lambda o: rollback_patch(o, h7)]
    for step in steps:
        isvc = merge_patch(isvc, step(isvc))
        assert errors(isvc_validator(), isvc) == []
    assert status_of(isvc).model == h7 and env(isvc)["AURORA_MODEL_SHA256"] == h7.sha256


def test_status_reads_kserves_revisions_and_traffic():
    base = manifests.inference_service("medium-range", model=V1)
    isvc = merge_patch(base, canary_patch(base, 10, V2))
    isvc["status"] = STATUS
    assert errors(isvc_validator(), isvc) == []
    state = status_of(isvc)
    assert state.ready and state.phase == "canary"
    assert state.latest_rolled_out_revision == "aurora-medium-range-predictor-00001"
    assert [(t.percent, t.tag, t.latest) for t in state.traffic] == [(10, "latest", True), (90, "prev", False)]


def _kubeconfig(tmp_path, server) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "test", "user": {"token": "t"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
    return str(path)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A sqlite registry holding two versions of aurora-medium-range, version 1 the champion."""
    from model_code.checkpoint import save_checkpoint
    from model_code.variants import build_model, get_variant
    from adapters import registry as reg

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    spec = get_variant("medium-range")
    versions = [reg.register(save_checkpoint(build_model(spec, "tiny", seed=s), spec, "tiny",
                                             str(tmp_path / f"seed{s}.safetensors")), variant="medium-range")
                for s in (1, 2)]
    reg.client().set_registered_model_alias("aurora-medium-range", "champion", versions[0])
    return reg


def test_cli_deploys_and_canaries_registry_versions_at_their_artifacts(kube, registry, tmp_path, capsys):
    from auroraops.cli import main

    _, server = kube
    kubeconfig = ["--kubeconfig", _kubeconfig(tmp_path, server)]
    assert main(["rollout", "deploy", "--variant", "medium-range", "--model", "models:/aurora-medium-range@champion",
                 *kubeconfig]) == 0
    stored = server.store[PATH]
    c = registry.client()
    v1 = c.get_model_version("aurora-medium-range", "1")
    assert env(stored) == {"AURORA_MODEL_URI": registry.checkpoint_uri(c, "aurora-medium-range", "1"),
                           "AURORA_MODEL_SHA256": v1.tags["checkpoint_sha256"]}
    assert stored["metadata"]["annotations"]["aurora-mlops.io/model-version"] == "1"
    assert env(stored)["AURORA_MODEL_URI"].startswith(str(tmp_path / "mlartifacts"))  # the version's own run
    assert errors(isvc_validator(), stored) == []
    assert "model (spec):  aurora-medium-range/1 at" in capsys.readouterr().out

    assert main(["rollout", "canary", "--variant", "medium-range", "--model", "models:/aurora-medium-range/2",
                 "--percent", "10", *kubeconfig]) == 0
    out = capsys.readouterr().out
    assert "aurora/aurora-medium-range: canary" in out and "canary traffic: 10%" in out
    server.store[PATH]["status"] = STATUS
    assert main(["rollout", "status", "--variant", "medium-range", "--json", *kubeconfig]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["stable"]["version"] == "1" and state["model"]["version"] == "2"
    assert state["traffic"][1]["percent"] == 90
    assert main(["rollout", "promote", "--variant", "medium-range", *kubeconfig]) == 0
    assert "canaryTrafficPercent" not in server.store[PATH]["spec"]["predictor"]
    assert main(["rollout", "canary", "--variant", "medium-range", *kubeconfig]) == 1
    assert "needs --percent" in capsys.readouterr().err


def test_render_writes_the_inference_service_of_exactly_the_registered_version(registry, tmp_path, capsys):
    import yaml

    from auroraops.cli import main

    out = tmp_path / "isvc.yaml"
    assert main(["rollout", "render", "--variant", "medium-range", "--model", "models:/aurora-medium-range@champion",
                 "--out", str(out)]) == 0
    assert "serves aurora-medium-range/1" in capsys.readouterr().out
    isvc = yaml.safe_load(out.read_text())
    c = registry.client()
    assert env(isvc) == {"AURORA_MODEL_URI": registry.checkpoint_uri(c, "aurora-medium-range", "1"),
                         "AURORA_MODEL_SHA256": c.get_model_version("aurora-medium-range", "1").tags["checkpoint_sha256"]}
    assert isvc["metadata"]["annotations"]["aurora-mlops.io/model-version"] == "1"
    assert errors(isvc_validator(), isvc) == []
    assert main(["rollout", "render", "--variant", "medium-range"]) == 1
    assert "rollout render needs --model URI" in capsys.readouterr().err


def test_a_missing_alias_or_artifact_or_a_changed_digest_changes_nothing(kube, registry, tmp_path, capsys):
    from auroraops.cli import main

    _, server = kube
    kubeconfig = ["--kubeconfig", _kubeconfig(tmp_path, server)]
    before = copy.deepcopy(server.store[PATH])
    assert main(["rollout", "deploy", "--variant", "medium-range", "--model", "models:/aurora-medium-range@staging",
                 *kubeconfig]) == 1
    assert "aurora-medium-range has no alias 'staging'" in capsys.readouterr().err
    artifact = Path(registry.checkpoint_uri(registry.client(), "aurora-medium-range", "2"))
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"x")  # replaced after registration
    assert main(["rollout", "canary", "--variant", "medium-range", "--model", "models:/aurora-medium-range/2",
                 "--percent", "10", *kubeconfig]) == 1
    err = capsys.readouterr().err
    assert "aurora-medium-range/2: the checkpoint at" in err and "but the registry recorded sha256:" in err
    artifact.unlink()
    assert main(["rollout", "canary", "--variant", "medium-range", "--model", "models:/aurora-medium-range/2",
                 "--percent", "10", *kubeconfig]) == 1
    assert "file not found" in capsys.readouterr().err
    assert main(["rollout", "canary", "--variant", "medium-range", "--model", "models:/aurora-medium-range/1",
                 "--percent", "150", *kubeconfig]) == 1
    assert "--percent: canary traffic must be an integer from 1 to 99" in capsys.readouterr().err
    assert _patches(server) == [] and server.store[PATH] == before


def test_registry_promote_prints_or_applies_the_rollout_that_serves_the_new_champion(kube, registry, tmp_path,
                                                                                     capsys):
    from auroraops.cli import main

    _, server = kube
    scores = tmp_path / "s2.json"
    sha2 = registry.client().get_model_version("aurora-medium-range", "2").tags["checkpoint_sha256"]
    records = [{"forecast": f, "variable": "t2m", "level": None, "region": "domain", "lead_hours": 6.0,
                "metric": "rmse", "value": v} for f, v in (("model", 1.0), ("champion", 1.5), ("persistence", 2.0),
                                                           ("climatology", 1.8))]
    scores.write_text(json.dumps({"variant": "medium-range", "subject": {"model": {"checkpoint_sha256": sha2},
                                  "champion": {"version": "1"}}, "records": records}))
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  - {metric: rmse, variable: t2m}\n")
    assert main(["registry", "promote", "--variant", "medium-range", "--version", "2", "--scores", str(scores),
                 "--gates", str(gates)]) == 0
    out = capsys.readouterr().out
    assert "to serve it: auroraops rollout deploy --variant medium-range --model models:/aurora-medium-range/2" in out
    assert "kubectl patch inferenceservice aurora-medium-range -n aurora --type json" in out and sha2 in out
    assert _patches(server) == []

    assert main(["registry", "rollback", "--variant", "medium-range", "--apply",
                 "--kubeconfig", _kubeconfig(tmp_path, server)]) == 0
    assert "champion is version 1 again" in capsys.readouterr().out
    stored = server.store[PATH]  # the kube fixture served version 1 already: nothing to do is an error
    assert stored["metadata"]["annotations"]["aurora-mlops.io/model-version"] == "1"


# --- the skill-gated decision ------------------------------------------------------------------

TARGETS = (("z", 500.0, 120.0), ("t2m", None, 24.0))


def _records(n: int, factor: float, noise: float = 0.01, seed: int = 1) -> list[dict]:
    """Per-init RMSE records of `champion` and `model` (= champion x factor, with noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for variable, level, lead in TARGETS:
            stable = 1.0 + 0.3 * rng.random()  # skill varies from one init time to the next
            canary = stable * factor * (1 + noise * rng.standard_normal())
            for name, value in (("champion", stable), ("model", canary)):
                rows.append({"forecast": name, "variable": variable, "level": level, "region": "global",
                             "lead_hours": lead, "metric": "rmse", "value": value, "case": f"2024-01-{i + 1:02d}"})
    return rows


def test_a_canary_as_good_or_better_is_promoted():
    decision = canary_decision(_records(12, 0.97))
    assert decision.action == "promote"
    assert [e.verdict for e in decision.targets] == ["better", "better"]
    assert decision.targets[0].change == pytest.approx(-0.03, abs=0.01)
    assert "judged on skill alone" in decision.reasons[-1]
    assert canary_decision(_records(12, 1.005)).action == "promote"  # within the 2 % margin


def test_a_canary_clearly_worse_is_rolled_back():
    decision = canary_decision(_records(12, 1.10))
    assert decision.action == "rollback"
    assert {e.verdict for e in decision.targets} == {"worse"}
    assert "worse than the stable version by more than 2.0%" in decision.reasons[0]


def test_too_few_cases_or_a_straddled_margin_hold():
    few = canary_decision(_records(5, 0.9))
    assert few.action == "hold" and "5 verified forecasts, need 10" in few.reasons[0]
    noisy = canary_decision(_records(12, 1.02, noise=0.15, seed=3))
    assert noisy.action == "hold"
    assert any("straddle the 2.0% margin" in r for r in noisy.reasons)
    missing = canary_decision(_records(12, 0.9), targets=[Target("z", 500.0, 120.0), Target("msl", None, 72.0)])
    assert missing.action == "hold" and any("msl +72h: 0 verified forecasts" in r for r in missing.reasons)


def test_operational_figures_gate_promotion():
    good = _records(12, 0.97)
    stable = Ops(requests=5000, errors=5, latency_p95_s=2.0)
    assert canary_decision(good, canary_ops=Ops(600, 1, 2.1), stable_ops=stable).action == "promote"
    errs = canary_decision(good, canary_ops=Ops(600, 12, 2.1), stable_ops=stable)
    assert errs.action == "rollback" and "error rate 2.00%" in errs.reasons[0]
    slow = canary_decision(good, canary_ops=Ops(600, 0, 3.0), stable_ops=stable)
    assert slow.action == "rollback" and "1.50x" in slow.reasons[0]
    early = canary_decision(good, canary_ops=Ops(50, 0, 2.0), stable_ops=stable)
    assert early.action == "hold" and "served 50 requests, need 200" in early.reasons[0]


def test_higher_is_better_metrics_and_the_bootstrap_is_paired():
    rows = [{**r, "metric": "acc", "value": 1 - r["value"] / 2} for r in _records(12, 1.10)]
    assert canary_decision(rows, Rule(metric="acc")).action == "rollback"
    # Skill that varies a lot between init times but moves together: pairing sees the small change.
    rows = _records(12, 0.99, noise=0.002)
    for r in rows:
        r["value"] *= 1 + 5 * (int(r["case"][-2:]) % 3)
    assert canary_decision(rows).action == "promote"


def test_scores_written_by_the_evaluation_are_read_one_file_per_verified_init(tmp_path):
    from model_code.evaluation.score import Scores, better

    files = []
    for i, case in enumerate(sorted({r["case"] for r in _records(10, 1.08)})):
        rows = [{k: v for k, v in r.items() if k != "case"} for r in _records(10, 1.08) if r["case"] == case]
        files.append(Scores(rows, variant="medium-range", truth="era5").to_json(str(tmp_path / f"{i}/metrics.json")))
    decision = canary_decision(load_skill(files))
    assert decision.action == "rollback" and decision.targets[0].cases == 10
    # the rule's notion of "worse" is the evaluation's
    assert all(better("rmse", e.stable, e.canary) for e in decision.targets)
    with pytest.raises(DataError, match="cannot gate on 'csi'"):
        Rule(metric="csi")


def test_skill_files_pair_by_init_time_or_by_file(tmp_path):
    rows = _records(10, 0.95)
    by_init = tmp_path / "scores.json"
    by_init.write_text(json.dumps({"variant": "medium-range", "records": [
        {**{k: v for k, v in r.items() if k != "case"}, "init_time": r["case"]} for r in rows]}))
    assert canary_decision(load_skill([str(by_init)])).action == "promote"
    files = []
    for i in range(10):  # one file per verified init, records without init_time
        path = tmp_path / f"day{i}.json"
        path.write_text(json.dumps([{k: v for k, v in r.items() if k != "case"}
                                    for r in rows if r["case"] == f"2024-01-{i + 1:02d}"]))
        files.append(str(path))
    decision = canary_decision(load_skill(files))
    assert decision.action == "promote" and decision.targets[0].cases == 10
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"records": [{"forecast": "model", "variable": "z"}]}))
    with pytest.raises(DataError, match=r"bad.json: record 0 lacks \['lead_hours', 'metric', 'value'\]"):
        load_skill([str(bad)])


def test_cli_decide_prints_the_evidence_and_applies_the_decision(kube, tmp_path, capsys):
    from auroraops.cli import main

    api, server = kube
    kubeconfig = ["--kubeconfig", _kubeconfig(tmp_path, server)]
    Rollout(api, "medium-range").canary(10, V2)
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"records": [{**{k: v for k, v in r.items() if k != "case"}, "init_time": r["case"]}
                                               for r in _records(12, 1.1)]}))
    ops = tmp_path / "ops.json"
    ops.write_text(json.dumps({"canary": {"requests": 800, "errors": 0, "latency_p95_s": 2.0},
                               "stable": {"requests": 7000, "errors": 3, "latency_p95_s": 2.0}}))
    capsys.readouterr()
    assert main(["rollout", "decide", "--variant", "medium-range", "--skill", str(scores), "--ops", str(ops),
                 "--target", "z@500:120", "--apply", *kubeconfig]) == 0
    out = capsys.readouterr().out
    assert "decision: **rollback**" in out and "| z@500hPa +120h | 12 |" in out and "t2m" not in out
    assert "aurora/aurora-medium-range: pinned" in out
    assert server.store[PATH]["spec"]["predictor"]["canaryTrafficPercent"] == 0
