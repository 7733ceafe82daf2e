"""The three pipelines: training, retrain and continuous evaluation, built per variant.

    training:   validate -> prepare -> tune -> train -> compress -> evaluate -> register -> [gates] promote
                (`test_period`, [start, end]: days held out of prepare, tune and train, and verified;
                `compression`, e.g. {"method": "int8-dynamic"}: the model evaluated and registered
                is the trained one compressed, scored beside it; empty: the trained one)
    retrain:    the same, warm-started from the champion's weights, on a new data window;
                on a cluster, with `canary_percent` > 0, ending with a canary of the new champion
    evaluation: validate -> score the champion on the latest window (skill history)

Every pipeline runs inside an exit handler that records its outcome (succeeded, failed,
and which task) in the tracking store. `build(name, variant)` returns the pipeline
function, with the variant as the default of its `variant` parameter; the same function
runs locally (`pipelines.runner.run_local`) and compiles for a cluster.
"""

from typing import Callable

from kfp import dsl

from components import definitions as c
from model_code.variants import get_variant
from pipelines.tasks import configure

PIPELINES = ("training", "retrain", "evaluation")
TUNING_MODES = ("optuna", "katib")


def build(name: str, variant: str, *, tuning: str = "optuna", retries: bool = True) -> Callable:
    """The pipeline `name` for `variant`.

    `tuning` "katib" makes the tune task a CPU task that creates and waits for a Katib
    Experiment (the trials take the GPUs); `retries` False drops retries (local runs).
    """
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}; expected one of {PIPELINES}")
    if tuning not in TUNING_MODES:
        raise ValueError(f"tuning must be one of {TUNING_MODES}; got {tuning!r}")
    if name == "evaluation":
        return _evaluation(variant, retries)
    return _training(name, variant, tuning, retries)


def _training(name: str, variant: str, tuning: str, retries: bool) -> Callable:
    retrain = name == "retrain"

    @dsl.pipeline(
        name=f"aurora-{name}-{get_variant(variant).slug}",
        description=("Retrain from the champion on a new window" if retrain else "Train") +
                    f" the {variant} variant; promote it only when it beats the champion and the baselines.",
    )
    def pipeline(
        data: list,
        variant: str = variant,
        config: dict = {},
        check_contract: bool = True,
        seed: int = 0,
        n_trials: int = 0 if retrain else 4,
        search_architecture: bool = False,
        cluster: dict = {},
        warm_start: str = "champion" if retrain else "",
        eval_steps: int = 2,
        max_inits: int = 4,
        gates: dict = {},
        test_period: list = [],
        compression: dict = {},
        canary_percent: int = 0,
        serving_namespace: str = "aurora",
        tracking_uri: str = "",
    ):
        record = configure(c.record_outcome(pipeline=name, variant=variant, tracking_uri=tracking_uri),
                           "record-outcome", retries=retries)
        with dsl.ExitHandler(record, name="run"):
            checked = configure(c.validate(data=data, variant=variant, check_contract=check_contract),
                                "validate", retries=retries)
            series = configure(c.prepare(data=data, data_hash=checked.outputs["Output"], test_period=test_period),
                               "prepare", retries=retries)
            tuned = configure(c.tune(variant=variant, train_data=series.outputs["train_data"], config=config,
                                     n_trials=n_trials, seed=seed, mode=tuning, cluster=cluster,
                                     search_architecture=search_architecture, warm_start=warm_start),
                              "tune-katib" if tuning == "katib" else "tune", retries=retries)
            trained = configure(c.train(variant=variant, train_data=series.outputs["train_data"], config=config,
                                        overrides=tuned.outputs["Output"], warm_start=warm_start),
                                "train", retries=retries)
            compressed = configure(c.compress(variant=variant, model=trained.outputs["model"],
                                              train_data=series.outputs["train_data"], compression=compression),
                                   "compress", retries=retries)
            scored = configure(c.evaluate(variant=variant, model=compressed.outputs["compressed"],
                                          reference=trained.outputs["model"], data=data, config=config,
                                          steps=eval_steps, max_inits=max_inits, gates=gates,
                                          test_period=test_period, tracking_uri=tracking_uri),
                               "evaluate", retries=retries)
            version = configure(c.register(variant=variant, model=compressed.outputs["compressed"],
                                           scores=scored.outputs["scores"], data=data,
                                           data_hash=checked.outputs["Output"],
                                           pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                                           tracking_uri=tracking_uri),
                                "register", retries=retries)
            with dsl.If(scored.outputs["Output"] == True, name="gates-passed"):  # noqa: E712 (a KFP condition)
                promoted = configure(c.promote(variant=variant, version=version.output, scores=scored.outputs["scores"],
                                               gates=gates, tracking_uri=tracking_uri),
                                     "promote", retries=retries)
                with dsl.If(canary_percent > 0, name="canary-wanted"):
                    configure(c.canary(variant=variant, version=promoted.output, percent=canary_percent,
                                       namespace=serving_namespace, tracking_uri=tracking_uri),
                              "canary", retries=retries)

    return pipeline


def _evaluation(variant: str, retries: bool) -> Callable:
    @dsl.pipeline(
        name=f"aurora-evaluation-{get_variant(variant).slug}",
        description=f"Score the {variant} champion on the latest data window and record its skill over time.",
    )
    def pipeline(
        data: list,
        variant: str = variant,
        config: dict = {},
        check_contract: bool = True,
        champion: str = "",
        eval_steps: int = 2,
        max_inits: int = 4,
        skill_history: str = "",
        tracking_uri: str = "",
    ):
        record = configure(c.record_outcome(pipeline="evaluation", variant=variant, tracking_uri=tracking_uri),
                           "record-outcome", retries=retries)
        with dsl.ExitHandler(record, name="run"):
            checked = configure(c.validate(data=data, variant=variant, check_contract=check_contract),
                                "validate", retries=retries)
            configure(c.score_champion(variant=variant, data=data, config=config, champion=champion,
                                       steps=eval_steps, max_inits=max_inits, skill_history=skill_history,
                                       tracking_uri=tracking_uri),
                      "score-champion", retries=retries).after(checked)

    return pipeline
