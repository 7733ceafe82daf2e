"""`auroraops pipeline run|compile|submit`: the Kubeflow pipelines, here or on a cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_code.errors import DataError
from model_code.variants import VARIANTS

PIPELINE_NAMES = ("training", "retrain", "evaluation")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pipeline", help="run a pipeline locally, compile it, or submit it to Kubeflow",
        description=("The training, retrain and continuous-evaluation pipelines (reference: "
                     "docs/pipelines.md). `run` uses KFP's local runner (subprocesses, no Docker) "
                     "and an MLflow store in the working directory; `compile` writes KFP IR YAML; "
                     "`submit` sends a run, or a recurring run with --schedule, to a KFP API."))
    commands = p.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")

    r = commands.add_parser("run", help="run a pipeline here with KFP's local runner")
    _common(r)
    r.add_argument("--data", nargs="+", metavar="PATH", required=True, help="data files or s3:// URIs")
    r.add_argument("--workdir", default="outputs/pipelines",
                   help="pipeline outputs and task cache (default: %(default)s)")
    r.add_argument("--no-cache", action="store_true", help="run every step, ignoring cached outputs")
    r.set_defaults(run=run)

    c = commands.add_parser("compile", help="write a pipeline as KFP IR YAML")
    _common(c, arguments=False)
    c.add_argument("--out", required=True, metavar="FILE.yaml")
    c.set_defaults(run=run_compile)

    s = commands.add_parser("submit", help="submit a run (or a recurring run) to a KFP API")
    _common(s)
    s.add_argument("--data", nargs="+", metavar="URI", required=True,
                   help="data as the cluster sees it (s3:// URIs)")
    s.add_argument("--host", required=True, metavar="URL", help="KFP API endpoint, e.g. http://localhost:8080")
    s.add_argument("--experiment", help="KFP experiment (default: aurora-VARIANT)")
    s.add_argument("--run-name", help="run name (default: aurora-PIPELINE-VARIANT-TIMESTAMP)")
    s.add_argument("--pipeline-root", metavar="URI", help="where artifacts go, e.g. s3://bucket/pipelines")
    s.add_argument("--service-account", default="aurora-pipeline-runner",
                   help="Kubernetes service account the run's pods use (default: %(default)s, from manifests/base)")
    s.add_argument("--schedule", metavar="CRON",
                   help="create a recurring run instead, on KFP's six-field cron (seconds first), "
                        "e.g. '0 0 2 * * *' nightly at 02:00")
    s.set_defaults(run=run_submit)


def _common(p: argparse.ArgumentParser, *, arguments: bool = True) -> None:
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--pipeline", choices=PIPELINE_NAMES, default="training", help="default: %(default)s")
    p.add_argument("--tuning", choices=("optuna", "katib"), default="optuna",
                   help="tune with Optuna inside the task, or with a Katib Experiment (cluster) (default: %(default)s)")
    if arguments:
        p.add_argument("--config", metavar="FILE", help="training config (YAML; docs/training.md)")
        p.add_argument("--gates", metavar="FILE", help="promotion gates (YAML; default: the variant's)")
        p.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                       help="any pipeline parameter, value read as YAML, e.g. --param n_trials=2 (repeatable)")


def arguments(args: argparse.Namespace) -> dict:
    """The pipeline's arguments from the command line: data, config, gates, then --param."""
    import yaml

    values: dict = {"variant": args.variant, "data": list(args.data)}
    if args.config:
        values["config"] = _yaml_file(args.config, "--config")
    if args.gates:
        values["gates"] = _yaml_file(args.gates, "--gates")
    for item in args.params:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise DataError(f"--param takes NAME=VALUE, got {item!r}")
        values[name] = yaml.safe_load(text)
    return values


def _yaml_file(path: str, flag: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{flag}: file not found", source=path)
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise DataError(f"{flag}: expected a YAML mapping", source=path)
    return data


def run(args: argparse.Namespace) -> int:
    from pipelines.runner import run_local

    summary = run_local(args.pipeline, arguments(args), workdir=args.workdir, caching=not args.no_cache)
    print()
    print(summary.describe())
    return 0 if summary.state == "SUCCEEDED" else 1


def run_compile(args: argparse.Namespace) -> int:
    from pipelines.runner import compile_pipeline

    print(f"pipeline written: {compile_pipeline(args.pipeline, args.out, variant=args.variant, tuning=args.tuning)}")
    return 0


def run_submit(args: argparse.Namespace) -> int:
    from pipelines.runner import schedule, submit

    values = arguments(args)
    if args.schedule:
        job = schedule(args.pipeline, values, host=args.host, cron=args.schedule, experiment=args.experiment,
                       job_name=args.run_name, tuning=args.tuning, pipeline_root=args.pipeline_root,
                       service_account=args.service_account)
        print(json.dumps({"recurring_run_id": job, "schedule": args.schedule}))
    else:
        run_id = submit(args.pipeline, values, host=args.host, experiment=args.experiment, run_name=args.run_name,
                        tuning=args.tuning, pipeline_root=args.pipeline_root, service_account=args.service_account)
        print(json.dumps({"run_id": run_id}))
    return 0
