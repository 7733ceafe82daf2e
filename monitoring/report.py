"""The drift report a person reads: the verdict and why, what moved per variable against its
reference band, the worst columns, then Evidently's own report of the same snapshot."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from monitoring.anomalies import FEATURES
from monitoring.summaries import Summaries

FEATURE_NAMES = {
    "mean": "mean", "q05": "5th percentile", "q95": "95th percentile", "std": "spatial spread",
    "grad": "mean gradient", "spec_fine": "fine-scale spectrum (2-4 / 4-8 grid lengths)",
    "spec_mid": "mid-scale spectrum (4-8 / 8-16 grid lengths)", "tendency": "RMS change between time steps",
    "nan_share": "missing share of the area", "profile": "latitude profile (correlation, anomaly)",
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.drift { color: #b00020; font-weight: bold; }
.quiet { color: #1b5e20; font-weight: bold; }
iframe { width: 100%; height: 1200px; border: 1px solid #ccc; }
"""


def _e(x) -> str:
    return html.escape(str(x))


def _band(values: pd.Series, show) -> str:
    """`median [5% .. 95%]` of a column over a window's rows."""
    v = values.to_numpy(dtype="float64")
    v = v[np.isfinite(v)]
    if not len(v):
        return "no value"
    q05, q50, q95 = np.percentile(v, [5, 50, 95])
    return f"{show(q50)} [{show(q05)} .. {show(q95)}]"


def _shown(feature: str, units: str):
    if feature == "nan_share":
        return lambda x: f"{100 * x:.3g}%"
    suffix = {"mean": units, "q05": units, "q95": units, "std": units, "tendency": units,
              "grad": f"{units} per 100 km".strip()}.get(feature, "")
    return lambda x: f"{x:.4g} {suffix}".rstrip()


def _variable_table(result, reference: Summaries, current: Summaries) -> str:
    by_column = {c.column: c for c in result.columns}
    rows = []
    for var in current.variables:
        units = current.units.get(var.split("@")[0], "")
        for feature in FEATURES:
            name = f"{var}/{feature}"
            # The profile has no raw value: its band is the tested anomaly's.
            ref, cur = ((result.anomalies.reference[name], result.anomalies.current[name]) if feature == "profile"
                        else (reference.table[name], current.table[name]))
            show = _shown(feature, units)
            c = by_column.get(name)
            verdict = ('<span class="drift">drifted</span>' if c and c.drifted else "quiet" if c
                       else _e(f"untested: {result.untested.get(name, '')}"))
            rows.append(f"<tr><td>{_e(var)}</td><td>{_e(FEATURE_NAMES[feature])}</td><td>{_e(_band(ref, show))}</td>"
                        f"<td>{_e(_band(cur, show))}</td><td>{'' if c is None else f'{c.exceedance:.2f}'}</td>"
                        f"<td>{verdict}</td></tr>")
    return ("<table><tr><th>variable</th><th>what</th><th>reference: median [5% .. 95%] of its times</th>"
            "<th>current: median [5% .. 95%]</th><th>score / threshold</th><th>test</th></tr>"
            + "".join(rows) + "</table>")


def _worst_table(result, limit: int) -> str:
    rows = [f"<tr><td>{_e(c.column)}</td><td>{_e(c.method)}</td><td>{c.score:.4g}</td><td>{c.threshold:.4g}</td>"
            f"<td>{c.exceedance:.2f}</td><td>{'<span class=drift>drifted</span>' if c.drifted else 'quiet'}</td></tr>"
            for c in result.worst(limit)]
    kind = "p-value: drift below the threshold" if result.rule.p_value else "distance: drift at or above the threshold"
    return (f"<p>Score: Evidently's <code>{_e(result.rule.method)}</code> ({_e(kind)}); score / threshold compares "
            "the two kinds (for p-values, on -log10): above 1 is drift.</p><table><tr><th>column</th><th>method</th>"
            "<th>score</th><th>threshold</th><th>score / threshold</th><th>test</th></tr>" + "".join(rows) + "</table>")


def render(result, reference: Summaries, current: Summaries, limit: int = 24) -> str:
    """The whole page, with the HTML of the result's Evidently Snapshot embedded below ours."""
    cal = result.calibration
    if result.drifted:
        reasons = "".join(f"<li>{_e(r.describe())}</li>" for r in result.reasons)
        verdict = f'<p class="drift">DRIFT</p><ul>{reasons}</ul>'
    else:
        top = result.columns[0] if result.columns else None
        strongest = (f" The strongest column, {top.column}, reached {top.exceedance:.2f} of its threshold."
                     if top else "")
        verdict = f'<p class="quiet">no drift</p><p>No column reached its threshold.{_e(strongest)}</p>'
    untested = "".join(f"<li>{_e(c)}: {_e(why)}</li>" for c, why in result.untested.items())
    why = (f"<p>Each feature is an anomaly from the reference's mean at the same {_e(cal['climatology'])}. "
           f"Thresholds: {cal['margin']:g} x the largest score any column of the feature reached when "
           f"{cal['stretches']} stretches of {cal['stretch_rows']} time steps of the reference were tested against "
           f"the rest of it (never below Evidently's default). A window drifted when any of its "
           f"{len(result.columns)} tested columns passed its threshold.</p>"
           + (f"<p>Not tested:</p><ul>{untested}</ul>" if untested else ""))
    table = _variable_table(result, reference, current)
    evidently_html = result.snapshot.get_html_str(as_iframe=False)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Drift: {_e(result.current['window'])}</title>"
            f"<style>{STYLE}</style></head><body><h1>Drift of {_e(result.current['window'])}</h1>"
            f"<p>Reference {_e(result.reference['window'])} ({result.reference['rows']} times); current "
            f"{_e(result.current['window'])} ({result.current['rows']} times); grid {_e(result.current['grid'])}.</p>"
            f"<h2>Verdict</h2>{verdict}<h2>Why</h2>{why}<h2>What moved, per variable</h2>{table}"
            f"<h2>Worst columns first</h2>{_worst_table(result, limit)}"
            f"<h2>Evidently report of the same tests</h2>"
            f"<iframe srcdoc=\"{html.escape(evidently_html, quote=True)}\"></iframe></body></html>")
