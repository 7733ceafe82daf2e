"""Prometheus metrics of the predictor, declared once (default registry: KServe's /metrics shows them).

Labels: `variant`; `protocol` is `rest-v1`, `rest-v2`, `grpc-v2` or `jobs`; `endpoint` is
`infer` or a jobs route; `code` is the HTTP status (gRPC errors count by the status they map to);
`model_version` the registry version serving when the request arrived (`sha256:<12 hex>` for
an unregistered checkpoint), so a canary's two versions have separate series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

REQUEST_SECONDS = Histogram(
    "aurora_request_seconds", "Wall time of one request, decode to encode",
    ["variant", "protocol", "endpoint", "model_version"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
REQUESTS = Counter("aurora_requests_total", "Requests answered",
                   ["variant", "protocol", "endpoint", "model_version", "code"])
REQUEST_ERRORS = Counter("aurora_request_errors_total", "Requests answered with an error",
                         ["variant", "protocol", "endpoint", "model_version", "code"])
PAYLOAD_BYTES = Histogram(
    "aurora_payload_bytes", "Tensor bytes of requests (in) and responses (out)", ["variant", "direction"],
    buckets=tuple(2.0**k for k in range(10, 32, 2)),
)
ROLLOUT_STEPS = Histogram("aurora_rollout_steps", "Rollout steps per forecast", ["variant"],
                          buckets=(1, 2, 4, 8, 12, 20, 40, 80))
BATCH_SIZE = Histogram("aurora_batch_size", "Requests merged into one forward pass", ["variant"],
                       buckets=(1, 2, 4, 8, 16, 32))
JOBS = Gauge("aurora_jobs", "Forecast jobs known to this predictor, by state", ["variant", "state"])
MODEL_INFO = Info("aurora_model", "The served model: version, registry name, digest, URI", ["variant"])
MODEL_SWAPS = Counter("aurora_model_swaps_total", "Times a following predictor swapped in another version",
                      ["variant"])
FOLLOW_ERRORS = Counter("aurora_model_follow_errors_total",
                        "Times a following predictor could not read or load what its alias names", ["variant"])
