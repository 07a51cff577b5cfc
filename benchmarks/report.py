"""Summary table of a pytest-benchmark JSON file: one row per (op, size, mode, provider).

    python benchmarks/report.py benchmarks/results/cpu-reparameterize_kl.json

Columns: the best time, achieved GB/s or TFLOP/s from extra_info, and the speed-up of
genmodels' providers over the plain-PyTorch recipe and over torch.compile of it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

# The plain-PyTorch baseline is called "eager" or "recipe" by the suites; "compile" is
# torch.compile of it.
RECIPES = ("eager", "recipe")
BASELINES = (*RECIPES, "compile")


def rows(data: dict) -> list[dict]:
    out = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "provider" not in info:
            continue
        out.append({**info, "group": bench.get("group") or "", "seconds": bench["stats"]["min"]})
    return out


def table(data: dict) -> str:
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows(data):
        groups[row["group"]][row["provider"]] = row
    machine = data.get("machine_info", {})
    lines = [
        f"Device: {machine.get('device') or machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"torch {machine.get('torch')}, CUDA {machine.get('cuda')}, "
        f"Triton {machine.get('triton')}, threads {machine.get('threads')}",
        "",
        "| case | provider | time | throughput | vs recipe | vs compile |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group, providers in groups.items():
        recipe = next((providers[r] for r in RECIPES if r in providers), None)
        for name, row in providers.items():
            ratios = []
            for ref in (recipe, providers.get("compile")):
                ok = ref is not None and name not in BASELINES
                ratios.append(f"{ref['seconds'] / row['seconds']:.2f}x" if ok else "")
            if "tflops" in row:
                throughput = f"{row['tflops']:.3f} TFLOP/s"
            elif "gbps" in row:
                throughput = (
                    f"{row['gbps']:.1f} GB/s ({100 * row['fraction_of_copy']:.0f}% of copy)"
                )
            else:
                throughput = ""
            lines.append(
                f"| {group} | {name} | {_fmt(row['seconds'])} | {throughput} "
                f"| {ratios[0]} | {ratios[1]} |"
            )
    return "\n".join(lines)


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def main(argv: list[str]) -> int:
    for path in argv or [None]:
        with open(path) if path else sys.stdin as f:
            print(table(json.load(f)))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
