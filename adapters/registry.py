"""The MLflow model registry: one registered model per variant, versions, aliases, gates.

Registered model `aurora-<variant>`; each version is a pyfunc model (`adapters.pyfunc_model`)
holding `artifacts/checkpoint.safetensors`, the evaluation's `metrics.json` and the training
config, and carries tags that say what it was made from. Aliases: `challenger` (the latest
registered version) and `champion` (the version that serves).

Every operation orders its writes so that a process killed between two of them leaves the
registry consistent (docs/registry.md): a version appears with all its tags in one
transaction, after its artifacts are uploaded; gate results are recorded before any alias
moves; an alias move is always the last write, and one write.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from model_code.checkpoint import FORMAT as CHECKPOINT_FORMAT
from model_code.errors import DataError
from model_code.evaluation.regions import WHOLE_GRID
from model_code.storage import content_hash, data_hash, local_copy
from model_code.variants import get_variant
from adapters import pyfunc_model
from adapters.gates import (
    ALL_LEADS, MODEL, Gate, GateReport, default_gates, gate_matches, judge, load_gates, read_scores,
)

CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS_CHAMPION = "previous_champion"
"""Version tag set at promotion: the champion this version replaced (`none` for the first)."""
MAX_TAG_CHARS = 100_000  # MLflow's limit on a model version tag value


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, or a sqlite store in the working directory (`mlruns.db`)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def client() -> MlflowClient:
    uri = tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_name(variant: str) -> str:
    return get_variant(variant).model_name


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a sqlite store: `<its directory>/mlartifacts/<experiment>`; elsewhere the server's."""
    if not uri.startswith("sqlite:///"):
        return None
    return str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / experiment)


# ---------------------------------------------------------------- what a version is made from

def code_version() -> str:
    """`0.1.0+g<commit>[.dirty]` from a git checkout, or the package version alone (images)."""
    base = package_version("aurora-mlops")
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+g{commit}{'.dirty' if dirty else ''}"


def _checkpoint_metadata(path: Path, uri: str) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:  # metadata only: no need to import torch
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"not a readable safetensors checkpoint ({e})", source=uri) from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"checkpoint metadata has format {metadata.get('format')!r}; expected "
                        f"{CHECKPOINT_FORMAT!r}", source=uri)
    return metadata


def _config_text(config: str | Path | Mapping[str, Any]) -> str:
    if isinstance(config, Mapping):
        return yaml.safe_dump(dict(config), sort_keys=False)
    with local_copy(str(config)) as path:
        return Path(path).read_text()


def _label(record: Mapping[str, Any]) -> str:
    """`rmse.z500` / `rmse.t2m.coastal`: a score's name in metric keys and tags."""
    level = record.get("level")
    name = f"{record['metric']}.{record['variable']}{'' if level is None else f'{float(level):g}'}"
    return name if record.get("region", "global") in WHOLE_GRID else f"{name}.{record['region']}"


def headline_metrics(records: Sequence[Mapping[str, Any]], gates: Sequence[Gate]) -> dict[str, float]:
    """The challenger's scores on the gates' targets: `{"rmse.z500.72h": 310.2, ...}`."""
    out = {}
    for r in records:
        if r["forecast"] != MODEL or r["value"] is None:
            continue
        lead = float(r["lead_hours"])
        if any(gate_matches(r, g) and (g.lead_hours == ALL_LEADS or lead in g.lead_hours) for g in gates):
            out[f"{_label(r)}.{lead:g}h"] = float(r["value"])
    return out


# ---------------------------------------------------------------- register

def registered_aliases(c: MlflowClient, name: str) -> dict[str, str]:
    """`{alias: version}` of registered model `name`; empty before its first version."""
    try:
        return {a: str(v) for a, v in c.get_registered_model(name).aliases.items()}
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise


def champion_version(variant: str, c: MlflowClient | None = None) -> str | None:
    """The version serving `variant` (its `champion` alias); None before the first promotion."""
    return registered_aliases(c or client(), model_name(variant)).get(CHAMPION)


