"""One search space, two renderings: an Optuna study run locally and a Katib Experiment for clusters."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import threading
from datetime import datetime
from http.server import ThreadingHTTPServer
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from aurora import Batch, Metadata

from k8s_schemas import errors, katib_validator
from kube_api import JsonApiHandler
from model_code.errors import ConfigError
from model_code.training.callbacks import MetricLines
from model_code.training.config import load_config
from model_code.training.entry import add_arguments, config_from_args
from model_code.training.loss_config import default_loss_config
from model_code.training.losses import build_loss
from model_code.training.search_space import Param, search_space, suggest, to_overrides, tuning_score
from model_code.variants import get_variant
from model_code.training.search_space import OBJECTIVE
from adapters.katib import (
    METRICS_FORMAT,
    build_experiment,
    check_experiment,
    parameter_spec,
    tuning_objects,
)
from adapters.optuna_study import PruneOnValidation

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------------------
# The search space


def test_space_depends_on_profile_and_run_length():
    tiny, full = search_space("tiny", max_steps=2500), search_space("full", max_steps=2500)
    assert {p.name for p in tiny} - {p.name for p in full} == {"depth", "heads"}
    warmup = {p.name: p for p in full}["warmup_steps"]
    assert (warmup.low, warmup.high, warmup.step) == (0, 500, 50)
    assert {p.name: p for p in search_space("tiny", max_steps=10)}["warmup_steps"].high == 2
    assert "warmup_steps" not in {p.name for p in search_space("tiny", max_steps=4)}
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        search_space("huge")


def test_bad_params_are_refused_when_defined():
    with pytest.raises(ConfigError, match="log scale needs low > 0"):
        Param("lr", ("optim.lr",), "float", 0.0, 1e-3, log=True)
    with pytest.raises(ConfigError, match="needs low < high"):
        Param("wd", ("optim.weight_decay",), "float", 0.1, 0.1)
    with pytest.raises(ConfigError, match="must be an identifier"):
        Param("lora-rank", ("optim.lora_rank",), "choice", choices=(4, 8))
    with pytest.raises(ConfigError, match="unknown search parameters \\['lr_max'\\]"):
        to_overrides({"lr_max": 1.0}, search_space("full"))


def test_every_suggestion_is_a_valid_training_config():
    """Each key of the space exists in the training config and each suggested value passes its checks."""
    space = search_space("tiny", max_steps=20)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(12):
        values = suggest(study.ask(), space)
        overrides = to_overrides(values, space)
        cfg = load_config(None, {"variant": "medium-range", "train.max_steps": 20, **overrides})
        assert cfg.optim.lr == values["lr"] and cfg.optim.lora == values["lora"]
        assert cfg.model["encoder_depths"] == (values["depth"],) * 3 == cfg.model["decoder_depths"]
        assert cfg.loss.surface_scale == values["surface_scale"]
        cfg.schedule.validate("schedule", total_steps=cfg.train.max_steps)  # warmup leaves decay steps


def test_katib_values_as_strings_parse_back_to_the_space():
    space = {p.name: p for p in search_space("tiny")}
    assert space["lr"].parse("1.2e-05") == pytest.approx(1.2e-5)
    assert space["warmup_steps"].parse("150") == 150
    assert space["lora_rank"].parse("16") == 16
    assert space["lora"].parse("lora_only") == "lora_only"
    with pytest.raises(ConfigError, match="lora: 'half' is not one of"):
        space["lora"].parse("half")


# --------------------------------------------------------------------------------------
# Katib rendering


def test_katib_parameters_are_the_space_and_every_value_reaches_the_command():
    space = search_space("tiny", max_steps=100)
    experiment = build_experiment("wave", namespace="ml", space=space, max_trials=8, parallel=2,
                                  algorithm="bayesianoptimization", seed=7).to_dict()
    spec = experiment["spec"]
    assert spec["parameters"] == [parameter_spec(p).to_dict() for p in space]
    by_name = {p["name"]: p for p in spec["parameters"]}
    assert by_name["lr"] == {"name": "lr", "parameterType": "double", "feasibleSpace": {
        "min": "0.00001", "max": "0.001", "distribution": "logUniform"}}
    assert by_name["lora"]["parameterType"] == "categorical"
    assert by_name["lora_rank"] == {"name": "lora_rank", "parameterType": "discrete",
                                    "feasibleSpace": {"list": ["4", "8", "16", "32"]}}
    assert by_name["warmup_steps"]["feasibleSpace"] == {"min": "0", "max": "20", "step": "2",
                                                        "distribution": "uniform"}
    assert spec["algorithm"] == {"algorithmName": "bayesianoptimization",
                                 "algorithmSettings": [{"name": "random_state", "value": "7"}]}
    assert (spec["maxTrialCount"], spec["parallelTrialCount"]) == (8, 2)

    command = spec["trialTemplate"]["trialSpec"]["spec"]["trainer"]["command"]
    sets = [command[i + 1] for i, a in enumerate(command) if a == "--set"]
    assert "optim.lr=${trialParameters.lr}" in sets
    assert "model.encoder_depths=[${trialParameters.depth},${trialParameters.depth},${trialParameters.depth}]" in sets
    assert "checkpoint.out_dir=/tmp/aurora-tuning/${trialParameters.trialName}" in sets
    declared = {p["name"]: p["reference"] for p in spec["trialTemplate"]["trialParameters"]}
    assert declared == {"trialName": "${trialSpec.Name}", **{p.name: p.name for p in space}}


def test_katib_metrics_filter_reads_the_trainer_line_format():
    """The filter Katib's StdOut collector applies, run as the collector does (Go RE2 and Python agree)."""
    lines = [
        "2025-01-31T12:00:00.123456Z step=25 loss=0.52 val_loss=0.4125 val_score=0.3",
        "2025-01-31T12:00:09Z step=50 val_score=3.5e-02 val_loss_2t=1e-05",
        "2025-01-31T12:00:10Z step=75 val_score=nan",
        "train 40%|████      | 40/100 [00:02<00:03, loss=0.5]",
    ]
    found = []
    for line in lines:
        if OBJECTIVE not in line:  # the collector skips lines without a metric name
            continue
        for name, value in re.findall(METRICS_FORMAT, line):
            if name == OBJECTIVE:
                found.append(float(value))
    assert found == [0.3, 0.035]
    assert re.compile(METRICS_FORMAT).groups == 2


