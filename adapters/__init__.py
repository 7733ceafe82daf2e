"""The platform concerns that components, pipelines, serving and monitoring share: the MLflow
registry and its promotion gates, the pyfunc flavour, Katib and Kubeflow Trainer renderings,
Kubernetes clients and the local Optuna study. It depends on model_code only, so no two of
those packages need to import each other."""

IMAGE = "ghcr.io/aurora-mlops/aurora-mlops:0.1.0"
"""The project image every workload runs (components, TrainJobs, Katib trials, predictors,
the drift CronJob); kustomize's image component retags it per overlay."""