def _experiment_id(c: MlflowClient, name: str) -> str:
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return c.create_experiment(name, artifact_location=_artifact_location(tracking_uri(), name))
    except MlflowException as e:  # created by a concurrent run in between
        if e.error_code == "RESOURCE_ALREADY_EXISTS":
            return c.get_experiment_by_name(name).experiment_id
        raise


def _ensure_registered_model(c: MlflowClient, name: str, variant: str) -> None:
    try:
        c.create_registered_model(name, tags={"variant": variant},
                                  description=f"Aurora {variant} forecasts (auroraops)")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _existing_version(c: MlflowClient, name: str, pipeline_run_id: str, checkpoint_sha: str) -> str | None:
    """The version an earlier attempt of the same pipeline run registered, if any."""
    found = c.search_model_versions(
        f"name='{name}' and tags.pipeline_run_id='{pipeline_run_id}' "
        f"and tags.checkpoint_sha256='{checkpoint_sha}'")
    return str(found[0].version) if found else None


def _pip_requirements() -> list[str]:
    """Explicit, so MLflow does not infer them (seconds per model; docs/registry.md)."""
    return [f"{p}=={package_version(p)}" for p in ("aurora-mlops", "mlflow", "torch", "microsoft-aurora")]


def register(
    checkpoint: str,
    *,
    variant: str,
    metrics_json: str | Mapping[str, Any] | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    data_paths: Sequence[str] = (),
    pipeline_run_id: str | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Register `checkpoint` as a new version of `aurora-<variant>` and make it `challenger`.

    `metrics_json` is the evaluation's scores (`Scores.to_json`); the challenger's scores on
    the variant's gate targets become `metric.*` tags, all of them run metrics (step = lead
    hours). `metrics` adds headline numbers of your own (e.g. `val_loss`). Re-running with the
    same `pipeline_run_id` and checkpoint returns the version registered before. Returns the
    version number (as a string, as MLflow gives it).
    """
    spec = get_variant(variant)
    name = model_name(spec.name)
    scores = read_scores(metrics_json) if metrics_json is not None else None
    records = scores["records"] if scores is not None else []
    c = client()
    with tempfile.TemporaryDirectory(prefix="auroraops-register-") as tmp, \
            local_copy(str(checkpoint)) as ckpt_path:
        meta = _checkpoint_metadata(Path(ckpt_path), str(checkpoint))
        if meta["variant"] != spec.name:
            raise DataError(f"checkpoint holds variant '{meta['variant']}', not '{spec.name}'",
                            source=str(checkpoint))
        checkpoint_sha = content_hash(str(ckpt_path))
        if pipeline_run_id and (found := _existing_version(c, name, pipeline_run_id, checkpoint_sha)):
            c.set_registered_model_alias(name, CHALLENGER, found)
            return found

        staged = Path(tmp) / "artifacts"
        staged.mkdir()
        artifacts = {pyfunc_model.CHECKPOINT: staged / "checkpoint.safetensors"}
        _stage(Path(ckpt_path), artifacts[pyfunc_model.CHECKPOINT])
        if scores is not None:
            artifacts[pyfunc_model.METRICS] = staged / "metrics.json"
            artifacts[pyfunc_model.METRICS].write_text(json.dumps(scores, indent=1))
        config_text = _config_text(config) if config is not None else None
        if config_text is not None:
            artifacts["config"] = staged / "config.yaml"
            artifacts["config"].write_text(config_text)

        version_tags = {
            "variant": spec.name,
            "profile": meta.get("profile", ""),
            "checkpoint_sha256": checkpoint_sha,
            "code_version": code_version(),
            "data_hash": data_hash(data_paths) if data_paths else "none",
            "data": json.dumps([str(p) for p in data_paths])[:5000],
            "pipeline_run_id": pipeline_run_id or "none",
            **({"config_sha256": f"sha256:{hashlib.sha256(config_text.encode()).hexdigest()}"}
               if config_text is not None else {}),
            **({"config": config_text} if config_text is not None and len(config_text) <= MAX_TAG_CHARS else {}),
            **{f"metric.{k}": f"{v:.6g}" for k, v in headline_metrics(records, default_gates(spec.name)).items()},
            **{f"metric.{k}": f"{float(v):.6g}" for k, v in (metrics or {}).items()},
            **dict(tags or {}),
        }

        # 1. A run holding the model's files. A crash here leaves a run and no version.
        run = c.create_run(_experiment_id(c, name), run_name=pipeline_run_id,
                           tags={"variant": spec.name, "pipeline_run_id": pipeline_run_id or "none"})
        run_id = run.info.run_id
        _log_scores(c, run_id, records, metrics or {})
        model_dir = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            str(model_dir), python_model=pyfunc_model.__file__, signature=pyfunc_model.SIGNATURE,
            artifacts={k: str(v) for k, v in artifacts.items()}, pip_requirements=_pip_requirements())
        c.log_artifacts(run_id, str(model_dir), "model")
        c.set_terminated(run_id, "FINISHED")

    # 2. The version and all its tags, in one transaction, once every file is in place.
    _ensure_registered_model(c, name, spec.name)
    source = f"{c.get_run(run_id).info.artifact_uri}/model"
    version = str(c.create_model_version(name, source, run_id, tags=version_tags).version)
    # 3. The alias last: until it moves, `challenger` still names the previous version.
    c.set_registered_model_alias(name, CHALLENGER, version)
    return version


def _stage(src: Path, dst: Path) -> None:
    """Put `src` at `dst` under the artifact name MLflow stores; a hard link avoids a copy.

    (MLflow refuses symbolic links that leave the artifact directory.)
    """
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dst)


def _log_scores(c: MlflowClient, run_id: str, records, metrics: Mapping[str, float]) -> None:
    """The challenger's scores as run metrics, one curve per score over lead hours (the step)."""
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    rows = [Metric(_label(r), float(r["value"]), now, int(round(float(r["lead_hours"]))))
            for r in records if r["forecast"] == MODEL and r["value"] is not None]
    rows += [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(rows), 1000):  # MLflow's limit per batch
        c.log_batch(run_id, metrics=rows[i:i + 1000])