def test_the_trainers_metric_lines_pass_the_katib_filter():
    """What `python -m model_code.training` prints at a validation is what the collector parses."""
    out = io.StringIO()
    MetricLines(file=out).on_validation_end(SimpleNamespace(is_main=True), 40, {
        "val_loss": 0.5, "val_loss/2t": 0.5, "val_loss/lead1": 0.25, "val_score": 1.2345678e-05})
    (line,) = out.getvalue().splitlines()
    stamp, _, rest = line.partition(" ")
    datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")  # RFC 3339, first token: Katib orders by it
    pairs = dict(re.findall(METRICS_FORMAT, rest))
    assert float(pairs[OBJECTIVE]) == pytest.approx(1.2345678e-05) and pairs["step"] == "40"


def test_loss_weights_move_val_loss_but_not_the_tuning_score():
    """Searching a loss weight against the weighted loss would just pick the smallest weight."""
    spec = get_variant("medium-range")
    lat, lon = torch.linspace(80, -80, 16), torch.arange(32) * 11.25
    levels = (500, 850)

    def fields(seed: int) -> Batch:  # surface fields differ by seed; atmospheric ones are equal
        g = torch.Generator().manual_seed(seed)
        return Batch(
            surf_vars={v: 280 + 5 * torch.randn(1, 1, 16, 32, generator=g) for v in spec.output_surf_vars},
            static_vars={},
            atmos_vars={v: torch.ones(1, 1, 2, 16, 32) for v in spec.atmos_vars},
            metadata=Metadata(lat=lat, lon=lon, time=(datetime(2024, 1, 1),), atmos_levels=levels))

    pairs = [(fields(1), fields(2))]
    results = {}
    for scale in (0.1, 1.0):
        loss = build_loss(spec, dataclasses.replace(default_loss_config(spec), surface_scale=scale))(pairs, (1,))
        metrics = {"val_loss": float(loss.total), **{f"val_loss/{k}": v for k, v in loss.per_variable.items()}}
        results[scale] = (metrics["val_loss"], tuning_score(metrics, spec))
    assert results[0.1][0] == pytest.approx(0.1 * results[1.0][0], rel=1e-5)
    assert results[0.1][1] == pytest.approx(results[1.0][1], rel=1e-6)


