"""Training samples from real IFS fields: lazy windows, targets, splits, collation, seeded loaders.

The IFS sample holds z, t, u, v and r (-> q) on 6 levels at 8 consecutive 6-hourly times on
a 10° grid, but no surface or static fields: the surface variables come from a synthetic
file written here (labelled as such), the statics from another file or are filled.
"""

from __future__ import annotations

import pickle
import random
import shutil
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr

from conftest import IFS_8_STEPS
from model_code.data import lazy_fields as lazy_fields_module
from model_code.data import loader as loader_module
from model_code.data.ingest import Field, read_fields
from model_code.data.loader import collate, make_loader
from model_code.data.samples import Sample, pair_predictions
from model_code.data.splits import split_by_time
from model_code.data.synthetic import regular_grid, synthetic_dataarray, synthetic_window
from model_code.data.windows import WindowDataset
from model_code.errors import DataError
from model_code.forecast import forecast_steps
from model_code.variants import build_model, get_variant

SPEC = get_variant("medium-range")
STEP = np.timedelta64(6, "h")
DYNAMIC = ("z", "t", "u", "v", "q")
SURFACE = [v for v in SPEC.inputs() if v.kind == "surface"]
STATIC = [v for v in SPEC.inputs() if v.kind == "static"]
OPTIONS = dict(lead_steps=(1, 2), crop=True, fill_missing="synthetic")  # 19x36 -> 17x36 for patch 4


@pytest.fixture(scope="module")
def ifs():
    fields, _ = read_fields([(str(IFS_8_STEPS), IFS_8_STEPS)])
    return fields


@pytest.fixture(scope="module")
def files(ifs, tmp_path_factory):
    """The real IFS fields as NetCDF and as Zarr (one time per chunk), plus synthetic surface
    and static files on the same grid and times."""
    d = tmp_path_factory.mktemp("loader")
    real = xr.Dataset({k: ifs[k].data for k in DYNAMIC})
    real.to_netcdf(d / "ifs.nc")
    real.to_zarr(d / "ifs.zarr", zarr_format=2, consolidated=True,
                 encoding={k: {"chunks": (1, 6, 19, 36)} for k in DYNAMIC})
    times, lat, lon = real.time.values, real.latitude.values, real.longitude.values
    xr.Dataset({v.dataset_name: synthetic_dataarray(v, lat, lon, times) for v in SURFACE}).to_netcdf(d / "surface.nc")
    xr.Dataset({v.dataset_name: synthetic_dataarray(v, lat, lon, seed=5) for v in STATIC}).to_netcdf(d / "static.nc")
    return SimpleNamespace(nc=d / "ifs.nc", zarr=d / "ifs.zarr", surface=d / "surface.nc",
                           static=d / "static.nc", times=times)


@pytest.fixture(scope="module")
def nc_fields(files):
    fields, _ = read_fields([(str(p), p) for p in (files.nc, files.surface)])
    return fields


@pytest.fixture(scope="module")
def dataset(files):
    return WindowDataset.from_files([files.nc, files.surface], SPEC, **OPTIONS)


def tensors(sample: Sample) -> dict[str, torch.Tensor]:
    """Every tensor of a sample, keyed by where it sits."""
    out = {}
    for name, batch in [("inputs", sample.inputs)] + [(f"lead{k}", t) for k, t in zip(sample.lead_steps, sample.targets)]:
        for group in ("surf_vars", "static_vars", "atmos_vars"):
            out.update({f"{name}.{group}.{k}": v for k, v in getattr(batch, group).items()})
        out[f"{name}.lat"], out[f"{name}.lon"] = batch.metadata.lat, batch.metadata.lon
    return out


def assert_same(a: Sample, b: Sample) -> None:
    assert a.inputs.metadata.time == b.inputs.metadata.time
    assert [t.metadata.time for t in a.targets] == [t.metadata.time for t in b.targets]
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


# --------------------------------------------------------------------------------------
# Samples


