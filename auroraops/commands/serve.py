"""`auroraops serve`: one variant behind KServe (v1 REST, v2 REST, v2 gRPC) plus forecast jobs."""

from __future__ import annotations

import argparse

from model_code.variants import VARIANTS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a variant over REST/gRPC (KServe) with forecast jobs by reference",
        description=(
            "Load a checkpoint once, warm up, and answer the open inference protocol (v1 and v2 REST, "
            "v2 gRPC) as model aurora-<variant>; global forecasts run as jobs by reference "
            "(docs/serving.md). Binds 127.0.0.1 unless --host says otherwise."
        ),
    )
    p.add_argument("--variant", required=True, choices=list(VARIANTS), action="append",
                   help="variant to serve; repeat (with one --model each) to serve several from one process")
    p.add_argument("--model", required=True, metavar="URI", action="append",
                   help="checkpoint path, s3:// URI, or models:/aurora-<variant>@champion (or /VERSION)")
    p.add_argument("--follow", type=float, metavar="SECONDS",
                   help="read the models:/...@ALIAS again every SECONDS and swap in the version it names, "
                        "loaded and warmed up first, between requests")
    p.add_argument("--model-sha256", metavar="DIGEST",
                   help="refuse to serve a checkpoint whose digest is not this sha256:... (as a rollout sets it)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--grpc-port", type=int, default=8081)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--autocast", action="store_true", help="bf16 autocast of the backbone (mixed precision)")
    p.add_argument("--max-steps", type=int, default=20, help="most rollout steps of one inline request")
    p.add_argument("--max-request-bytes", type=int, metavar="N",
                   help="most tensor bytes of one inline request (default: a full window of the native grid)")
    p.add_argument("--max-batch", type=int, default=8, help="most concurrent requests merged into one forward")
    p.add_argument("--max-members", type=int, default=16,
                   help="most ensemble members of one request or job (stochastic variants)")
    p.add_argument("--static", metavar="URI", help="NetCDF/Zarr of static fields requests may then omit")
    p.add_argument("--jobs-dir", default="aurora-jobs", metavar="URI",
                   help="where job ids point to their outputs (path or s3:// prefix)")
    p.add_argument("--job-max-steps", type=int, default=120, help="most rollout steps of one job")
    p.add_argument("--job-attempts", type=int, default=3,
                   help="runs of a job interrupted by restarts before it is marked failed")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from model_code.errors import DataError
    from serving.predictor import AuroraPredictor
    from serving.server import serve

    if len(args.variant) != len(args.model) or len(set(args.variant)) != len(args.variant):
        raise DataError(f"give one --model per --variant, each variant once; got variants {args.variant} "
                        f"and {len(args.model)} model(s)")
    if args.static and len(args.variant) > 1:
        raise DataError("--static holds one variant's static fields: serve that variant alone")
    if args.model_sha256 and len(args.variant) > 1:
        raise DataError("--model-sha256 names one checkpoint: serve that variant alone")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    predictors = [AuroraPredictor(
        variant, model, device=device, autocast=args.autocast, max_steps=args.max_steps,
        max_request_bytes=args.max_request_bytes, max_batch=args.max_batch, max_members=args.max_members,
        static_uri=args.static, follow_s=args.follow, expect_sha256=args.model_sha256)
        for variant, model in zip(args.variant, args.model)]
    serve(predictors, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port, jobs_dir=args.jobs_dir,
          job_attempts=args.job_attempts, job_max_steps=args.job_max_steps)
    return 0