# ---------------------------------------------------------------- promote and roll back

@dataclass(frozen=True)
class Promotion:
    """What `promote` did: `promoted` is True only if `version` is champion now."""

    variant: str
    version: str
    promoted: bool
    previous_champion: str | None
    report: GateReport

    @property
    def reasons(self) -> list[str]:
        return self.report.reasons


def _scores_for(variant: str, scores) -> dict[str, Any]:
    data = read_scores(scores)
    if data["variant"] not in (None, variant):
        raise DataError(f"the scores are of variant '{data['variant']}', not '{variant}'")
    return data


def gate_list(variant: str, gates: Sequence[Gate] | str | Path | None = None) -> tuple[Gate, ...]:
    """`gates` as given (a list, or a gates file), or the variant's defaults."""
    if gates is None:
        return default_gates(variant)
    return load_gates(gates) if isinstance(gates, (str, Path)) else tuple(gates)


def verdict(variant: str, scores, gates: Sequence[Gate] | str | Path | None = None) -> GateReport:
    """Judge scores on the gates (default: the variant's) against the current champion,
    without writing anything."""
    spec = get_variant(variant)
    champion = champion_version(spec.name)
    return judge(_scores_for(spec.name, scores), gate_list(spec.name, gates), champion=champion)


def check_subject(subject: Mapping[str, Any], *, name: str, version: str, checkpoint_sha256: str,
                  champion: str | None) -> None:
    """Refuse scores that are not about `version`, or were made against another champion.

    `subject` is what the evaluation recorded (`Scores.subject`): the scored checkpoint's
    digest (and registry version, when it was scored by one), and the champion version it
    was compared with (none before the first).
    """
    model = dict(subject.get("model") or {})
    if not model.get("checkpoint_sha256"):
        raise DataError(f"the scores do not say which model they score (no subject.model.checkpoint_sha256); "
                        f"score {name} version {version} with `auroraops evaluate --checkpoint "
                        f"models:/{name}/{version}` or the training pipeline")
    if model.get("version") not in (None, version):
        raise DataError(f"the scores are of {name} version {model['version']}, not version {version}")
    if model["checkpoint_sha256"] != checkpoint_sha256:
        raise DataError(f"the scores are of checkpoint {model['checkpoint_sha256']}; {name} version {version} "
                        f"holds {checkpoint_sha256}")
    against = (subject.get("champion") or {}).get("version")
    if against != champion:
        raise DataError(f"the scores were made against champion {against or 'none'}, but the champion of {name} "
                        f"is {champion or 'none'} now: evaluate version {version} against it again")