def test_a_sample_holds_its_history_and_the_truth_at_each_lead_time(dataset, files, ifs):
    times = files.times
    # Inits need one time before (history 2) and two after (leads 1, 2): times[1] .. times[5].
    np.testing.assert_array_equal(dataset.init_times, times[1:6])
    s = dataset[2]
    init = times[3]
    assert s.inputs.metadata.time == (init.astype("datetime64[us]").item(),)
    assert s.inputs.surf_vars["2t"].shape == (1, 2, 17, 36)
    assert s.inputs.atmos_vars["t"].shape == (1, 2, 6, 17, 36)
    assert s.inputs.metadata.atmos_levels == (300, 400, 500, 700, 850, 1000)
    real_t = ifs["t"].data.values  # (8, 6, 19, 36), the file's own values
    np.testing.assert_array_equal(s.inputs.atmos_vars["t"][0].numpy(), real_t[2:4, :, :17])

    surface = xr.open_dataset(files.surface)
    assert s.lead_steps == (1, 2) and len(s.targets) == 2
    for k, target in zip(s.lead_steps, s.targets):
        assert target.metadata.time == ((init + k * STEP).astype("datetime64[us]").item(),)
        assert set(target.surf_vars) == set(SPEC.output_surf_vars) and not target.static_vars
        assert set(target.atmos_vars) == set(SPEC.atmos_vars)
        # Aurora drops the last of 17 rows (17 % 4 == 1); targets come cropped the same way.
        assert target.surf_vars["2t"].shape == (1, 1, 16, 36)
        assert target.atmos_vars["q"].shape == (1, 1, 6, 16, 36)
        torch.testing.assert_close(target.metadata.lat, s.inputs.metadata.lat[:16])
        np.testing.assert_array_equal(target.atmos_vars["t"][0, 0].numpy(), real_t[3 + k, :, :16])
        np.testing.assert_array_equal(target.surf_vars["msl"][0, 0].numpy(), surface["msl"].values[3 + k, :16])

    assert dataset.provenance.filled == {"lsm": "synthetic", "z_surface": "synthetic", "slt": "synthetic"}
    assert s.inputs.static_vars["lsm"].shape == (17, 36)
    np.testing.assert_array_equal(dataset.times_used(2), times[2:6])


def test_grib_netcdf_and_zarr_give_the_same_samples(dataset, files):
    for source in (IFS_8_STEPS, files.zarr):
        other = WindowDataset.from_files([source, files.surface], SPEC, **OPTIONS)
        np.testing.assert_array_equal(other.init_times, dataset.init_times)
        assert_same(other[4], dataset[4])


def test_a_sample_reads_only_its_own_times(dataset, files, tmp_path, monkeypatch):
    monkeypatch.setattr(lazy_fields_module, "READ_AHEAD_BYTES", 0)  # no read-ahead: see the next test
    # Zarr, one time per chunk: make every chunk that sample 0 does not use unreadable.
    store = tmp_path / "ifs.zarr"
    shutil.copytree(files.zarr, store)
    used = {int(np.flatnonzero(files.times == t)[0]) for t in dataset.times_used(0)}
    assert used == {0, 1, 2, 3}
    for var in DYNAMIC:
        for chunk in (store / var).glob("[0-9]*"):
            if int(chunk.name.split(".")[0]) not in used:
                chunk.write_bytes(b"not a blosc chunk" * 8)
    lazy = WindowDataset.from_files([store, files.surface], SPEC, validate=False, **OPTIONS)  # reads no chunk
    assert_same(lazy[0], dataset[0])
    with pytest.raises(RuntimeError, match="decompress"):
        lazy[4]  # needs times 4..7

    # NetCDF: a sample reads only its own times, and each time once: the next sample reads
    # only the time it does not share with this one.
    selections = spy_reads(monkeypatch)
    fresh = WindowDataset.from_files([files.nc, files.surface], SPEC, validate=False, **OPTIONS)
    fresh[3]
    assert {key for key, _ in selections} == {"t2m", "u10", "v10", "msl", "z", "t", "u", "v", "q"}
    assert max(n for _, n in selections) == 2
    assert sum(n for key, n in selections if key == "t") == 2 + 2  # history + one per lead
    selections.clear()
    assert_same(fresh[4], dataset[4])
    assert sum(n for key, n in selections if key == "t") == 1  # only init + 2 steps is new


