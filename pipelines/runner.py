"""Run a pipeline here with KFP's local runner, compile it, or submit it to a cluster.

Local runs use `kfp.local.SubprocessRunner(use_venv=False)`: every task is a subprocess of
this Python environment, no Docker, no pip installs (the components are built with
`install_kfp_package=False`). Outputs land under `<workdir>/pipeline_root`, the task cache
under `<workdir>/cache`, every task's own log (KFP's executor output) in `<workdir>/pipeline.log`,
while the terminal shows one line per step with its status and time: a run killed part-way and started again with the same arguments
takes the finished steps from the cache (validate always re-runs: it hashes the data,
and that hash keys the cache of every step after it).

On a cluster the same pipeline is compiled to KFP's IR YAML and submitted with
`kfp.Client`, once or as a recurring run (a nightly evaluation, a weekly retraining).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sqlite3  # noqa: F401 (before eccodes can load its own libsqlite3: see components/steps.py)
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from model_code.errors import DataError
from pipelines.definitions import PIPELINES, build

DEFAULT_WORKDIR = "outputs/pipelines"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FAILED_TASK = re.compile(r"Inner task failed: (.+?)\.?$")


@dataclass
class RunSummary:
    """What a local run did: its state, the task that failed, metrics, reports and the registry."""

    pipeline: str
    variant: str
    state: str
    """`SUCCEEDED` or `FAILED`."""
    seconds: float
    run_dir: str
    """This run's outputs: one directory per task (`<run_dir>/<task>/<output>`)."""
    failed_task: str | None = None
    error: str | None = None
    """The failing task's own error (e.g. the validation report's errors)."""
    log: str | None = None
    """Every task's log, in full."""
    steps: list[tuple[str, str, float | None]] = field(default_factory=list)
    """(task, SUCCESS / FAILURE / cached / skipped, seconds) in the order the steps ended."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """Parameter outputs by `task.output` (e.g. `register.Output` the version)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Metrics artifacts by `task.metric` (e.g. `evaluate.rmse/u10/1h`)."""
    reports: dict[str, str] = field(default_factory=dict)
    """Report files (HTML, Markdown, JSON) by `task.output`."""
    cached: list[str] = field(default_factory=list)
    """Tasks whose outputs came from the cache."""

    @property
    def registered_version(self) -> str | None:
        return self.outputs.get("register.Output")

    @property
    def promoted(self) -> bool:
        return "promote.Output" in self.outputs

    def describe(self) -> str:
        lines = [f"pipeline {self.pipeline} ({self.variant}): {self.state} in {self.seconds:.1f} s",
                 f"  outputs: {self.run_dir}"] + ([f"  log: {self.log}"] if self.log else [])
        if self.failed_task:
            lines.append(f"  failed at: {self.failed_task}")
        if self.error:
            lines += ["  error: " + line for line in self.error.splitlines()]
        if self.cached:
            lines.append(f"  from cache: {', '.join(self.cached)}")
        for name, value in sorted(self.metrics.items()):
            lines.append(f"  {name} = {value:.6g}")
        for name, path in sorted(self.reports.items()):
            lines.append(f"  report {name}: {path}")
        if self.registered_version is not None:
            promoted = "promoted to champion" if self.promoted else "not promoted (a gate failed)"
            lines.append(f"  registered: aurora-{self.variant} version {self.registered_version}, {promoted}")
        gates = Path(self.reports.get("evaluate.scores", "")) / "gates.json"
        if self.registered_version is not None and not self.promoted and gates.is_file():
            for reason in json.loads(gates.read_text()).get("reasons", [])[:8]:
                lines.append(f"    gate: {reason}")
        return "\n".join(lines)


_STARTED = re.compile(r"Executing task '?([\w-]+)'?")
_FINISHED = re.compile(r"Task '?([\w-]+)'? finished with status (\w+)")
_CACHED = re.compile(r"Task '?([\w-]+)'? cache hit")
_SKIPPED = re.compile(r"Skipping (?:conditional )?task '?([\w-]+)'?(?: \((.+)\))?")


class _StepLog(io.TextIOBase):
    """Takes everything the run prints: writes it to the log file, keeps it (to find a failed
    task's error), and tells the terminal one line per step as each ends."""

    def __init__(self, log, terminal) -> None:
        self.log, self.terminal, self.lines = log, terminal, []
        self.steps: list[tuple[str, str, float | None]] = []
        self._started: dict[str, float] = {}
        self._partial = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.lines.append(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self._read(_ANSI.sub("", line))
        return len(text)

    def _read(self, line: str) -> None:
        if found := _STARTED.search(line):
            self._started[found.group(1)] = time.perf_counter()
        elif found := _FINISHED.search(line):
            name = found.group(1)
            start = self._started.pop(name, None)
            self._step(name, found.group(2), None if start is None else time.perf_counter() - start)
        elif found := _CACHED.search(line):
            self._step(found.group(1), "cached", None)
        elif found := _SKIPPED.search(line):
            self._step(found.group(1), "skipped", None, found.group(2))

    def _step(self, name: str, status: str, seconds: float | None, why: str | None = None) -> None:
        self.steps.append((name, status, seconds))
        if self.terminal is not None:
            took = f"{seconds:6.1f} s" if seconds is not None else (f"({why})" if why else "")
            self.terminal.write(f"  {name:<16} {status:<8} {took}\n")
            self.terminal.flush()

    def flush(self) -> None:
        self.log.flush()


def run_local(name: str, arguments: Mapping[str, Any], *, workdir: str | Path | None = None,
              caching: bool = True, quiet: bool = False) -> RunSummary:
    """Run pipeline `name` with `arguments` (`variant` and `data` at least) on this machine.

    Task logs go to `<workdir>/pipeline.log`; stdout gets one line per step as it ends
    (`quiet`: nothing). Never raises for a failed task: the summary says which one failed and why.
    """
    from kfp import local

    arguments = dict(arguments)
    variant = arguments.get("variant")
    if not variant:
        raise DataError(f"the {name} pipeline needs arguments['variant'] (e.g. medium-range)")
    if not arguments.get("data"):
        raise DataError(f"the {name} pipeline needs arguments['data']: data files or s3:// URIs")
    arguments["data"] = [_absolute(p) for p in arguments["data"]]
    if not arguments.get("tracking_uri"):
        from adapters.registry import tracking_uri

        arguments["tracking_uri"] = tracking_uri()  # every task agrees with this process

    root = Path(workdir or DEFAULT_WORKDIR).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if name == "evaluation" and not arguments.get("skill_history"):
        arguments["skill_history"] = str(root / "skill" / f"{variant}.jsonl")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "pipeline_root"),
               raise_on_error=True, enable_caching=caching, cache_root=str(root / "cache"))
    pipeline = build(name, variant, retries=False)
    before = set((root / "pipeline_root").glob("*"))
    log_path = root / "pipeline.log"
    start = time.perf_counter()
    state, failed, error = "SUCCEEDED", None, None
    with open(log_path, "a") as log, warnings.catch_warnings():
        tee = _StepLog(log, None if quiet else sys.stdout)
        # Resources, node selectors and tolerations are cluster settings the local runner ignores.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        with contextlib.redirect_stdout(tee), _captured_logs(tee):
            try:
                pipeline(**arguments)
            except RuntimeError as e:
                message = _ANSI.sub("", str(e))
                found = _FAILED_TASK.search(message)
                if not found:
                    raise
                state, failed = "FAILED", found.group(1).split(" inside ")[0].strip("'")
                error = _task_error(tee.lines)
    seconds = time.perf_counter() - start
    runs = sorted(set((root / "pipeline_root").glob("*")) - before)
    run_dir = runs[-1] if runs else root / "pipeline_root"
    summary = RunSummary(name, variant, state, seconds, str(run_dir), failed, error, str(log_path), tee.steps)
    _collect(run_dir, summary)
    summary.cached = [task for task, status, _ in tee.steps if status == "cached"]
    return summary


