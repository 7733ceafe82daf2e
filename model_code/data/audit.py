"""Write a validation report as an audit a person can read: JSON, Markdown and plots.

The audit is the same single pass as `validate` (coverage, gaps, NaN share, statistics,
outliers), laid out for review: `audit.json` for machines, `audit.md` for people, and PNG
plots of the coverage timeline, the NaN share and each variable's range against its
physical bounds. The directory appears whole or not at all. Figures are drawn without
pyplot, so no global backend state is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from model_code.data.findings import Report
from model_code.storage import write_atomic
from model_code.variables import by_key

PLOTS = ("coverage.png", "nan_share.png", "ranges.png")


def _plot_coverage(report: Report, path: Path) -> None:
    timed = {k: c for k, c in report.coverage.items() if c.get("times")}
    fig = Figure(figsize=(10, 0.35 * max(len(timed), 1) + 1.5))
    ax = fig.subplots()
    for row, (key, cov) in enumerate(timed.items()):
        start, last = np.datetime64(cov["first"]), np.datetime64(cov["last"])
        n = cov["times"]
        times = start + (last - start) * np.linspace(0, 1, n) if n > 1 else np.array([start])
        nan = np.asarray(cov.get("nan_share_by_time") or [0.0] * n)[:n]
        dots = ax.scatter(times, np.full(n, row), c=nan, cmap="Reds", vmin=0, vmax=1, s=12, marker="s")
        for gap in cov.get("gaps", []):
            ax.axvspan(np.datetime64(gap["after"]), np.datetime64(gap["before"]), ymin=0, ymax=1,
                       color="orange", alpha=0.15)
    ax.set_yticks(range(len(timed)), list(timed))
    ax.set_title("Coverage: one mark per time step (colour: share of NaN; orange: gaps)")
    if timed:
        fig.colorbar(dots, ax=ax, label="NaN share")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_nan_share(report: Report, path: Path) -> None:
    keys = list(report.statistics)
    shares = [max(s["nan_share"] for s in report.statistics[k]["levels"].values()) for k in keys]
    fig = Figure(figsize=(8, 0.3 * max(len(keys), 1) + 1.5))
    ax = fig.subplots()
    ax.barh(keys, shares, color=["tab:red" if s and not by_key(k.split(" ")[0]).nan_by_design else "tab:blue"
                                 for k, s in zip(keys, shares)])
    ax.set_xlim(0, 1)
    ax.set_xlabel("largest NaN share over levels (blue: NaN allowed by design, e.g. waves over land)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_ranges(report: Report, path: Path) -> None:
    """Each level's min, median +- MAD and max, scaled to the variable's physical bounds."""
    rows = []
    for key, entry in report.statistics.items():
        low, high = by_key(key.split(" ")[0]).bounds
        for level, s in entry["levels"].items():
            lo = low if low is not None else s["min"]
            hi = high if high is not None else s["max"]
            span = (hi - lo) or 1.0
            scale = lambda x, lo=lo, span=span: (x - lo) / span  # noqa: E731
            label = key if level == "all" else f"{key} {level}"
            rows.append((label, scale(s["min"]), scale(s["median"] - s["mad"]), scale(s["median"]),
                         scale(s["median"] + s["mad"]), scale(s["max"])))
    fig = Figure(figsize=(8, 0.22 * max(len(rows), 1) + 1.5))
    ax = fig.subplots()
    for y, (_, lo, q1, med, q3, hi) in enumerate(rows):
        ax.plot([lo, hi], [y, y], color="grey", lw=1)
        ax.plot([q1, q3], [y, y], color="tab:blue", lw=4)
        ax.plot([med], [y], "k|")
    ax.axvline(0, color="tab:red", lw=0.8)
    ax.axvline(1, color="tab:red", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.set_xlabel("value scaled to the physical bounds (red lines); grey: min-max, blue: median +- MAD")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _markdown(report: Report) -> str:
    lines = ["# Data audit", "", f"**{report.summary()}**", "", "Sources:", ""]
    lines += [f"- `{s}`" for s in report.sources] + [""]
    lines += ["## Findings", ""]
    if report.findings:
        lines += ["| severity | check | variable | level | where | message | hint |", "|---|---|---|---|---|---|---|"]
        for f in report.findings:
            level = "" if f.level is None else f"{f.level:g}"
            message = f.message + (f" (expected {f.expected}; found {f.found})" if f.expected or f.found else "")
            lines.append(f"| {f.severity} | {f.check} | {f.variable or ''} | {level} | {f.where or ''} | "
                         f"{message.replace('|', '/')} | {(f.hint or '').replace('|', '/')} |")
    else:
        lines.append("No findings.")
    lines += ["", "## Coverage", "", "![coverage](coverage.png)", "",
              "| variable | first | last | times | step (h) | gaps |", "|---|---|---|--:|--:|---|"]
    for key, c in report.coverage.items():
        gaps = "; ".join(f"after {g['after'][:16]}" + (f" ({g['missing_steps']} missing)" if g["missing_steps"] else "")
                         for g in c.get("gaps", [])[:5])
        lines.append(f"| {key} | {c.get('first', '')[:16]} | {c.get('last', '')[:16]} | {c.get('times', 'static')} | "
                     f"{c.get('step_hours', '')} | {gaps} |")
    lines += ["", "## NaN share", "", "![NaN share](nan_share.png)", "",
              "## Statistics", "", "![ranges](ranges.png)", "",
              "| variable | level | units | count | NaN | min | max | mean | std | median | MAD |",
              "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for key, entry in report.statistics.items():
        for level, s in entry["levels"].items():
            lines.append(
                f"| {key} | {'' if level == 'all' else level} | {entry['units']} | {s['count']} | {s['nan_share']:.2%} | "
                + " | ".join(f"{s[k]:.6g}" for k in ("min", "max", "mean", "std", "median", "mad")) + " |"
            )
    return "\n".join(lines) + "\n"


def write_audit(report: Report, out: str) -> str:
    """Write `audit.json`, `audit.md` and the plots into the directory `out` (path or s3://)."""
    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        (tmp / "audit.json").write_text(report.to_json())
        (tmp / "audit.md").write_text(_markdown(report))
        _plot_coverage(report, tmp / "coverage.png")
        _plot_nan_share(report, tmp / "nan_share.png")
        _plot_ranges(report, tmp / "ranges.png")

    return write_atomic(out, write)
