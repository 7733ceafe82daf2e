"""The pipeline steps as plain functions: paths and plain values in, files out.

Each KFP component (`components.definitions`) is one call into a function here, so a step
runs the same inside a pipeline task, in a test, or in a benchmark's single process. The
functions only read inputs, call `model_code` (or `adapters.registry` / the tuners) and
write outputs; the ML lives in `model_code`.

Inputs given as `s3://` URIs are read through boto3 (`model_code.storage`); everything a
step writes goes under the local directories it is handed, which KFP uploads to the
pipeline root (S3 on a cluster) once the task succeeds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
# Before anything loads eccodes: its wheel bundles libsqlite3 3.26, and a process that loads
# that first gives Python's sqlite3 module (and MLflow's sqlite store, which needs >= 3.31) the old library.
import sqlite3  # noqa: F401
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from model_code.errors import ConfigError, DataError
from model_code.storage import content_hash, local_copy, write_atomic

CHECKPOINT = "checkpoint.safetensors"
"""Name of the weights inside a model directory (the registry's artifact layout too)."""
CONFIG = "config.yaml"
TRAIN_SUMMARY = "train.json"
TRAIN_DATA = "train.nc"


def _write_text(path: str | Path, text: str) -> str:
    return write_atomic(str(path), lambda tmp: Path(tmp).write_text(text))


def _write_json(path: str | Path, value: Any) -> str:
    return _write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def log_metrics(metrics, values: Mapping[str, float]) -> None:
    """Log `values` on a KFP Metrics artifact and write them to its file as well: KFP's local
    cache takes an artifact without a file for a lost one, and would run the step again."""
    for name, value in values.items():
        metrics.log_metric(name, value)
    _write_json(metrics.path, dict(values))


# ---- validate -----------------------------------------------------------------------------


def validate_data(data: Sequence[str], variant: str, report_dir: str | Path, *,
                  check_contract: bool = True) -> dict[str, Any]:
    """Validate `data`; write `report.json` and `report.md` to `report_dir`; raise on errors.

    `check_contract` False leaves the variant's input contract (variables, grid fit) to
    the training loader, for runs that fill missing variables or crop on purpose; values,
    units and the time axis are checked either way. The `DataError` lists every
    error-level finding, so the failed task's log is the report.
    """
    from model_code.data.validate import validate
    from model_code.variants import get_variant

    if not data:
        raise DataError("no input data: give at least one file or s3:// URI")
    report = validate(list(data), get_variant(variant) if check_contract else None)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "report.json", report.to_json() + "\n")
    _write_text(out / "report.md", validation_markdown(report))
    report.raise_for_errors()
    return {"summary": report.summary(), "warnings": len(report.by_severity("warning"))}


def validation_markdown(report) -> str:
    lines = ["# Data validation", "", report.summary(), "", "Sources:", ""]
    lines += [f"- `{s}`" for s in report.sources]
    lines += ["", "| severity | finding |", "|---|---|"]
    lines += [f"| {f.severity} | {f.line().replace('|', '/')} |" for f in report.findings]
    return "\n".join(lines) + "\n"


# ---- prepare ------------------------------------------------------------------------------


def prepare_series(data: Sequence[str], out_dir: str | Path, *,
                   test_period: Sequence[str] | None = None) -> dict[str, Any]:
    """Merge `data` into one NetCDF training series, `out_dir/train.nc`, without its held-out days.

    The series is what `train` and `tune` read: one local file, even when the inputs were
    several files or `s3://` objects. The times in `test_period` ([start, end]) are left
    out of it, so no training, tuning or early stopping ever sees the held-out days the
    evaluation verifies on. The values are copied unchanged: augmentation is drawn per
    sample and epoch by the training loader (the config's `data.augment`), never once for
    the whole series.
    """
    import numpy as np
    import xarray as xr

    from model_code.data.ingest import read_fields
    from model_code.data.writers import write_dataset

    with contextlib.ExitStack() as stack:
        local = [(str(uri), stack.enter_context(local_copy(uri))) for uri in data]
        fields, prov = read_fields(local)
        ds = xr.Dataset({key: f.chunk() for key, f in fields.items()})
        ds.attrs["sources"] = json.dumps([str(u) for u in data])
    held_out = _period(test_period)
    if held_out is not None and "time" in ds.dims:
        start, end = (np.datetime64(t, "ns") for t in held_out)
        ds = ds.isel(time=np.nonzero((ds["time"].values < start) | (ds["time"].values > end))[0])
        ds.attrs["held_out"] = f"{held_out[0]} .. {held_out[1]} (the test period, never trained on)"
        if not ds.sizes["time"]:
            raise DataError(f"the test period {held_out[0]} .. {held_out[1]} holds every time of the data: "
                            "nothing is left to train on")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_dataset(ds, str(Path(out_dir) / TRAIN_DATA))
    return {"variables": sorted(ds.data_vars), "times": int(ds.sizes.get("time", 1)), "filled": prov.filled,
            "held_out": ds.attrs.get("held_out", "")}


