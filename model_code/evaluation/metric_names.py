"""The metrics scored by default, in a module of their own so that the command line lists
them without importing numpy and xarray."""

DEFAULT_METRICS = ("rmse", "mae", "bias", "acc", "crps", "spread_skill", "rank_histogram")