def spy_reads(monkeypatch) -> list[tuple[str, int]]:
    """(variable, number of times) of every read of a dynamic field from its file."""
    selections = []
    original = Field._loaded

    def spy(self, da):
        if self.var.kind != "static":
            selections.append((self.key, da.sizes["time"]))
        return original(self, da)

    monkeypatch.setattr(Field, "_loaded", spy)
    return selections


def test_reads_ahead_within_its_byte_budget(dataset, files, monkeypatch):
    t = xr.open_dataset(files.nc).t
    per_time = t.nbytes // t.sizes["time"]
    monkeypatch.setattr(lazy_fields_module, "READ_AHEAD_BYTES", 5 * per_time)
    selections = spy_reads(monkeypatch)
    fresh = WindowDataset.from_files([files.nc, files.surface], SPEC, validate=False, **OPTIONS)
    for i in range(3):
        assert_same(fresh[i], dataset[i])
    # Sample 0 uses times 0..3 and reads 0..4 at once, sample 1 (1..4) reads nothing, and
    # sample 2 (2..5) reads 5..7, the last times of the file.
    assert [n for key, n in selections if key == "t"] == [5, 3]


def test_static_fields_can_come_from_their_own_file(dataset, files):
    with_statics = WindowDataset.from_files([files.nc, files.surface, files.static], SPEC, lead_steps=(1, 2),
                                            crop=True)
    assert with_statics.provenance.filled == {}
    static = xr.open_dataset(files.static)
    lsm = with_statics[0].inputs.static_vars["lsm"].numpy()
    np.testing.assert_array_equal(lsm, static["lsm"].values[:17])
    assert not np.array_equal(lsm, dataset[0].inputs.static_vars["lsm"].numpy())  # not the filled one


# --------------------------------------------------------------------------------------
# Refused before any model exists


def test_dynamic_variables_are_never_filled(files):
    with pytest.raises(DataError) as err:
        WindowDataset.from_files([files.nc], SPEC, **OPTIONS)
    text = str(err.value)
    assert "4 variable(s)" in text and "never filled" in text
    for key in ("'t2m'", "'u10'", "'v10'", "'msl'"):
        assert key in text
    assert "needed as input and target" in text


def test_missing_dynamic_variables_can_fill_the_inputs_only_with_nan_targets(files):
    """The surface file left out: its variables are filled in the inputs, their truth is NaN."""
    ds = WindowDataset.from_files([files.nc], SPEC, fill_missing_dynamic="synthetic", **OPTIONS)
    sample = ds[0]
    for name in ("2t", "10u", "10v", "msl"):
        assert torch.isfinite(sample.inputs.surf_vars[name]).all(), name
        assert all(torch.isnan(t.surf_vars[name]).all() for t in sample.targets), name
    assert all(torch.isfinite(t.atmos_vars["z"]).all() for t in sample.targets)  # real truth stays
    assert {v.dataset_name for v in ds.filled_dynamic} == {"t2m", "u10", "v10", "msl"}
    assert ds.provenance.filled["u10"] == "synthetic (inputs only; targets NaN)"
    assert any("inputs only" in note and "u10" in note for note in ds.provenance.notes)
    with pytest.raises(DataError, match="none of the variables the medium-range variant predicts"):
        WindowDataset.from_files([files.static], SPEC, fill_missing_dynamic="zeros", **OPTIONS)


def test_a_timestep_option_cuts_samples_at_that_step_and_the_model_follows(files):
    # Regridded to 5° (37x72): the tiny backbone needs more columns than 10° gives.
    ds = WindowDataset.from_files([files.nc, files.surface], SPEC, regrid_to=5.0, timestep=timedelta(hours=12),
                                  lead_steps=(1,), fill_missing="synthetic")
    assert ds.spec.timestep == timedelta(hours=12) and SPEC.timestep == timedelta(hours=6)
    assert len(ds) == 4  # 8 times 6 h apart: inits with a time 12 h before and 12 h after
    assert np.all(np.diff(ds.times_used(0)) == np.timedelta64(12, "h"))
    model = build_model(ds.spec, "tiny")
    assert model.timestep == timedelta(hours=12)
    sample = ds[0]
    predictions = list(forecast_steps(model, sample.inputs, 1))
    assert pair_predictions(predictions, sample)[0][0].metadata.time == sample.targets[0].metadata.time
    assert pickle.loads(pickle.dumps(ds)).spec.timestep == timedelta(hours=12)


