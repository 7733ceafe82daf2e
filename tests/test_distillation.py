"""Knowledge distillation: a smaller student trained towards a blend of the truth and a teacher.

On the tiny profile and the real hourly 2 m temperature of the British Isles (March 2019),
with the demo's treatment of the absent variables (filled with Aurora's means in the inputs,
NaN targets): a teacher trained for 10 steps teaches a half-width student for 10 steps.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch
from aurora import Batch, Metadata, rollout

from conftest import tiny_march
from model_code.checkpoint import load_checkpoint, save_checkpoint
from model_code.compression.distil import architecture, parameter_count, student_overrides
from model_code.errors import ConfigError, DataError
from model_code.storage import content_hash
from model_code.training import trainer as trainer_module
from model_code.training.config import config_from_dict
from model_code.training.distillation import blend_batch, distil_config
from model_code.training.trainer import Trainer, train
from model_code.variants import build_model, get_variant, with_timestep

BASE = tiny_march({"rollout.curriculum": [[0, 1], [5, 2]], "early_stopping.lead_steps": [1, 2],
                   "train.max_steps": 10, "train.val_every": 5, "train.val_at_start": True})
"""The demo's treatment of the real sample (6 h steps, absent variables at Aurora's means,
the data's own normalisation, heads from zero), shortened to 10 steps on one validation day."""