@contextlib.contextmanager
def _captured_logs(tee: _StepLog):
    """Take KFP's orchestrator logs (cache hits, skipped steps, retries) too, which it logs at
    INFO on the root logger outside its own log context."""
    import logging

    root = logging.getLogger()
    handler, level = logging.StreamHandler(tee), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)




def _task_error(lines: list[str]) -> str | None:
    """The last exception line a task printed (its traceback's `Type: message`), with any
    indented problem lines that follow it (`DataError` lists each finding)."""
    text = _ANSI.sub("", "".join(lines)).splitlines()
    pattern = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Diverged|Stopped|Loss))(?::\s*(.*))?$")
    for i in range(len(text) - 1, -1, -1):
        found = pattern.match(text[i])
        if found and not text[i].lstrip().startswith(("raise ", "File ")):
            rest = []
            for line in text[i + 1:]:
                if not line.strip() or not line.startswith((" ", "\t", "-")) or "Task " in line:
                    break
                rest.append(line.strip())
            return "\n".join([f"{found.group(1)}: {found.group(2) or ''}".strip(), *rest])
    return None


def _collect(run_dir: Path, summary: RunSummary) -> None:
    """Read the tasks' parameter outputs, metrics and reports from the run directory."""
    for out in sorted(run_dir.glob("*/executor_output.json")):
        task = out.parent.name
        try:
            doc = json.loads(out.read_text())
        except (OSError, ValueError):
            continue
        for key, value in (doc.get("parameterValues") or {}).items():
            summary.outputs[f"{task}.{key}"] = value
        for key, artifacts in (doc.get("artifacts") or {}).items():
            for a in artifacts.get("artifacts", []):
                if key == "metrics":
                    summary.metrics.update({f"{task}.{k}": float(v) for k, v in (a.get("metadata") or {}).items()
                                            if isinstance(v, (int, float))})
    for pattern in ("*/report*", "*/scorecard", "*/scores", "*/outcome"):
        for path in sorted(run_dir.glob(pattern)):
            summary.reports[f"{path.parent.name}.{path.name}"] = str(path)