# ---- configs ------------------------------------------------------------------------------


def whole_numbers(value: Any) -> Any:
    """`value` with every integral float made an int again.

    KFP passes dict and list parameters as protobuf Structs, whose numbers are all doubles:
    a config's `model.encoder_depths: [1, 1, 1]` arrives as `[1.0, 1.0, 1.0]`. The config's
    typed fields convert either way; untyped ones (model constructor arguments) need ints.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [whole_numbers(v) for v in value]
    return value


def training_config(variant: str, config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None):
    """The checked `TrainConfig`: `config` (nested, as YAML reads) for `variant`, then `overrides`."""
    from model_code.training.config import config_from_dict

    return config_from_dict({**whole_numbers(dict(config)), "variant": variant}, whole_numbers(dict(overrides or {})))


# ---- tune ---------------------------------------------------------------------------------


def tune_params(variant: str, train_data: str, config: Mapping[str, Any], out_dir: str | Path, *,
                n_trials: int, seed: int = 0, mode: str = "optuna", cluster: Mapping[str, Any] | None = None,
                architecture: bool = False, warm_start: str = "") -> dict[str, Any]:
    """Search hyperparameters; return the best values as dotted config overrides.

    `mode` "optuna" runs the study here on `train_data`; "katib" creates a Katib
    Experiment through the Kubernetes API (`cluster`: namespace, image, data paths as the
    trial pods see them, GPUs per trial, parallel trials, timeout) and waits for it.
    `n_trials` 0 skips the search: the config's own values train. `architecture` searches
    the model's shape too (`search_space.config_space`), refused when the train step starts
    from `warm_start` weights, which fix the shape.
    """
    from model_code.training.search_space import config_space

    if n_trials and architecture and warm_start:
        raise ConfigError(f"the train step starts from {warm_start!r}, whose weights fix the model's shape; "
                          "search the architecture of a model trained from scratch (no warm start)",
                          field="search_architecture")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if n_trials == 0:
        best = {"mode": "none", "best_overrides": {}, "best_value": None}
    elif mode == "optuna":
        from adapters.optuna_study import tune

        cfg = training_config(variant, config, {"data.paths": [train_data],
                                                "checkpoint.out_dir": str(out / "trials"),
                                                "train.progress": False})
        result = tune(cfg, n_trials, out_dir=out / "trials", seed=seed,
                      space=config_space(cfg, architecture=architecture))
        best = {"mode": "optuna", "best_overrides": result.best_overrides, "best_value": result.best_value,
                "best_trial": result.best_trial,
                "trials": {s: sum(t["state"] == s for t in result.trials) for s in {t["state"] for t in result.trials}}}
    elif mode == "katib":
        best = _tune_on_katib(variant, config, n_trials=n_trials, seed=seed, cluster=dict(cluster or {}),
                              architecture=architecture)
    else:
        raise DataError(f"tuning mode must be 'optuna' or 'katib'; got {mode!r}")
    _write_json(out / "best.json", best)
    return best


def _tune_on_katib(variant: str, config: Mapping[str, Any], *, n_trials: int, seed: int,
                   cluster: dict[str, Any], architecture: bool) -> dict[str, Any]:
    """Create the Katib Experiment for this config, wait for it, return its best trial's values."""
    from kubernetes import client

    from model_code.training.search_space import config_space, to_overrides
    from adapters.cluster import api_client, apply_config_map, await_experiment, create_experiment
    from adapters.katib import tuning_objects
    from adapters import IMAGE
    from adapters.trainjob import Resources

    paths = cluster.get("data_paths")
    if not paths:
        raise DataError("tuning on Katib needs cluster.data_paths: the data as the trial pods see it "
                        "(e.g. /data/era5_2020.nc on the aurora-data claim)")
    namespace = cluster.get("namespace", "aurora")
    cfg = training_config(variant, config, {"data.paths": list(paths)})
    space = config_space(cfg, architecture=architecture)
    gpus = int(cluster.get("gpus_per_trial", 1))
    cm, experiment = tuning_objects(
        cfg, namespace=namespace, image=cluster.get("image", IMAGE), space=space,
        max_trials=n_trials, parallel=min(int(cluster.get("parallel", 4)), n_trials),
        max_failed=min(3, n_trials), seed=seed, data_claim=cluster.get("data_claim", "aurora-data"),
        resources=Resources(num_nodes=1, gpus_per_node=gpus, cpu=str(8 * max(gpus, 1)),
                            memory=f"{64 * max(gpus, 1)}Gi", shm="8Gi"))
    api = api_client()
    apply_config_map(client.CoreV1Api(api), cm)
    create_experiment(client.CustomObjectsApi(api), experiment)
    outcome = await_experiment(client.CustomObjectsApi(api), experiment.metadata.name, namespace, space=space,
                               timeout_s=float(cluster.get("timeout_s", 24 * 3600)))
    if outcome.condition != "Succeeded" or not outcome.best_parameters:
        raise DataError(f"Katib Experiment {namespace}/{outcome.name} ended {outcome.condition} with "
                        f"{outcome.trials_succeeded} trial(s) succeeded and {outcome.trials_failed} failed")
    return {"mode": "katib", "experiment": f"{namespace}/{outcome.name}",
            "best_overrides": to_overrides(outcome.best_parameters, space), "best_value": outcome.best_metric,
            "best_trial": outcome.best_trial}


