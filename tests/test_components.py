"""Components and compiled pipelines: the steps as functions, the IR YAML a cluster receives,
and `kfp.Client` submitting to a real HTTP server on loopback (a stand-in for the KFP API
that answers the five endpoints the client calls)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import xarray as xr
import yaml

from components.steps import prepare_series, validate_data, whole_numbers
from conftest import BROKEN, ERA5_HOURLY
from model_code.errors import DataError
from pipelines.runner import compile_pipeline, schedule, submit
from pipelines.tasks import STEPS

IMAGE = "ghcr.io/aurora-mlops/aurora-mlops:0.1.0"
GPU_TASKS = {"tune", "train", "compress", "evaluate"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ir") / "training.yaml"
    compile_pipeline("training", out, variant="wave")
    return _load(out)


def _load(path) -> dict:
    """The pipeline spec, with the platform (Kubernetes) spec, the file's second document."""
    spec, platform = yaml.safe_load_all(path.read_text())
    return {**spec, "platforms": platform["platforms"]}


def _platform(ir: dict) -> dict:
    return ir["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_training_ir_has_the_six_steps_on_the_project_image(compiled):
    executors = compiled["deploymentSpec"]["executors"]
    names = {k.removeprefix("exec-") for k in executors}
    assert {"validate", "prepare", "tune", "train", "compress", "evaluate", "register", "promote",
            "record-outcome"} <= names
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    for e in executors.values():  # no pip install at run time: the image holds the project
        assert "pip install" not in " ".join(e["container"]["command"])


def test_gpu_settings_are_on_gpu_tasks_only(compiled):
    executors, platform = compiled["deploymentSpec"]["executors"], _platform(compiled)
    for key, e in executors.items():
        task = key.removeprefix("exec-")
        resources = e["container"].get("resources", {})
        k8s = platform.get(key, {})
        if task in GPU_TASKS:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "1"
            assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        else:
            assert "accelerator" not in resources, task
            assert "nodeSelector" not in k8s and "tolerations" not in k8s, task
        cpu = STEPS[task].cpu
        assert resources["cpuRequest"] == (float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))
        assert k8s["securityContext"]["runAsNonRoot"] is True


def test_katib_tuning_leaves_the_gpu_to_the_trials(tmp_path):
    out = tmp_path / "katib.yaml"
    compile_pipeline("training", out, variant="medium-range", tuning="katib")
    ir = _load(out)
    assert "accelerator" not in ir["deploymentSpec"]["executors"]["exec-tune"]["container"].get("resources", {})


def test_caching_retries_and_parameters(compiled):
    tasks = compiled["root"]["dag"]["tasks"]["exit-handler-1"]["componentRef"]["name"]
    dag = compiled["components"][tasks]["dag"]["tasks"]
    assert dag["validate"]["cachingOptions"].get("enableCache") is not True  # always re-hashes the data
    assert dag["train"]["cachingOptions"]["enableCache"] is True
    assert dag["evaluate"]["cachingOptions"].get("enableCache") is not True  # the champion changes
    assert dag["train"]["retryPolicy"]["maxRetryCount"] == 2
    assert "retryPolicy" not in dag["validate"]
    params = compiled["root"]["inputDefinitions"]["parameters"]
    assert params["variant"]["defaultValue"] == "wave"
    assert {"data", "config", "n_trials", "gates", "warm_start", "tracking_uri"} <= set(params)
    (condition,) = [t["triggerPolicy"]["condition"] for t in dag.values() if t.get("triggerPolicy")]
    assert "evaluate-Output" in condition and "== true" in condition


def test_retrain_starts_from_the_champion_and_skips_tuning(tmp_path):
    out = tmp_path / "retrain.yaml"
    compile_pipeline("retrain", out, variant="medium-range")
    params = _load(out)["root"]["inputDefinitions"]["parameters"]
    assert params["warm_start"]["defaultValue"] == "champion"
    assert params["n_trials"]["defaultValue"] == 0


def test_whole_numbers_undo_kfp_doubles():
    assert whole_numbers({"model": {"encoder_depths": [1.0, 1.0]}, "lr": 0.5}) == {
        "model": {"encoder_depths": [1, 1]}, "lr": 0.5}


def test_validate_fails_with_every_error_and_keeps_the_report(tmp_path):
    bad = BROKEN / "fields_with_missing_values.grib"
    with pytest.raises(DataError) as err:
        validate_data([str(bad)], "medium-range", tmp_path, check_contract=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] is False
    assert len(err.value.problems) == sum(f["severity"] == "error" for f in report["findings"]) > 0
    assert "| error |" in (tmp_path / "report.md").read_text()


