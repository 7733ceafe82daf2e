"""`check`: summarise the new window, test it for drift, judge live skill over it, apply the
policy, maybe ask for a retrain.

The submitter is injected: `local_submitter` runs the retrain pipeline here with KFP's
local runner, `cluster_submitter` submits it to Kubeflow Pipelines; tests pass a plain
function. A submitter returns a run id or raises; a failure is retried with exponential
backoff, and when every attempt fails the decision says so and the episode stays
unhandled, so the next check tries again. State is saved after every check, whatever
happened, before the error (if any) is raised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from model_code.errors import DataError
from monitoring import telemetry
from monitoring.drift import DriftResult, DriftRule, compare, save
from monitoring.live_skill import SkillRule, SkillVerdict, judge, read_store
from monitoring.policy import (SUBMITTED, TRIGGER, Decision, DriftPolicy, PolicyState, decide_window,
                               record_submission)
from monitoring.summaries import Summaries, summarise

Submitter = Callable[[str, Mapping[str, Any]], str]
"""(pipeline name, arguments) -> run id; raises when the run could not be started."""


class SubmissionError(RuntimeError):
    """A retraining run could not be started."""


def local_submitter(workdir: str | None = None) -> Submitter:
    """Run the pipeline here (KFP local runner); the run id is the run's output directory."""

    def submit(name: str, arguments: Mapping[str, Any]) -> str:
        from pipelines.runner import run_local

        summary = run_local(name, arguments, workdir=workdir)
        if summary.state != "SUCCEEDED":
            raise SubmissionError(f"local {name} run {summary.state} at {summary.failed_task}: {summary.error}")
        return summary.run_dir

    return submit


def cluster_submitter(host: str, experiment: str | None = None) -> Submitter:
    """Submit to the Kubeflow Pipelines API at `host`; the run id is KFP's."""

    def submit(name: str, arguments: Mapping[str, Any]) -> str:
        from pipelines.runner import submit as kfp_submit

        return kfp_submit(name, arguments, host=host, experiment=experiment,
                          run_name=f"aurora-{name}-{arguments['variant']}-drift-{time.strftime('%Y%m%d-%H%M%S')}")

    return submit


@dataclass(frozen=True)
class Retry:
    attempts: int = 3
    backoff_s: float = 30.0
    """Wait before the second attempt; doubled before each later one."""


def submit_with_retry(submitter: Submitter, name: str, arguments: Mapping[str, Any], retry: Retry,
                      sleep: Callable[[float], None] = time.sleep) -> tuple[str | None, list[dict[str, Any]]]:
    """(run id or None, one record per attempt)."""
    attempts = []
    for k in range(retry.attempts):
        if k:
            sleep(retry.backoff_s * 2 ** (k - 1))
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            run_id = str(submitter(name, arguments))
        except Exception as e:  # any failure of the submitter is reported and retried
            attempts.append({"time": started, "error": f"{type(e).__name__}: {e}"})
            continue
        attempts.append({"time": started, "run_id": run_id})
        return run_id, attempts
    return None, attempts


@dataclass
class CheckResult:
    decision: Decision
    drift: DriftResult
    skill: SkillVerdict | None = None

    def describe(self) -> str:
        d, r = self.decision, self.drift
        lines = [f"{d.variant}: window {d.window}: {d.action} ({d.reason})",
                 f"  feed: {'shifted' if r.drifted else 'no shift'}; drifted columns {len(r.drifted_columns)}/"
                 f"{len(r.columns)}; variables over their threshold: {', '.join(r.drifted_variables) or 'none'}"]
        lines += [f"  - {reason.describe()}" for reason in r.reasons]
        if self.skill is not None:
            lines.append(f"  live skill: {'degraded' if self.skill.degraded else 'not degraded'}: {self.skill.detail}")
        if d.episode:
            lines.append(f"  episode {d.episode}")
        if r.artifacts.get("html"):
            lines.append(f"  report: {r.artifacts['html']}")
        return "\n".join(lines)


def _publish(variant: str, result: DriftResult, decision: Decision) -> None:
    telemetry.DRIFT_SHARE.labels(variant).set(result.share)
    telemetry.DRIFT_DETECTED.labels(variant).set(1.0 if result.drifted else 0.0)
    for var, share in result.variable_shares.items():
        telemetry.DRIFT_VARIABLE_SHARE.labels(variant, var).set(share)
    telemetry.DRIFT_CHECKS.labels(variant, decision.action).inc()
    telemetry.DRIFT_LAST_CHECK.labels(variant).set_to_current_time()


def check(
    variant: str, data: Sequence[str], reference: Sequence[str] | Summaries, *, state_uri: str,
    submitter: Submitter, policy: DriftPolicy = DriftPolicy(), rule: DriftRule = DriftRule(),
    out: str | None = None, report_limit: int = 24, retry: Retry = Retry(),
    retrain_arguments: Mapping[str, Any] | None = None, variables: Sequence[str] | None = None,
    skill_store: str | None = None, skill_rule: SkillRule = SkillRule(),
    now: datetime | None = None, sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    """One policy check of the window in `data` against `reference`.

    Bad input (missing reference, mismatched grids, units or variables, an empty window, no
    hour in common) raises a `DataError` before the state is touched: no decision, no
    trigger. With `skill_store` (the live-skill JSON lines of `monitor skill`), live skill up
    to the window's last valid time is judged too (`live_skill.judge`). A drifted window's report goes to
    `out/<variant>/<time>/`. The retrain pipeline gets `{"data": data, **retrain_arguments,
    "variant": variant}`: the checked window unless `retrain_arguments` names other data.
    """
    if not isinstance(reference, Summaries) and not reference:
        raise DataError("missing reference: give the reference window's files or its .summaries.json "
                        "(e.g. of the training period)")
    now = now or datetime.now(timezone.utc)
    state = PolicyState.load(state_uri, variant)
    ref = reference if isinstance(reference, Summaries) else summarise(reference, variables=variables)
    cur = summarise(data, variables=variables)
    result = compare(ref, cur, rule)
    skill = judge(read_store(skill_store), variant, cur.table.index[-1], skill_rule) if skill_store else None
    if out is not None and result.drifted:  # quiet windows leave only their decision
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        save(result, ref, cur, f"{str(out).rstrip('/')}/{variant}/{stamp}", report_limit)
    evidence = result.evidence()
    if skill is not None:
        evidence["skill"] = {"degraded": skill.degraded, "detail": skill.detail, "ratios": skill.ratios}
    decision = decide_window(state, policy, drifted=result.drifted, window=cur.window(), evidence=evidence, now=now,
                      skill_degraded=skill is not None and skill.degraded)
    if decision.action == TRIGGER:
        arguments = {"data": list(data), **(retrain_arguments or {}), "variant": variant}
        run_id, attempts = submit_with_retry(submitter, "retrain", arguments, retry, sleep)
        record_submission(state, decision, run_id=run_id, attempts=attempts, now=now)
        telemetry.RETRAIN_SUBMISSIONS.labels(variant, "submitted" if decision.action == SUBMITTED else "failed").inc()
    state.save(state_uri)
    _publish(variant, result, decision)
    return CheckResult(decision, result, skill)
