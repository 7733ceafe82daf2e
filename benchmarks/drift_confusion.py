"""False alarms and caught faults of the drift check on the real hourly ERA5 series (March 2019, British Isles).

The only real series long enough to hold a reference fortnight and later windows that the
readers take is `data/samples/era5_t2m_british_isles_2019-03_hourly.nc` (744 hours, 33x40):
`../shared/data/surface/era5_t2m_uk_2019-03_hourly.grib` is the same data on a grid crossing
0°, which Aurora's longitudes cannot express, and the other shared series hold at most 31
time steps of a variable the readers do not know, or 8 steps in all.

- **main**: reference 1-14 March. Natural windows: every 1-day (15..31), 3-day (15..29) and
  7-day (15..25) window after it. Faults (`monitoring.faults`) made from 15 March: its first
  day, first 3 days and whole week.
- **other references**: 8-21, 15-28 and 18-31 March, each with every 1-, 3- and 7-day window
  that does not overlap it (earlier or later), and the faults made from 1 March (outside
  them all): its first day and first week.

A natural window flagged is a false alarm; a fault is caught when the window drifted and its
first reason is the fault's own. Run alone (prints the tables):

    .venv/bin/python benchmarks/drift_confusion.py
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERIES = ROOT / "data" / "samples" / "era5_t2m_british_isles_2019-03_hourly.nc"
REFERENCES = {"1-14 March": ("2019-03-01", 14), "8-21 March": ("2019-03-08", 14),
              "15-28 March": ("2019-03-15", 14), "18-31 March": ("2019-03-18", 14)}
"""Reference periods: (first day, days); the first is the main one."""
FAULT_STARTS = {"1-14 March": "2019-03-15"}
"""Where faults are made from; other references: the first week of March, outside them all."""
LENGTHS = (1, 3, 7)
"""Window lengths in days."""


@dataclass
class Outcome:
    reference: str
    case: str
    """`natural` or a fault's reason key."""
    days: int
    window: str
    drifted: bool
    reasons: list[str]
    exceedance: float
    """The strongest column's score over its threshold."""


@dataclass
class Confusion:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0


def _starts(reference: tuple[str, int], days: int) -> list:
    """Starts of every `days`-long window of March that does not overlap the reference."""
    import pandas as pd

    first = pd.Timestamp(reference[0])
    end = first + pd.Timedelta(days=reference[1])
    starts = pd.date_range("2019-03-01", pd.Timestamp("2019-04-01") - pd.Timedelta(days=days), freq="D")
    return [s for s in starts if s + pd.Timedelta(days=days) <= first or s >= end]


def run(log=print) -> Confusion:
    import pandas as pd

    from model_code.data.ingest import merge_sources, read_source
    from monitoring.drift import compare
    from monitoring.faults import FAULTS
    from monitoring.summaries import summarise_fields

    fields, _ = merge_sources([read_source(str(SERIES), SERIES)])
    t2m = fields["t2m"]
    march = t2m.values()

    def summaries(start, days: int, fault=None):
        start = pd.Timestamp(start)
        da = march.sel(time=slice(start, start + pd.Timedelta(days=days) - pd.Timedelta(hours=1)))
        if fault is not None:
            da = da.copy(data=fault(da.values))
        return summarise_fields({"t2m": dataclasses.replace(t2m, data=da)})

    out = Confusion()
    begin = time.perf_counter()
    for name, reference in REFERENCES.items():
        ref = summaries(*reference)

        def record(case: str, start, days: int, fault=None):
            r = compare(ref, summaries(start, days, fault))
            out.outcomes.append(Outcome(name, case, days, f"{pd.Timestamp(start):%-d} March", r.drifted,
                                        [x.kind for x in r.reasons], r.columns[0].exceedance))

        for days in LENGTHS:
            for start in _starts(reference, days):
                record("natural", start, days)
        main = name in FAULT_STARTS
        for kind, (_, fault) in FAULTS.items():
            for days in LENGTHS if main else (1, 7):
                record(kind, FAULT_STARTS.get(name, "2019-03-01"), days, fault)
        log(f"reference {name}: {sum(o.reference == name for o in out.outcomes)} checks")
    out.seconds = time.perf_counter() - begin
    return out


def table(results: Confusion) -> str:
    """Markdown: false alarms per reference and length, then each fault kind per reference."""
    from monitoring.faults import FAULTS

    lines = ["| reference | natural windows | 1 day | 3 days | 7 days | flagged | largest score / threshold |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    references = list(dict.fromkeys(o.reference for o in results.outcomes))
    total = flagged = 0
    for ref in references:
        natural = [o for o in results.outcomes if o.reference == ref and o.case == "natural"]
        per = [sum(o.days == d for o in natural) for d in LENGTHS]
        n_flag = sum(o.drifted for o in natural)
        total, flagged = total + len(natural), flagged + n_flag
        lines.append(f"| {ref} | {len(natural)} | {per[0]} | {per[1]} | {per[2]} | {n_flag} | "
                     f"{max(o.exceedance for o in natural):.2f} |")
    lines += ["", f"False alarms: {flagged} of {total} natural windows.", "",
              "| fault | " + " | ".join(references) + " |", "| --- |" + " --- |" * len(references)]
    for kind, (what, _) in FAULTS.items():
        cells = []
        for ref in references:
            cases = [o for o in results.outcomes if o.reference == ref and o.case == kind]
            cells.append(", ".join(f"{o.days} d {o.window}: "
                                   + (f"caught ({o.reasons[0]}, {o.exceedance:.1f})"
                                      if o.drifted and o.reasons[0] == kind else
                                      f"flagged as {o.reasons[0]}" if o.drifted else f"missed ({o.exceedance:.2f})")
                                   for o in cases))
        lines.append(f"| {what} (`{kind}`) | " + " | ".join(cells) + " |")
    lines += ["", f"Caught: a drifted window whose first reason is the fault's own (score / threshold of its "
                  f"strongest column in brackets); missed: no column over its threshold. {len(results.outcomes)} "
                  f"checks in {results.seconds:.0f} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
