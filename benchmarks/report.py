"""Summary table of a pytest-benchmark JSON file: one row per (op, size, mode, provider).

    python benchmarks/report.py benchmarks/results/cpu-reparameterize_kl.json

Columns: the best time, achieved GB/s or TFLOP/s from extra_info, and the speed-up of
genmodels' providers over the eager recipe and over torch.compile of it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

BASELINES = ("eager", "compile")


def rows(data: dict) -> list[dict]:
    out = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "provider" not in info:
            continue
        out.append({**info, "seconds": bench["stats"]["min"]})
    return out


def table(data: dict) -> str:
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in rows(data):
        groups[(row["op"], row.get("size", ""), row["mode"])][row["provider"]] = row
    machine = data.get("machine_info", {})
    lines = [
        f"Device: {machine.get('device') or machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"torch {machine.get('torch')}, CUDA {machine.get('cuda')}, "
        f"Triton {machine.get('triton')}, threads {machine.get('threads')}",
        "",
        "| op | size | mode | provider | time | throughput | vs eager | vs compile |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for (op, size, mode), providers in groups.items():
        for name, row in providers.items():
            ratios = []
            for base in BASELINES:
                ref = providers.get(base)
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
                f"| {op} | {size} | {mode} | {name} | {_fmt(row['seconds'])} | {throughput} "
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
