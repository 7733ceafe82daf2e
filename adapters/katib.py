"""The search space as a Katib Experiment: rendered from the one definition, and checked.

Each trial is a TrainJob (`adapters.trainjob`) running the project image's training entry
point with the trial's values as `--set KEY=VALUE` overrides. Katib's StdOut collector
reads the objective from the trial's log: the trainer prints, at every validation, one line

    2025-01-31T12:00:00.123456Z step=200 val_loss=0.01234 val_score=0.0208 ...

(an RFC 3339 time stamp, then `name=value` pairs; `METRICS_FORMAT` is the filter). The time
stamp orders the values, which median-stop early stopping needs. The objective is
`val_score` (`search_space.tuning_score`), which the searched loss weights cannot move;
`val_loss` is collected beside it.

Objects are built with the `kubeflow-katib-api` models (the legacy Katib SDK cannot be
installed beside kfp); `adapters.cluster` sends them through the Kubernetes API.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Sequence

from kubeflow_katib_api import models as km

from model_code.training.config import TrainConfig
from model_code.training.search_space import OBJECTIVE, Param, config_space, search_space
from model_code.variants import get_variant
from adapters import IMAGE
from adapters.trainjob import (
    API_VERSION as TRAINJOB_API_VERSION,
    KIND as TRAINJOB_KIND,
    NODE_CONTAINER,
    GpuPool,
    Resources,
    config_map,
    config_text,
    trainjob_spec,
)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1beta1", "experiments"
METRICS_FORMAT = r"([\w-]+)=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
"""`name=value` pairs; valid as Go RE2 (Katib's collector) and as Python `re` (the tests)."""
ALGORITHMS = ("tpe", "multivariate-tpe", "bayesianoptimization", "random")
TRIAL_RESOURCES = Resources(num_nodes=1, gpus_per_node=1, cpu="8", memory="64Gi", shm="8Gi")
TRAINJOB_SUCCEEDED = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
TRAINJOB_FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
_PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]*)\}")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def parameter_spec(p: Param) -> km.V1beta1ParameterSpec:
    """A search-space parameter as Katib lists it (all bounds are strings in Katib's API)."""
    if p.kind == "choice":
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p.choices)
        return km.V1beta1ParameterSpec(
            name=p.name, parameterType="discrete" if numeric else "categorical",
            feasibleSpace=km.V1beta1FeasibleSpace(list=[p.text(c) for c in p.choices]))
    space = km.V1beta1FeasibleSpace(
        min=_number(p.low), max=_number(p.high),
        distribution="logUniform" if p.log else "uniform")
    if p.kind == "int":
        space.step = str(p.step or 1)
    return km.V1beta1ParameterSpec(
        name=p.name, parameterType="double" if p.kind == "float" else "int", feasibleSpace=space)


def _number(x: float) -> str:
    """Plain decimal notation: YAML 1.2 readers (kubectl) would take `1e-05` for a number."""
    return format(Decimal(repr(float(x))).normalize(), "f")