def test_missing_statics_need_a_file_or_a_fill(nc_fields):
    with pytest.raises(DataError) as err:
        WindowDataset(nc_fields, SPEC, lead_steps=(1,), crop=True)
    assert "'lsm'" in str(err.value) and "fill_missing='synthetic'" in str(err.value)


@pytest.mark.parametrize("options, message", [
    (dict(lead_steps=(0, 1)), r"lead_steps must be whole numbers of model steps >= 1"),
    (dict(lead_steps=(1.5,)), r"lead_steps must be whole numbers"),
    (dict(history=3), r"history of 3 step\(s\); the medium-range variant takes 1 to 2"),
    (dict(lead_steps=(7,)), r"no initialisation time has the 2 input time\(s\) 6 h apart and the targets at "
                            r"\+42 h .*48 h from first input.*8 time\(s\) in common, 2024-06-03T00:00 to "
                            r"2024-06-04T18:00, spaced 6 hours"),
    (dict(init_times=["2024-06-03T00:00", "2024-06-03T12:00"]),
     r"1 initialisation time\(s\) cannot start a sample(.|\n)*2024-06-03T00:00: missing 2024-06-02T18:00"),
    (dict(crop=False), r"grid 19x36 does not fit patch size 4 .*crop=True"),
    (dict(levels=(500, 925)), r"925 hPa is not in every atmospheric variable"),
])
def test_unusable_settings_are_refused_with_what_was_expected(nc_fields, options, message):
    with pytest.raises(DataError, match=message):
        WindowDataset(nc_fields, SPEC, **{**OPTIONS, **options})


def test_explicit_init_times_and_levels(nc_fields, files):
    ds = WindowDataset(nc_fields, SPEC, **OPTIONS, init_times=[files.times[4], "2024-06-03T12:00"], levels=(850, 500))
    np.testing.assert_array_equal(ds.init_times, [files.times[2], files.times[4]])
    s = ds[1]
    assert s.inputs.metadata.atmos_levels == (500, 850) == s.targets[0].metadata.atmos_levels
    assert s.targets[1].atmos_vars["z"].shape == (1, 1, 2, 16, 36)


# --------------------------------------------------------------------------------------
# Splits by time


@pytest.fixture(scope="module")
def long_series(tmp_path_factory):
    """Ten days of 6-hourly synthetic fields on a 17x36 grid (every variable, 3 levels)."""
    lat, lon = regular_grid(10.0)
    times = np.arange(np.datetime64("2024-01-01T00"), np.datetime64("2024-01-11T00"), STEP).astype("datetime64[ns]")
    path = tmp_path_factory.mktemp("series") / "series.nc"
    synthetic_window(SPEC, lat[:17], lon, times, levels=(500, 850, 1000)).to_netcdf(path)
    return WindowDataset.from_files([path], SPEC, lead_steps=(1, 2, 4))


def times_of(ds: WindowDataset) -> set:
    return {t for i in range(len(ds)) for t in ds.times_used(i).tolist()}


def test_a_split_by_fractions_shares_no_time_and_keeps_the_gap(long_series):
    assert len(long_series) == 40 - 1 - 4  # one time of history before, four steps of leads after
    splits = split_by_time(long_series, train=0.6, val=0.2, test=0.2, gap=timedelta(days=1))
    used = {name: times_of(ds) for name, ds in splits.items()}
    assert all(splits.values()) and set(splits) == {"train", "val", "test"}
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    day = np.timedelta64(1, "D").astype("timedelta64[ns]").astype(int)
    assert min(used["val"]) - max(used["train"]) >= day and min(used["test"]) - max(used["val"]) >= day
    # Samples straddling a boundary or inside a gap are dropped, not assigned to either side.
    assert sum(len(ds) for ds in splits.values()) < len(long_series)


