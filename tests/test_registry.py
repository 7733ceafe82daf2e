"""The MLflow registry on real stores: sqlite in a temporary directory, and PostgreSQL 15 with
artifacts in S3 (moto) behind a real tracking server; gates judged on the evaluation's JSON."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import xarray as xr
from mlflow import MlflowClient

from conftest import GFS, require
from model_code import storage
from model_code.checkpoint import load_checkpoint, save_checkpoint
from model_code.data.ingest import load_window
from model_code.data.writers import write_dataset
from model_code.errors import ConfigError, DataError
from model_code.forecast import forecast
from model_code.variants import build_model, get_variant
from adapters import gates as g
from adapters import registry
from serving import served
from serving.process import free_port, wait_until_answers

VARIANT = "medium-range"
NAME = "aurora-medium-range"
GATES = {"gates": [{"metric": "rmse", "variable": "u10"}]}


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """An empty, migrated sqlite store: creating one takes seconds, copying it milliseconds."""
    path = tmp_path_factory.mktemp("template") / "mlruns.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, template_db) -> Path:
    """A fresh local registry: the default sqlite store in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(template_db, tmp_path / "mlruns.db")
    return tmp_path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[str]:
    """Three tiny medium-range checkpoints with different weights."""
    spec = get_variant(VARIANT)
    root = tmp_path_factory.mktemp("checkpoints")
    return [save_checkpoint(build_model(spec, "tiny", seed=s), spec, "tiny", str(root / f"seed{s}.safetensors"))
            for s in range(3)]


def scores(path: Path, checkpoint: str | None = None, against: str | None = None, **rmse: float) -> str:
    """The evaluation's JSON: u10 RMSE of each named forecast at 6 h and 12 h; its subject the
    scored `checkpoint` and the champion version it was compared with (`against`)."""
    records = [{"forecast": f, "variable": "u10", "level": None, "region": "global", "lead_hours": h,
                "metric": "rmse", "value": v + h / 100} for f, v in rmse.items() for h in (6.0, 12.0)]
    subject = {"model": {"checkpoint_sha256": storage.content_hash(checkpoint)} if checkpoint else {},
               "champion": {"version": against} if against else None}
    path.write_text(json.dumps({"variant": VARIANT, "truth": "era5", "subject": subject, "records": records,
                                "excluded": []}))
    return str(path)


def aliases() -> dict[str, str]:
    return {a: str(v) for a, v in registry.client().get_registered_model(NAME).aliases.items()}


def tags(version: str) -> dict[str, str]:
    return registry.client().get_model_version(NAME, version).tags


# ---------------------------------------------------------------- tracking URI, hashes


def test_tracking_uri_is_sqlite_in_the_working_directory_unless_set(store, monkeypatch):
    assert registry.tracking_uri() == f"sqlite:///{store / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.aurora:5000")
    assert registry.tracking_uri() == "http://mlflow.aurora:5000"


def test_data_hash_is_of_contents_not_names_or_order(tmp_path, bucket):
    import boto3

    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    a.write_bytes(b"first file")
    b.write_bytes(b"second file" * 100_000)
    assert storage.content_hash(str(a)) == "sha256:" + hashlib.sha256(b"first file").hexdigest()
    boto3.client("s3").upload_file(str(b), bucket, "renamed/b-copy.nc")
    assert storage.data_hash([a, b]) == storage.data_hash([f"s3://{bucket}/renamed/b-copy.nc", str(a)])
    b.write_bytes(b"second file changed")
    assert storage.data_hash([a, b]) != storage.data_hash([f"s3://{bucket}/renamed/b-copy.nc", str(a)])
    with pytest.raises(DataError, match="file not found"):
        storage.data_hash([tmp_path / "missing.nc"])


# ---------------------------------------------------------------- register