# ---- train --------------------------------------------------------------------------------


def train_model(variant: str, train_data: str, config: Mapping[str, Any], model_dir: str | Path, *,
                overrides: Mapping[str, Any] | None = None, work_dir: str | Path | None = None,
                weights: str | None = None) -> dict[str, Any]:
    """Train on `train_data` with `config` and `overrides` (the tuned values); fill `model_dir`.

    `model_dir` receives `checkpoint.safetensors` (the best validated weights), the
    config (`config.yaml`) and `train.json` (the run's summary and history). `weights`
    (a checkpoint path, `s3://` URI, `models:/` URI, or `champion`) warm-starts the run:
    retraining starts from the champion.
    """
    from model_code.training import save_config, train

    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(work_dir) if work_dir else out / "run"
    extra: dict[str, Any] = {"data.paths": [train_data], "checkpoint.out_dir": str(run_dir),
                             "train.progress": False, **dict(overrides or {})}
    if weights:
        extra["weights"] = _checkpoint_path(variant, weights)
        extra = {**architecture_of(extra["weights"]), **extra}  # the caller's overrides win
    cfg = training_config(variant, config, extra)
    result = train(cfg)
    if result.best_checkpoint is None:
        raise DataError(f"training of {variant} finished without a validated checkpoint in {run_dir}")
    shutil.copyfile(result.best_checkpoint, out / CHECKPOINT)
    save_config(cfg, out / CONFIG)
    summary = {"variant": variant, "best_val_loss": result.best_metric, "best_step": result.best_step,
               "steps": result.steps, "stop_reason": result.stop_reason, "overrides": dict(overrides or {}),
               "warm_start": weights, "history": result.history}
    _write_json(out / TRAIN_SUMMARY, summary)
    if work_dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)  # only the best weights travel on
    return summary


def architecture_of(checkpoint: str) -> dict[str, Any]:
    """Config overrides that build the model a checkpoint holds: its constructor arguments and
    LoRA rank (from the checkpoint's own metadata), so a warm start loads into the same shape
    even when the run's config (untuned, say) would build another."""
    from safetensors import safe_open

    with local_copy(checkpoint) as path, safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out = {f"model.{k}": v for k, v in json.loads(meta.get("model_overrides", "{}")).items()}
    if "lora_rank" in meta:
        out["optim.lora_rank"] = int(meta["lora_rank"])
    return out


def _checkpoint_path(variant: str, uri: str) -> str:
    """A checkpoint path or s3:// URI for `uri`: `champion` is the variant's champion, and
    `models:/` registry URIs are downloaded."""
    from adapters.registry import CHAMPION, model_name, resolve_checkpoint

    if uri == CHAMPION:
        uri = f"models:/{model_name(variant)}@{CHAMPION}"
    return resolve_checkpoint(uri)


