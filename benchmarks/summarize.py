"""Print a Markdown table of medians and throughputs from a pytest-benchmark JSON file.

pytest benchmarks --benchmark-only --benchmark-json=bench.json
python benchmarks/summarize.py bench.json
"""

from __future__ import annotations

import json
import sys


def human(rate: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= scale:
            return f"{rate / scale:.2f} {prefix}"
    return f"{rate:.2f} "


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    machine = data.get("machine_info", {})
    print(
        f"CPU: {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"Python {machine.get('python_version', '?')}\n"
    )
    print("| benchmark | median | throughput at median |")
    print("|---|---:|---:|")
    for bench in data["benchmarks"]:
        median = bench["stats"]["median"]
        info = bench.get("extra_info", {})
        rate = info.get("per_second_at_median")
        throughput = f"{human(rate)}{info['unit']}/s" if rate else ""
        if "bytes_per_second_at_median" in info:
            throughput += f" ({info['bytes_per_second_at_median'] / 1e9:.2f} GB/s)"
        print(f"| `{bench['name']}` | {median * 1e3:.3f} ms | {throughput} |")


if __name__ == "__main__":
    main(sys.argv[1])