def test_two_versions_carry_their_provenance_and_the_latest_is_challenger(store, checkpoints):
    config = {"variant": VARIANT, "optim": {"lr": 3e-4}}
    metrics = scores(store / "scores.json", checkpoints[0], model=1.0, persistence=2.0)
    v1 = registry.register(checkpoints[0], variant=VARIANT, metrics_json=metrics, config=config,
                           data_paths=[str(GFS)], pipeline_run_id="run-1", metrics={"val_loss": 0.25})
    v2 = registry.register(checkpoints[1], variant=VARIANT, metrics_json=metrics, pipeline_run_id="run-2")
    assert (v1, v2) == ("1", "2")
    assert aliases() == {"challenger": "2"}

    t = tags(v1)
    assert t["variant"] == VARIANT and t["profile"] == "tiny" and t["pipeline_run_id"] == "run-1"
    assert t["data_hash"] == storage.data_hash([str(GFS)]) != tags(v2)["data_hash"]
    assert t["checkpoint_sha256"] == "sha256:" + hashlib.sha256(Path(checkpoints[0]).read_bytes()).hexdigest()
    assert t["code_version"].startswith("0.1.0")
    assert t["config"].startswith("variant: medium-range") and t["config_sha256"].startswith("sha256:")
    assert t["metric.val_loss"] == "0.25"
    assert "metric.rmse.u10.6h" not in t  # u10 RMSE is a headline only at the gate leads (72-120 h)

    # The version's model holds the checkpoint, the scores and the config; the run has the curves.
    mv = registry.client().get_model_version(NAME, v1)
    files = Path(mlflow.artifacts.download_artifacts(f"{mv.source}/artifacts", tracking_uri=registry.tracking_uri()))
    assert (files / "checkpoint.safetensors").read_bytes() == Path(checkpoints[0]).read_bytes()
    assert json.loads((files / "metrics.json").read_text())["variant"] == VARIANT
    assert "lr: 0.0003" in (files / "config.yaml").read_text()
    history = registry.client().get_metric_history(mv.run_id, "rmse.u10")
    assert sorted((m.step, m.value) for m in history) == [(6, 1.06), (12, 1.12)]
    assert str(store / "mlartifacts") in mv.source


def test_headline_metrics_are_the_scores_on_the_gate_targets():
    records = [{"forecast": f, "variable": "z", "level": 500.0, "region": "global", "lead_hours": 72.0,
                "metric": "rmse", "value": v} for f, v in (("model", 310.0), ("persistence", 500.0))]
    records.append({**records[0], "variable": "q", "level": 700.0})
    assert registry.headline_metrics(records, g.default_gates(VARIANT)) == {"rmse.z500.72h": 310.0}


def test_registering_the_same_pipeline_run_again_returns_its_version(store, checkpoints):
    first = registry.register(checkpoints[0], variant=VARIANT, pipeline_run_id="run-7")
    registry.register(checkpoints[1], variant=VARIANT, pipeline_run_id="run-8")
    assert registry.register(checkpoints[0], variant=VARIANT, pipeline_run_id="run-7") == first
    assert len(registry.client().search_model_versions(f"name='{NAME}'")) == 2
    assert aliases()["challenger"] == first


def test_a_checkpoint_of_another_variant_is_refused(store, tmp_path):
    spec = get_variant("wave")
    wave = save_checkpoint(build_model(spec, "tiny"), spec, "tiny", str(tmp_path / "wave.safetensors"))
    with pytest.raises(DataError, match="holds variant 'wave', not 'medium-range'"):
        registry.register(wave, variant=VARIANT)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a readable safetensors checkpoint"):
        registry.register(str(tmp_path / "junk.safetensors"), variant=VARIANT)


def test_a_crash_before_the_version_exists_leaves_the_registry_as_it_was(store, checkpoints, monkeypatch):
    registry.register(checkpoints[0], variant=VARIANT, pipeline_run_id="run-1")

    def killed(*args, **kwargs):
        raise RuntimeError("process killed")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(MlflowClient, "create_model_version", killed)
        registry.register(checkpoints[1], variant=VARIANT, pipeline_run_id="run-2")
    assert [v.version for v in registry.client().search_model_versions(f"name='{NAME}'")] == [1]
    assert aliases() == {"challenger": "1"}
    assert registry.register(checkpoints[1], variant=VARIANT, pipeline_run_id="run-2") == "2"


