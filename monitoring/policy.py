"""When to retrain: on degraded live skill, or on a feed shift sustained over N windows; once
per episode, after a cool-down.

Each checked window brings two signals: whether the feed's distribution shifted
(`monitoring.drift`) and whether the served model's live skill degraded
(`monitoring.live_skill.judge`). An episode starts with the first window that has either and
ends with the first window that has neither. It fires (asks for a retraining run) once:
at once when skill degraded, or when it has lasted `sustained_windows` windows, so one
windowed test alone never retrains; and only when the last run started at least `cooldown`
ago. A fired episode never fires again, however long it lasts. A submission that failed
leaves the episode unhandled, so the next check tries again. The state lives in one JSON
file (path or s3://), written atomically, with every decision and its evidence.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from model_code.errors import DataError
from model_code.storage import is_s3, local_copy, write_atomic

DECISIONS_KEPT = 500
"""Older decisions are dropped from the state file; episodes are all kept."""

# Actions a decision can take.
NO_DRIFT = "no_drift"          # neither a feed shift nor degraded skill
PENDING = "pending"            # a feed shift, not yet sustained over enough windows
COOLDOWN = "cooldown"          # sustained shift or degraded skill, but the last run is too recent
TRIGGER = "trigger"            # submit a retraining run now
HANDLED = "handled"            # this episode already has its run
SUBMITTED = "submitted"        # outcome of TRIGGER: the run was accepted
SUBMIT_FAILED = "submit_failed"  # outcome of TRIGGER: every attempt failed


@dataclass(frozen=True)
class DriftPolicy:
    sustained_windows: int = 2
    """Consecutive windows with a feed shift before an episode fires (degraded skill fires at once)."""
    cooldown: timedelta = timedelta(hours=24)
    """Least time between two triggered runs."""

    def __post_init__(self):
        if self.sustained_windows < 1:
            raise DataError(f"sustained_windows must be at least 1, got {self.sustained_windows}")
        if self.cooldown < timedelta(0):
            raise DataError(f"cooldown must not be negative, got {self.cooldown}")


@dataclass
class Episode:
    id: str
    start: str
    """When the episode's first window was checked (UTC, ISO 8601)."""
    windows: list[str] = field(default_factory=list)
    """Its windows (`first .. last` valid time), each with a feed shift or degraded skill."""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    handled: bool = False
    run_id: str | None = None
    triggered_at: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """Every submission attempt: time, error or run id."""
    end: str | None = None


@dataclass
class Decision:
    time: str
    variant: str
    window: str
    drifted: bool
    """The feed's distribution shifted in this window."""
    action: str
    reason: str
    episode: str | None = None
    skill_degraded: bool = False
    """The served model's live skill degraded over this window."""
    evidence: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None


@dataclass
class PolicyState:
    """The persistent memory of the trigger for one variant."""

    variant: str
    episodes: list[Episode] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def open_episode(self) -> Episode | None:
        return self.episodes[-1] if self.episodes and self.episodes[-1].end is None else None

    @property
    def last_trigger(self) -> datetime | None:
        times = [_parse(e.triggered_at) for e in self.episodes if e.triggered_at]
        return max(times) if times else None

    @classmethod
    def load(cls, uri: str, variant: str) -> PolicyState:
        """The state at `uri`, or a fresh one when there is none yet."""
        if not is_s3(uri) and not Path(uri).exists():
            return cls(variant)
        try:
            with local_copy(uri) as path:
                doc = json.loads(Path(path).read_text())
        except DataError as e:
            if "not found" in e.message:
                return cls(variant)
            raise
        except json.JSONDecodeError as e:
            raise DataError(f"state file is not valid JSON ({e}); fix or remove it", source=str(uri)) from None
        if doc.get("variant") != variant:
            raise DataError(f"state file belongs to variant '{doc.get('variant')}', not '{variant}'; "
                            "use one state file per variant", source=str(uri))
        return cls(variant, [Episode(**e) for e in doc.get("episodes", [])],
                   [Decision(**d) for d in doc.get("decisions", [])])

    def save(self, uri: str) -> str:
        doc = {"variant": self.variant, "episodes": [asdict(e) for e in self.episodes],
               "decisions": [asdict(d) for d in self.decisions[-DECISIONS_KEPT:]]}
        return write_atomic(uri, lambda p: Path(p).write_text(json.dumps(doc, indent=1, allow_nan=True)))


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse(s: str) -> datetime:
    return datetime.fromisoformat(s)


def decide_window(state: PolicyState, policy: DriftPolicy, *, drifted: bool, window: str,
           evidence: dict[str, Any], now: datetime, skill_degraded: bool = False) -> Decision:
    """Update `state` with one checked window and return what to do (recorded in `state`).

    `drifted`: the feed shifted in this window; `skill_degraded`: live skill degraded over it.
    A TRIGGER decision is provisional: call `record_submission` with the outcome.
    """
    decision = Decision(_iso(now), state.variant, window, drifted, NO_DRIFT, "", evidence=evidence,
                        skill_degraded=skill_degraded)
    episode = state.open_episode
    if not (drifted or skill_degraded):
        decision.reason = "no feed shift and no skill loss"
        if episode is not None:
            episode.end = _iso(now)
            decision.episode = episode.id
            decision.reason += f"; episode {episode.id} ended"
        state.decisions.append(decision)
        return decision
    if episode is None:
        episode = Episode(f"ep-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", _iso(now))
        state.episodes.append(episode)
    if window not in episode.windows:  # a window checked twice counts once
        episode.windows.append(window)
        episode.evidence.append({"time": _iso(now), **evidence})
    decision.episode = episode.id
    cause = ("live skill degraded" if skill_degraded
             else f"feed shift sustained over {len(episode.windows)} windows")
    last = state.last_trigger
    if episode.handled:
        decision.action = HANDLED
        decision.reason = f"episode already handled by run {episode.run_id}"
        decision.run_id = episode.run_id
    elif not skill_degraded and len(episode.windows) < policy.sustained_windows:
        decision.action = PENDING
        decision.reason = (f"feed shift in {len(episode.windows)} of the {policy.sustained_windows} consecutive "
                           "windows the policy needs")
    elif last is not None and now - last < policy.cooldown:
        decision.action = COOLDOWN
        decision.reason = (f"{cause}, but the last run started at {_iso(last)}; the cool-down "
                           f"of {policy.cooldown} ends at {_iso(last + policy.cooldown)}")
    else:
        decision.action = TRIGGER
        decision.reason = cause
    state.decisions.append(decision)
    return decision


def record_submission(state: PolicyState, decision: Decision, *, run_id: str | None,
                      attempts: list[dict[str, Any]], now: datetime) -> Decision:
    """Mark the episode of a TRIGGER decision handled (a run id) or not (every attempt failed)."""
    episode = next(e for e in state.episodes if e.id == decision.episode)
    episode.attempts.extend(attempts)
    if run_id is None:
        decision.action = SUBMIT_FAILED
        decision.reason += f"; submission failed after {len(attempts)} attempt(s): {attempts[-1].get('error')}"
        return decision
    episode.handled, episode.run_id, episode.triggered_at = True, run_id, _iso(now)
    decision.action, decision.run_id = SUBMITTED, run_id
    decision.reason += f"; retraining run {run_id} submitted"
    return decision