def test_a_katib_trial_command_configures_the_training_entry_point(tmp_path):
    """Substitute values the way Katib does (all text) and parse them as the trainer's CLI does."""
    space = search_space("tiny", max_steps=100)
    cm, experiment = tuning_objects(load_config(None, {"variant": "medium-range", "train.max_steps": 100}),
                                    namespace="ml", space=space)
    command = experiment.spec.trial_template.trial_spec["spec"]["trainer"]["command"]
    values = {"trialName": "aurora-tune-medium-range-4x9q", "lr": "1.5e-05", "weight_decay": "0.003",
              "min_lr_ratio": "0.05", "lora": "lora_only", "lora_rank": "16", "surface_scale": "0.3",
              "warmup_steps": "4", "depth": "2", "heads": "8"}
    argv = [re.sub(r"\$\{trialParameters\.(\w+)\}", lambda m: values[m[1]], a) for a in command]
    assert argv[:5] == ["torchrun", "-m", "model_code.training", "--config", "/etc/aurora/train.yaml"]
    config = tmp_path / "train.yaml"  # the ConfigMap's file, where the pod mounts it
    config.write_text(cm["data"]["train.yaml"])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--config", str(config), *argv[5:]]))
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.lora, cfg.optim.lora_rank) == (1.5e-5, 0.003, "lora_only", 16)
    assert (cfg.schedule.warmup_steps, cfg.schedule.min_lr_ratio, cfg.loss.surface_scale) == (4, 0.05, 0.3)
    assert cfg.model == {"encoder_depths": (2, 2, 2), "decoder_depths": (2, 2, 2), "num_heads": 8}
    assert cfg.checkpoint.out_dir == "/tmp/aurora-tuning/aurora-tune-medium-range-4x9q"
    assert cfg.train.max_steps == 100


def test_katib_rules_beyond_the_schema_are_checked():
    experiment = build_experiment("medium-range", namespace="aurora", max_trials=4, parallel=2)
    experiment.spec.parallel_trial_count = 6
    experiment.spec.trial_template.trial_parameters[1].reference = "learning_rate"
    experiment.spec.trial_template.trial_spec["spec"]["trainer"]["command"].append("--set=x=${trialParameters.y}")
    experiment.metadata.name = "Aurora_Tune"
    with pytest.raises(ValueError) as raised:
        check_experiment(experiment)
    text = str(raised.value)
    assert "metadata.name 'Aurora_Tune'" in text
    assert "spec.parallelTrialCount (6) must not exceed spec.maxTrialCount (4)" in text
    assert "trialParameters.lr refers to 'learning_rate'" in text
    assert "uses ${trialParameters.y}, which trialParameters does not declare" in text
    with pytest.raises(ValueError, match="algorithm must be one of"):
        build_experiment("medium-range", algorithm="grid")


# --------------------------------------------------------------------------------------
# Creating and awaiting an Experiment through the Kubernetes API