def with_out(cfg: dict, out) -> dict:
    return {**cfg, "checkpoint": {**cfg["checkpoint"], "out_dir": str(out)}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """The tiny model trained for 10 steps: the teacher of every test here."""
    result = train(config_from_dict(with_out(BASE, tmp_path_factory.mktemp("teacher"))))
    assert result.steps == 10 and result.best_checkpoint
    return result.best_checkpoint


def student_dict(teacher: str, out, alpha: float = 0.5, **overrides) -> dict:
    cfg = with_out(distil_config(BASE, teacher, alpha), out)
    for key, value in overrides.items():
        section, name = key.split(".")
        cfg[section] = {**cfg.get(section, {}), name: value}
    return cfg


# --------------------------------------------------------------------------------------
# A student learns, and says where it came from


def test_a_half_width_student_learns_from_its_teacher_and_its_checkpoints_carry_the_record(teacher, tmp_path):
    cfg = config_from_dict(student_dict(teacher, tmp_path / "student", alpha=0.5))
    assert cfg.model["embed_dim"] == 16 and cfg.distil.teacher == teacher  # the tiny teacher's 32, halved
    trainer = Trainer(cfg)
    rolled = []  # the teacher rolls out as far as the student, step by step of the curriculum
    blend = trainer.distiller.blend
    trainer.distiller.blend = lambda sample, steps: (rolled.append(steps), blend(sample, steps))[1]
    result = trainer.fit()
    assert rolled == [1] * 5 + [2] * 5
    assert all(np.isfinite(h["loss"]) for h in result.history if "loss" in h)
    assert [h["step"] for h in result.history if "val_loss" in h] == [0, 5, 10]

    teacher_model, _ = load_checkpoint(teacher)
    n_teacher = sum(p.numel() for p in teacher_model.parameters())
    for path in (result.best_checkpoint, result.last_checkpoint):
        student, info = load_checkpoint(path)
        m = sum(p.numel() for p in student.parameters())
        assert info.compression == {"method": "distil", "teacher": teacher, "teacher_sha256": content_hash(teacher),
                                    "alpha": 0.5, "teacher_parameters": n_teacher, "student_parameters": m}
        assert m < n_teacher / 3 and json.loads(info.metadata["model_overrides"])["embed_dim"] == 16
    # the student's best was chosen on the truth alone: the same weights validated without a teacher
    plain = Trainer(config_from_dict({**with_out(BASE, tmp_path / "plain"), "model": dict(cfg.model),
                                      "weights": result.best_checkpoint}))
    assert plain.validate()["val_loss"] == pytest.approx(result.best_metric, rel=1e-6)


def test_the_teacher_rolls_out_as_many_steps_as_the_student_and_blends_those_targets(teacher, tmp_path):
    trainer = Trainer(config_from_dict(student_dict(teacher, tmp_path / "student", alpha=0.25)))
    sample = next(iter(trainer.loader))
    assert sample.lead_steps == (1, 2)
    model = trainer.distiller.model
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
    for steps in (1, 2):
        calls.clear()
        blended = trainer.distiller.blend(sample, steps)
        assert len(calls) == steps
        with torch.no_grad():
            predictions = list(rollout(model, sample.inputs, steps=steps))
        for k, truth, target in zip(sample.lead_steps, sample.targets, blended.targets):
            if k > steps:  # not scored at this rollout length: left as it was
                assert target is truth
                continue
            pred = predictions[k - 1]
            assert torch.isfinite(truth.surf_vars["2t"]).all() and torch.isnan(truth.surf_vars["msl"]).all()
            for name, x in truth.surf_vars.items():
                p = pred.surf_vars[name]
                expected = torch.where(torch.isfinite(x), 0.25 * x + 0.75 * p, p)
                torch.testing.assert_close(target.surf_vars[name], expected)
            torch.testing.assert_close(target.atmos_vars["z"], pred.atmos_vars["z"])  # truth NaN: the teacher's
            assert target.metadata.time == truth.metadata.time


def test_validation_judges_the_truth_while_training_targets_blend_in_the_teacher(teacher, tmp_path):
    one = {"train.max_steps": 1, "train.val_every": 1}
    distilled = student_dict(teacher, tmp_path / "distilled", alpha=0.0, **one)
    plain = {**with_out(distilled, tmp_path / "plain"), "distil": {}}
    runs = {name: train(config_from_dict(cfg)).history for name, cfg in (("distilled", distilled), ("plain", plain))}
    start = {name: h[0] for name, h in runs.items()}
    assert start["distilled"]["val_loss"] == start["plain"]["val_loss"]  # same starting weights, same truth
    assert {k for k in start["distilled"] if k.startswith("val_loss/") and "lead" not in k} == {"val_loss/2t"}
    first = {name: h[1] for name, h in runs.items()}
    assert first["distilled"]["loss"] != first["plain"]["loss"]
    # where the truth is NaN (variables filled in the inputs) the teacher's forecast is the target
    assert "loss/msl" in first["distilled"] and "loss/msl" not in first["plain"]


# --------------------------------------------------------------------------------------
# The blend


def batch(surf: dict, atmos: dict | None = None, time=datetime(2019, 3, 1, 6)) -> Batch:
    return Batch(surf_vars={k: torch.tensor(v, dtype=torch.float32)[None, None] for k, v in surf.items()},
                 static_vars={},
                 atmos_vars={k: torch.tensor(v, dtype=torch.float32)[None, None, None]
                             for k, v in (atmos or {}).items()},
                 metadata=Metadata(lat=torch.tensor([50.0, 49.75]), lon=torch.tensor([0.0, 0.25]), time=(time,),
                                   atmos_levels=(500,)))


def test_the_blended_target_is_the_formula_where_the_truth_is_finite_and_the_teacher_where_it_is_nan():
    nan = math.nan
    truth = batch({"2t": [[280.0, nan], [282.0, 284.0]], "mwd": [[350.0, 10.0], [90.0, nan]]},
                  {"z": [[nan, nan], [50000.0, nan]]})
    teacher = batch({"2t": [[284.0, 286.0], [nan, 288.0]], "mwd": [[10.0, 350.0], [250.0, 180.0]]},
                    {"z": [[51000.0, 52000.0], [54000.0, nan]]})
    out = blend_batch(truth, teacher, 0.25)
    torch.testing.assert_close(out.surf_vars["2t"][0, 0], torch.tensor([[283.0, 286.0], [282.0, 287.0]]))
    # directions along the shorter arc: 350° and 10° meet at 5° / 355°, not 185°
    torch.testing.assert_close(out.surf_vars["mwd"][0, 0], torch.tensor([[5.0, 355.0], [210.0, 180.0]]))
    z = out.atmos_vars["z"][0, 0, 0]
    torch.testing.assert_close(z[0], torch.tensor([51000.0, 52000.0]))
    assert z[1, 0] == 0.25 * 50000 + 0.75 * 54000 and torch.isnan(z[1, 1])  # NaN in both stays NaN
    assert out.metadata is truth.metadata
    torch.testing.assert_close(blend_batch(truth, teacher, 1.0).surf_vars["2t"][0, 0],
                               torch.tensor([[280.0, 286.0], [282.0, 284.0]]))
    with pytest.raises(DataError, match="valid at"):
        blend_batch(truth, batch({"2t": [[0.0, 0.0], [0.0, 0.0]]}, time=datetime(2019, 3, 1, 12)), 0.5)


# --------------------------------------------------------------------------------------
# Architectures


def test_a_student_has_fewer_blocks_and_a_narrower_embedding_counted_without_weights():
    spec = get_variant("medium-range")
    full = student_overrides(spec, "full")
    assert full == {"embed_dim": 256, "encoder_depths": [3, 5, 4], "decoder_depths": [4, 5, 3]}
    assert parameter_count(spec, "full", full) < parameter_count(spec, "full") / 4  # on the meta device
    deep = {**architecture(spec, "tiny"), "encoder_depths": [2, 2, 2], "decoder_depths": [2, 4, 2]}
    assert student_overrides(spec, deep, embed_factor=1.0) == {
        "embed_dim": 32, "encoder_depths": [1, 1, 1], "decoder_depths": [1, 2, 1]}
    tiny = student_overrides(spec, "tiny")
    assert tiny["embed_dim"] == 16
    built = build_model(spec, "tiny", overrides=tiny)
    assert parameter_count(spec, "tiny", tiny) == sum(p.numel() for p in built.parameters())
    with pytest.raises(ConfigError, match="embed_factor"):
        student_overrides(spec, "tiny", embed_factor=0.1)


# --------------------------------------------------------------------------------------
# Refused before any work


@pytest.fixture
def no_work(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the data was opened before the teacher was checked")

    monkeypatch.setattr(trainer_module, "open_data", must_not_run)


def test_a_student_larger_than_its_teacher_is_refused_before_any_work(teacher, tmp_path, no_work):
    larger = student_dict(teacher, tmp_path)
    larger["model"] = {**larger["model"], "embed_dim": 64}  # twice the tiny teacher's width
    cfg = config_from_dict(larger)
    with pytest.raises(ConfigError, match="larger than its teacher") as e:
        Trainer(cfg)
    assert e.value.field == "model"


def test_a_teacher_of_another_variant_step_or_an_int8_one_is_refused_before_any_work(teacher, tmp_path, no_work):
    def saved(name: str, variant: str = "medium-range", hours: int | None = None, **kw) -> str:
        spec = get_variant(variant) if hours is None else with_timestep(get_variant(variant), timedelta(hours=hours))
        return save_checkpoint(build_model(spec, "tiny"), spec, "tiny", str(tmp_path / f"{name}.safetensors"), **kw)

    cases = [
        (saved("high-res", "high-res"), "is a high-res model; this run trains medium-range"),
        (saved("hourly", hours=1), "steps 1 h, this run 6 h"),
        (saved("int8", compression={"method": "int8-dynamic"}), r"quantised \(int8-dynamic\)"),
        (str(tmp_path / "absent.safetensors"), "cannot read the teacher"),
    ]
    for uri, message in cases:
        cfg = config_from_dict({**with_out(BASE, tmp_path / "run"), "distil": {"teacher": uri, "alpha": 0.5}})
        with pytest.raises(ConfigError, match=message) as e:
            Trainer(cfg)
        assert e.value.field == "distil.teacher"


@pytest.mark.parametrize("distil, field, message", [
    ({"teacher": "t.safetensors", "alpha": 1.5}, "distil.alpha", r"must lie in \[0, 1\]"),
    ({"teacher": "t.safetensors", "alpha": -0.1}, "distil.alpha", r"must lie in \[0, 1\]"),
    ({"alpha": math.nan}, "distil.alpha", r"must lie in \[0, 1\]"),
    ({"teacher": "aurora-0.25-finetuned.ckpt"}, "distil.teacher", "safetensors"),
    ({"techer": "t.safetensors"}, "distil.techer", "did you mean 'distil.teacher'"),
])
def test_bad_distillation_values_are_refused_naming_the_field(distil, field, message):
    with pytest.raises(ConfigError, match=message) as e:
        config_from_dict({**BASE, "distil": distil})
    assert e.value.field == field


def test_distil_config_takes_the_teachers_variant_step_and_history_and_drops_starting_weights(teacher):
    base = {k: v for k, v in BASE.items() if k not in ("variant", "timestep_hours")}
    cfg = distil_config({**base, "weights": teacher, "model": {"drop_rate": 0.1}}, teacher, 0.3, embed_factor=1.0)
    assert cfg["variant"] == "medium-range" and cfg["timestep_hours"] == 6 and "weights" not in cfg
    assert cfg["model"] == {"drop_rate": 0.1, "embed_dim": 32, "encoder_depths": [1, 1, 1], "decoder_depths": [1, 1, 1]}
    assert "surf_stats" not in cfg["model"]  # the teacher's data statistics stay the teacher's
    assert cfg["distil"] == {"teacher": teacher, "alpha": 0.3}
    with pytest.raises(ConfigError) as e:
        distil_config({**BASE, "variant": "wave"}, teacher, 0.5)
    assert e.value.field == "variant"
