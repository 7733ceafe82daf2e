"""`auroraops predict`: a forecast from a running predictor, inline (gRPC/REST) or as a job."""

from __future__ import annotations

import argparse
import sys

from model_code.variants import VARIANTS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="ask a running `auroraops serve` for a forecast (gRPC, REST or a job by reference)",
        description=(
            "Inline: read --input locally, send the window (gRPC raw tensors by default) and write the "
            "forecast to --out. With --by-reference the server reads --input itself (paths it can see or "
            "s3:// URIs), writes one file per lead time under --output-uri, and --out (optional) gets them "
            "merged into one file."
        ),
    )
    p.add_argument("--url", required=True,
                   help="http://host:port for REST and jobs; host:port (or grpc://host:port) for gRPC")
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--input", nargs="+", required=True, metavar="URI", help="input files (or URIs for jobs)")
    p.add_argument("--steps", type=int, required=True, help="number of model time steps")
    p.add_argument("--out", metavar="FILE", help="output .nc or .zarr (required unless --by-reference)")
    p.add_argument("--protocol", choices=("grpc", "rest", "rest-json"), default="grpc",
                   help="grpc (raw tensors), rest (binary extension) or rest-json")
    p.add_argument("--by-reference", action="store_true", help="run as a forecast job on the server")
    p.add_argument("--output-uri", metavar="URI", help="job output directory or s3:// prefix")
    p.add_argument("--idempotency-key", metavar="KEY", help="a retried submit with the same key finds the same job")
    p.add_argument("--init-time", metavar="ISO", help="initialisation time (default: latest possible)")
    p.add_argument("--history", type=int,
                   help="input time steps (default: the variant's maximum; the served checkpoint may take more)")
    p.add_argument("--fill-missing",
                   help="fill variables absent from the inputs here (see `auroraops forecast`); default: leave "
                        "them out of the request, for the server to fill as the served checkpoint was trained")
    p.add_argument("--members", type=int, default=1,
                   help="ensemble members (stochastic variants such as ensemble-v1.5), each seeded SEED + member")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of member 0: the same seed gives the same ensemble as `auroraops forecast`")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a job")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from model_code.data.writers import write_dataset
    from model_code.errors import DataError
    from model_code.variants import get_variant, with_history

    spec = get_variant(args.variant)
    if args.by_reference:
        return _by_reference(args, spec)
    if not args.out:
        raise DataError("--out is required unless --by-reference")

    from model_code.data.ingest import load_window
    from serving.client import GrpcClient, RestClient, predict
    from serving.memory import keep_freed_buffers

    keep_freed_buffers()  # the request and the answer are tens to hundreds of MB

    # The served checkpoint decides its history and fills: what the file lacks is left out of
    # the request (the server fills it as training did, or answers 400 naming it).
    window, _ = load_window(args.input, with_history(spec, max(args.history or 0, spec.max_history)),
                            history=args.history, init_time=args.init_time,
                            fill_missing=args.fill_missing or "zeros")
    if not args.fill_missing:
        window = window.drop_vars([k for k in window.data_vars if "filled" in window[k].attrs])
    ensemble = {"members": args.members, "seed": args.seed}
    if args.protocol == "grpc":
        client = GrpcClient(args.url)
        ds = predict(client, spec, window, args.steps, **ensemble)
    else:
        client = RestClient(args.url)
        ds = predict(client, spec, window, args.steps, binary=args.protocol == "rest", **ensemble)
    client.close()
    out = write_dataset(ds, args.out)
    hours = ", ".join(f"+{int(h)}h" for h in ds.lead_time.values.astype("timedelta64[h]").astype(int))
    members = f"; {ds.sizes['member']} member(s), seed {args.seed}" if "member" in ds.dims else ""
    print(f"forecast written: {out} ({args.protocol}; lead times {hours}{members}; "
          f"model version {ds.attrs['aurora_model_version'] or 'not named'})")
    return 0


def _by_reference(args: argparse.Namespace, spec) -> int:
    import xarray as xr

    from model_code.data.writers import write_dataset
    from model_code.errors import DataError
    from model_code.storage import local_copy
    from serving.client import RestClient
    from serving.jobs import join

    if not args.output_uri:
        raise DataError("--by-reference needs --output-uri (a directory or s3:// prefix the server can write)")
    client = RestClient(args.url)
    body = {"inputs": list(args.input), "output_uri": args.output_uri, "steps": args.steps,
            "init_time": args.init_time, "history": args.history, "fill_missing": args.fill_missing,
            "idempotency_key": args.idempotency_key,
            "members": args.members if args.members != 1 else None, "seed": args.seed or None}
    model = spec.model_name
    state = client.submit_job(model, {k: v for k, v in body.items() if v is not None})
    print(f"job {state['job_id']}: {state['status']}", file=sys.stderr)
    state = client.wait_job(model, state["job_id"], timeout=args.timeout, progress=lambda s: print(
        f"job {s['job_id']}: {s['status']}, {s['steps_done']}/{s['request']['steps']} steps", file=sys.stderr))
    client.close()
    if state["status"] != "succeeded":
        raise DataError(f"job {state['job_id']} {state['status']}: {state.get('error')}")
    print(f"job {state['job_id']} succeeded: {len(state['files'])} file(s) under {state['output_uri']}")
    if args.out:
        import json

        from serving.members import add_counts

        parts, clipped = [], {}
        for name in state["files"]:
            with local_copy(join(state["output_uri"], name)) as path:
                parts.append(xr.load_dataset(path))
            clipped = add_counts(clipped, json.loads(parts[-1].attrs.get("clipped_values", "{}")))
        merged = xr.concat(parts, dim="time", combine_attrs="override")
        if clipped:
            merged.attrs["clipped_values"] = json.dumps(clipped, sort_keys=True)
        print(f"forecast written: {write_dataset(merged, args.out)}")
    return 0