class _KatibApi(JsonApiHandler):
    """The few Kubernetes API routes the client uses, answering from `server.state`.

    POSTed Experiments are validated against Katib's strict schema (422 otherwise); each GET
    returns the stored object with the next scripted status.
    """

    def do_POST(self):
        state = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state["requests"].append(("POST", self.path, body))
        if self.path.endswith("/configmaps"):
            if body["metadata"]["name"] in state["configmaps"]:
                return self._send(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
            state["configmaps"][body["metadata"]["name"]] = body
            return self._send(201, body)
        problems = errors(katib_validator(), body)
        if problems:
            return self._send(422, {"kind": "Status", "code": 422, "message": "; ".join(problems)})
        state["experiment"] = body
        return self._send(201, body)

    def do_PUT(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.state["requests"].append(("PUT", self.path, body))
        self.server.state["configmaps"][body["metadata"]["name"]] = body
        return self._send(200, body)

    def do_GET(self):
        state = self.server.state
        state["requests"].append(("GET", self.path, None))
        status = state["statuses"].pop(0) if len(state["statuses"]) > 1 else state["statuses"][0]
        return self._send(200, {**state["experiment"], "status": status})


@pytest.fixture
def katib_api():
    from kubernetes import client

    server = ThreadingHTTPServer(("127.0.0.1", 0), _KatibApi)
    server.state = {"requests": [], "configmaps": {}, "statuses": [{}]}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    with client.ApiClient(config) as api:
        yield api, server.state
    server.shutdown()


def _status(condition: str, **extra) -> dict:
    return {"conditions": [{"type": "Created", "status": "True" if condition == "Created" else "False"},
                           {"type": condition, "status": "True"}], **extra}


def test_experiment_is_created_and_awaited_through_the_kubernetes_client(katib_api):
    from kubernetes import client

    from adapters.cluster import apply_config_map, await_experiment, create_experiment
    from adapters.trainjob import config_map

    api, state = katib_api
    space = search_space("full", max_steps=1000)
    experiment = build_experiment("medium-range", namespace="aurora", space=space)
    cm = config_map("medium-range", "variant: medium-range\n", namespace="aurora")
    apply_config_map(client.CoreV1Api(api), cm)
    apply_config_map(client.CoreV1Api(api), cm)  # second time: exists (409), replaced
    create_experiment(client.CustomObjectsApi(api), experiment)
    assert [(m, p) for m, p, _ in state["requests"]] == [
        ("POST", "/api/v1/namespaces/aurora/configmaps"),
        ("POST", "/api/v1/namespaces/aurora/configmaps"),
        ("PUT", "/api/v1/namespaces/aurora/configmaps/aurora-train-medium-range"),
        ("POST", "/apis/kubeflow.org/v1beta1/namespaces/aurora/experiments"),
    ]
    assert state["experiment"] == experiment.to_dict()

    best = {"bestTrialName": "aurora-tune-medium-range-x7k2",
            "parameterAssignments": [{"name": "lr", "value": "0.00021"}, {"name": "lora", "value": "lora_only"},
                                     {"name": "lora_rank", "value": "16"}, {"name": "warmup_steps", "value": "60"}],
            "observation": {"metrics": [{"name": "val_score", "min": "0.0312", "max": "0.2", "latest": "0.0315"},
                                        {"name": "val_loss", "min": "0.02", "max": "0.1", "latest": "0.02"}]}}
    state["statuses"] = [_status("Created"), _status("Running", trialsRunning=4),
                         _status("Succeeded", trialsSucceeded=23, trialsFailed=1, currentOptimalTrial=best)]
    sleeps = []
    outcome = await_experiment(client.CustomObjectsApi(api), "aurora-tune-medium-range", "aurora",
                               space=space, poll_s=5, sleep=sleeps.append)
    assert sleeps == [5, 5]
    assert outcome.condition == "Succeeded" and outcome.best_trial == "aurora-tune-medium-range-x7k2"
    assert outcome.best_parameters == {"lr": 0.00021, "lora": "lora_only", "lora_rank": 16, "warmup_steps": 60}
    assert (outcome.best_metric, outcome.trials_succeeded, outcome.trials_failed) == (0.0312, 23, 1)


def test_an_invalid_experiment_is_refused_and_waiting_times_out(katib_api):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from adapters.cluster import await_experiment, create_experiment

    api, state = katib_api
    experiment = build_experiment("medium-range", namespace="aurora")
    with pytest.raises(ValueError, match="valid boolean"):  # the API models refuse it first
        experiment.spec.trial_template.retain = "yes"
    body = experiment.to_dict()
    body["spec"]["trialTemplate"]["retain"] = "yes"
    with pytest.raises(ApiException) as raised:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "kubeflow.org", "v1beta1", "aurora", "experiments", body)
    assert raised.value.status == 422 and "is not of type 'boolean'" in raised.value.body

    create_experiment(client.CustomObjectsApi(api), experiment)
    state["statuses"] = [_status("Running")]
    now = [0.0]
    with pytest.raises(TimeoutError, match="still Running after 60 s"):
        await_experiment(client.CustomObjectsApi(api), "aurora-tune-medium-range", "aurora",
                         space=search_space("full"), timeout_s=60, poll_s=20,
                         sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])


# --------------------------------------------------------------------------------------
# Optuna


