"""An evaluation report: machine-readable metrics, lead-time curves, scorecards and one HTML page.

`write_report(scores, out_dir)` writes, into a directory that appears whole or not at all:

- `metrics.json`: `Scores.to_json` (every record and exclusion); the pipeline gates read it;
- `curves/<variable>[_<level>]_<metric>.png`: the metric against lead time, the model and
  every baseline on the same axes, one panel per region;
- `scorecard.json`, `scorecard.md` and `scorecard_<baseline>.png`: the model against each
  baseline per variable, level, region, metric and lead time, as a skill score (positive:
  the model is better) and the share of targets improved;
- `ensemble/spread_<variable>[_<level>].png` and `ensemble/rank_histogram_<variable>[_<level>].png`,
  when the scores hold ensemble records: the ensemble spread against the RMSE of the ensemble
  mean per lead time (a reliable ensemble lies on the 1:1 line), and the rank histogram
  (flat when reliable), per target variable;
- `report.html`: all of it on one self-contained page (images embedded as base64), plus the
  explainability figures and summary when given.

Skill of a model value m over a baseline value b (`score.skill`): the MSE skill score
`1 - m²/b²` for RMSE, `1 - m/b` for MAE and CRPS, the reduction of |bias| (and of the
spread-skill ratio's distance from 1) bounded in [-1, 1], the difference for ACC, hit rate,
FAR, CSI and ETS. None of them explodes when the baseline is near its perfect value, as a
percentage of it does. A missing value or a perfect ratio baseline leaves the target out of
the scorecard, and the scorecard lists it as such.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from model_code.errors import DataError
from model_code.evaluation.score import DESCRIPTIVE, skill, targets
from model_code.storage import is_s3, write_atomic
from model_code.variables import by_key

__all__ = ["Report", "scorecard", "spread_and_error", "write_report"]


def _key(r: Mapping[str, Any]) -> tuple:
    """(variable, level, region, metric, lead) of a record; a threshold metric's name carries
    its threshold (`csi >=q0.9`) so that two thresholds are two targets."""
    metric = r["metric"] + (f" {r['threshold']}" if r.get("threshold") else "")
    return (r["variable"], r.get("level"), r.get("region", "global"), metric, float(r["lead_hours"]))


def _target_label(variable: str, level: float | None, region: str, metric: str, regions: int) -> str:
    text = f"{variable}" + (f" {level:g} hPa" if level is not None else "") + f" {metric}"
    return text + (f" [{region}]" if regions > 1 else "")


def scorecard(records: Sequence[Mapping[str, Any]], model: str) -> dict:
    """The model against every other forecast in `records`, target by target.

    Returns `{"model", "baselines": {name: {"improved", "compared", "share_improved",
    "rows": [...], "skipped": [...]}}, "overall": {...}}`; a row is `{variable, level,
    region, metric, lead_hours, model, baseline, skill, better}` (`score.skill`). Descriptive
    records (rank histograms) have no skill and are left out.
    """
    by_forecast: dict[str, dict[tuple, float]] = defaultdict(dict)
    for r in _ordered(records):
        by_forecast[r["forecast"]][_key(r)] = r["value"]
    if model not in by_forecast:
        raise ValueError(f"no record of forecast '{model}'; forecasts: {sorted(by_forecast)}")
    ours = by_forecast[model]
    out: dict = {"model": model, "baselines": {}}
    total_improved = total_compared = 0
    for name, theirs in by_forecast.items():
        if name == model:
            continue
        rows, skipped = [], []
        for key in sorted(set(ours) & set(theirs), key=lambda k: (k[0], -1 if k[1] is None else k[1], *k[2:])):
            variable, level, region, metric, lead = key
            m, b = ours[key], theirs[key]
            gain = skill(metric.split(" ")[0], m, b)
            target = {"variable": variable, "level": level, "region": region, "metric": metric, "lead_hours": lead}
            if gain is None:
                skipped.append({**target, "model": _finite(m), "baseline": _finite(b),
                                "reason": "missing value" if m is None or b is None or not
                                (math.isfinite(m) and math.isfinite(b)) else "baseline is perfect (0)"})
                continue
            rows.append({**target, "model": m, "baseline": b, "skill": gain, "better": gain > 0})
        only = sorted({(k[0], k[1], k[3]) for k in set(ours) ^ set(theirs)}, key=str)
        improved = sum(r["better"] for r in rows)
        out["baselines"][name] = {
            "improved": improved,
            "compared": len(rows),
            "share_improved": improved / len(rows) if rows else None,
            "rows": rows,
            "skipped": skipped,
            "unmatched_targets": [{"variable": v, "level": lv, "metric": mt} for v, lv, mt in only],
        }
        total_improved += improved
        total_compared += len(rows)
    out["overall"] = {"improved": total_improved, "compared": total_compared,
                      "share_improved": total_improved / total_compared if total_compared else None}
    return out


@dataclass
class Report:
    """Where `write_report` put everything (final locations)."""

    out_dir: str
    metrics: str
    scorecard_json: str
    scorecard_md: str
    html: str
    curves: list[str] = field(default_factory=list)
    scorecards: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    ensemble: list[str] = field(default_factory=list)
    """Spread-against-error plots and rank histograms; empty for a deterministic forecast."""
    card: dict = field(default_factory=dict, repr=False)


def _ordered(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records of metrics that have a better and a worse value (no rank histograms)."""
    return [r for r in records if r["metric"] not in DESCRIPTIVE]


