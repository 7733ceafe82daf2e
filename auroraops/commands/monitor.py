"""`auroraops monitor`: drift reports, the drift policy and retrain trigger, live skill."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

from model_code.variants import VARIANTS


def add_parser(sub) -> None:
    p = sub.add_parser("monitor", help="drift of incoming data, retrain trigger, live skill",
                       description="Monitor served models: drift of incoming fields against a reference "
                                   "window, live forecast skill, and the policy that starts retraining on "
                                   "either.")
    cmds = p.add_subparsers(dest="monitor_command", required=True, metavar="SUBCOMMAND")

    s = cmds.add_parser("summarise", help="store the summary table of a window (e.g. the training period)",
                        description="Reduce data files to the per-time summary table drift is tested on, "
                                    "and store it (NAME.summaries.json) to use as --reference later.")
    s.add_argument("--data", nargs="+", required=True, metavar="PATH", help="data files or s3:// URIs")
    s.add_argument("--out", required=True, metavar="FILE", help="output, ending in .summaries.json (path or s3://)")
    s.add_argument("--variables", nargs="+", metavar="NAME", help="keep only these variables (dataset names)")
    s.set_defaults(run=run_summarise)

    d = cmds.add_parser("drift", help="drift report of a current window against a reference window",
                        description="Compare two windows with Evidently: summaries of each field (mean, spread, "
                                    "structure, change between steps, missing share, latitude profile) as "
                                    "anomalies from the reference's own hour-of-day cycle, each tested against a "
                                    "threshold calibrated on stretches of the reference itself. Writes "
                                    "drift.html (verdict, reasons, what moved per variable, Evidently's report), "
                                    "snapshot.json and drift.json to --out. Exit status 0 whether or not drift "
                                    "was found.")
    d.add_argument("--reference", nargs="+", required=True, metavar="PATH",
                   help="reference data files or one .summaries.json")
    d.add_argument("--current", nargs="+", required=True, metavar="PATH", help="current data files")
    d.add_argument("--out", required=True, metavar="DIR", help="report directory (path or s3://)")
    d.add_argument("--report-columns", type=int, default=24,
                   help="worst columns listed in the report (default 24; drift.json has all)")
    _rule(d)
    d.set_defaults(run=run_drift)

    c = cmds.add_parser("check", help="apply the retrain policy; submit the retrain pipeline when it fires",
                        description="Test the window in --data for a feed shift (as `monitor drift`), judge "
                                    "live skill over it (with --skill-store), record the decision with its "
                                    "evidence in --state, and when skill degraded, or the shift has lasted "
                                    "--sustained windows, and the cool-down has passed, start the retrain "
                                    "pipeline once for this episode: on the cluster with --host, else locally. "
                                    "Exit status 1 when the submission failed.")
    c.add_argument("--variant", required=True, choices=list(VARIANTS))
    c.add_argument("--data", nargs="+", required=True, metavar="PATH", help="the current window's data files")
    c.add_argument("--reference", nargs="+", required=True, metavar="PATH",
                   help="reference data files or one .summaries.json (e.g. of the training period)")
    c.add_argument("--state", default="outputs/monitoring/state-{variant}.json", metavar="FILE",
                   help="policy state file, path or s3:// (default: %(default)s)")
    c.add_argument("--out", default="outputs/monitoring/reports", metavar="DIR",
                   help="reports of drifted windows go to DIR/<variant>/<time>/ (default: %(default)s)")
    c.add_argument("--report-columns", type=int, default=24,
                   help="worst columns listed in the report (default 24; drift.json has all)")
    c.add_argument("--skill-store", metavar="FILE",
                   help="live-skill record of `monitor skill` (JSON lines, path or s3://): retrain when skill "
                        "over the window degraded")
    c.add_argument("--skill-tolerance", type=float, default=0.25,
                   help="RMSE of the last 7 days this much above the 28 days before is degraded skill "
                        "(default 0.25)")
    c.add_argument("--host", metavar="URL", help="Kubeflow Pipelines API; without it the run is local")
    c.add_argument("--experiment", help="KFP experiment (default: aurora-<variant>)")
    c.add_argument("--workdir", help="local runs: pipeline work directory")
    c.add_argument("--retrain-data", nargs="+", metavar="PATH",
                   help="data of the retraining run (default: --data)")
    c.add_argument("--sustained", type=int, default=2,
                   help="windows in a row with a feed shift before a run (default 2)")
    c.add_argument("--cooldown-hours", type=float, default=24.0, help="least hours between runs (default 24)")
    c.add_argument("--attempts", type=int, default=3, help="submission attempts (default 3)")
    c.add_argument("--backoff", type=float, default=30.0, help="seconds before the 2nd attempt, doubling (default 30)")
    c.add_argument("--pushgateway", metavar="URL", help="push the drift metrics to this Prometheus Pushgateway")
    _rule(c)
    c.set_defaults(run=run_check)

    k = cmds.add_parser("skill", help="live skill of served forecasts once their truth has arrived",
                        description="Score forecast job outputs (directories with job.json) or forecast "
                                    "files against truth files: RMSE and MAE by lead time, appended to "
                                    "--store (JSON lines) and exported as aurora_live_* metrics.")
    k.add_argument("--forecast", nargs="+", required=True, metavar="URI",
                   help="job output directories or forecast files")
    k.add_argument("--truth", nargs="+", required=True, metavar="PATH", help="analysis / truth files")
    k.add_argument("--store", default="outputs/monitoring/live_skill.jsonl", metavar="FILE",
                   help="JSON lines record, path or s3:// (default: %(default)s)")
    k.add_argument("--variables", nargs="+", metavar="NAME", help="score only these variables")
    k.add_argument("--pushgateway", metavar="URL", help="push the skill metrics to this Prometheus Pushgateway")
    k.set_defaults(run=run_skill)


def _rule(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variables", nargs="+", metavar="NAME", help="compare only these variables (dataset names)")
    p.add_argument("--method", default="wasserstein",
                   help="Evidently stat test per column: a distance (wasserstein, psi, ...) or a p-value test "
                        "(ks, ...) (default wasserstein)")
    p.add_argument("--margin", type=float, default=3.0,
                   help="threshold = margin x the largest score the reference reached against itself (default 3)")


def _drift_rule(args):
    from monitoring.drift import DriftRule

    return DriftRule(method=args.method, margin=args.margin)


def run_summarise(args: argparse.Namespace) -> int:
    from model_code.errors import DataError
    from monitoring.summaries import SUFFIX, summarise

    if not args.out.endswith(SUFFIX):
        raise DataError(f"--out must end in {SUFFIX}, got {args.out}")
    s = summarise(args.data, variables=args.variables)
    uri = s.save(args.out)
    print(f"summaries of {len(s.table)} time steps x {s.table.shape[1]} columns ({len(s.variables)} "
          f"variable-levels, grid {s.grid.describe()}) written: {uri}")
    return 0


def run_drift(args: argparse.Namespace) -> int:
    from monitoring.drift import detect_drift

    r = detect_drift(args.reference, args.current, out=args.out, rule=_drift_rule(args), variables=args.variables,
                     report_limit=args.report_columns)
    print(f"{'DRIFT' if r.drifted else 'no drift'}: {len(r.drifted_columns)} of {len(r.columns)} columns over "
          f"their threshold; variables: {', '.join(r.drifted_variables) or 'none'}")
    for reason in r.reasons:
        print(f"  {reason.describe()}")
    if not r.drifted and r.columns:
        top = r.columns[0]
        print(f"  strongest: {top.column} at {top.exceedance:.2f} of its threshold")
    print(f"report: {r.artifacts['html']}\nresult: {r.artifacts['result']}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from monitoring import telemetry
    from monitoring.live_skill import SkillRule
    from monitoring.policy import SUBMIT_FAILED, DriftPolicy
    from monitoring.trigger import Retry, check, cluster_submitter, local_submitter

    submitter = cluster_submitter(args.host, args.experiment) if args.host else local_submitter(args.workdir)
    retrain = {"data": args.retrain_data} if args.retrain_data else None
    result = check(
        args.variant, args.data, args.reference, state_uri=args.state.format(variant=args.variant),
        submitter=submitter, policy=DriftPolicy(args.sustained, timedelta(hours=args.cooldown_hours)),
        rule=_drift_rule(args), out=args.out, report_limit=args.report_columns,
        retry=Retry(args.attempts, args.backoff), retrain_arguments=retrain, variables=args.variables,
        skill_store=args.skill_store, skill_rule=SkillRule(tolerance=args.skill_tolerance),
    )
    print(result.describe())
    if args.pushgateway:
        telemetry.push(args.pushgateway, "aurora-monitor-check", args.variant)
    return 1 if result.decision.action == SUBMIT_FAILED else 0


def run_skill(args: argparse.Namespace) -> int:
    from monitoring import telemetry
    from monitoring.live_skill import update

    records = update(args.forecast, args.truth, store=args.store, variables=args.variables)
    if not records:
        print("nothing new to score (no step whose valid time the truth holds, or all scored already)")
    for r in records:
        level = "" if r.level is None else f"@{r.level:g}"
        print(json.dumps({"variable": f"{r.variable}{level}", "lead_hours": r.lead_hours, "valid_time": r.valid_time,
                          "rmse": round(r.rmse, 6), "mae": round(r.mae, 6), "forecast": r.forecast}))
    if records:
        print(f"{len(records)} record(s) appended to {args.store}")
    if args.pushgateway:
        for variant in sorted({r.variant for r in records}):
            telemetry.push(args.pushgateway, "aurora-monitor-skill", variant)
    return 0