# ---- evaluate -----------------------------------------------------------------------------


def _headline(scores, model: str = "model") -> dict[str, float]:
    """RMSE of `model` over the whole grid per variable (and level) and lead, named
    `rmse/<var>[<level>]/<lead>h`."""
    from model_code.evaluation.regions import WHOLE_GRID

    out = {}
    for r in scores.records:
        if r["forecast"] == model and r["metric"] == "rmse" and r["region"] in WHOLE_GRID and "threshold" not in r:
            level = "" if r.get("level") is None else f"{r['level']:g}"
            out[f"rmse/{r['variable']}{level}/{r['lead_hours']:g}h"] = float(r["value"])
    return out


def _hindcast_config(checkpoint: str, variant: str, data: Sequence[str], config: Mapping[str, Any], *,
                     steps: int, max_inits: int, test_period: Sequence[str] | None = None):
    """How a checkpoint is scored: the training config's fills, crop and levels on `data`,
    from the initialisation times in `test_period` ([start, end]) when given."""
    from model_code.evaluation.continuous import HindcastConfig

    d = training_config(variant, config).data
    return HindcastConfig(checkpoint=checkpoint, data=tuple(data), steps=steps, variant=variant,
                          max_inits=max_inits or None, fill_missing=d.fill_missing,
                          fill_missing_dynamic=d.fill_missing_dynamic, crop=d.crop, levels=d.levels,
                          init_period=_period(test_period))


def _period(period: Sequence[str] | None) -> tuple[str, str] | None:
    """[start, end] as pipelines pass it (an empty list: none)."""
    if not period:
        return None
    if len(period) != 2:
        raise DataError(f"a period is [start, end] (ISO times); got {list(period)}")
    return str(period[0]), str(period[1])


COMPRESSION = "compression.json"
"""Beside a compressed model: how it was made and what it weighs and costs (`CompressResult.summary`)."""


def compress_model(variant: str, model_dir: str | Path, train_data: str, compression: Mapping[str, Any],
                   out_dir: str | Path) -> dict[str, Any]:
    """The model to evaluate and register: `model_dir`'s as it is (`compression` empty or method
    `none`), or compressed as `compression` says ({"method": "int8-dynamic" | "int8-static" |
    "bf16" | "prune" | "distil", and `CompressJob`'s options}), on the training data."""
    from model_code.compression.job import CompressJob, compress_checkpoint

    source, out = Path(model_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG, TRAIN_SUMMARY):
        shutil.copyfile(source / name, out / name)
    options = dict(compression or {})
    method = options.pop("method", "none")
    if method == "none":
        if options:
            raise DataError(f"compression options {sorted(options)} without a method")
        shutil.copyfile(source / CHECKPOINT, out / CHECKPOINT)
        return {"method": "none"}
    unknown = set(options) - set(CompressJob.__dataclass_fields__) - {"checkpoint", "out", "method", "data"}
    if unknown:
        raise DataError(f"unknown compression option(s) {sorted(unknown)}")
    result = compress_checkpoint(CompressJob(checkpoint=str(source / CHECKPOINT), method=method,
                                             out=str(out / CHECKPOINT), variant=variant, data=(train_data,),
                                             **options))
    summary = {**result.summary(), "out": CHECKPOINT, "teacher_sha256": content_hash(str(source / CHECKPOINT))}
    _write_json(out / COMPRESSION, summary)
    return summary