def _units(variable: str) -> str:
    try:
        return by_key(variable).units
    except KeyError:
        return ""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)


def _level_slug(level: float | None) -> str:
    return "" if level is None else f"_{level:g}"


def _plot_curves(records: Sequence[Mapping[str, Any]], model: str, out: Path, plt) -> list[tuple[str, Path]]:
    """One PNG per (variable, level, metric): value against lead time, a panel per region."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in _ordered(records):
        variable, level, _, metric, _ = _key(r)
        groups[(variable, level, metric)].append(r)
    forecasts = list(dict.fromkeys(r["forecast"] for r in records))
    colours = {name: f"C{i}" for i, name in enumerate(forecasts)}
    made = []
    for (variable, level, metric), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1, kv[0][2])):
        regions = list(dict.fromkeys(r.get("region", "global") for r in rs))
        fig, axes = plt.subplots(1, len(regions), figsize=(4.6 * len(regions), 3.4), squeeze=False)
        for ax, region in zip(axes[0], regions):
            for name in forecasts:
                pts = sorted((float(r["lead_hours"]), r["value"]) for r in rs
                             if r["forecast"] == name and r.get("region", "global") == region)
                if not pts:
                    continue
                x, y = zip(*pts)
                y = [np.nan if v is None else v for v in y]
                ax.plot(x, y, marker="o", ms=3.5, color=colours[name], label=name,
                        lw=2.4 if name == model else 1.3, ls="-" if name == model else "--")
            units = _units(variable) if metric in ("rmse", "mae", "bias", "crps") else ""
            ax.set_xlabel("lead time (h)")
            ax.set_ylabel(metric + (f" ({units})" if units else ""))
            ax.set_title(f"{variable}" + (f" {level:g} hPa" if level is not None else "") + f" — {region}", fontsize=10)
            if metric.startswith("bias"):
                ax.axhline(0, color="0.6", lw=0.8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        name = f"curves/{_slug(variable)}{_level_slug(level)}_{_slug(metric)}.png"
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        made.append((f"{variable}" + (f" {level:g} hPa" if level is not None else "") + f" {metric} by lead time", path))
    return made


def _field_label(variable: str, level: float | None) -> str:
    return f"{variable}" + (f" {level:g} hPa" if level is not None else "")


def spread_and_error(records: Sequence[Mapping[str, Any]]) -> dict[tuple, list[tuple[float, float, float]]]:
    """`{(forecast, variable, level, region): [(lead_hours, rmse, spread), ...]}` of every ensemble.

    The spread ``sqrt(mean_t ⟨var_m(x)⟩)`` is the spread-skill ratio times the RMSE of the
    ensemble mean (`metrics.ensemble_np`: both over the points where the truth and every
    member are finite), so a cell needs both records; leads are in order.
    """
    rmse: dict[tuple, float] = {}
    ratio: dict[tuple, float] = {}
    for r in records:
        if r["metric"] in ("rmse", "spread_skill") and not r.get("threshold"):
            key = (r["forecast"], r["variable"], r.get("level"), r.get("region", "global"), float(r["lead_hours"]))
            (rmse if r["metric"] == "rmse" else ratio)[key] = r["value"]
    out: dict[tuple, list[tuple[float, float, float]]] = defaultdict(list)
    for key in sorted(set(rmse) & set(ratio), key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2], k[3], k[4])):
        err, sr = rmse[key], ratio[key]
        if err is not None and sr is not None and math.isfinite(err) and math.isfinite(sr):
            out[key[:4]].append((key[4], err, sr * err))
    return dict(out)


def _target_fields(variant: str | None) -> set[tuple[str, float | None]] | None:
    """(variable, level) of the variant's targets; None when the variant has none known."""
    try:
        return {(t.variable, t.level) for t in targets(variant)} if variant else None
    except DataError:
        return None