def _absolute(uri: str) -> str:
    return uri if "://" in str(uri) else str(Path(uri).resolve())


# ---- cluster ------------------------------------------------------------------------------


def compile_pipeline(name: str, out_path: str | Path, *, variant: str = "medium-range", tuning: str = "optuna") -> str:
    """Write pipeline `name` for `variant` as KFP IR YAML to `out_path`; return the path."""
    from kfp import compiler

    from model_code.storage import write_atomic

    if name not in PIPELINES:
        raise DataError(f"unknown pipeline {name!r}; expected one of {PIPELINES}")
    with tempfile.TemporaryDirectory() as scratch:  # the compiler insists on a .yaml name
        package = Path(scratch) / "pipeline.yaml"
        compiler.Compiler().compile(build(name, variant, tuning=tuning), package_path=str(package))
        return write_atomic(str(out_path), lambda tmp: shutil.copyfile(package, tmp))


def _client(host: str, client=None):
    if client is not None:
        return client
    import kfp

    return kfp.Client(host=host)


SERVICE_ACCOUNT = "aurora-pipeline-runner"
"""The account runs execute as on a cluster: the base manifests' pipeline runner, with the rights
its tasks need (manifests/base) and no more."""


def submit(name: str, arguments: Mapping[str, Any], *, host: str, experiment: str | None = None,
           run_name: str | None = None, variant: str | None = None, tuning: str = "optuna",
           pipeline_root: str | None = None, service_account: str = SERVICE_ACCOUNT, client=None) -> str:
    """Submit one run of pipeline `name` to the KFP API at `host`; return the run id."""
    variant = variant or arguments.get("variant") or "medium-range"
    kfp_client = _client(host, client)
    result = kfp_client.create_run_from_pipeline_func(
        build(name, variant, tuning=tuning), arguments={**arguments, "variant": variant},
        run_name=run_name or f"aurora-{name}-{variant}-{time.strftime('%Y%m%d-%H%M%S')}",
        experiment_name=experiment or f"aurora-{variant}", pipeline_root=pipeline_root,
        service_account=service_account)
    return result.run_id


def schedule(name: str, arguments: Mapping[str, Any], *, host: str, cron: str, experiment: str | None = None,
             job_name: str | None = None, variant: str | None = None, tuning: str = "optuna",
             max_concurrency: int = 1, pipeline_root: str | None = None, service_account: str = SERVICE_ACCOUNT,
             client=None, workdir: str | Path | None = None) -> str:
    """Create a recurring run of pipeline `name` on `cron` (KFP's six fields, seconds first,
    e.g. `0 0 2 * * *` daily at 02:00); return the recurring run's id.

    `max_concurrency` 1: a run that overruns delays the next rather than racing it for the
    registry aliases.
    """
    variant = variant or arguments.get("variant") or "medium-range"
    if len(cron.split()) != 6:
        raise DataError(f"--schedule takes KFP's six cron fields (seconds first), e.g. '0 0 2 * * *'; got {cron!r}")
    kfp_client = _client(host, client)
    exp = kfp_client.create_experiment(experiment or f"aurora-{variant}")
    package = Path(workdir or DEFAULT_WORKDIR) / f"aurora-{name}-{variant}.yaml"
    package.parent.mkdir(parents=True, exist_ok=True)
    compile_pipeline(name, package, variant=variant, tuning=tuning)
    job = kfp_client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name or f"aurora-{name}-{variant}",
        cron_expression=cron, max_concurrency=max_concurrency, no_catchup=True,
        params={**arguments, "variant": variant}, pipeline_package_path=str(package), enabled=True,
        pipeline_root=pipeline_root, service_account=service_account)
    return job.recurring_run_id