def test_a_split_by_periods_keeps_every_sample_inside_its_period(long_series):
    edge = np.datetime64("2024-01-06T00")
    splits = split_by_time(long_series, train=("2024-01-01", edge), val=(edge, "2024-01-11"))
    train, val = splits["train"], splits["val"]
    assert max(times_of(train)) < edge.astype("datetime64[ns]").astype(int) <= min(times_of(val))
    # Filtering on the init time alone would leak: the init at 2024-01-05T12 has targets after the edge.
    assert np.datetime64("2024-01-05T12") in long_series.init_times
    assert np.datetime64("2024-01-05T12") not in train.init_times and np.datetime64("2024-01-05T12") not in val.init_times
    assert train.spec is long_series.spec and train[0].lead_steps == (1, 2, 4)


@pytest.mark.parametrize("periods, message", [
    (dict(train=("2024-01-01", "2024-01-06"), val=("2024-01-05", "2024-01-11")), "train and val periods overlap"),
    (dict(train=("2024-01-01", "2024-01-06"), val=("2024-01-06T12", "2024-01-11"), gap=timedelta(days=1)),
     r"are 12 hours apart; the gap asked for is 1 day"),
    (dict(train=("2024-01-01", "2024-01-06"), val=("2024-01-06", "2024-01-07")),
     r"the val period 2024-01-06T00:00 to 2024-01-07T00:00 holds no complete sample; a sample spans 30 hours"),
    (dict(train=0.8, val=("2024-01-06", "2024-01-11")), "every period as"),
    (dict(train=0.8, val=0.3), "sum to at most 1"),
])
def test_bad_splits_are_refused(long_series, periods, message):
    with pytest.raises(DataError, match=message):
        split_by_time(long_series, **periods)


# --------------------------------------------------------------------------------------
# Collation


def test_collate_stacks_samples_along_the_batch_dimension(dataset):
    a, b = dataset[0], dataset[3]
    batch = collate([a, b])
    assert batch.batch_size == 2 and batch.lead_steps == (1, 2)
    assert batch.inputs.surf_vars["2t"].shape == (2, 2, 17, 36)  # (b, t, h, w)
    assert batch.inputs.atmos_vars["u"].shape == (2, 2, 6, 17, 36)  # (b, t, c, h, w)
    assert batch.inputs.static_vars["z"].shape == (17, 36)
    assert batch.inputs.metadata.time == a.inputs.metadata.time + b.inputs.metadata.time
    assert batch.targets[1].metadata.time == a.targets[1].metadata.time + b.targets[1].metadata.time
    assert torch.equal(batch.targets[1].atmos_vars["t"][1], b.targets[1].atmos_vars["t"][0])
    assert torch.equal(batch.inputs.surf_vars["msl"][0], a.inputs.surf_vars["msl"][0])


def test_collate_refuses_samples_that_cannot_share_a_batch(dataset, nc_fields):
    zeros = WindowDataset(nc_fields, SPEC, **{**OPTIONS, "fill_missing": "zeros"})
    with pytest.raises(DataError, match=r"element 1 \(init 2024-06-03T06:00\) differs from element 0 in "
                                        r"static variable 'lsm'"):
        collate([dataset[0], zeros[0]])
    fewer_levels = WindowDataset(nc_fields, SPEC, **OPTIONS, levels=(500, 850))
    with pytest.raises(DataError, match="in the levels of its inputs"):
        collate([dataset[0], fewer_levels[0]])
    longer = WindowDataset(nc_fields, SPEC, **{**OPTIONS, "lead_steps": (1, 3)})
    with pytest.raises(DataError, match=r"in lead steps: \(1, 3\) vs \(1, 2\)"):
        collate([dataset[0], longer[0]])


# --------------------------------------------------------------------------------------
# Augmentation and seeded loaders