def test_pruning_callback_reports_and_stops_a_trial_worse_than_the_median():
    study = optuna.create_study(direction="minimize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1))
    good = study.ask()
    callback = PruneOnValidation(good)
    trainer = SimpleNamespace(spec=get_variant("medium-range"))
    for step, value in ((0, 1.0), (10, 0.5), (20, 0.3)):
        callback.on_validation_end(trainer, step, {"val_loss": 9.0, "val_loss/2t": value, "val_loss/z500": 7.0})
    assert callback.best == 0.3
    study.tell(good, callback.best)

    bad = study.ask()
    callback = PruneOnValidation(bad)
    callback.on_validation_end(trainer, 0, {"val_score": 2.0})  # step 0 is warmup: never pruned
    with pytest.raises(optuna.TrialPruned, match="val_score 0.9 at step 10 is worse than the median"):
        callback.on_validation_end(trainer, 10, {"val_score": 0.9})
    assert study.trials[1].intermediate_values == {0: 2.0, 10: 0.9}


# --------------------------------------------------------------------------------------
# The command line


def test_tune_renders_a_katib_experiment_with_its_config(tmp_path, capsys):
    from auroraops.cli import main

    out = tmp_path / "katib" / "air-pollution.yaml"
    code = main(["tune", "--variant", "air-pollution", "--render-katib", str(out), "--namespace", "ml",
                 "--image", "registry.example.com/aurora-mlops:0.1.0", "--trials", "6", "--parallel", "8",
                 "--gpus", "2", "--set", "train.max_steps=300", "--set", "profile=full",
                 "--data", "/data/cams/cams.zarr", "--runs-claim", "aurora-runs", "--trial-out", "/runs/tuning"])
    assert code == 0 and "Katib Experiment written" in capsys.readouterr().out
    cm, experiment = list(yaml.safe_load_all(out.read_text()))
    assert errors(katib_validator("io.k8s.api.core.v1.ConfigMap"), cm) == []
    assert errors(katib_validator(), experiment) == []

    base = yaml.safe_load(cm["data"]["train.yaml"])
    assert (base["variant"], base["profile"], base["train"]["max_steps"]) == ("air-pollution", "full", 300)
    assert base["data"]["paths"] == ["/data/cams/cams.zarr"]
    spec = experiment["spec"]
    assert (spec["maxTrialCount"], spec["parallelTrialCount"]) == (6, 6)  # parallel capped by trials
    warmup = next(p for p in spec["parameters"] if p["name"] == "warmup_steps")
    assert warmup["feasibleSpace"]["max"] == "60"  # a fifth of the 300 steps
    trainer = spec["trialTemplate"]["trialSpec"]["spec"]["trainer"]
    assert trainer["image"] == "registry.example.com/aurora-mlops:0.1.0"
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2" and trainer["numProcPerNode"] == 2
    assert "checkpoint.out_dir=/runs/tuning/${trialParameters.trialName}" in trainer["command"]
    volumes = trainer_volumes(spec["trialTemplate"]["trialSpec"])
    assert {"name": "config", "configMap": {"name": cm["metadata"]["name"]}} in volumes
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "aurora-data", "readOnly": True}} in volumes
    assert {"name": "runs", "persistentVolumeClaim": {"claimName": "aurora-runs", "readOnly": False}} in volumes


