"""Run the test suite (or part of it) and record where it passed: counts, wall time, CPU, load, kernels.

    python benchmarks/suite_run.py --json docs/measurements/suite.json                   # what `make test` runs
    python benchmarks/suite_run.py --name other-kernels --kernels sse41 tests/export     # other CPU kernels

`--kernels sse41` sets ATEN_CPU_CAPABILITY=default and ONEDNN_MAX_CPU_ISA=SSE41, so torch and oneDNN pick other
kernels (other rounding): the stand-in for "another x86-64 CPU". Each --name is one entry of the file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atld_deploy.measure import machine, write_measurement  # noqa: E402

KERNELS = {"native": {}, "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="test paths (default: the whole default suite)")
    ap.add_argument("--name", default="default-suite")
    ap.add_argument("--kernels", choices=sorted(KERNELS), default="native")
    ap.add_argument("--json", type=Path, default=Path("docs/measurements/suite.json"))
    args = ap.parse_args()
    env = {**os.environ, **KERNELS[args.kernels]}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *args.paths], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", tail)}
    print(proc.stdout[-3000:])
    entries = json.loads(args.json.read_text())["figures"] if args.json.is_file() else {}
    entries[args.name] = {"paths": args.paths or ["(default suite)"], "kernels": args.kernels, "env": KERNELS[args.kernels],
                          "exit_code": proc.returncode, "counts": counts, "summary": tail, "seconds": round(seconds, 1),
                          "machine": machine()}
    command = " ".join(["python benchmarks/suite_run.py", *args.paths, "--name", args.name, "--kernels", args.kernels,
                        "--json", str(args.json)])
    write_measurement(args.json, command, entries)
    print(f"wrote {args.json}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
