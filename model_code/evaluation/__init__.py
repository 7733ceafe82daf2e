"""Evaluation: WeatherBench 2 metrics, regions, baselines, hindcasts and scoring.

Pure numpy/xarray: never imports kfp, kserve, mlflow or evidently. `score.evaluate` is
the entry point; `score.Scores` is what reports, pipeline gates and monitoring read.
"""