def _target_leads(variant: str | None) -> set[float]:
    try:
        return {h for t in targets(variant) for h in (t.lead_hours or ())} if variant else set()
    except DataError:
        return set()


def _ensemble_fields(records: Sequence[Mapping[str, Any]], variant: str | None) -> list[tuple[str, float | None]]:
    """The (variable, level) pairs the ensemble figures show: the variant's targets that were
    scored as an ensemble, else every field scored as one."""
    scored = {(r["variable"], r.get("level")) for r in records if r["metric"] in ("spread_skill", "rank_histogram")}
    wanted = _target_fields(variant)
    shown = scored & wanted if wanted and scored & wanted else scored
    return sorted(shown, key=lambda f: (f[0], -1 if f[1] is None else f[1]))


def _plot_spread(points: Mapping[tuple, list], variable: str, level: float | None, model: str, out: Path,
                 plt) -> Path | None:
    """Spread against the RMSE of the ensemble mean, a point per lead, a panel per region, the 1:1 line."""
    mine = {k: v for k, v in points.items() if k[1] == variable and k[2] == level}
    if not mine:
        return None
    regions = list(dict.fromkeys(k[3] for k in mine))
    forecasts = list(dict.fromkeys(k[0] for k in mine))
    forecasts = [model] + [f for f in forecasts if f != model] if model in forecasts else forecasts
    units = _units(variable)
    fig, axes = plt.subplots(1, len(regions), figsize=(4.4 * len(regions), 4.0), squeeze=False)
    for ax, region in zip(axes[0], regions):
        top = 0.0
        for i, name in enumerate(forecasts):
            pts = mine.get((name, variable, level, region))
            if not pts:
                continue
            leads, err, spread = zip(*pts)
            top = max(top, *err, *spread)
            ax.plot(err, spread, marker="o", ms=4, color=f"C{i}", lw=2.0 if name == model else 1.2,
                    ls="-" if name == model else "--", label=name)
            if name == model:
                for h, x, y in (pts if len(pts) <= 3 else (pts[0], pts[-1])):
                    ax.annotate(f"{h:g}h", (x, y), textcoords="offset points", xytext=(4, -9), fontsize=7)
        top = 1.08 * top if top > 0 else 1.0
        ax.plot([0, top], [0, top], color="0.5", lw=0.9, ls=":", label="1:1 (reliable)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
        suffix = f" ({units})" if units else ""
        ax.set_xlabel(f"RMSE of the ensemble mean{suffix}")
        ax.set_ylabel(f"ensemble spread{suffix}")
        ax.set_title(f"{_field_label(variable, level)} — {region}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = out / "ensemble" / f"spread_{_slug(variable)}{_level_slug(level)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _shown_leads(leads: Sequence[float], wanted: set[float], most: int = 4) -> list[float]:
    """The variant's target leads that were scored, else up to `most` leads spread over the range."""
    hit = [h for h in leads if h in wanted]
    if hit:
        return hit[:most]
    picks = np.unique(np.linspace(0, len(leads) - 1, min(most, len(leads))).round().astype(int))
    return [leads[i] for i in picks]


def _plot_rank_histogram(records: Sequence[Mapping[str, Any]], variable: str, level: float | None, model: str,
                         wanted_leads: set[float], out: Path, plt) -> Path | None:
    """The model's rank frequencies at a few lead times, a panel per region, the flat line of reliability."""
    cells: dict[tuple[str, float], dict[int, float]] = defaultdict(dict)
    for r in records:
        if (r["metric"] == "rank_histogram" and r["forecast"] == model and r["variable"] == variable
                and r.get("level") == level):
            cells[(r.get("region", "global"), float(r["lead_hours"]))][int(r["rank"])] = r["value"]
    if not cells:
        return None
    regions = list(dict.fromkeys(k[0] for k in cells))
    leads = _shown_leads(sorted({k[1] for k in cells}), wanted_leads)
    fig, axes = plt.subplots(1, len(regions), figsize=(4.8 * len(regions), 3.4), squeeze=False)
    for ax, region in zip(axes[0], regions):
        shown = [(h, cells[(region, h)]) for h in leads if (region, h) in cells]
        members = max((max(c) for _, c in shown), default=0)
        width = 0.8 / max(len(shown), 1)
        for i, (h, freq) in enumerate(shown):
            ranks = np.arange(members + 1)
            ax.bar(ranks - 0.4 + (i + 0.5) * width, [freq.get(k, np.nan) for k in ranks], width=width,
                   color=f"C{i}", label=f"+{h:g} h")
        if members:
            ax.axhline(1 / (members + 1), color="0.3", lw=1.0, ls="--", label="flat (reliable)")
        ax.set_xlabel(f"rank of the truth among {members} members")
        ax.set_ylabel("frequency")
        ax.set_title(f"{_field_label(variable, level)} — {region}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    path = out / "ensemble" / f"rank_histogram_{_slug(variable)}{_level_slug(level)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _plot_ensemble(records: Sequence[Mapping[str, Any]], model: str, variant: str | None, out: Path,
                   plt) -> list[tuple[str, Path]]:
    """Spread-against-error plots and rank histograms of every target variable scored as an ensemble."""
    points = spread_and_error(records)
    wanted_leads = _target_leads(variant)
    made = []
    for variable, level in _ensemble_fields(records, variant):
        label = _field_label(variable, level)
        path = _plot_spread(points, variable, level, model, out, plt)
        if path is not None:
            made.append((f"{label}: ensemble spread against the RMSE of the ensemble mean by lead time "
                         "(1:1: spread matches error)", path))
        path = _plot_rank_histogram(records, variable, level, model, wanted_leads, out, plt)
        if path is not None:
            made.append((f"{label}: rank histogram of the truth among the members of {model}", path))
    return made


def _plot_scorecard(card: dict, baseline: str, out: Path, plt) -> Path | None:
    """A colour table: targets as rows, lead times as columns, blue where the model is better."""
    rows = card["baselines"][baseline]["rows"]
    if not rows:
        return None
    n_regions = len({r["region"] for r in rows})
    targets = list(dict.fromkeys(_target_label(r["variable"], r["level"], r["region"], r["metric"], n_regions)
                                 for r in rows))
    leads = sorted({r["lead_hours"] for r in rows})
    grid = np.full((len(targets), len(leads)), np.nan)
    for r in rows:
        label = _target_label(r["variable"], r["level"], r["region"], r["metric"], n_regions)
        grid[targets.index(label), leads.index(r["lead_hours"])] = 100 * r["skill"]
    limit = max(1.0, min(100.0, float(np.nanmax(np.abs(grid)))))
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * len(leads), 1.0 + 0.38 * len(targets)))
    im = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(targets)):
        for j in range(len(leads)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.0f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(grid[i, j]) > 0.6 * limit else "black")
    ax.set_xticks(range(len(leads)), [f"{h:g}" for h in leads])
    ax.set_yticks(range(len(targets)), targets)
    ax.set_xlabel("lead time (h)")
    share = card["baselines"][baseline]["share_improved"]
    ax.set_title(f"{card['model']} vs {baseline}: skill x 100 (blue better); "
                 f"{card['baselines'][baseline]['improved']}/{card['baselines'][baseline]['compared']} improved"
                 + (f" ({100 * share:.0f}%)" if share is not None else ""), fontsize=9)
    fig.colorbar(im, ax=ax, label="skill x 100", shrink=0.8)
    path = out / f"scorecard_{_slug(baseline)}.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _share(entry: dict) -> str:
    share = entry["share_improved"]
    return f"{entry['improved']} of {entry['compared']}" + (f" ({100 * share:.0f}%)" if share is not None else "")


def _markdown(card: dict) -> str:
    lines = [f"# Scorecard: {card['model']}", "",
             "Skill of the model over each baseline, x 100 (positive: the model is better): the MSE skill "
             "score 1 - rmse²/rmse_ref² for RMSE, 1 - x/x_ref for MAE and CRPS, the bounded reduction of |bias|, "
             "the difference for ACC, CSI, ETS.", ""]
    for name, entry in card["baselines"].items():
        lines += [f"## vs {name}", "", f"Targets improved: {_share(entry)}.", ""]
        rows = entry["rows"]
        if rows:
            n_regions = len({r["region"] for r in rows})
            leads = sorted({r["lead_hours"] for r in rows})
            table: dict[str, dict[float, str]] = {}
            for r in rows:
                label = _target_label(r["variable"], r["level"], r["region"], r["metric"], n_regions)
                table.setdefault(label, {})[r["lead_hours"]] = f"{100 * r['skill']:+.1f}"
            lines.append("| target | " + " | ".join(f"+{h:g} h" for h in leads) + " |")
            lines.append("|---|" + "---:|" * len(leads))
            for label, cells in table.items():
                lines.append(f"| {label} | " + " | ".join(cells.get(h, "") for h in leads) + " |")
            lines.append("")
        for s in entry["skipped"]:
            lines.append(f"- not compared: {_target_label(s['variable'], s['level'], s['region'], s['metric'], 2)} "
                         f"+{s['lead_hours']:g} h ({s['reason']})")
        for u in entry["unmatched_targets"]:
            lines.append(f"- scored for only one of the two: {u['variable']}"
                         + (f" {u['level']:g} hPa" if u["level"] is not None else "") + f" {u['metric']}")
        if entry["skipped"] or entry["unmatched_targets"]:
            lines.append("")
    overall = card["overall"]
    lines += [f"Overall: the model is better on {_share(overall)} targets.", ""]
    return "\n".join(lines)


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}" '
            f'data-file="{html.escape(path.name)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
figure{display:inline-block;margin:0.5em;vertical-align:top}figure img{max-width:100%}
figcaption{font-size:0.85em;color:#555}table{border-collapse:collapse;margin:0.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:0.85em;text-align:right}
td.better{background:#d6e6f5}td.worse{background:#f5d6d6}th:first-child,td:first-child{text-align:left}
code{background:#f4f4f4;padding:0 3px}"""


def _html_table(entry: dict) -> str:
    rows = entry["rows"]
    if not rows:
        return "<p>No target could be compared.</p>"
    n_regions = len({r["region"] for r in rows})
    leads = sorted({r["lead_hours"] for r in rows})
    table: dict[str, dict[float, dict]] = {}
    for r in rows:
        table.setdefault(_target_label(r["variable"], r["level"], r["region"], r["metric"], n_regions), {})[
            r["lead_hours"]] = r
    out = ["<table><tr><th>target</th>" + "".join(f"<th>+{h:g} h</th>" for h in leads) + "</tr>"]
    for label, cells in table.items():
        tds = []
        for h in leads:
            r = cells.get(h)
            if r is None:
                tds.append("<td></td>")
            else:
                tds.append(f'<td class="{"better" if r["better"] else "worse"}" title="model {r["model"]:.4g}, '
                           f'baseline {r["baseline"]:.4g}">{100 * r["skill"]:+.1f}</td>')
        out.append(f"<tr><td>{html.escape(label)}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    return "".join(out)


def _html(title: str, card: dict, excluded: Sequence, curves, scorecards, figures, explanation: dict | None,
          notes: Sequence[str], ensemble: Sequence[tuple[str, Path]] = ()) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Scorecard</h2><p>Skill of the model over each baseline x 100 (MSE skill score for RMSE, "
                 "1 - x/x_ref for MAE and CRPS, bounded reduction of |bias|, difference for ACC, CSI, ETS); "
                 "positive (blue) means the model is better. Machine-readable numbers: <code>metrics.json</code>, "
                 "<code>scorecard.json</code>.</p>")
    parts.append(f"<p>Overall: the model is better on {_share(card['overall'])} targets.</p>")
    pngs = dict(scorecards)
    for name, entry in card["baselines"].items():
        parts.append(f"<h3>vs {html.escape(name)}: {_share(entry)} targets improved</h3>")
        parts.append(_html_table(entry))
        if name in pngs:
            parts.append(_img(pngs[name], f"{card['model']} vs {name}"))
    parts.append("<h2>Lead-time curves</h2>")
    parts += [_img(path, caption) for caption, path in curves]
    if ensemble:
        parts.append("<h2>Ensemble reliability</h2><p>Spread against error: the ensemble spread "
                     "(root-mean member variance) against the RMSE of the ensemble mean at each lead time; "
                     "a reliable ensemble lies on the 1:1 line, below it it is over-confident. Rank "
                     "histograms: how often the truth falls at each rank among the sorted members; flat "
                     "when reliable, U-shaped when under-dispersed, peaked when over-dispersed, sloped when "
                     "biased. Neither is a gate: CRPS is.</p>")
        parts += [_img(path, caption) for caption, path in ensemble]
    if figures or explanation:
        parts.append("<h2>Explainability</h2>")
        if explanation:
            parts.append(f"<p>Objective: {html.escape(str(explanation.get('objective', '')))}</p>")
            inputs = explanation.get("inputs", {})
            if inputs:
                parts.append("<table><tr><th>input</th><th>occlusion (mean over outputs)</th>"
                             "<th>gradient x input</th></tr>")
                for k, v in inputs.items():
                    parts.append(f"<tr><td>{html.escape(k)}</td><td>{v['occlusion']:.4g}</td>"
                                 f"<td>{v['gradient_x_input']:.4g}</td></tr>")
                parts.append("</table>")
        parts += [_img(path, caption) for caption, path in figures]
    if excluded:
        parts.append("<h2>Excluded from scoring</h2><ul>")
        parts += [f"<li>{html.escape(json.dumps(e) if not isinstance(e, str) else e)}</li>" for e in excluded]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    scores,
    out_dir: str | Path,
    *,
    model: str | None = None,
    title: str | None = None,
    figures: Iterable[tuple[str, str | Path]] = (),
    explanation: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> Report:
    """Write the report of `scores` (a `Scores`) to `out_dir` (path or s3://), replacing it.

    `model` is the forecast judged (default: the first forecast of the records); every other
    forecast is a baseline. `figures` are extra (caption, PNG path) pairs, e.g. from
    `explain.save_figures`, copied into `explain/` and shown with `explanation` (a dict like
    `Explanation.summary()`, also written as `explain.json`). `notes` are lines shown under
    the title. The directory is built in a temporary place and moved into `out_dir` whole.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notes = [*getattr(scores, "notes", []), *notes]
    records = list(scores.records)
    if not records:
        raise ValueError("no score records to report: every target was excluded"
                         + "".join(f"\n  - {e}" for e in getattr(scores, "excluded", [])[:10]))
    model = model or records[0]["forecast"]
    card = scorecard(records, model)
    figures = [(caption, Path(p)) for caption, p in figures]
    excluded = list(getattr(scores, "excluded", []) or [])
    title = title or f"Evaluation of {model}" + (f" ({scores.variant})" if getattr(scores, "variant", None) else "")
    made: dict[str, list[str]] = {"curves": [], "scorecards": [], "figures": [], "ensemble": []}

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        scores.to_json(str(tmp / "metrics.json"))
        (tmp / "scorecard.json").write_text(json.dumps(card, indent=1, allow_nan=False, default=_json_default))
        (tmp / "scorecard.md").write_text(_markdown(card))
        copied = []
        for caption, src in figures:
            dest = tmp / "explain" / src.name
            dest.parent.mkdir(exist_ok=True)
            dest.write_bytes(src.read_bytes())
            copied.append((caption, dest))
        curves = _plot_curves(records, model, tmp, plt)
        scorecards = [(name, p) for name in card["baselines"] if (p := _plot_scorecard(card, name, tmp, plt))]
        ensemble = _plot_ensemble(records, model, getattr(scores, "variant", None), tmp, plt)
        if explanation is not None:
            (tmp / "explain.json").write_text(json.dumps(explanation, indent=1, default=_json_default))
        (tmp / "report.html").write_text(_html(title, card, excluded, curves, scorecards, copied, explanation, notes,
                                               ensemble))
        made["curves"] = [p.relative_to(tmp).as_posix() for _, p in curves]
        made["scorecards"] = [p.relative_to(tmp).as_posix() for _, p in scorecards]
        made["figures"] = [p.relative_to(tmp).as_posix() for _, p in copied]
        made["ensemble"] = [p.relative_to(tmp).as_posix() for _, p in ensemble]

    root = write_atomic(out_dir, write)
    join = (lambda rel: f"{root.rstrip('/')}/{rel}") if is_s3(root) else (lambda rel: str(Path(root) / rel))
    return Report(
        out_dir=root, metrics=join("metrics.json"), scorecard_json=join("scorecard.json"),
        scorecard_md=join("scorecard.md"), html=join("report.html"),
        curves=[join(c) for c in made["curves"]], scorecards=[join(c) for c in made["scorecards"]],
        figures=[join(c) for c in made["figures"]], ensemble=[join(c) for c in made["ensemble"]], card=card,
    )


def _finite(x) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