# ---------------------------------------------------------------- promote and roll back


def test_promotion_needs_every_gate_and_rollback_restores_the_previous_champion(store, checkpoints):
    gates = g.load_gates(GATES)
    c0, c1, c2 = checkpoints
    v1 = registry.register(c0, variant=VARIANT, pipeline_run_id="r1")
    first = registry.promote(VARIANT, v1, scores(store / "s1.json", c0, model=1.0, persistence=2.0, climatology=1.5),
                             gates=gates)
    assert first.promoted and first.previous_champion is None
    assert [c.against for c in first.report.comparisons[:3]] == ["champion", "persistence", "climatology"]
    assert "no champion yet; judged on the baselines" in first.report.comparisons[0].note
    assert aliases() == {"champion": "1", "challenger": "1"}

    # A better challenger, judged against the champion and the baselines, becomes champion.
    v2 = registry.register(c1, variant=VARIANT, pipeline_run_id="r2")
    better = registry.promote(VARIANT, v2, scores(store / "s2.json", c1, "1", model=0.5, champion=1.0,
                                                  persistence=2.0, climatology=1.5), gates=gates)
    assert better.promoted and aliases()["champion"] == "2"
    assert tags(v2)[registry.PREVIOUS_CHAMPION] == "1" and tags(v2)["gates_passed"] == "true"
    verdict = json.loads(tags(v2)["gates"])
    assert verdict["subject"]["champion"] == {"version": "1"}
    assert verdict["subject"]["model"]["checkpoint_sha256"] == tags(v2)["checkpoint_sha256"]

    # A worse one is registered with its metrics and gate results, but never champion.
    worse_scores = scores(store / "s3.json", c2, "2", model=0.8, champion=0.5, persistence=2.0, climatology=1.5)
    v3 = registry.register(c2, variant=VARIANT, metrics_json=worse_scores, pipeline_run_id="r3")
    worse = registry.promote(VARIANT, v3, worse_scores, gates=gates)
    assert not worse.promoted
    assert worse.reasons == ["rmse u10 (whole grid) at 6h: 0.86 does not beat champion 0.56",
                             "rmse u10 (whole grid) at 12h: 0.92 does not beat champion 0.62"]
    assert aliases() == {"champion": "2", "challenger": "3"}
    assert tags(v3)["gates_passed"] == "false"
    assert json.loads(tags(v3)["gates"])["passed"] is False
    assert registry.client().get_metric_history(registry.client().get_model_version(NAME, v3).run_id, "rmse.u10")

    assert registry.rollback(VARIANT) == "1"
    assert aliases()["champion"] == "1"
    assert json.loads(tags(v2)["rolled_back"])["to"] == "1"
    with pytest.raises(DataError, match="version 1 was the first champion"):
        registry.rollback(VARIANT)


def test_a_first_model_worse_than_persistence_is_registered_and_not_promoted(store, checkpoints):
    """Nothing passes because there is nothing to compare: the first model faces the baselines."""
    gates = g.load_gates(GATES)
    v1 = registry.register(checkpoints[0], variant=VARIANT, pipeline_run_id="r1")
    result = registry.promote(VARIANT, v1, scores(store / "s1.json", checkpoints[0], model=2.5, persistence=2.0,
                                                  climatology=3.0), gates=gates)
    assert not result.promoted and aliases() == {"challenger": "1"}
    assert result.reasons == ["rmse u10 (whole grid) at 6h: 2.56 does not beat persistence 2.06",
                              "rmse u10 (whole grid) at 12h: 2.62 does not beat persistence 2.12"]
    # Beating persistence is not enough when a climatology exists, and a missing climatology fails ...
    worse_than_climatology = registry.promote(
        VARIANT, v1, scores(store / "s2.json", checkpoints[0], model=1.8, persistence=2.0, climatology=1.7),
        gates=gates)
    assert not worse_than_climatology.promoted and "does not beat climatology" in worse_than_climatology.reasons[0]
    missing = registry.promote(VARIANT, v1, scores(store / "s3.json", checkpoints[0], model=1.0, persistence=2.0),
                               gates=gates)
    assert not missing.promoted and "no scores of 'climatology'" in missing.reasons[0]
    # ... unless the evaluation left it out and said why.
    path = scores(store / "s4.json", checkpoints[0], model=1.0, persistence=2.0)
    doc = json.loads(Path(path).read_text())
    Path(path).write_text(json.dumps({**doc, "notes": ["climatology: left out: the data before the first "
                                                       "initialisation holds no time"]}))
    assert registry.promote(VARIANT, v1, path, gates=gates).promoted


