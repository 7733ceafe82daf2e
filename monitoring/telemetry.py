"""Prometheus metrics of monitoring, declared once (default registry, beside `serving.telemetry`).

Live skill (`aurora_live_*`) is set by `monitoring.live_skill`; drift and the retrain
trigger (`aurora_drift_*`, `aurora_retrain_*`) by `monitoring.trigger`. A long-running
process exports them on its `/metrics`; a batch run (`auroraops monitor check` in a
CronJob) pushes them to a Pushgateway with `push`.
Labels: `variant`; `variable` is a dataset name (`t2m`, `t`); `level` is hPa or "" for
surface fields; `lead_hours` is the lead time in whole hours.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, push_to_gateway

LIVE_RMSE = Gauge("aurora_live_rmse", "Area-weighted RMSE of served forecasts against the truth that arrived",
                  ["variant", "variable", "level", "lead_hours"])
LIVE_MAE = Gauge("aurora_live_mae", "Area-weighted MAE of served forecasts against the truth that arrived",
                 ["variant", "variable", "level", "lead_hours"])
LIVE_SCORED = Counter("aurora_live_forecast_steps_scored", "Forecast steps scored against truth", ["variant"])
LIVE_LAST = Gauge("aurora_live_last_scored_timestamp_seconds", "When live skill was last computed", ["variant"])

DRIFT_SHARE = Gauge("aurora_drift_share", "Share of summary columns that drifted in the last check", ["variant"])
DRIFT_VARIABLE_SHARE = Gauge("aurora_drift_variable_share", "Share of one variable's summary columns that drifted",
                             ["variant", "variable"])
DRIFT_DETECTED = Gauge("aurora_drift_detected", "1 when the last checked window drifted beyond the thresholds",
                       ["variant"])
DRIFT_CHECKS = Counter("aurora_drift_checks", "Policy decisions, by action", ["variant", "action"])
DRIFT_LAST_CHECK = Gauge("aurora_drift_last_check_timestamp_seconds", "When drift was last checked", ["variant"])
RETRAIN_SUBMISSIONS = Counter("aurora_retrain_submissions", "Retraining runs asked for, by outcome",
                              ["variant", "outcome"])


def push(gateway: str, job: str, variant: str) -> None:
    """Push this process's metrics to a Pushgateway (grouped by job and variant)."""
    push_to_gateway(gateway, job=job, registry=REGISTRY, grouping_key={"variant": variant})
