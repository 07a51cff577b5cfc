"""The `genmodels` command."""

from __future__ import annotations

import argparse
import json
import sys

import torch


def _bench(args: argparse.Namespace) -> int:
    from genmodels import _bench

    device = torch.device(args.device)
    results = _bench.speed_table(device, repeat=args.repeat, compile=not args.no_compile)
    print(_bench.format_table(results, device))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _backends(args: argparse.Namespace) -> int:
    import genmodels

    for name, entry in genmodels.backends().items():
        print(f"{name:<24} {'yes' if entry['available'] else 'no':<4} {entry['detail']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genmodels", description="Fast kernels and models for deep generative modelling."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="speed of every op against the plain PyTorch recipe")
    bench.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    bench.add_argument("--repeat", type=int, default=5, help="timed runs per provider")
    bench.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    bench.set_defaults(run=_bench)
    backends = sub.add_parser("backends", help="which kernels this install has, and why not")
    backends.set_defaults(run=_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