def build_experiment(
    variant: str,
    *,
    name: str | None = None,
    namespace: str | None = None,
    image: str = IMAGE,
    space: Sequence[Param] | None = None,
    profile: str = "full",
    max_trials: int = 24,
    parallel: int = 4,
    max_failed: int = 3,
    algorithm: str = "tpe",
    seed: int = 0,
    resources: Resources = TRIAL_RESOURCES,
    pool: GpuPool = GpuPool(),
    early_stopping: bool = True,
    out_dir: str = "/tmp/aurora-tuning",
    config_name: str | None = None,
    data_claim: str | None = "aurora-data",
    runs_claim: str | None = None,
) -> km.V1beta1Experiment:
    """A Katib Experiment minimising `val_score` over `space` (default: the profile's space for
    `variant`, without the model's shape).

    Trials write checkpoints under `out_dir/<trial name>`; the default is pod-local, as a
    trial only has to report its metric. To keep them, mount `runs_claim` and give an
    `out_dir` under `RUNS_DIR`.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got '{algorithm}'")
    space = tuple(space if space is not None else search_space(profile, variant=variant))
    overrides = [f"checkpoint.out_dir={out_dir.rstrip('/')}/${{trialParameters.trialName}}"]
    trial_parameters = [km.V1beta1TrialParameterSpec(
        name="trialName", reference="${trialSpec.Name}", description="name of the trial")]
    for p in space:
        overrides += p.set_arguments(f"${{trialParameters.{p.name}}}")
        trial_parameters.append(km.V1beta1TrialParameterSpec(
            name=p.name, reference=p.name, description=p.help or None))
    trial_spec = trainjob_spec(variant, image=image, resources=resources, pool=pool, overrides=overrides,
                               config_name=config_name, data_claim=data_claim, runs_claim=runs_claim)
    stopping = None
    if early_stopping:  # Katib's counterpart of Optuna's MedianPruner
        stopping = km.V1beta1EarlyStoppingSpec(algorithmName="medianstop", algorithmSettings=[
            km.V1beta1EarlyStoppingSetting(name="min_trials_required", value=str(min(3, max_trials))),
            km.V1beta1EarlyStoppingSetting(name="start_step", value="2"),
        ])
    experiment = km.V1beta1Experiment(
        apiVersion=f"{GROUP}/{VERSION}",
        kind="Experiment",
        metadata=km.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name or f"aurora-tune-{get_variant(variant).slug}", namespace=namespace,
            labels={"app.kubernetes.io/part-of": "aurora-mlops", "aurora-mlops.io/variant": variant}),
        spec=km.V1beta1ExperimentSpec(
            objective=km.V1beta1ObjectiveSpec(type="minimize", objectiveMetricName=OBJECTIVE,
                                              additionalMetricNames=["val_loss"]),
            algorithm=km.V1beta1AlgorithmSpec(algorithmName=algorithm, algorithmSettings=[
                km.V1beta1AlgorithmSetting(name="random_state", value=str(seed))]),
            earlyStopping=stopping,
            maxTrialCount=max_trials,
            parallelTrialCount=parallel,
            maxFailedTrialCount=max_failed,
            parameters=[parameter_spec(p) for p in space],
            metricsCollectorSpec=km.V1beta1MetricsCollectorSpec(
                collector=km.V1beta1CollectorSpec(kind="StdOut"),
                source=km.V1beta1SourceSpec(filter=km.V1beta1FilterSpec(metricsFormat=[METRICS_FORMAT]))),
            trialTemplate=km.V1beta1TrialTemplate(
                primaryContainerName=NODE_CONTAINER,
                successCondition=TRAINJOB_SUCCEEDED,
                failureCondition=TRAINJOB_FAILED,
                retain=False,
                trialParameters=trial_parameters,
                trialSpec={"apiVersion": TRAINJOB_API_VERSION, "kind": TRAINJOB_KIND,
                           "spec": trial_spec.to_dict()}),
        ),
    )
    check_experiment(experiment)
    return experiment


def tuning_objects(cfg: TrainConfig, *, namespace: str | None = None, text: str | None = None,
                   **experiment_args) -> tuple[dict, km.V1beta1Experiment]:
    """The ConfigMap holding the base config `cfg` (or `text`, a config file that loads as
    `cfg`) and the Experiment that tunes it.

    The space, unless `space` is given, is the config's (`search_space.config_space`): its
    profile, run length (`train.max_steps`) and variant, without the model's shape.
    """
    name = f"aurora-tune-{get_variant(cfg.variant).slug}"
    experiment_args.setdefault("space", config_space(cfg))
    experiment = build_experiment(cfg.variant, namespace=namespace, config_name=name, **experiment_args)
    return config_map(cfg.variant, text or config_text(cfg), namespace=namespace, name=name), experiment


def check_experiment(experiment: km.V1beta1Experiment) -> None:
    """Raise ValueError listing every rule of Katib's admission webhook the object breaks.

    The OpenAPI schema checks types; these are the rules only the webhook knows (names,
    counts, placeholders, conditions, the metrics filter).
    """
    spec, problems = experiment.spec, []
    name = experiment.metadata.name if experiment.metadata else None
    if not name or not _NAME.match(name):
        problems.append(f"metadata.name '{name}' must be lower-case alphanumerics or '-', starting with a letter")
    if spec.objective is None or spec.objective.type not in ("minimize", "maximize"):
        problems.append("spec.objective.type must be minimize or maximize")
    counts = {k: getattr(spec, k) for k in ("max_trial_count", "parallel_trial_count", "max_failed_trial_count")}
    if counts["max_trial_count"] is not None and counts["max_trial_count"] <= 0:
        problems.append("spec.maxTrialCount must be greater than 0")
    if counts["parallel_trial_count"] is not None and counts["parallel_trial_count"] <= 0:
        problems.append("spec.parallelTrialCount must be greater than 0")
    for key, label in (("parallel_trial_count", "parallelTrialCount"), ("max_failed_trial_count", "maxFailedTrialCount")):
        if None not in (counts[key], counts["max_trial_count"]) and counts[key] > counts["max_trial_count"]:
            problems.append(f"spec.{label} ({counts[key]}) must not exceed spec.maxTrialCount ({counts['max_trial_count']})")
    template = spec.trial_template
    if not (template and template.primary_container_name and template.success_condition
            and template.failure_condition and template.trial_spec):
        problems.append("spec.trialTemplate needs primaryContainerName, successCondition, failureCondition and trialSpec")
    else:
        problems += _check_placeholders(template, {p.name for p in spec.parameters or []})
    for fmt in (spec.metrics_collector_spec.source.filter.metrics_format
                if spec.metrics_collector_spec and spec.metrics_collector_spec.source
                and spec.metrics_collector_spec.source.filter else []):
        if re.compile(fmt).groups < 2:
            problems.append(f"metricsFormat '{fmt}' needs two groups (name, value)")
    if problems:
        raise ValueError("Katib would reject this Experiment:\n  - " + "\n  - ".join(problems))


def _check_placeholders(template: km.V1beta1TrialTemplate, parameter_names: set[str]) -> list[str]:
    text = repr(template.trial_spec)
    used = set(_PLACEHOLDER.findall(text))
    declared = {p.name: p.reference for p in template.trial_parameters or []}
    problems = [f"trialSpec uses ${{trialParameters.{n}}}, which trialParameters does not declare"
                for n in sorted(used - set(declared))]
    problems += [f"trialParameters.{n} is never used in trialSpec" for n in sorted(set(declared) - used)]
    problems += [f"trialParameters.{n} refers to '{ref}', which spec.parameters does not define"
                 for n, ref in declared.items() if not ref.startswith("${trialSpec.") and ref not in parameter_names]
    return problems