def _gates_tag(report: GateReport) -> str:
    text = report.to_json()
    if len(text) <= MAX_TAG_CHARS:
        return text
    failed = [c for c in report.comparisons if not c.passed]
    return GateReport(report.passed, tuple(failed)).to_json()[:MAX_TAG_CHARS]


def promote(variant: str, version: str | int, scores, *,
            gates: Sequence[Gate] | str | Path | None = None) -> Promotion:
    """Make `version` champion if, and only if, its scores are about it, were made against
    the current champion (`check_subject`), and pass every gate.

    Writes, in order: the gate results (`gates`, with the verdict's subject, then
    `gates_passed`), the champion it replaces (`previous_champion`), and last the `champion`
    alias, in one call. A version that fails keeps its metrics and tags but never gets the alias.
    """
    spec = get_variant(variant)
    name, version = model_name(spec.name), str(version)
    c = client()
    mv = _model_version(c, name, version)
    before = champion_version(spec.name, c)
    if before == version:
        return Promotion(spec.name, version, True, None, GateReport(True))
    doc = _scores_for(spec.name, scores)
    check_subject(doc["subject"], name=name, version=version, checkpoint_sha256=mv.tags.get("checkpoint_sha256", ""),
                  champion=before)
    report = judge(doc, gate_list(spec.name, gates), champion=before)

    c.set_model_version_tag(name, version, "gates", _gates_tag(report))
    c.set_model_version_tag(name, version, "gates_passed", str(report.passed).lower())
    if not report.passed:
        return Promotion(spec.name, version, False, before, report)
    c.set_model_version_tag(name, version, PREVIOUS_CHAMPION, before or "none")
    now = champion_version(spec.name, c)
    if now != before:
        raise DataError(f"{name}: the champion changed from {before} to {now} while version {version} "
                        "was being judged; evaluate against the new champion and promote again")
    c.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(spec.name, version, True, before, report)


def rollback(variant: str) -> str:
    """Give `champion` back to the version the current champion replaced; returns it."""
    spec = get_variant(variant)
    name = model_name(spec.name)
    c = client()
    current = champion_version(spec.name, c)
    if current is None:
        raise DataError(f"{name} has no champion to roll back")
    previous = _model_version(c, name, current).tags.get(PREVIOUS_CHAMPION, "none")
    if previous == "none":
        raise DataError(f"{name} version {current} was the first champion; there is nothing to roll back to")
    _model_version(c, name, previous)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    c.set_model_version_tag(name, current, "rolled_back", json.dumps({"to": previous, "at": stamp}))
    c.set_registered_model_alias(name, CHAMPION, previous)
    return previous


def _model_version(c: MlflowClient, name: str, version: str):
    try:
        return c.get_model_version(name, version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise DataError(f"{name} has no version {version}") from None
        raise


# ---------------------------------------------------------------- what a user checks

def checkpoint_uri(c: MlflowClient, name: str, version: str) -> str:
    """Where the artifact store keeps a version's weights (immutable: a new version gets a new run)."""
    return f"{c.get_model_version_download_uri(name, version).rstrip('/')}/artifacts/checkpoint.safetensors"


def _version_scores(c: MlflowClient, name: str, version: str) -> dict[str, Any] | None:
    """The evaluation a version was registered with (its `metrics.json` artifact), or None."""
    location = c.get_model_version_download_uri(name, version).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="auroraops-scores-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/artifacts/metrics.json",
                                                       dst_path=tmp, tracking_uri=tracking_uri())
        except (MlflowException, OSError):
            return None
        return read_scores(path)


