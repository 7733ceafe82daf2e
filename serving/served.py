"""What a predictor serves: one checkpoint at an immutable URI, and the registry version it is.

A `ServedModel` travels with everything that depends on it: the InferenceService's model
settings and annotations (`serving.manifests`, `serving.traffic`), the predictor's metadata,
every response and job record, the Prometheus labels. `resolve` turns what a user gives
(`models:/aurora-V@ALIAS`, `models:/aurora-V/N`, a path or `s3://` URI) into one, checking the
checkpoint's bytes against the digest the registry recorded.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from model_code.errors import DataError
from model_code.storage import content_hash

REGISTRY_PREFIX = "models:/"


@dataclass(frozen=True)
class ServedModel:
    """A checkpoint and its identity. `version` and `name` are the registry's (None for a
    checkpoint served by path alone); `sha256` is always the digest of its bytes."""

    uri: str
    """Where the checkpoint is read from: the version's artifact in the store, or a path."""
    sha256: str
    """`sha256:<hex>` of its bytes; empty only for a registry alias a pod resolves as it starts."""
    version: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """`aurora-medium-range/3`, the digest's start for an unregistered checkpoint, or the URI
        of a registry alias not resolved yet: how messages name the model."""
        if self.version:
            return f"{self.name}/{self.version}"
        return self.short_sha if self.sha256 else self.uri

    @property
    def short_sha(self) -> str:
        return self.sha256.split(":", 1)[-1][:12]

    @property
    def model_version(self) -> str:
        """The `model_version` of responses: the registry version, else `sha256:<12 hex>`."""
        return self.version or f"sha256:{self.short_sha}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServedModel:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as e:
            raise DataError(f"not a served-model record ({e}): {text[:200]!r}") from None


def is_registry_uri(uri: str) -> bool:
    return str(uri).startswith(REGISTRY_PREFIX)


def describe_uri(uri: str) -> ServedModel:
    """The `ServedModel` a URI names now, without downloading it: for `models:/` URIs the
    registry's version, artifact URI and recorded digest; for others the digest of the file."""
    if is_registry_uri(uri):
        from adapters.registry import version_artifact

        found = version_artifact(uri)
        return ServedModel(uri=found["uri"], sha256=found["sha256"], version=found["version"], name=found["name"])
    with tempfile.TemporaryDirectory(prefix="auroraops-describe-") as tmp:
        return ServedModel(uri=str(uri), sha256=content_hash(fetched(str(uri), tmp)))


def is_proxied(uri: str) -> bool:
    """Whether `uri` is read through MLflow (`mlflow-artifacts:/...`, as a tracking server
    with `--serve-artifacts` records every artifact) rather than as a path or `s3://` object."""
    scheme = urlparse(str(uri)).scheme
    return len(scheme) > 1 and scheme not in ("s3", "file")


def fetched(uri: str, dst: str) -> str:
    """A path or `s3://` URI holding `uri`'s bytes: artifacts behind MLflow's proxy are
    downloaded into `dst` (from the tracking server of `MLFLOW_TRACKING_URI`)."""
    if not is_proxied(uri):
        return uri.removeprefix("file://")
    import mlflow

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
    except Exception as e:  # MlflowException, OSError, HTTP errors: the artifact is not readable
        raise DataError(f"cannot read the artifact through MLflow ({e})", source=uri) from None


def verify(model: ServedModel) -> None:
    """Check that the artifact exists and its bytes are the digest recorded; a `DataError`
    naming both digests otherwise."""
    uri = model.uri
    with tempfile.TemporaryDirectory(prefix="auroraops-verify-") as tmp:
        found = content_hash(fetched(uri, tmp))
    if found != model.sha256:
        raise DataError(f"{model.label}: the checkpoint at {uri} has digest {found}, but the registry recorded "
                        f"{model.sha256}; it was changed or replaced after registration: nothing is served from it")


def resolve(uri: str, dst: str | None = None) -> tuple[ServedModel, str]:
    """(`ServedModel`, a local or `s3://` path to load) for `uri`, its digest checked."""
    if not is_registry_uri(uri):
        path = fetched(str(uri), dst or tempfile.mkdtemp(prefix="auroraops-model-"))
        return ServedModel(uri=str(uri), sha256=content_hash(path)), path
    model = describe_uri(uri)
    from adapters.registry import resolve_checkpoint

    path = resolve_checkpoint(f"{REGISTRY_PREFIX}{model.name}/{model.version}", dst)
    found = content_hash(path)
    if found != model.sha256:
        raise DataError(f"{model.label}: the downloaded checkpoint has digest {found}, but the registry recorded "
                        f"{model.sha256}; nothing is served from it")
    return model, path


@dataclass(frozen=True)
class Loaded:
    """One checkpoint ready to serve: the model, what it is, and how its requests are read.

    The predictor swaps one `Loaded` for another as a whole (`serve --follow`); a request or
    a job takes the one current when it starts and keeps it to the end, so no answer mixes
    two versions."""

    model: Any
    """The `aurora.Aurora` model, in eval mode on its device."""
    served: ServedModel
    spec: Any
    """The variant as the checkpoint was built (`CheckpointInfo.spec`: its step and history)."""
    fills: Any = None
    """`codec.InputFills` of the inputs its training filled, or None."""
