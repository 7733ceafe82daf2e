"""`auroraops evaluate`: score forecasts (files, or a checkpoint's hindcast) and write a report."""

from __future__ import annotations

import argparse
import tempfile

from model_code.data.fill_modes import FILL_MODES
from model_code.errors import DataError
from model_code.evaluation.metric_names import DEFAULT_METRICS
from model_code.variants import VARIANTS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score forecasts against a truth, beside baselines, and write a report",
        description=(
            "Forecast mode: --forecast files against --truth files, with persistence from the "
            "truth and any --baseline NAME=PATH. Hindcast mode: --checkpoint forecasts from init "
            "times of --data (those in --test-period), persistence from the same data. The "
            "climatology baseline never sees the verified days: it comes from --climatology "
            "files, --climatology-period, or the data before the first initialisation, and is "
            "left out (the report says why) when that holds too little. Writes metrics.json, "
            "scorecards, lead-time curves and report.html into --out (replaced whole, only if "
            "everything succeeded)."
        ),
    )
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--out", required=True, metavar="DIR", help="report directory (path or s3://)")
    forecast = p.add_argument_group("forecast mode")
    forecast.add_argument("--forecast", nargs="+", metavar="PATH", help="forecast files (NetCDF/Zarr), one init each or stacked")
    forecast.add_argument("--truth", nargs="+", metavar="PATH", help="verifying data files (GRIB/NetCDF/Zarr)")
    forecast.add_argument("--baseline", nargs="+", default=[], metavar="NAME=PATH",
                          help="another model's forecast, e.g. ifs=ifs.nc (repeat PATH with the same NAME)")
    forecast.add_argument("--regrid-baselines", action="store_true",
                          help="interpolate baselines onto the model's grid instead of refusing a different grid")
    hind = p.add_argument_group("hindcast mode")
    hind.add_argument("--checkpoint", metavar="URI", help="this project's .safetensors checkpoint (path or s3://)")
    hind.add_argument("--data", nargs="+", metavar="PATH", help="data files the hindcast starts from and verifies on")
    hind.add_argument("--steps", type=int, default=4, help="model steps per forecast (default 4)")
    hind.add_argument("--max-inits", type=int, help="at most this many init times, spread evenly")
    hind.add_argument("--test-period", nargs=2, metavar=("START", "END"),
                      help="verify only the init times in [START, END] (ISO times): the held-out days")
    hind.add_argument("--fill-missing", choices=FILL_MODES, help="fill static variables absent from the data")
    hind.add_argument("--fill-missing-dynamic", choices=FILL_MODES,
                      help="fill dynamic variables absent from the data in the inputs (never scored)")
    hind.add_argument("--crop-to-patch", action="store_true", help="crop the grid to fit the patch size")
    hind.add_argument("--levels", type=float, nargs="+", metavar="HPA", help="pressure levels to use")
    hind.add_argument("--members", type=int, default=1,
                      help="perturbed-initial-condition ensemble of this size (CRPS, spread-skill)")
    hind.add_argument("--perturbation", type=float, default=0.05,
                      help="noise as a fraction of each field's spatial standard deviation (default 0.05)")
    hind.add_argument("--history", metavar="FILE",
                      help="append this window's skill to a JSON-lines history and report drift")
    hind.add_argument("--drift-threshold", type=float, default=0.1,
                      help="relative loss of skill against earlier windows that is flagged (default 0.1)")
    hind.add_argument("--explain", action="store_true",
                      help="add occlusion, gradient x input, saliency and attention maps (first init)")
    hind.add_argument("--explain-output", metavar="VAR", help="output variable explained (default: first output)")
    hind.add_argument("--explain-level", type=float, metavar="HPA", help="its level, for atmospheric outputs")
    hind.add_argument("--explain-region", type=float, nargs=4, metavar=("S", "N", "W", "E"),
                      help="box the explained output is averaged over (default: the whole grid)")
    p.add_argument("--climatology", nargs="+", metavar="PATH",
                   help="data files to build the climatology from; they must not overlap the verified period "
                        "(default: the truth/data before the first initialisation)")
    p.add_argument("--climatology-period", nargs=2, metavar=("START", "END"),
                   help="build the climatology from [START, END] (ISO times) of the --climatology files or "
                        "the truth/data; it must not overlap the verified period")
    p.add_argument("--regions", nargs="+", metavar="NAME", help="regions (default: the variant's target regions)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="NAME",
                   help=f"metrics (default: {' '.join(DEFAULT_METRICS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of synthetic fills and ensemble noise")
    p.set_defaults(run=run)


def _baselines(specs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in specs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DataError(f"--baseline '{item}': expected NAME=PATH, e.g. ifs=ifs_forecast.nc")
        if name in ("model", "persistence", "climatology"):
            raise DataError(f"--baseline '{item}': the name '{name}' is taken; choose another")
        out.setdefault(name, []).append(path)
    return out


def _mode(args: argparse.Namespace) -> str:
    forecast = bool(args.forecast or args.truth or args.baseline)
    hindcast = bool(args.checkpoint or args.data)
    if forecast == hindcast:
        raise DataError("give either --forecast and --truth (forecast mode) or --checkpoint and --data "
                        "(hindcast mode)")
    if forecast and not (args.forecast and args.truth):
        raise DataError("forecast mode needs both --forecast and --truth")
    if hindcast and not (args.checkpoint and args.data):
        raise DataError("hindcast mode needs both --checkpoint and --data")
    hindcast_only = [flag for flag, on in (("--history", args.history), ("--explain", args.explain),
                                           ("--members", args.members != 1), ("--test-period", args.test_period))
                     if on]
    if forecast and hindcast_only:
        raise DataError(f"{', '.join(hindcast_only)} need(s) hindcast mode (--checkpoint and --data)")
    return "forecast" if forecast else "hindcast"


def run(args: argparse.Namespace) -> int:
    from model_code.evaluation.explain import save_figures
    from model_code.evaluation.report import write_report

    if _mode(args) == "forecast":
        scores, notes = _forecast_mode(args)
        report = write_report(scores, args.out, notes=notes)
    else:
        scores, notes, expl = _hindcast_mode(args)
        with tempfile.TemporaryDirectory(prefix="auroraops-explain-") as tmp:
            figures = save_figures(expl, tmp) if expl else []
            report = write_report(scores, args.out, notes=notes, figures=figures,
                                  explanation=expl.summary() if expl else None)
    print(f"report written: {report.out_dir}")
    print(f"  {report.metrics}\n  {report.html}")
    for name, entry in report.card["baselines"].items():
        share = entry["share_improved"]
        print(f"  vs {name}: better on {entry['improved']} of {entry['compared']} targets"
              + (f" ({100 * share:.0f}%)" if share is not None else ""))
    if scores.excluded:
        print(f"  {len(scores.excluded)} exclusion(s) listed in metrics.json")
    for n in [*scores.notes, *notes]:
        print(f"  note: {n}")
    return 0


def _forecast_mode(args):
    from model_code.evaluation.baselines import climatology_forecast, persistence, user_baseline
    from model_code.evaluation.continuous import climatology_of, verified_subject
    from model_code.evaluation.forecasts import on_forecast_points, open_forecasts
    from model_code.evaluation.score import evaluate, target_options
    from model_code.evaluation.truth import open_truth
    from model_code.storage import content_hash, data_hash

    baselines = _baselines(args.baseline)
    model = open_forecasts(args.forecast)
    truth, note = on_forecast_points(open_truth(args.truth), model)
    notes = [note] if note else []
    inits, leads = model["init_time"].values, model["lead_time"].values
    ref = climatology_of(args.climatology or args.truth, model, period=args.climatology_period,
                         explicit=bool(args.climatology))
    forecasts = {"model": model, "persistence": persistence(truth, inits, leads)}
    if ref.dataset is not None:
        forecasts["climatology"] = climatology_forecast(ref.dataset, inits, leads)
    for name, paths in baselines.items():
        forecasts[name] = user_baseline(paths, model, name, regrid=args.regrid_baselines)
    options = target_options(args.variant, model)
    default_regions = options.pop("regions")
    regions = tuple(args.regions) if args.regions else default_regions
    scores = evaluate(forecasts, truth, climatology=ref.dataset, regions=regions, metrics=args.metrics,
                      variant=args.variant, truth_name=", ".join(args.truth), **options)
    scores.notes.append(f"climatology: {ref.note}")
    scores.subject.update(model={"forecast": list(args.forecast),
                                 "sha256": data_hash(args.forecast) if len(args.forecast) > 1
                                 else content_hash(args.forecast[0])},
                          data_hash=data_hash(args.truth), **verified_subject(model))
    return scores, notes


def _hindcast_mode(args):
    from model_code.evaluation.continuous import evaluate_window, score_checkpoint

    with tempfile.TemporaryDirectory(prefix="auroraops-evaluate-") as tmp:
        checkpoint, version = _checkpoint(args.checkpoint, tmp)
        cfg = _hindcast_config(args, checkpoint)
        result = score_checkpoint(cfg)
        if version is not None:
            result.scores.subject["model"].update(checkpoint=args.checkpoint, version=version)
        n_inits = result.forecasts.sizes["init_time"]
        notes = [f"hindcast of {args.checkpoint}: {n_inits} init time(s) x {args.steps} step(s)"
                 + (f", {args.members}-member perturbed-initial-condition ensemble" if args.members > 1 else "")]
        if args.history:
            window = evaluate_window(result.config, args.history, threshold=args.drift_threshold, result=result)
            drift = window.drift
            notes.append(f"skill history {window.history}: compared with {drift['compared_with']} earlier "
                         "window(s); " + (f"drift beyond {100 * drift['threshold']:.0f}% in: "
                                          f"{', '.join(drift['flagged'])}" if drift["flagged"] else "no drift flagged"))
        return result.scores, notes, _explain(args, result) if args.explain else None


def _checkpoint(uri: str, tmp: str) -> tuple[str, str | None]:
    """A local path for `uri`, and the registry version when it is a `models:/` URI."""
    if not uri.startswith("models:/"):
        return uri, None
    from adapters.registry import resolve_checkpoint, resolve_version

    name, version = resolve_version(uri)
    return resolve_checkpoint(f"models:/{name}/{version}", tmp), version


def _hindcast_config(args, checkpoint: str):
    from model_code.evaluation.continuous import HindcastConfig

    return HindcastConfig(
        checkpoint=checkpoint, data=tuple(args.data), steps=args.steps, variant=args.variant,
        max_inits=args.max_inits, fill_missing=args.fill_missing, fill_missing_dynamic=args.fill_missing_dynamic,
        crop=args.crop_to_patch or None, levels=tuple(args.levels) if args.levels else None,
        regions=tuple(args.regions) if args.regions else None, metrics=tuple(args.metrics), members=args.members,
        perturbation=args.perturbation, seed=args.seed,
        climatology=tuple(args.climatology) if args.climatology else None,
        climatology_period=tuple(args.climatology_period) if args.climatology_period else None,
        init_period=tuple(args.test_period) if args.test_period else None,
    )


def _explain(args, result):
    """The explanation of one model step from the hindcast's first init window."""
    from model_code.data.windows import WindowDataset
    from model_code.evaluation.explain import explain
    from model_code.variants import with_timestep

    cfg = result.config
    spec = with_timestep(result.spec, result.model.timestep)
    data = WindowDataset.from_files(
        list(cfg.data), spec, validate=False, lead_steps=range(1, cfg.steps + 1),
        init_times=result.forecasts["init_time"].values[:1], levels=list(cfg.levels) if cfg.levels else None,
        fill_missing=cfg.fill_missing, fill_missing_dynamic=cfg.fill_missing_dynamic, crop=cfg.crop, seed=cfg.seed)
    return explain(result.model, spec, data.window(0), output=args.explain_output, level=args.explain_level,
                   region=tuple(args.explain_region) if args.explain_region else None)