def evaluate_model(variant: str, model_dir: str | Path, data: Sequence[str], out_dir: str | Path, *,
                   config: Mapping[str, Any], steps: int, max_inits: int,
                   gates: Mapping[str, Any] | None = None, test_period: Sequence[str] | None = None,
                   reference_dir: str | Path | None = None) -> dict[str, Any]:
    """Score the trained model beside persistence, climatology and the champion; judge the gates.

    With `test_period` ([start, end]) only initialisation times inside it are verified (the
    held-out days), and the climatology comes from the data before them. The champion (when
    the variant has one) is scored on the same data, init times and config, and its records
    enter the scores as forecast `champion`. Writes `scores.json` (what the gates and the
    registry read; its subject names the model's checkpoint and the champion version) and
    the report (`report/report.html`, `report/scorecard.md`, curves) under `out_dir`, and
    the verdict as `gates.json`. The verdict decides whether the pipeline promotes;
    `promote` checks it again in the registry. A compressed model (`COMPRESSION` beside it) is
    scored beside the model it was made from (`reference_dir`), as forecast `uncompressed`:
    what the compression cost in skill, not a gate.
    """
    from dataclasses import replace

    from model_code.evaluation.continuous import score_checkpoint
    from model_code.evaluation.report import write_report
    from adapters.gates import judge
    from adapters.registry import champion_version, gate_list, model_name, resolve_checkpoint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _hindcast_config(str(Path(model_dir) / CHECKPOINT), variant, data, config, steps=steps,
                           max_inits=max_inits, test_period=test_period)
    scores = score_checkpoint(cfg).scores
    champion = champion_version(variant)
    scores.subject["champion"] = None
    if champion is not None:
        with tempfile.TemporaryDirectory(prefix="auroraops-champion-") as tmp:
            theirs = score_checkpoint(replace(cfg, checkpoint=resolve_checkpoint(
                f"models:/{model_name(variant)}/{champion}", tmp))).scores
        scores.records += [{**r, "forecast": "champion"} for r in theirs.records if r["forecast"] == "model"]
        scores.subject["champion"] = {"version": champion,
                                      "checkpoint_sha256": theirs.subject["model"]["checkpoint_sha256"]}
    if reference_dir is not None and (Path(model_dir) / COMPRESSION).is_file():
        theirs = score_checkpoint(replace(cfg, checkpoint=str(Path(reference_dir) / CHECKPOINT))).scores
        scores.records += [{**r, "forecast": "uncompressed"} for r in theirs.records if r["forecast"] == "model"]
    scores.to_json(str(out / "scores.json"))
    write_report(scores, out / "report", title=f"{model_name(variant)}: challenger against "
                 + ", ".join(f for f in scores.forecasts() if f != "model"))
    report = judge(scores, gate_list(variant, load_gate_list(gates)), champion=champion)
    _write_json(out / "gates.json", {"passed": report.passed, "subject": scores.subject, "reasons": report.reasons,
                                     "comparisons": json.loads(report.to_json())["comparisons"]})
    return {"scores": str(out / "scores.json"), "report": str(out / "report" / "report.html"),
            "scorecard": str(out / "report" / "scorecard.md"), "headline": _headline(scores),
            "gates_passed": report.passed}


def load_gate_list(gates: Mapping[str, Any] | None):
    """`{"gates": [...]}` as pipelines pass it; empty or None: the variant's default gates."""
    from adapters.gates import load_gates

    return load_gates(whole_numbers(dict(gates))) if gates else None


# ---- register, promote --------------------------------------------------------------------


def register_model(variant: str, model_dir: str | Path, scores_path: str, *, data: Sequence[str], data_hash: str,
                   pipeline_run: str) -> str:
    """Register the trained model as a new version of `aurora-<variant>` (alias `challenger`),
    with the config it was trained with (`config.yaml` of `model_dir`, tuned values included).

    A retried task with the same `pipeline_run` and weights gets the version registered
    before, not a second one.
    """
    from adapters.registry import register

    summary = json.loads((Path(model_dir) / TRAIN_SUMMARY).read_text())
    tags = {"data_hash": data_hash, "data": json.dumps(list(data))[:5000]}
    metrics = {"best_val_loss": summary["best_val_loss"]}
    if (Path(model_dir) / COMPRESSION).is_file():
        compressed = json.loads((Path(model_dir) / COMPRESSION).read_text())
        tags.update({"compression.method": compressed["method"], "compression.teacher_sha256":
                     compressed["teacher_sha256"], "compression.timed_on": compressed["timed_on"],
                     "compression.skill_delta": json.dumps(skill_delta(json.loads(Path(scores_path).read_text())))})
        metrics.update({"compression.weight_bytes": compressed["weight_bytes"],
                        "compression.latency_ms": compressed["latency_ms"],
                        "compression.speedup": compressed["speedup"]})
    return register(str(Path(model_dir) / CHECKPOINT), variant=variant, metrics_json=scores_path,
                    config=Path(model_dir) / CONFIG, pipeline_run_id=pipeline_run, metrics=metrics, tags=tags)