def test_promotion_refuses_a_verdict_about_another_model_or_champion(store, checkpoints):
    gates = g.load_gates(GATES)
    c0, c1, _ = checkpoints
    v1 = registry.register(c0, variant=VARIANT, pipeline_run_id="r1")
    v2 = registry.register(c1, variant=VARIANT, pipeline_run_id="r2")
    good = dict(model=1.0, persistence=2.0, climatology=1.5)
    with pytest.raises(DataError, match="do not say which model they score"):
        registry.promote(VARIANT, v1, scores(store / "anonymous.json", **good), gates=gates)
    with pytest.raises(DataError, match=f"the scores are of checkpoint sha256:.*; {NAME} version 1 holds sha256:"):
        registry.promote(VARIANT, v1, scores(store / "foreign.json", c1, **good), gates=gates)
    assert registry.promote(VARIANT, v1, scores(store / "v1.json", c0, **good), gates=gates).promoted
    # Scored before version 1 became champion: stale.
    with pytest.raises(DataError, match="made against champion none, but the champion of .* is 1 now"):
        registry.promote(VARIANT, v2, scores(store / "stale.json", c1, **good, champion=1.5), gates=gates)
    with pytest.raises(DataError, match="made against champion 7, but the champion of .* is 1 now"):
        registry.promote(VARIANT, v2, scores(store / "other.json", c1, "7", **good, champion=1.5), gates=gates)
    assert aliases()["champion"] == "1" and "gates" not in tags(v2)
    assert registry.promote(VARIANT, v2, scores(store / "v2.json", c1, "1", **{**good, "model": 0.5}, champion=1.0),
                            gates=gates).promoted


