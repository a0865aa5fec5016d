"""Same-run comparison of `securefl bench` scenarios between two installs, alternating,
medians: e.g. the previous commit's wheel in one venv against this tree in another.

    python benchmarks/compare_installs.py OLD/bin/securefl NEW/bin/securefl [runs]

The scenarios pin k, t and the corruption rate, so both installs run the same session.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

OLD, NEW = sys.argv[1], sys.argv[2]
SCENARIOS = {
    "secagg+ n=50 d=1e6 k=10 t=6": [
        "--clients",
        "50",
        "--dim",
        "1000000",
        "--dropout",
        "0.1",
        "--degree",
        "10",
        "--threshold",
        "6",
        "--corruption-rate",
        "0.05",
    ],
    "secagg n=20 d=1e6": [
        "--protocol",
        "secagg",
        "--clients",
        "20",
        "--dim",
        "1000000",
        "--dropout",
        "0.1",
        "--threshold",
        "11",
        "--corruption-rate",
        "0.05",
    ],
    "secagg+ n=200 d=1e5 k=16 t=11": [
        "--clients",
        "200",
        "--dim",
        "100000",
        "--dropout",
        "0.05",
        "--degree",
        "16",
        "--threshold",
        "11",
        "--corruption-rate",
        "0.05",
    ],
    "ckks n=10 d=1e5": [
        "--protocol",
        "ckks",
        "--clients",
        "10",
        "--dim",
        "100000",
        "--dropout",
        "0.1",
    ],
}
REPS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
out = {}
for name, flags in SCENARIOS.items():
    res = {"old": [], "new": []}
    for rep in range(REPS):
        for which, exe in (
            (("old", OLD), ("new", NEW)) if rep % 2 == 0 else (("new", NEW), ("old", OLD))
        ):
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "r.json")
                subprocess.run(
                    [exe, "bench", *flags, "--json", path],
                    cwd=tmp,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                d = json.load(open(path))
                if isinstance(d, list):
                    d = d[0]
                server = sum(d.get("server_seconds", {}).values())
                client = sum(d.get("client_seconds_per_client", {}).values())
                res[which].append((d["wall_seconds"], server, client, d["completed"]))
    row = {}
    for which in ("old", "new"):
        row[which] = {
            k: statistics.median(x[i] for x in res[which])
            for i, k in enumerate(("wall", "server", "client_per_client"))
        }
        row[which]["completed"] = all(x[3] for x in res[which])
    out[name] = row
    o, n = row["old"], row["new"]
    print(
        f"{name}: wall {o['wall']:.3f} -> {n['wall']:.3f} s ({n['wall'] / o['wall']:.2f}x); server {o['server']:.3f} -> {n['server']:.3f} s ({n['server'] / max(o['server'], 1e-9):.2f}x); client/client {o['client_per_client'] * 1e3:.1f} -> {n['client_per_client'] * 1e3:.1f} ms ({n['client_per_client'] / max(o['client_per_client'], 1e-12):.2f}x)",
        flush=True,
    )
json.dump(out, open("compare_installs.json", "w"), indent=1)
