"""The KFP v2 components: typed inputs and outputs around one call into `components.steps`.

KFP ships a lightweight component as the source of its function alone, so each body
imports what it needs; the project image has this package installed, and the local
runner uses the same Python environment as the caller. `install_kfp_package=False`:
the image already holds kfp, and locally a pip install per task would cost seconds.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from adapters import IMAGE


def _component(fn):
    return dsl.component(fn, base_image=IMAGE, install_kfp_package=False)


@_component
def validate(data: list, variant: str, check_contract: bool, report: Output[Markdown],
             report_json: Output[Artifact]) -> str:
    """Fail the task with every error-level finding when `data` is not fit to train on;
    returns the data's SHA-256, which keys the cache of every later step."""
    import os

    from components.steps import validate_data
    from model_code.storage import data_hash

    os.makedirs(report.path, exist_ok=True)
    try:
        validate_data(data, variant, report.path, check_contract=check_contract)
    finally:  # the report travels even when the data failed
        if os.path.exists(os.path.join(report.path, "report.json")):
            os.replace(os.path.join(report.path, "report.json"), report_json.path)
    return data_hash(data)


@_component
def prepare(data: list, data_hash: str, test_period: list, train_data: Output[Dataset]) -> None:
    """One NetCDF training series from `data` without the held-out `test_period` (`data_hash` keys
    the cache); augmentation is the training config's, per sample."""
    from components.steps import prepare_series

    info = prepare_series(data, train_data.path, test_period=test_period)
    train_data.metadata.update({"data_hash": data_hash, **info})


@_component
def tune(variant: str, train_data: Input[Dataset], config: dict, n_trials: int, seed: int, mode: str,
         cluster: dict, search_architecture: bool, warm_start: str, study: Output[Artifact]) -> dict:
    """The best hyperparameters as dotted config overrides (empty with `n_trials` 0);
    `search_architecture` searches the model's shape too, for a train step without `warm_start`."""
    import os

    from components.steps import TRAIN_DATA, tune_params

    best = tune_params(variant, os.path.join(train_data.path, TRAIN_DATA), config, study.path,
                       n_trials=n_trials, seed=seed, mode=mode, cluster=cluster,
                       architecture=search_architecture, warm_start=warm_start)
    study.metadata.update({k: v for k, v in best.items() if k != "best_overrides"})
    return best["best_overrides"]


@_component
def train(variant: str, train_data: Input[Dataset], config: dict, overrides: dict, warm_start: str,
          model: Output[Model], metrics: Output[Metrics]) -> None:
    """Train with the tuned values; `warm_start` ("" for none) is a checkpoint or models:/ URI."""
    import os

    from components.steps import TRAIN_DATA, log_metrics, train_model

    summary = train_model(variant, os.path.join(train_data.path, TRAIN_DATA), config, model.path, overrides=overrides,
                          weights=warm_start or None)
    model.metadata.update({"variant": variant, "framework": "aurora", "best_step": summary["best_step"]})
    log_metrics(metrics, {"best_val_loss": summary["best_val_loss"], "steps": summary["steps"]})


@_component
def compress(variant: str, model: Input[Model], train_data: Input[Dataset], compression: dict,
             compressed: Output[Model], metrics: Output[Metrics]) -> None:
    """The model to evaluate and register: the trained one as it is (`compression` empty), or
    quantised, pruned or distilled from it on the training data; its size and one-step latency
    beside the trained model's are logged."""
    import os

    from components.steps import TRAIN_DATA, compress_model, log_metrics

    summary = compress_model(variant, model.path, os.path.join(train_data.path, TRAIN_DATA), compression,
                             compressed.path)
    compressed.metadata.update({"variant": variant, "framework": "aurora", "compression": summary["method"]})
    if summary["method"] != "none":
        log_metrics(metrics, {k: summary[k] for k in ("weight_bytes", "reference_weight_bytes", "latency_ms",
                                                      "reference_latency_ms", "speedup")})