def test_the_registry_command_shows_promotes_and_rolls_back(store, checkpoints, capsys):
    """`auroraops registry`: what an operator runs without Python (the same functions as above)."""
    from auroraops.cli import main

    c0, c1, c2 = checkpoints
    (store / "gates.yaml").write_text(json.dumps(GATES))
    v1 = registry.register(c0, variant=VARIANT, pipeline_run_id="r1")
    assert main(["registry", "promote", "--variant", VARIANT, "--version", v1, "--gates", str(store / "gates.yaml"),
                 "--scores", scores(store / "s1.json", c0, model=1.0, persistence=2.0, climatology=1.5)]) == 0
    s2 = scores(store / "s2.json", c1, "1", model=0.5, champion=1.0, persistence=2.0, climatology=1.5)
    v2 = registry.register(c1, variant=VARIANT, metrics_json=s2, pipeline_run_id="r2")
    assert main(["registry", "promote", "--variant", VARIANT, "--version", v2, "--gates", str(store / "gates.yaml"),
                 "--scores", s2]) == 0
    v3 = registry.register(c2, variant=VARIANT, pipeline_run_id="r3")
    capsys.readouterr()
    assert main(["registry", "promote", "--variant", VARIANT, "--version", v3, "--gates", str(store / "gates.yaml"),
                 "--scores", scores(store / "s3.json", c2, "2", model=0.8, champion=0.5, persistence=2.0,
                                    climatology=1.5)]) == 1
    assert "not promoted; champion stays 2" in capsys.readouterr().out

    assert main(["registry", "show", "--variant", VARIANT]) == 0
    shown = capsys.readouterr().out
    assert "version 2 @champion: gates passed; run r2" in shown and "version 3 @challenger: gates failed" in shown
    assert main(["registry", "show", "--variant", VARIANT, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    champion = doc["champion"]
    assert champion["version"] == "2" and champion["gates_passed"] is True
    assert champion["checkpoint_sha256"] == storage.content_hash(c1)
    assert Path(mlflow.artifacts.download_artifacts(champion["checkpoint_uri"], tracking_uri=registry.tracking_uri())
                ).read_bytes() == Path(c1).read_bytes()
    assert champion["subject"]["champion"] == {"version": "1"}
    assert champion["verdict"]["subject"]["model"]["checkpoint_sha256"] == champion["checkpoint_sha256"]
    assert {(r["lead_hours"], r["model"], r["persistence"], r["climatology"]) for r in champion["scores"]} == {
        (6.0, 0.56, 2.06, 1.56), (12.0, 0.62, 2.12, 1.62)}
    assert doc["challenger"]["version"] == "3" and doc["challenger"]["scores"] == []  # registered without scores
    assert main(["registry", "rollback", "--variant", VARIANT]) == 0
    assert "champion is version 1 again" in capsys.readouterr().out and aliases()["champion"] == "1"
    assert main(["registry", "rollback", "--variant", VARIANT]) == 1
    assert "version 1 was the first champion" in capsys.readouterr().err


def test_the_champion_must_be_among_the_scores_once_there_is_one(store, checkpoints):
    gates = g.load_gates(GATES)
    v1 = registry.register(checkpoints[0], variant=VARIANT)
    assert registry.promote(VARIANT, v1, scores(store / "s1.json", checkpoints[0], model=1.0, persistence=2.0,
                                                climatology=1.5), gates=gates).promoted
    v2 = registry.register(checkpoints[1], variant=VARIANT)
    result = registry.promote(VARIANT, v2, scores(store / "s2.json", checkpoints[1], "1", model=0.1, persistence=2.0,
                                                  climatology=1.5), gates=gates)
    assert not result.promoted and aliases()["champion"] == "1"
    assert "no scores of 'champion'" in result.reasons[0]
    # Promoting the champion again changes nothing.
    assert registry.promote(VARIANT, v1, store / "s1.json", gates=gates).promoted


def test_a_crash_before_the_alias_moves_keeps_the_old_champion(store, checkpoints, monkeypatch):
    gates = g.load_gates(GATES)
    v1 = registry.register(checkpoints[0], variant=VARIANT)
    registry.promote(VARIANT, v1, scores(store / "s1.json", checkpoints[0], model=1.0, persistence=2.0,
                                         climatology=1.5), gates=gates)
    v2 = registry.register(checkpoints[1], variant=VARIANT)

    def killed(self, name, alias, version):
        raise RuntimeError("process killed")

    s2 = scores(store / "s2.json", checkpoints[1], "1", model=0.5, champion=1.0, persistence=2.0, climatology=1.5)
    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(MlflowClient, "set_registered_model_alias", killed)
        registry.promote(VARIANT, v2, s2, gates=gates)
    assert aliases()["champion"] == "1" and tags(v2)["gates_passed"] == "true"
    assert registry.promote(VARIANT, v2, s2, gates=gates).promoted and aliases()["champion"] == "2"


def test_default_gates_ask_for_the_variant_targets(store, checkpoints):
    report = registry.verdict(VARIANT, scores(store / "s.json", model=1.0, persistence=2.0))
    assert not report.passed
    assert "rmse z500 (whole grid) at 72h: the challenger has no score" in report.reasons
    with pytest.raises(DataError, match="scores are of variant 'medium-range', not 'wave'"):
        registry.verdict("wave", store / "s.json")


# ---------------------------------------------------------------- gates alone


def record(forecast: str, value: float | None, metric: str = "rmse", lead: float = 24.0, **extra) -> dict:
    return {"forecast": forecast, "variable": "t", "level": 850.0, "region": "global", "lead_hours": lead,
            "metric": metric, "value": value, **extra}


def baselines(metric: str, value: float, **extra) -> list[dict]:
    """Persistence and climatology both at `value`."""
    return [record(f, value, metric, **extra) for f in ("persistence", "climatology")]


@pytest.mark.parametrize("metric, model, other, margin, passed", [
    ("rmse", 1.0, 1.1, 0.0, True),
    ("rmse", 1.1, 1.1, 0.0, False),  # a tie does not beat
    ("rmse", 1.0, 1.05, 0.1, False),  # better, but not by 10 %
    ("acc", 0.9, 0.8, 0.0, True),
    ("acc", 0.8, 0.9, 0.0, False),
    ("bias", -0.2, 0.5, 0.0, True),  # |bias| is what counts
    ("bias", 0.6, -0.5, 0.0, False),
    ("rmse", float("nan"), 1.0, 0.0, False),
])
def test_a_comparison_follows_the_metric_direction(metric, model, other, margin, passed):
    gate = g.Gate(metric, "t", 850.0, margin=margin)
    report = g.judge({"records": [record("model", model, metric), *baselines(metric, other)]}, [gate],
                     champion=None)
    assert report.passed is passed


def test_records_are_compared_like_for_like():
    """Extra keys (a threshold) pair records; other levels and leads are not mixed up."""
    gate = g.Gate("csi", "t", 850.0)
    records = [record("model", 0.5, "csi", threshold=300.0), *baselines("csi", 0.4, threshold=300.0),
               record("model", 0.2, "csi", threshold=310.0), *baselines("csi", 0.3, threshold=310.0),
               record("persistence", 0.0, "csi", lead=48.0, threshold=300.0)]
    report = g.judge({"records": records}, [gate], champion=None)
    assert [(c.against, c.passed) for c in report.comparisons] == [
        ("champion", True), ("champion", True), ("persistence", True), ("persistence", False),
        ("climatology", True), ("climatology", False)]


def test_missing_leads_and_comparators_fail_the_gate():
    gate = g.Gate("rmse", "t", 850.0, lead_hours=(24.0, 48.0), against=("ifs",))
    report = g.judge({"records": [record("model", 1.0), record("persistence", 2.0)]}, [gate], champion="3")
    assert report.reasons == [
        "rmse t850 (whole grid) at 24h: no scores of 'champion' (evaluate against it)",
        "rmse t850 (whole grid) at 24h: no scores of 'climatology' (evaluate against it)",
        "rmse t850 (whole grid) at 24h: no scores of 'ifs' (evaluate against it)",
        "rmse t850 (whole grid) at 48h: the challenger has no score"]
    acc = g.Gate("acc", "t", 850.0)
    assert acc.comparators == ("champion", "persistence")  # a climatology forecast has no ACC


def test_v1_5_default_gates_medium_range_like_medium_range_and_the_ensemble_on_crps():
    assert g.default_gates("medium-range-v1.5") == g.default_gates("medium-range")
    ensemble = g.default_gates("ensemble-v1.5")
    assert {(x.metric, x.variable, x.level, x.lead_hours) for x in ensemble} == {
        ("crps", v, lvl, (72, 96, 120)) for v, lvl in (("z", 500.0), ("t", 850.0), ("t2m", None))}
    with pytest.raises(ConfigError, match="'rank_histogram' cannot be gated"):
        g.Gate("rank_histogram", "t2m")


def test_ensemble_v1_5_gates_judge_on_crps_alone():
    """The ensemble passes on a lower CRPS than every comparator whatever its RMSE (the RMSE of
    an ensemble mean is no gate of it), and fails where one CRPS is not lower."""
    fields = (("z", 500.0), ("t", 850.0), ("t2m", None))

    def records(crps_t2m_96: float) -> list[dict]:
        out = []
        for v, lvl in fields:
            for lead in (72.0, 96.0, 120.0):
                crps = {"model": crps_t2m_96 if (v, lead) == ("t2m", 96.0) else 1.0, "persistence": 2.0,
                        "climatology": 1.5}
                for forecast, value in crps.items():
                    base = {"forecast": forecast, "variable": v, "level": lvl, "region": "global", "lead_hours": lead}
                    out.append({**base, "metric": "crps", "value": value})
                    out.append({**base, "metric": "rmse", "value": 9.0 if forecast == "model" else 1.0})
                out.append({**base, "forecast": "model", "metric": "rank_histogram", "value": 0.5, "rank": 0})
        return out

    passed = g.judge({"records": records(1.0)}, g.default_gates("ensemble-v1.5"), champion=None)
    assert passed.passed and len(passed.comparisons) == 3 * 3 * 3
    assert {c.gate.split(" ")[0] for c in passed.comparisons} == {"crps"}
    failed = g.judge({"records": records(1.8)}, g.default_gates("ensemble-v1.5"), champion=None)
    assert failed.reasons == ["crps t2m (whole grid) at 96h: 1.8 does not beat climatology 1.5"]


def test_gate_files_name_the_field_at_fault(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n  - {metric: rmse, variable: z, level: 500, lead_hours: [72, 120], margin: 0.02}\n")
    assert g.load_gates(str(path)) == (g.Gate("rmse", "z", 500.0, lead_hours=(72.0, 120.0), margin=0.02),)
    for text, field in [("gates:\n  - {metric: rmse, variable: z, leads: [1]}", "gates[0]"),
                        ("gates:\n  - {metric: rmse, variable: z}\n  - {metric: spread, variable: z}",
                         "gates[1].metric"),
                        ("gates:\n  - {metric: rmse, variable: z, against: [model]}", "gates[0].against"),
                        ("gates:\n  - {metric: rmse, variable: z, margin: 2}", "gates[0].margin"),
                        ("gates:\n  - {metric: rmse}", "gates[0].variable")]:
        path.write_text(text)
        with pytest.raises(ConfigError) as e:
            g.load_gates(str(path))
        assert e.value.field == field and str(path) in str(e.value)


# ---------------------------------------------------------------- pyfunc and checkpoints by URI


@pytest.fixture(scope="module")
def netcdf_input(tmp_path_factory) -> tuple[str, xr.Dataset]:
    """A medium-range input window from the real GFS sample, written as NetCDF."""
    window, _ = load_window([str(GFS)], get_variant(VARIANT), history=1, fill_missing="synthetic")
    path = write_dataset(window, str(tmp_path_factory.mktemp("input") / "window.nc"))
    return path, window


@pytest.mark.slow
def test_the_champion_loads_by_alias_and_forecasts_from_netcdf(store, checkpoints, netcdf_input, monkeypatch):
    path, window = netcdf_input
    v1 = registry.register(checkpoints[1], variant=VARIANT)
    registry.promote(VARIANT, v1, scores(store / "s.json", checkpoints[1], model=1.0, persistence=2.0,
                                         climatology=1.5), gates=g.load_gates(GATES))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri())

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict(path, params={"steps": 2, "history": 1})
    direct, _ = load_checkpoint(checkpoints[1])
    expected = forecast(direct, get_variant(VARIANT), window, 1)
    assert isinstance(out, xr.Dataset) and out.attrs["aurora_variant"] == VARIANT
    np.testing.assert_array_equal(out.lead_time.values, np.array([6, 12], "timedelta64[h]"))
    xr.testing.assert_allclose(out[list(expected.data_vars)].isel(time=[0]), expected, rtol=1e-5)

    from_memory = model.predict(xr.open_dataset(path), params={"steps": 1, "history": 1})
    xr.testing.assert_allclose(from_memory, out.isel(time=[0]), rtol=1e-5)
    with pytest.raises(DataError, match="cannot forecast from a int"):
        model.predict(3)


def test_resolve_checkpoint_downloads_a_version_and_passes_other_uris(store, checkpoints, tmp_path):
    registry.register(checkpoints[0], variant=VARIANT)
    registry.register(checkpoints[1], variant=VARIANT)
    by_alias = registry.resolve_checkpoint(f"models:/{NAME}@challenger", dst=str(tmp_path / "a"))
    by_number = registry.resolve_checkpoint(f"models:/{NAME}/1", dst=str(tmp_path / "b"))
    assert Path(by_alias).read_bytes() == Path(checkpoints[1]).read_bytes()
    assert Path(by_number).read_bytes() == Path(checkpoints[0]).read_bytes()
    assert Path(by_number).name == "checkpoint.safetensors" and str(tmp_path / "b") in by_number
    assert registry.resolve_checkpoint(checkpoints[0]) == checkpoints[0]
    assert registry.resolve_checkpoint("s3://weights/aurora.ckpt") == "s3://weights/aurora.ckpt"
    with pytest.raises(DataError, match="has no alias 'champion'"):
        registry.resolve_checkpoint(f"models:/{NAME}@champion")
    with pytest.raises(DataError, match="has no version 9"):
        registry.resolve_checkpoint(f"models:/{NAME}/9")
    with pytest.raises(DataError, match="expected models:/NAME@ALIAS or models:/NAME/VERSION"):
        registry.resolve_checkpoint(f"models:/{NAME}")


# ---------------------------------------------------------------- the cluster's stores


@pytest.fixture
def postgres():
    """PostgreSQL 15 from initdb/pg_ctl on 127.0.0.1 (run as `postgres` when we are root)."""
    require("initdb", "pg_ctl")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="auroraops-pg-"))  # not under pytest's root-only tmp dirs
    data, port = root / "data", free_port()
    if as_user:
        shutil.chown(root, "postgres")
    subprocess.run([*as_user, "initdb", "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    subprocess.run([*as_user, "pg_ctl", "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start"],
                   check=True, capture_output=True)
    yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/postgres"  # SQLAlchemy 2.1 defaults to psycopg 3
    subprocess.run([*as_user, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tracking_server(postgres, bucket, s3_endpoint, tmp_path, monkeypatch):
    """`mlflow server` as on the cluster (manifests/base/mlflow.yaml): PostgreSQL store,
    artifacts in S3 behind the server's proxy, so clients need only the tracking URI."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres, "--serve-artifacts",
         "--artifacts-destination", f"s3://{bucket}/mlflow", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,  # its own group: uvicorn too
        env={**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers([f"{url}/health"], server, tmp_path / "server.log", timeout=90, name="mlflow server",
                           interval=0.5)
    except (RuntimeError, TimeoutError) as e:
        _stop(server)
        pytest.fail(f"mlflow server did not start: {e}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    yield url
    _stop(server)
    log.close()


def _stop(server: subprocess.Popen) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
            server.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_cluster_stores_postgres_and_s3(tracking_server, bucket, checkpoints, tmp_path):
    import boto3

    gates = g.load_gates(GATES)
    v1 = registry.register(checkpoints[0], variant=VARIANT, data_paths=[str(GFS)], pipeline_run_id="p1")
    assert registry.promote(VARIANT, v1, scores(tmp_path / "s1.json", checkpoints[0], model=1.0, persistence=2.0,
                                                climatology=1.5), gates=gates).promoted
    v2 = registry.register(checkpoints[1], variant=VARIANT, pipeline_run_id="p2")
    s2 = scores(tmp_path / "s2.json", checkpoints[1], "1", model=1.5, champion=1.0, persistence=2.0, climatology=1.7)
    assert not registry.promote(VARIANT, v2, s2, gates=gates).promoted

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert sum(k.endswith("model/artifacts/checkpoint.safetensors") for k in keys) == 2
    path = registry.resolve_checkpoint(f"models:/{NAME}@champion", dst=str(tmp_path / "dl"))
    assert Path(path).read_bytes() == Path(checkpoints[0]).read_bytes()
    # What a rollout pins and a pod then loads: the version's artifact behind the proxy, by digest.
    champion = served.describe_uri(f"models:/{NAME}@champion")
    assert champion.version == v1 and champion.uri.startswith("mlflow-artifacts:")
    served.verify(champion)
    pinned, local = served.resolve(champion.uri, str(tmp_path / "pod"))
    assert pinned.sha256 == champion.sha256 and Path(local).read_bytes() == Path(checkpoints[0]).read_bytes()
    with pytest.raises(DataError, match="cannot read the artifact through MLflow"):
        served.resolve(champion.uri.replace("checkpoint.safetensors", "missing.safetensors"), str(tmp_path / "x"))
    assert tags(v2)["gates_passed"] == "false"
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")  # from S3; forecasting is tested above
    assert loaded.metadata.get_params_schema().to_dict()[0]["name"] == "steps"
