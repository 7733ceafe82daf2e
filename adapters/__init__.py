"""The platform concerns that components, pipelines, serving and monitoring share: the MLflow
registry and its promotion gates, the pyfunc flavour, Katib and Kubeflow Trainer renderings,
Kubernetes clients and the local Optuna study. It depends on model_code only, so no two of
those packages need to import each other."""
