"""`auroraops rollout`: what a predictor's InferenceService serves (deploy, canary, promote, rollback),
each model resolved from the registry to its version's immutable artifact, and the skill-gated decision."""

from __future__ import annotations

import argparse
import json

from model_code.variants import VARIANTS

ACTIONS = ("status", "deploy", "canary", "promote", "rollback", "decide", "render")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "rollout",
        help="what a KServe predictor serves (status, deploy, canary, promote, rollback, decide, render)",
        description=(
            "Change the InferenceService of a variant through the Kubernetes API of the kubeconfig "
            "(or the pod's service account), as `kubectl patch --type merge` would. A --model "
            "models:/aurora-V@ALIAS (or /VERSION) is resolved now to its version, the checkpoint's URI "
            "in the artifact store and its registered digest, which is checked against the stored "
            "bytes; the InferenceService then names all three. deploy: serve --model on all traffic; "
            "canary: serve --model on a new revision with --percent of the traffic (or move a running "
            "canary to --percent); promote: all traffic to the canary; rollback: all traffic back to "
            "the stable revision (or deploy --model when no canary runs); decide: promote, hold or "
            "roll back from the forecast skill of both versions (--skill) and their request figures "
            "(--ops), and with --apply do it; render: write the InferenceService that serves --model, "
            "for a cluster applied from git (--out, else standard output). See docs/runbooks/rollout.md."
        ),
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--namespace", default="aurora", help="namespace (default: %(default)s)")
    p.add_argument("--name", help="InferenceService name (default: aurora-VARIANT)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--model", metavar="URI",
                   help="deploy, canary: the model (models:/aurora-V@champion, models:/aurora-V/N, or a checkpoint "
                        "URI); rollback: the model to go back to when no canary runs")
    p.add_argument("--percent", type=int, help="canary: share of requests for the new revision, 1-99")
    p.add_argument("--dry-run", action="store_true",
                   help="server-side dry run: the API server checks the change and stores nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="FILE.yaml", help="render: write the InferenceService here (atomically)")
    d = p.add_argument_group("decide")
    d.add_argument("--skill", nargs="+", metavar="FILE.json",
                   help="evaluation scores (Scores JSON) of both versions; one case per init_time or per file")
    d.add_argument("--canary-forecast", default="model",
                   help="forecast name of the canary in the scores (default: %(default)s)")
    d.add_argument("--stable-forecast", default="champion",
                   help="forecast name of the stable version in the scores (default: %(default)s)")
    d.add_argument("--metric", default="rmse", help="skill metric (default: %(default)s)")
    d.add_argument("--target", action="append", metavar="VAR[@LEVEL]:LEAD[:REGION]",
                   help="headline target, e.g. z@500:120 (repeatable; default: every target scored)")
    d.add_argument("--margin", type=float, default=0.02,
                   help="largest relative loss of skill a promoted canary may have (default: %(default)s)")
    d.add_argument("--min-cases", type=int, default=10,
                   help="fewest verified forecasts per target (default: %(default)s)")
    d.add_argument("--ops", metavar="FILE.json",
                   help='request figures: {"canary": {"requests", "errors", "latency_p95_s"}, "stable": {...}}')
    d.add_argument("--apply", action="store_true", help="perform the promote or rollback decided")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from model_code.errors import DataError

    if args.action == "decide":
        return _decide(args)
    if args.action == "canary" and args.percent is None:
        raise DataError("rollout canary needs --percent N (and --model URI to start a canary)")
    if args.action in ("deploy", "render") and not args.model:
        raise DataError(f"rollout {args.action} needs --model URI (e.g. models:/aurora-VARIANT@champion)")
    if args.percent is not None and args.action != "canary":
        raise DataError(f"--percent is for canary, not {args.action}")
    model = resolved(args.model) if args.model else None  # before anything is sent
    if args.action == "render":
        return _render(args, model)
    rollout = rollout_of(args)
    if args.action == "status":
        state = rollout.status()
    elif args.action == "deploy":
        state = rollout.deploy(model)
    elif args.action == "canary":
        state = rollout.canary(args.percent, model)
    elif args.action == "promote":
        state = rollout.promote()
    else:
        state = rollout.rollback(model)
    print_status(state, args)
    return 0


def resolved(uri: str):
    """The `ServedModel` `uri` names now, its artifact checked against its registered digest."""
    from serving import served

    model = served.describe_uri(uri)
    served.verify(model)
    return model


def _render(args: argparse.Namespace, model) -> int:
    """The variant's InferenceService as shipped, serving `model`: what `deploy` would leave."""
    from pathlib import Path

    from model_code.storage import write_atomic
    from adapters.trainjob import to_yaml
    from serving.manifests import inference_service

    text = to_yaml(inference_service(args.variant, name=args.name, model=model, namespace=args.namespace))
    if not args.out:
        print(text, end="")
        return 0
    write_atomic(args.out, lambda tmp: Path(tmp).write_text(text))
    print(f"InferenceService written: {args.out} (serves {model.label}; apply with kubectl apply -f)")
    return 0


def rollout_of(args: argparse.Namespace):
    from kubernetes import client, config

    from adapters.cluster import api_client
    from serving.traffic import Rollout

    if args.kubeconfig:
        api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    else:
        api = api_client(args.context)
    return Rollout(client.CustomObjectsApi(api), args.variant, namespace=args.namespace,
                   name=args.name, dry_run=args.dry_run)


def print_status(state, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(state.to_dict(), indent=2))
        return
    dry = " (dry run: nothing changed)" if args.dry_run else ""
    print(f"InferenceService {state.namespace}/{state.name}: {state.phase}, ready: {state.ready}{dry}")
    print(f"  model (spec):  {state.model.label} at {state.model.uri}")
    if state.stable:
        print(f"  stable model:  {state.stable.label} at {state.stable.uri}")
    if state.canary_percent is not None:
        print(f"  canary traffic: {state.canary_percent}%")
    for t in state.traffic:
        tag = f" [{t.tag}]" if t.tag else ""
        print(f"  traffic: {t.percent:3d}% -> {t.revision or 'latest'}{tag}")


def _decide(args: argparse.Namespace) -> int:
    from model_code.errors import DataError
    from serving.canary_decision import Rule, Target, canary_decision, load_ops, load_skill, table

    if not args.skill:
        raise DataError("rollout decide needs --skill FILE.json ...")
    rule = Rule(metric=args.metric, margin=args.margin, min_cases=args.min_cases)
    canary_ops, stable_ops = load_ops(args.ops) if args.ops else (None, None)
    targets = [Target.parse(t) for t in args.target] if args.target else None
    decision = canary_decision(load_skill(args.skill), rule, canary=args.canary_forecast,
                               stable=args.stable_forecast, targets=targets, canary_ops=canary_ops,
                               stable_ops=stable_ops)
    print(json.dumps(decision.to_dict(), indent=2) if args.json else table(decision, rule.metric))
    if args.apply and decision.action in ("promote", "rollback"):
        rollout = rollout_of(args)
        state = rollout.promote() if decision.action == "promote" else rollout.rollback()
        if not args.json:
            print()
            print_status(state, args)
    return 0
