"""`auroraops data validate|audit`: check data files before any compute is spent on them."""

from __future__ import annotations

import argparse
from pathlib import Path

from model_code.data.findings import Report
from model_code.data.policy import DEFAULT_CHUNK_BYTES, Policy
from model_code.storage import write_atomic
from model_code.variants import VARIANTS, get_variant


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="validate and audit data files",
                       description="Validate and audit GRIB/NetCDF/Zarr files (paths or s3:// URIs).")
    commands = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    v = commands.add_parser(
        "validate", help="check files; exit 1 when any error-level check fails",
        description=(
            "Check coordinates, time axis, values (NaN, bounds, constant fields, outliers) and "
            "units of every recognised variable, in one pass chunk by chunk; with --variant, "
            "also the variant's input contract. Exit 0 when valid, 1 when any error-level "
            "check fails, 2 on usage errors."
        ),
    )
    _common(v)
    v.add_argument("--report", metavar="FILE", help="also write the full report as JSON")
    v.add_argument("--show", choices=("all", "errors", "warnings"), default="all",
                   help="which findings to print (default: all)")
    v.set_defaults(run=run_validate)

    a = commands.add_parser(
        "audit", help="write an audit report (JSON, Markdown, PNG plots)",
        description="Write coverage, gaps, NaN share, per-variable statistics and outliers to a directory.",
    )
    _common(a)
    a.add_argument("--out", required=True, metavar="DIR", help="output directory (path or s3://)")
    a.set_defaults(run=run_audit)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="data files or s3:// URIs")
    p.add_argument("--variant", choices=list(VARIANTS), help="also check this variant's input contract")
    p.add_argument("--chunk-mb", type=int, default=DEFAULT_CHUNK_BYTES // 2**20,
                   help="largest block of one variable held in memory (default: %(default)s)")


def _run(args: argparse.Namespace) -> Report:
    from model_code.data.validate import validate

    spec = get_variant(args.variant) if args.variant else None
    return validate(args.paths, spec, policy=Policy(chunk_bytes=args.chunk_mb * 2**20))


def table(report: Report, show: str = "all") -> str:
    """The findings as an aligned text table, errors first."""
    wanted = {"all": ("error", "warning", "info"), "errors": ("error",), "warnings": ("error", "warning")}[show]
    rows = [f for severity in wanted for f in report.by_severity(severity)]
    header = ("severity", "check", "variable", "level", "where", "message")
    cells = [(f.severity, f.check, f.variable or "", "" if f.level is None else f"{f.level:g}",
              f.where or (f.source or ""), _message(f)) for f in rows]
    widths = [min(max(len(h), *(len(c[i]) for c in cells)) if cells else len(h), 40)
              for i, h in enumerate(header[:-1])]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths), "-------")]
    lines += [fmt.format(*(c[i][:widths[i]] for i in range(len(widths))), c[-1]) for c in cells]
    return "\n".join(lines + ["", report.summary()])


def _message(f) -> str:
    text = f.message
    if f.expected is not None or f.found is not None:
        text += f" (expected {f.expected}; found {f.found})"
    return text + (f". Fix: {f.hint}" if f.hint else "")


def run_validate(args: argparse.Namespace) -> int:
    report = _run(args)
    print(table(report, args.show))
    if args.report:
        write_atomic(args.report, lambda path: Path(path).write_text(report.to_json()))
        print(f"report written: {args.report}")
    return 0 if report.ok else 1


def run_audit(args: argparse.Namespace) -> int:
    from model_code.data.audit import write_audit

    report = _run(args)
    out = write_audit(report, args.out)
    print(report.summary())
    print(f"audit written: {out}/audit.md (with audit.json and {', '.join(('coverage.png', 'nan_share.png', 'ranges.png'))})")
    return 0