def roll_east(ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
    """Move the planet east by a random number of columns, statics and targets included."""
    return ds.roll(longitude=int(rng.integers(1, ds.sizes["longitude"])), roll_coords=False)


def noisy_t2m(ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
    return ds.assign(t2m=ds.t2m + rng.normal(0, 0.5, ds.t2m.shape).astype("float32"))


def shift_of(moved: torch.Tensor, original: torch.Tensor) -> int:
    """The eastward roll (in columns) that turns `original` into `moved`; exactly one must fit."""
    shifts = [k for k in range(original.shape[-1]) if torch.equal(moved, torch.roll(original, k, dims=-1))]
    assert len(shifts) == 1, shifts
    return shifts[0]


def test_augment_moves_inputs_and_targets_together_and_input_noise_spares_the_truth(dataset, nc_fields):
    plain = dataset[1]
    augmented = WindowDataset(nc_fields, SPEC, **OPTIONS, augment=roll_east, input_augment=noisy_t2m, seed=3)
    ours = augmented[1]
    shift = shift_of(ours.inputs.atmos_vars["t"], plain.inputs.atmos_vars["t"])
    assert shift != 0
    assert torch.equal(ours.inputs.static_vars["lsm"], torch.roll(plain.inputs.static_vars["lsm"], shift, -1))
    for mine, truth in zip(ours.targets, plain.targets):
        for key in truth.surf_vars:  # targets moved the same way, and got no noise
            assert torch.equal(mine.surf_vars[key], torch.roll(truth.surf_vars[key], shift, -1)), key
        assert torch.equal(mine.atmos_vars["q"], torch.roll(truth.atmos_vars["q"], shift, -1))
    rolled_t2m = torch.roll(plain.inputs.surf_vars["2t"], shift, -1)
    assert 0.3 < float((ours.inputs.surf_vars["2t"] - rolled_t2m).std()) < 0.7

    # In a batch every sample moves by one shift, so they share statics and can be stacked.
    batch = collate(augmented.__getitems__([0, 3]))
    shifts = {shift_of(batch.inputs.atmos_vars["t"][j], dataset[i].inputs.atmos_vars["t"][0]) for j, i in enumerate((0, 3))}
    assert len(shifts) == 1


def test_an_augment_may_not_change_the_time_axis(nc_fields):
    drop_first = WindowDataset(nc_fields, SPEC, **OPTIONS, augment=lambda ds, rng: ds.isel(time=slice(1, None)))
    with pytest.raises(DataError, match="augment changed the time axis"):
        drop_first[0]


def run_epoch(loader) -> list[tuple]:
    return [(batch.inputs.metadata.time, tensors(batch)) for batch in loader]


def assert_same_run(a: list[tuple], b: list[tuple]) -> None:
    assert [times for times, _ in a] == [times for times, _ in b]
    for (_, ta), (_, tb) in zip(a, b):
        assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_the_same_seed_gives_the_same_batches_with_or_without_workers(nc_fields):
    ds = WindowDataset(nc_fields, SPEC, **OPTIONS, augment=roll_east, input_augment=noisy_t2m, seed=1)
    first = run_epoch(make_loader(ds, 2, shuffle=True, seed=11))
    again = run_epoch(make_loader(ds, 2, shuffle=True, seed=11))
    workers = run_epoch(make_loader(ds, 2, shuffle=True, seed=11, num_workers=2))  # forked, NetCDF reopened
    assert [len(times) for times, _ in first] == [2, 2, 1]
    assert_same_run(first, again)
    assert_same_run(first, workers)
    order = [t for times, _ in first for t in times]
    other_seed = [t for times, _ in run_epoch(make_loader(ds, 2, shuffle=True, seed=12)) for t in times]
    assert other_seed != order and sorted(other_seed) == sorted(order)

    ds.set_epoch(1)  # same order from the same loader seed, other augmentations
    next_epoch = run_epoch(make_loader(ds, 2, shuffle=True, seed=11))
    assert [times for times, _ in next_epoch] == [times for times, _ in first]
    assert not torch.equal(next_epoch[0][1]["inputs.surf_vars.2t"], first[0][1]["inputs.surf_vars.2t"])


def test_workers_are_seeded_from_the_loader_seed_and_their_id(monkeypatch):
    monkeypatch.setattr(torch, "initial_seed", lambda: 1234)  # a worker's base seed from the loader
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    draws = []
    for seed, worker_id in ((7, 0), (7, 1), (7, 0), (8, 0)):
        loader_module._seed_worker(seed, worker_id)
        draws.append((random.random(), np.random.random(), torch.rand(1).item()))
    random.setstate(saved[0]), np.random.set_state(saved[1]), torch.set_rng_state(saved[2])
    assert draws[0] == draws[2]  # same seed and worker: same streams
    assert len({draws[0], draws[1], draws[3]}) == 3


def test_a_dataset_from_files_survives_pickling(dataset):
    assert "t" not in dataset.__getstate__()["_fields"]  # files are reopened by path, not shipped
    restored = pickle.loads(pickle.dumps(dataset))
    assert_same(restored[1], dataset[1])


# --------------------------------------------------------------------------------------
# Through the model


def test_a_collated_batch_runs_through_the_tiny_model_and_lines_up_with_its_targets(files):
    # Regridded to 5° (37x72): the tiny backbone needs more columns than 10° gives.
    coarse = WindowDataset.from_files([files.nc, files.surface], SPEC, regrid_to=5.0, lead_steps=(1, 2),
                                      fill_missing="synthetic")
    batch = next(iter(make_loader(coarse, 2, shuffle=True, seed=0)))
    assert batch.inputs.surf_vars["2t"].shape == (2, 2, 37, 72)
    model = build_model(SPEC, "tiny")
    predictions = list(forecast_steps(model, batch.inputs, max(batch.lead_steps)))
    pairs = pair_predictions(predictions, batch)
    assert len(pairs) == 2
    for k, (pred, target) in zip(batch.lead_steps, pairs):
        assert pred.metadata.time == target.metadata.time
        assert target.metadata.time == tuple(t + k * SPEC.timestep for t in batch.inputs.metadata.time)
        torch.testing.assert_close(pred.metadata.lat, target.metadata.lat)  # 36 rows: 37 % 4 == 1 cropped
        for group in ("surf_vars", "atmos_vars"):
            got, want = getattr(pred, group), getattr(target, group)
            assert got.keys() == want.keys()
            for key in want:
                assert got[key].shape == want[key].shape, key
        assert target.surf_vars["2t"].shape == (2, 1, 36, 72)
        loss = torch.nn.functional.mse_loss(pred.surf_vars["2t"], target.surf_vars["2t"])
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="roll out 2 steps"):
        pair_predictions(predictions[:1], batch)
    with pytest.raises(DataError, match="in the grid of its inputs"):
        collate([batch, WindowDataset.from_files([files.nc, files.surface], SPEC, **OPTIONS)[0]])


def test_building_a_loader_validates_first_and_stops_with_the_report(files, tmp_path, monkeypatch):
    """A NaN block and temperatures in °C stop the dataset before any sample or model exists."""
    bad = xr.open_dataset(files.nc).load()
    bad["t"] = bad["t"] - 273.15  # labelled K, holds °C
    bad["u"][3, 2, 4:8, 5:9] = np.nan
    bad.to_netcdf(tmp_path / "bad.nc")
    built = []
    monkeypatch.setattr(WindowDataset, "__init__", lambda self, *a, **k: built.append(1))
    with pytest.raises(DataError) as err:
        WindowDataset.from_files([tmp_path / "bad.nc", files.surface], SPEC, **OPTIONS)
    text = str(err.value)
    assert "data failed 2 check(s)" in text
    assert "[units] values look like degrees Celsius" in text and "[nan_share]" in text and "variable u" in text
    assert built == []


def test_the_slice_cache_stays_within_its_bound_and_drops_the_oldest_first():
    from model_code.data.lazy_fields import _SliceCache

    cache = _SliceCache(max_bytes=3 * 400)
    for i in range(5):
        cache.put(("t", np.datetime64(i, "h")), np.zeros(100, np.float32))  # 400 bytes each
        assert cache.bytes <= cache.max_bytes
    assert cache.get(("t", np.datetime64(0, "h"))) is None and cache.get(("t", np.datetime64(4, "h"))) is not None
