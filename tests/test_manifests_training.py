"""TrainJob and Katib Experiment manifests against the schemas the cluster validates them with."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from k8s_schemas import errors, katib_validator, trainjob_validator
from model_code.training.config import config_from_dict
from model_code.training.search_space import search_space
from model_code.variants import VARIANTS
from adapters.katib import build_experiment
from adapters.trainjob import GpuPool, Resources, build_trainjob, config_map, to_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_trainjob_is_valid_and_runs_the_entry_point_under_torchrun_on_gpu_nodes():
    pool = GpuPool(node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"})
    job = build_trainjob("aurora-medium-range", "medium-range", namespace="aurora",
                         resources=Resources(num_nodes=2, gpus_per_node=8), pool=pool,
                         overrides=["checkpoint.out_dir=s3://runs/aurora-medium-range"]).to_dict()
    assert errors(trainjob_validator(), job) == []

    trainer = job["spec"]["trainer"]
    assert trainer["command"][:3] == ["torchrun", "-m", "model_code.training"]
    assert trainer["command"][3:] == ["--config", "/etc/aurora/train.yaml",
                                      "--set", "checkpoint.out_dir=s3://runs/aurora-medium-range"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org",
                                         "kind": "ClusterTrainingRuntime", "name": "torch-distributed"}
    (patch,) = job["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    assert {"name": "config", "configMap": {"name": "aurora-train-medium-range"}} in pod["volumes"]


def test_strict_validation_rejects_misspelt_and_mistyped_fields():
    job = build_trainjob("aurora-wave", "wave").to_dict()
    job["spec"]["trainer"]["numNode"] = 2  # typo: Kubernetes would silently drop it
    job["spec"]["trainer"]["numProcPerNode"] = "8"
    job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]["containers"][0]["resources"] = {}
    found = errors(trainjob_validator(), job)
    assert any("'numNode' was unexpected" in e for e in found)
    assert any(e.startswith("spec/trainer/numProcPerNode: '8' is not of type 'integer'") for e in found)
    assert any("'resources' was unexpected" in e for e in found)  # patches may not set resources


def test_config_map_is_a_valid_core_object_with_the_config_as_a_block():
    cm = config_map("air-pollution", "variant: air-pollution\ntrain:\n  max_steps: 10\n", namespace="aurora")
    assert errors(katib_validator("io.k8s.api.core.v1.ConfigMap"), cm) == []
    text = to_yaml(cm)
    assert "train.yaml: |" in text
    assert yaml.safe_load(text)["data"]["train.yaml"].startswith("variant: air-pollution\n")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_katib_experiment_is_valid_for_every_variant(variant):
    experiment = build_experiment(variant, namespace="aurora", profile="full").to_dict()
    assert errors(katib_validator(), experiment) == []
    trial = experiment["spec"]["trialTemplate"]["trialSpec"]
    assert errors(trainjob_validator(), {**trial, "metadata": {"name": "trial-x"}}) == []
    assert experiment["spec"]["objective"] == {"type": "minimize", "objectiveMetricName": "val_score",
                                               "additionalMetricNames": ["val_loss"]}
    names = [p["name"] for p in experiment["spec"]["parameters"]]
    assert names == [p.name for p in search_space("full")]


def test_katib_schema_rejects_unknown_fields():
    experiment = build_experiment("medium-range", namespace="aurora").to_dict()
    experiment["spec"]["maxTrials"] = 5
    experiment["spec"]["parameters"][0]["feasibleSpace"]["min"] = 1e-5
    found = errors(katib_validator(), experiment)
    assert any("'maxTrials' was unexpected" in e for e in found)
    assert any(e.startswith("spec/parameters/0/feasibleSpace/min: 1e-05 is not of type 'string'") for e in found)


def test_numbers_in_strings_stay_strings_for_yaml_1_2_readers():
    # kubectl reads YAML 1.2, where an unquoted 1e-05 is a float; Katib's bounds are strings.
    text = to_yaml(build_experiment("medium-range", namespace="aurora"))
    assert "min: '0.00001'" in text
    assert "'8'" in text  # GPU count in resources, a string (Quantity) written quoted


@pytest.mark.usefixtures("kubectl")
def test_kustomize_builds_the_training_and_tuning_manifests(tmp_path):
    for part in ("training", "tuning"):
        out = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests" / part)], capture_output=True,
                             text=True, check=True).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        kinds = {d["kind"] for d in docs}
        assert "ConfigMap" in kinds and ({"TrainJob"} if part == "training" else {"Experiment"}) <= kinds
        for doc in docs:
            if doc["kind"] == "TrainJob":
                assert errors(trainjob_validator(), doc) == []
            elif doc["kind"] == "Experiment":
                assert errors(katib_validator(), doc) == []
            else:
                assert errors(katib_validator("io.k8s.api.core.v1.ConfigMap"), doc) == []


def test_checked_in_manifests_are_what_the_code_renders():
    from adapters.manifests import render_all

    stale = [path for path, text in render_all().items()
             if not (ROOT / path).is_file() or (ROOT / path).read_text() != text]
    assert stale == [], "regenerate them with: python -m adapters.manifests"


def test_checked_in_configs_load_as_training_configs():
    for path in sorted((ROOT / "manifests").glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ConfigMap":
                cfg = config_from_dict(yaml.safe_load(doc["data"]["train.yaml"]), source=str(path))
                assert cfg.profile == "full" and cfg.train.precision == "bf16", path