def skill_delta(scores: Mapping[str, Any]) -> dict[str, float]:
    """Relative change of each score of the compressed model against the model it came from
    (`uncompressed`), whole grid: `{"rmse t2m @12h": 0.013}` is 1.3 % worse for a lower-is-better
    metric (the sign follows `score.better`: positive is worse)."""
    from model_code.evaluation.score import HIGHER_IS_BETTER, LOWER_IS_BETTER
    from model_code.evaluation.regions import WHOLE_GRID

    def key(r):
        level = "" if r.get("level") is None else f"{r['level']:g}"
        return f"{r['metric']} {r['variable']}{level} @{r['lead_hours']:g}h"

    cells: dict[str, dict[str, float]] = {}
    for r in scores["records"]:
        if r["region"] in WHOLE_GRID and r["metric"] in LOWER_IS_BETTER | HIGHER_IS_BETTER and not r.get("threshold"):
            cells.setdefault(key(r), {})[r["forecast"]] = r["value"]
    out = {}
    for name, by in cells.items():
        a, b = by.get("model"), by.get("uncompressed")
        if a is None or b is None or not b:
            continue
        change = (a - b) / abs(b)
        out[name] = round(-change if name.split()[0] in HIGHER_IS_BETTER else change, 6)
    return out


def promote_model(variant: str, version: str, scores_path: str, *, gates: Mapping[str, Any] | None = None) -> str:
    """Make `version` the champion; the registry checks every gate again and refuses a loser."""
    from adapters.registry import promote

    result = promote(variant, version, scores_path, gates=load_gate_list(gates))
    if not result.promoted:
        raise DataError(f"aurora-{variant} version {version} was not promoted", problems=result.reasons)
    return version


def canary_rollout(variant: str, version: str, percent: int, *, namespace: str) -> str:
    """A canary of registered `version` at `percent` % on the InferenceService of `variant`, its
    artifact checked against its registered digest first; the rollout's state as JSON."""
    from kubernetes import client

    from adapters.cluster import api_client
    from adapters.registry import model_name
    from serving import served
    from serving.traffic import Rollout

    model = served.describe_uri(f"models:/{model_name(variant)}/{version}")
    served.verify(model)
    state = Rollout(client.CustomObjectsApi(api_client()), variant, namespace=namespace).canary(percent, model)
    return json.dumps(state.to_dict(), default=str)


# ---- continuous evaluation ----------------------------------------------------------------


def score_champion(variant: str, data: Sequence[str], out_dir: str | Path, *, config: Mapping[str, Any],
                   champion: str | None, steps: int, max_inits: int, history: str) -> dict[str, Any]:
    """Score the champion (or the `champion` URI given) on the latest window; extend its skill history.

    `history` is the JSON-lines skill history (a path or s3:// URI) the window is appended
    to, with the drift of each score against the earlier windows' mean.
    """
    from model_code.evaluation.continuous import evaluate_window
    from model_code.evaluation.report import write_report
    from adapters.registry import champion_version, model_name, resolve_checkpoint

    if not history:
        raise DataError("continuous evaluation needs skill_history: where the skill history lives "
                        "(a path, or an s3:// URI on a cluster)")
    if not champion:
        version = champion_version(variant)
        if version is None:
            raise DataError(f"{model_name(variant)} has no champion to evaluate; run the training pipeline first")
        champion = f"models:/{model_name(variant)}/{version}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="auroraops-champion-") as tmp:
        window = evaluate_window(_hindcast_config(resolve_checkpoint(champion, tmp), variant, data, config,
                                                  steps=steps, max_inits=max_inits), history)
    window.scores.to_json(str(out / "scores.json"))
    write_report(window.scores, out / "report", title=f"{champion} on {window.entry['window']}")
    return {"scores": str(out / "scores.json"), "report": str(out / "report" / "report.html"),
            "headline": _headline(window.scores), "drift": window.drift, "history": window.history}


# ---- the exit handler ---------------------------------------------------------------------


def record_outcome(pipeline: str, variant: str, status: Mapping[str, Any], out_path: str | Path) -> dict[str, Any]:
    """Write the run's final status to `out_path` and to the `aurora-pipelines` experiment."""
    import mlflow

    from adapters.registry import tracking_uri

    record = {"pipeline": pipeline, "variant": variant, **{k: v for k, v in status.items() if v not in (None, "")}}
    _write_json(out_path, record)
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment("aurora-pipelines")
    with mlflow.start_run(run_name=f"{pipeline} {variant}"):
        mlflow.set_tags({f"run.{k}": str(v) for k, v in record.items()})
    print(f"pipeline {pipeline} ({variant}): {record.get('state')}")
    return record
