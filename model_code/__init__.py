"""Aurora MLOps' machine-learning library.

Variants, data (readers, canonical form, validation, synthetic fields), checkpoints and
forecasting. Depends on torch, xarray and microsoft-aurora; never on kfp, kserve, mlflow
or kubernetes, so it can be tested and reused on its own.
"""
