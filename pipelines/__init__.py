"""Running model_code on platforms: Katib and Kubeflow Trainer manifests, cluster calls, local Optuna studies."""