@_component
def evaluate(variant: str, model: Input[Model], reference: Input[Model], data: list, config: dict, steps: int,
             max_inits: int, gates: dict, test_period: list, tracking_uri: str, scores: Output[Artifact],
             report: Output[HTML], scorecard: Output[Markdown], metrics: Output[Metrics]) -> bool:
    """Score the model beside the baselines and the current champion on `data` (from the
    initialisations in `test_period` when given), a compressed model also beside `reference`,
    the model it was made from; return whether it passed the promotion gates (`gates`: {"gates": [...]}, empty for the variant's defaults; the verdict and its
    reasons are `gates.json` in `scores`).

    One plain output on purpose: KFP's local runner cannot resolve a NamedTuple field in a
    `dsl.If` condition."""
    import os
    import shutil

    from components.steps import evaluate_model, log_metrics

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    result = evaluate_model(variant, model.path, data, scores.path + ".d", config=config, steps=steps,
                            max_inits=max_inits, gates=gates, test_period=test_period, reference_dir=reference.path)
    shutil.copyfile(result["scorecard"], scorecard.path)
    shutil.copyfile(result["report"], report.path)  # the page; the whole report folder is the scores artifact
    shutil.move(scores.path + ".d", scores.path)
    log_metrics(metrics, result["headline"])
    scores.metadata["gates_passed"] = result["gates_passed"]
    return result["gates_passed"]


@_component
def register(variant: str, model: Input[Model], scores: Input[Artifact], data: list, data_hash: str,
             pipeline_run: str, tracking_uri: str) -> str:
    """A new registry version of the model, tagged with its data, code, the config it was
    trained with, metrics and run, with the `challenger` alias; returns the version."""
    import os

    from components.steps import register_model

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return register_model(variant, model.path, os.path.join(scores.path, "scores.json"), data=data,
                          data_hash=data_hash, pipeline_run=pipeline_run)


@_component
def promote(variant: str, version: str, scores: Input[Artifact], gates: dict, tracking_uri: str) -> str:
    """Move `champion` to `version`; the registry checks every gate again before the alias moves."""
    import os

    from components.steps import promote_model

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return promote_model(variant, version, os.path.join(scores.path, "scores.json"), gates=gates)


@_component
def canary(variant: str, version: str, percent: int, namespace: str, tracking_uri: str) -> str:
    """Start a canary of registered `version` on the variant's InferenceService in `namespace`
    (cluster mode: the task's service account patches it); returns the rollout's state as JSON."""
    import os

    from components.steps import canary_rollout

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return canary_rollout(variant, version, percent, namespace=namespace)


@_component
def score_champion(variant: str, data: list, config: dict, champion: str, steps: int, max_inits: int,
                   skill_history: str, tracking_uri: str, scores: Output[Artifact], report: Output[HTML],
                   metrics: Output[Metrics]) -> str:
    """Continuous evaluation: the champion (or `champion`, a model URI) on the latest window,
    appended to the skill history; returns the window's drift as JSON."""
    import json
    import os
    import shutil

    from components.steps import log_metrics, score_champion as run

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    result = run(variant, data, scores.path + ".d", config=config, champion=champion or None, steps=steps,
                 max_inits=max_inits, history=skill_history)
    shutil.copyfile(result["report"], report.path)
    shutil.move(scores.path + ".d", scores.path)
    log_metrics(metrics, result["headline"])
    return json.dumps(result["drift"])


@_component
def record_outcome(pipeline: str, variant: str, tracking_uri: str, status: dsl.PipelineTaskFinalStatus,
                   outcome: Output[Artifact]) -> None:
    """The exit handler: the run's final state, whatever failed, in the tracking store."""
    import os

    from components.steps import record_outcome as run

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    run(pipeline, variant, {"state": status.state, "job": status.pipeline_job_resource_name,
                            "task": status.pipeline_task_name, "error_code": status.error_code,
                            "error_message": status.error_message}, outcome.path)