def test_prepare_writes_one_series_with_the_values_unchanged_and_without_the_held_out_days(tmp_path):
    """Augmentation is drawn per sample by the training loader (`data.augment`), never once here."""
    info = prepare_series([str(ERA5_HOURLY)], tmp_path, test_period=["2018-01-03T00:00", "2018-01-03T06:00"])
    with xr.open_dataset(tmp_path / "train.nc") as ds, xr.open_dataset(ERA5_HOURLY) as raw:
        kept = raw.sel(time=slice(None, "2018-01-02T23:00"))
        assert ds.sizes["time"] == kept.sizes["time"] == info["times"] == 18
        for name in ("u10", "d2m"):  # unchanged, as the canonical float32 of the reader
            np.testing.assert_array_equal(ds[name].values, kept[name].values.astype("float32"))
    assert info["held_out"].startswith("2018-01-03T00:00 .. 2018-01-03T06:00")


class _KfpApi(BaseHTTPRequestHandler):
    """The KFP v2beta1 endpoints `kfp.Client` calls to submit: health, experiments, runs,
    recurring runs. Records each request body."""

    seen: list = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.seen.append(("GET", self.path, None))
        self._reply({})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.seen.append(("POST", self.path.split("?")[0], body))
        ids = {"/apis/v2beta1/experiments": {"experiment_id": "exp-1"}, "/apis/v2beta1/runs": {"run_id": "run-1"},
               "/apis/v2beta1/recurringruns": {"recurring_run_id": "job-1"}}
        self._reply({**ids.get(self.path.split("?")[0], {}), "display_name": body.get("display_name")})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def kfp_api():
    _KfpApi.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", _KfpApi.seen
    server.shutdown()


def test_submit_sends_the_pipeline_with_its_parameters(kfp_api):
    host, seen = kfp_api
    run_id = submit("training", {"variant": "medium-range", "data": ["s3://bucket/era5.nc"], "n_trials": 8},
                    host=host, run_name="nightly-1", pipeline_root="s3://bucket/pipelines")
    assert run_id == "run-1"
    experiments = [b for m, p, b in seen if p == "/apis/v2beta1/experiments" and m == "POST"]
    assert experiments == [{"display_name": "aurora-medium-range", "namespace": ""}]
    (run,) = [b for m, p, b in seen if p == "/apis/v2beta1/runs"]
    assert run["display_name"] == "nightly-1" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"]["data"] == ["s3://bucket/era5.nc"]
    assert run["runtime_config"]["parameters"]["n_trials"] == 8
    assert run["runtime_config"]["pipeline_root"] == "s3://bucket/pipelines"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "aurora-training-medium-range"
    assert run["service_account"] == "aurora-pipeline-runner"  # manifests/base's runner, not the namespace default


def test_a_recurring_evaluation_runs_nightly_one_at_a_time(kfp_api, tmp_path):
    host, seen = kfp_api
    job = schedule("evaluation", {"variant": "wave", "data": ["s3://bucket/latest.nc"]}, host=host,
                   cron="0 0 2 * * *", workdir=tmp_path)
    assert job == "job-1"
    (body,) = [b for m, p, b in seen if p == "/apis/v2beta1/recurringruns"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"
    assert body["max_concurrency"] == "1" or body["max_concurrency"] == 1
    assert body["no_catchup"] is True
    assert body["runtime_config"]["parameters"]["variant"] == "wave"
    assert body["service_account"] == "aurora-pipeline-runner"


def test_a_schedule_needs_six_cron_fields(kfp_api):
    with pytest.raises(DataError, match="six cron fields"):
        schedule("evaluation", {"variant": "wave", "data": ["s3://b/x.nc"]}, host=kfp_api[0], cron="0 2 * * *")


def test_the_command_compiles_and_refuses_a_parameter_without_a_value(tmp_path, capsys):
    from auroraops.cli import main

    out = tmp_path / "evaluation.yaml"
    assert main(["pipeline", "compile", "--variant", "wave", "--pipeline", "evaluation", "--out", str(out)]) == 0
    assert _load(out)["pipelineInfo"]["name"] == "aurora-evaluation-wave"
    assert main(["pipeline", "run", "--variant", "wave", "--data", "x.nc", "--param", "n_trials"]) == 1
    assert "--param takes NAME=VALUE" in capsys.readouterr().err