def trainer_volumes(trainjob: dict) -> list[dict]:
    (patch,) = trainjob["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return node["template"]["spec"]["template"]["spec"]["volumes"]


def test_tune_refuses_bad_input_before_any_work(tmp_path, capsys):
    from auroraops.cli import main

    assert main(["tune", "--variant", "wave", "--trials", "3"]) == 1
    assert "data.paths: no training data" in capsys.readouterr().err
    assert main(["tune", "--variant", "wave", "--set", "optim.lr=-1", "--data", "x.nc"]) == 1
    assert "optim.lr" in capsys.readouterr().err
    assert main(["tune", "--variant", "wave", "--set", "optim.lr", "--render-katib", str(tmp_path / "x")]) == 1
    assert "--set takes KEY=VALUE, got 'optim.lr'" in capsys.readouterr().err
    assert main(["tune", "--variant", "wave", "--render-katib", str(tmp_path / "x"), "--trial-out", "s3://b/t"]) == 1
    assert "checkpoint.out_dir: must be a local directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


TINY_RUN = ["timestep_hours=1", "data.crop=true", "data.fill_missing=zeros", "data.fill_missing_dynamic=zeros",
            "data.levels=[500, 850]", "data.val_fraction=0.25", "train.max_steps=6", "train.val_every=2",
            "train.device=cpu", "train.progress=false", "checkpoint.keep_top_k=0"]


def katib_collect(stdout: str, metrics: list[str]) -> list[tuple[str, str, float]]:
    """(time stamp, name, value) as Katib's StdOut collector reads them from a trial's output."""
    found = []
    for line in stdout.splitlines():
        if not any(m in line for m in metrics):
            continue
        stamp = line.split(" ", 1)[0]
        for name, value in re.findall(METRICS_FORMAT, line):
            if name in metrics:
                found.append((stamp, name, float(value)))
    return found


@pytest.mark.slow
def test_the_training_entry_point_prints_what_katib_collects(hourly_box, tmp_path, capsys):
    from model_code.training.__main__ import main as train_main

    run = tmp_path / "trial"
    argv = ["--variant", "medium-range", "--data", str(hourly_box), "--out", str(run)]
    assert train_main(argv + [a for s in TINY_RUN for a in ("--set", s)]) == 0
    collected = katib_collect(capsys.readouterr().out, [OBJECTIVE, "val_loss"])

    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    validations = [r for r in log if r["event"] == "validation"]
    spec = get_variant("medium-range")
    scores = [v for _, name, v in collected if name == OBJECTIVE]
    assert scores == pytest.approx([tuning_score(r, spec) for r in validations], rel=1e-6)
    assert [v for _, name, v in collected if name == "val_loss"] == pytest.approx(
        [r["val_loss"] for r in validations], rel=1e-6)
    stamps = [datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ") for s, name, _ in collected if name == OBJECTIVE]
    assert stamps == sorted(stamps)


@pytest.mark.slow
def test_a_three_trial_optuna_study_trains_prunes_and_reports_the_best(hourly_box, tmp_path, capsys):
    from auroraops.cli import main

    out = tmp_path / "study"
    argv = ["tune", "--variant", "medium-range", "--trials", "3", "--seed", "1", "--data", str(hourly_box),
            "--out", str(out)]
    assert main(argv + [a for s in TINY_RUN for a in ("--set", s)]) == 0
    summary = json.loads(capsys.readouterr().out)

    trials = json.loads((out / "trials.json").read_text())
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert sum(summary["trials"].values()) == 3 and summary["trials"].get("COMPLETE", 0) >= 1
    space = search_space("tiny", max_steps=6)
    assert set(summary["best_params"]) == {p.name for p in space}
    best = trials[summary["best_trial"]]
    assert best["state"] == "COMPLETE" and summary["best_value"] == min(best["validations"].values())
    assert summary["best_value"] == min(t["value"] for t in trials if t["state"] == "COMPLETE")

    # Each reported value is the score of the trainer's own validation record at that step.
    spec = get_variant("medium-range")
    for t in trials:
        log = [json.loads(line) for line in (out / f"trial-{t['number']:03d}" / "log.jsonl").read_text().splitlines()]
        scores = {str(r["step"]): tuning_score(r, spec) for r in log if r["event"] == "validation"}
        assert t["validations"] == pytest.approx(scores)
        if t["state"] == "PRUNED":
            assert max(map(int, t["validations"])) < 6  # stopped before the last step

    # The sampler is seeded: the first suggestion is reproducible without training.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    assert suggest(study.ask(), space) == trials[0]["params"]

    best_cfg = load_config(out / "best_config.yaml")
    assert best_cfg.optim.lr == summary["best_params"]["lr"]
    assert best_cfg.model["num_heads"] == summary["best_params"]["heads"]


@pytest.mark.slow
def test_diverged_trials_fail_without_stopping_the_study(hourly_box, tmp_path):
    """A learning rate of 1e8 makes every trial's loss overflow: each trial fails, the study goes on."""
    from model_code.errors import DataError
    from adapters.optuna_study import tune

    sets = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in TINY_RUN)}
    cfg = load_config(None, {"variant": "medium-range", "data.paths": [str(hourly_box)], **sets,
                             "train.max_steps": 3, "train.clip_grad_norm": None})
    space = (Param("lr", ("optim.lr",), "float", 1e8, 1e9, log=True),)
    with pytest.raises(DataError, match="no trial finished: trial 0 FAIL; trial 1 FAIL"):
        tune(cfg, 2, out_dir=tmp_path / "study", space=space)
    trials = json.loads((tmp_path / "study" / "trials.json").read_text())
    assert [t["state"] for t in trials] == ["FAIL", "FAIL"]
