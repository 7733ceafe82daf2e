"""`auroraops registry`: the MLflow registry's versions of a variant, promotion and rollback.

The operator's side of `adapters.registry` (see docs/registry.md): what the pipelines
registered, a promotion judged on the gates, a rollback to the champion before. The store is
`MLFLOW_TRACKING_URI`, or the local sqlite store under the working directory.
"""

from __future__ import annotations

import argparse
import json

from model_code.variants import VARIANTS


def add_parser(sub) -> None:
    p = sub.add_parser("registry", help="list, promote or roll back a variant's registered models",
                       description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")

    show = commands.add_parser("show", help="every version of aurora-<variant> with its aliases and gates")
    show.add_argument("--json", action="store_true",
                      help="the champion and challenger as JSON: version, checkpoint URI, verdict, held-out scores")
    show.set_defaults(run=run_show)

    promote = commands.add_parser(
        "promote", help="make a version champion if it passes every gate (exit 1 when it does not)")
    promote.add_argument("--version", required=True, help="the registered version to promote")
    promote.add_argument("--scores", required=True,
                         help="its evaluation (metrics.json of `auroraops evaluate` or the pipeline)")
    promote.add_argument("--gates", help="a gates YAML file (default: the variant's gates)")
    promote.set_defaults(run=run_promote)

    rollback = commands.add_parser("rollback", help="give champion back to the version it replaced")
    rollback.set_defaults(run=run_rollback)

    for command in (show, promote, rollback):
        command.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    for command in (promote, rollback):
        command.add_argument("--apply", action="store_true",
                             help="also deploy the new champion to the variant's InferenceService (otherwise the "
                                  "rollout is printed, as an auroraops and a kubectl command)")
        command.add_argument("--namespace", default="aurora", help="namespace (default: %(default)s)")
        command.add_argument("--name", help="InferenceService name (default: aurora-VARIANT)")
        command.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
        command.add_argument("--context", help="kubeconfig context (default: the current one)")
        command.add_argument("--dry-run", action="store_true", help="with --apply: a server-side dry run")
        command.add_argument("--json", action="store_true", help="with --apply: print the rollout's result as JSON")


def run_show(args: argparse.Namespace) -> int:
    from adapters.registry import client, describe, model_name

    if args.json:
        print(json.dumps(describe(args.variant), indent=1, allow_nan=False))
        return 0
    c, name = client(), model_name(args.variant)
    versions = sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    if not versions:
        print(f"{name}: no registered version")
        return 0
    aliases = {v: a for a, v in c.get_registered_model(name).aliases.items()}
    print(f"{name}:")
    for v in versions:
        metrics = ", ".join(f"{k[len('metric.'):]}={float(x):.4g}" for k, x in sorted(v.tags.items())
                            if k.startswith("metric."))
        gates = {"true": "gates passed", "false": "gates failed"}.get(v.tags.get("gates_passed"), "not judged")
        alias = f" @{aliases[v.version]}" if v.version in aliases else ""
        print(f"  version {v.version}{alias}: {gates}; run {v.tags.get('pipeline_run_id', '-')}; {metrics or 'no metrics'}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from adapters.registry import model_name, promote

    result = promote(args.variant, args.version, args.scores, gates=args.gates)
    name = model_name(args.variant)
    if result.promoted:
        print(f"{name} version {result.version} is champion (before: {result.previous_champion or 'none'})")
        _follow_alias(args, f"models:/{name}/{result.version}")
        return 0
    print(f"{name} version {result.version} not promoted; champion stays {result.previous_champion or 'none'}:")
    for reason in result.reasons:
        print(f"  - {reason}")
    return 1


def run_rollback(args: argparse.Namespace) -> int:
    from adapters.registry import model_name, rollback

    version = rollback(args.variant)
    print(f"{model_name(args.variant)}: champion is version {version} again")
    _follow_alias(args, f"models:/{model_name(args.variant)}/{version}")
    return 0


def _follow_alias(args: argparse.Namespace, uri: str) -> None:
    """Make what the cluster serves follow the alias: print the rollout, or with --apply do it."""
    from auroraops.commands.rollout import print_status, resolved, rollout_of
    from serving.traffic import kubectl_deploy

    model = resolved(uri)
    if args.apply:
        print_status(rollout_of(args).deploy(model), args)
        return
    print(f"to serve it: auroraops rollout deploy --variant {args.variant} --model {uri}")
    print(f"  or: {kubectl_deploy(args.variant, model, namespace=args.namespace, name=args.name)}")
