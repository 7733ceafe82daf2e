"""`auroraops tune`: search hyperparameters locally with Optuna, or render/submit a Katib Experiment."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from model_code.errors import ConfigError, DataError
from model_code.storage import write_atomic
from model_code.training.entry import parse_set
from model_code.variants import VARIANTS

if TYPE_CHECKING:
    from model_code.training.config import TrainConfig
    from model_code.training.search_space import Param


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="search hyperparameters (Optuna locally, or a Katib Experiment for a cluster)",
        description=(
            "Search learning rate, weight decay, warmup, LoRA mode and rank, loss weights and (tiny "
            "profile) depth and heads; with --search-architecture the model's shape too. Without "
            "--render-katib/--submit, runs an Optuna study here (TPE, median pruning on validation "
            "losses) and prints the best parameters as JSON. "
            "--render-katib writes the same search as a Katib Experiment (with a ConfigMap holding "
            "the base config); --submit creates both through the Kubernetes API."
        ),
    )
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--config", metavar="FILE", help="base training config (YAML); default: the defaults")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="training data (replaces data.paths); for Katib, paths as the pods see them (/data/...)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.max_steps=200 (repeatable)")
    p.add_argument("--trials", type=int, default=20, help="number of trials (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="local study output (default: outputs/tune/VARIANT)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    p.add_argument("--search-architecture", action="store_true",
                   help="search the model's shape too: window size, latent levels and depth (full profile), "
                        "input history (medium-range), patch size and heads (high-res); for a model "
                        "trained from scratch, so refused with starting weights")
    k = p.add_argument_group("Katib (cluster)")
    k.add_argument("--render-katib", metavar="OUT.yaml", help="write the ConfigMap and Experiment here")
    k.add_argument("--submit", action="store_true", help="create them on the cluster of the kubeconfig")
    k.add_argument("--wait", action="store_true", help="with --submit: wait for the Experiment to finish")
    k.add_argument("--namespace", default="default", help="namespace (default: %(default)s)")
    k.add_argument("--image", help="image with this project (default: the published project image)")
    k.add_argument("--parallel", type=int, default=4, help="trials at once (default: %(default)s)")
    k.add_argument("--algorithm", default="tpe", help="Katib suggestion algorithm (default: %(default)s)")
    k.add_argument("--gpus", type=int, default=1, help="GPUs per trial (default: %(default)s)")
    k.add_argument("--data-claim", default="aurora-data", metavar="PVC",
                   help="PersistentVolumeClaim with the data, mounted at /data (default: %(default)s)")
    k.add_argument("--runs-claim", metavar="PVC", help="PersistentVolumeClaim mounted at /runs for --trial-out")
    k.add_argument("--trial-out", metavar="DIR", default="/tmp/aurora-tuning",
                   help="where trials write checkpoints, e.g. /runs/tuning with --runs-claim "
                        "(default: %(default)s, pod-local)")
    p.set_defaults(run=run)


def base_config(args: argparse.Namespace) -> TrainConfig:
    from model_code.training.config import load_config

    overrides = {"variant": args.variant, **parse_set(args.sets)}
    if args.data:
        overrides["data.paths"] = list(args.data)
    return load_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from model_code.training.search_space import config_space

    if args.trials < 1:
        raise DataError(f"--trials must be >= 1, got {args.trials}")
    cfg = base_config(args)
    space = config_space(cfg, architecture=args.search_architecture)
    if args.render_katib or args.submit:
        return _katib(args, cfg, space)
    if not cfg.data.paths:
        raise ConfigError("no training data: give --data PATH... or data.paths in --config", field="data.paths")
    from adapters.optuna_study import tune

    result = tune(cfg, args.trials, out_dir=args.out or f"outputs/tune/{args.variant}", seed=args.seed,
                  space=space, timeout_s=args.timeout)
    summary = {k: v for k, v in json.loads(result.to_json()).items() if k != "trials"}
    summary["trials"] = {state: sum(t["state"] == state for t in result.trials)
                         for state in sorted({t["state"] for t in result.trials})}
    print(json.dumps(summary, indent=2))
    return 0


def _katib(args: argparse.Namespace, cfg: TrainConfig, space: tuple[Param, ...]) -> int:
    from model_code.training.config import with_overrides
    from adapters.katib import tuning_objects
    from adapters import IMAGE
    from adapters.trainjob import Resources, to_yaml

    with_overrides(cfg, {"checkpoint.out_dir": args.trial_out})  # the trials' --set must load too
    gpus = Resources(num_nodes=1, gpus_per_node=args.gpus, cpu=str(8 * max(args.gpus, 1)),
                     memory=f"{64 * max(args.gpus, 1)}Gi", shm="8Gi")
    cm, experiment = tuning_objects(
        cfg, namespace=args.namespace, image=args.image or IMAGE, space=space,
        max_trials=args.trials, parallel=min(args.parallel, args.trials), max_failed=min(3, args.trials),
        algorithm=args.algorithm, seed=args.seed, resources=gpus, out_dir=args.trial_out,
        data_claim=args.data_claim, runs_claim=args.runs_claim)
    if args.render_katib:
        write_atomic(args.render_katib, lambda tmp: Path(tmp).write_text(to_yaml(cm, experiment)))
        print(f"Katib Experiment written: {args.render_katib} (apply with kubectl apply -f)")
    if args.submit:
        _submit(args, cm, experiment, space)
    return 0


def _submit(args: argparse.Namespace, cm: dict, experiment, space: tuple[Param, ...]) -> None:
    from kubernetes import client

    from adapters.cluster import api_client, apply_config_map, await_experiment, create_experiment

    api = api_client()
    apply_config_map(client.CoreV1Api(api), cm)
    create_experiment(client.CustomObjectsApi(api), experiment)
    name = experiment.metadata.name
    print(f"Experiment {args.namespace}/{name} created")
    if args.wait:
        outcome = await_experiment(client.CustomObjectsApi(api), name, args.namespace, space=space)
        print(json.dumps(outcome.__dict__, indent=2, default=str))
