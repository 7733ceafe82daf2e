"""Train/validation/test splits of a window dataset that share no time.

A validation score is only honest when no time seen in training is seen again, so a
sample belongs to a period only when its whole span, first input to last target, lies
inside it, and periods may be kept further apart by a gap.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from model_code.data.sample_layout import _as_time, _show
from model_code.data.windows import WindowDataset
from model_code.errors import DataError

__all__ = ["split_by_time"]


Period = tuple  # (start, end): start included, end excluded


def split_by_time(
    dataset: WindowDataset,
    *,
    train: Period | float,
    val: Period | float | None = None,
    test: Period | float | None = None,
    gap: timedelta = timedelta(0),
) -> dict[str, WindowDataset]:
    """Train/validation/test datasets whose samples share no time.

    Each period is `(start, end)` (start included, end excluded) or a fraction of the
    dataset's time span (fractions are laid out in the order train, val, test, `gap` apart).
    A sample belongs to a period only when *every* time it reads, from its first input to
    its last target, lies inside it; samples that straddle a boundary are dropped. So no
    time is shared across splits even with `gap=0`; `gap` is the least separation required
    between periods, to keep out samples merely correlated with each other (weather
    remembers a few days).
    """
    given = {name: p for name, p in (("train", train), ("val", val), ("test", test)) if p is not None}
    if all(isinstance(p, float) for p in given.values()):
        periods = _periods_from_fractions(dataset, given, gap)
    elif all(isinstance(p, (tuple, list)) and len(p) == 2 for p in given.values()):
        periods = {name: (_as_time(a), _as_time(b)) for name, (a, b) in given.items()}
    else:
        raise DataError("give every period as (start, end) or every period as a fraction; got "
                        + ", ".join(f"{n}={p!r}" for n, p in given.items()))
    _check_separated(periods, gap)
    first = np.array([dataset.times_used(i)[0] for i in range(len(dataset))], dtype="datetime64[ns]")
    last = np.array([dataset.times_used(i)[-1] for i in range(len(dataset))], dtype="datetime64[ns]")
    out = {}
    for name, (start, end) in periods.items():
        inside = (first >= start) & (last < end)
        if not inside.any():
            span = dataset.times_used(0)[-1] - dataset.times_used(0)[0] if len(dataset) else None
            raise DataError(
                f"the {name} period {_show(start)} to {_show(end)} holds no complete sample; a sample "
                f"spans {span.astype('timedelta64[h]') if span is not None else '?'} from its first input "
                f"to its last target (history {dataset.history}, lead steps {dataset.lead_steps})"
            )
        out[name] = dataset.subset(dataset.init_times[inside])
    return out


def _periods_from_fractions(dataset: WindowDataset, fractions: dict[str, float], gap: timedelta):
    if any(f <= 0 for f in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
        raise DataError(f"fractions must be positive and sum to at most 1; got {fractions}")
    if not len(dataset):
        raise DataError("the dataset has no samples to split")
    start = dataset.times_used(0)[0]
    end = dataset.times_used(len(dataset) - 1)[-1] + np.timedelta64(1, "ns")
    gap64 = np.timedelta64(gap, "ns")
    usable = (end - start) - gap64 * (len(fractions) - 1)
    if usable <= np.timedelta64(0, "ns"):
        raise DataError(f"a gap of {gap} leaves no time for {len(fractions)} periods in "
                        f"{_show(start)} to {_show(end)}")
    periods = {}
    for name, fraction in fractions.items():
        stop = start + np.timedelta64(int(usable / np.timedelta64(1, "ns") * fraction), "ns")
        periods[name] = (start, stop)
        start = stop + gap64
    return periods


def _check_separated(periods: dict[str, tuple[np.datetime64, np.datetime64]], gap: timedelta) -> None:
    for name, (start, end) in periods.items():
        if not start < end:
            raise DataError(f"the {name} period must start before it ends; got {_show(start)} to {_show(end)}")
    ordered = sorted(periods.items(), key=lambda item: item[1][0])
    for (a, (_, a_end)), (b, (b_start, _)) in zip(ordered, ordered[1:]):
        if b_start < a_end:
            raise DataError(f"the {a} and {b} periods overlap ({a} ends {_show(a_end)}, {b} starts "
                            f"{_show(b_start)})")
        if b_start - a_end < np.timedelta64(gap, "ns"):
            raise DataError(f"the {a} and {b} periods are {(b_start - a_end).astype('timedelta64[h]')} "
                            f"apart; the gap asked for is {gap}")