def score_table(records: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("rmse", "mae", "acc", "crps"),
                ) -> list[dict[str, Any]]:
    """Whole-grid scores side by side: one row per (variable, level, metric, lead) with a
    column per forecast (`model`, `persistence`, `climatology`, `champion`, ...)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for r in records:
        if r["metric"] not in metrics or r["region"] not in WHOLE_GRID or r.get("threshold"):
            continue
        key = (r["variable"], r.get("level"), r["region"], r["metric"], float(r["lead_hours"]))
        row = rows.setdefault(key, dict(zip(("variable", "level", "region", "metric", "lead_hours"), key)))
        row[r["forecast"]] = r["value"]
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1] or -1, k[3], k[4]))]


def describe(variant: str) -> dict[str, Any]:
    """The champion and the challenger of `aurora-<variant>`, as a user checks a verdict:
    version, checkpoint URI and digest, the verdict recorded at promotion, and the held-out
    scores the version was registered with, beside the baselines'."""
    spec = get_variant(variant)
    name = model_name(spec.name)
    c = client()
    aliases = registered_aliases(c, name)
    out: dict[str, Any] = {"name": name, "tracking_uri": tracking_uri()}
    for alias in (CHAMPION, CHALLENGER):
        version = aliases.get(alias)
        if version is None:
            out[alias] = None
            continue
        mv = _model_version(c, name, version)
        scores = _version_scores(c, name, version)
        gates = json.loads(mv.tags["gates"]) if "gates" in mv.tags else None
        out[alias] = {
            "version": version,
            "checkpoint_uri": checkpoint_uri(c, name, version),
            "checkpoint_sha256": mv.tags.get("checkpoint_sha256"),
            "gates_passed": {"true": True, "false": False}.get(mv.tags.get("gates_passed", "")),
            "verdict": None if gates is None else {"subject": gates.get("subject"), "comparisons": gates.get("comparisons")},
            "previous_champion": mv.tags.get(PREVIOUS_CHAMPION),
            "subject": scores["subject"] if scores else None,
            "notes": scores["notes"] if scores else [],
            "scores": score_table(scores["records"]) if scores else [],
        }
    return out


# ---------------------------------------------------------------- from a model URI to weights

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def resolve_version(uri: str) -> tuple[str, str]:
    """(registered model name, version) of `models:/NAME@ALIAS` or `models:/NAME/VERSION`,
    the alias read now; the version must exist."""
    match = _MODEL_URI.match(str(uri))
    if not match:
        raise DataError(f"cannot read model URI '{uri}'; expected models:/NAME@ALIAS or models:/NAME/VERSION")
    c = client()
    name, alias, version = match["name"], match["alias"], match["version"]
    if alias is not None:
        version = registered_aliases(c, name).get(alias)
        if version is None:
            raise DataError(f"{name} has no alias '{alias}'", source=str(uri))
    _model_version(c, name, version)
    return name, version


def version_artifact(uri: str) -> dict[str, str]:
    """What `models:/NAME@ALIAS` or `models:/NAME/VERSION` serves, read now:
    `{"name", "version", "uri", "sha256"}`, `uri` the version's checkpoint in the artifact store
    (immutable: every version has its own run) and `sha256` its digest as registered."""
    name, version = resolve_version(uri)
    mv = _model_version(client(), name, version)
    sha = mv.tags.get("checkpoint_sha256")
    if not sha:
        raise DataError(f"{name} version {version} has no checkpoint_sha256 tag: it cannot be served by digest",
                        source=str(uri))
    return {"name": name, "version": version, "uri": checkpoint_uri(client(), name, version), "sha256": sha}


def resolve_checkpoint(uri: str, dst: str | None = None) -> str:
    """A local checkpoint path for `models:/NAME@ALIAS` or `models:/NAME/VERSION`.

    Downloads the version's `artifacts/checkpoint.safetensors` (into `dst`, or a new temporary
    directory). Any other URI (a path, `s3://...`) is returned unchanged.
    """
    if not str(uri).startswith("models:/"):
        return str(uri)
    name, version = resolve_version(uri)
    try:
        return mlflow.artifacts.download_artifacts(
            artifact_uri=checkpoint_uri(client(), name, version), dst_path=dst, tracking_uri=tracking_uri())
    except (MlflowException, OSError) as e:
        raise DataError(f"version {version} has no readable artifacts/checkpoint.safetensors ({e})",
                        source=str(uri)) from None
