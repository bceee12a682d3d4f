"""Run `atld-deploy demo` on several seeds and write the spread of every figure to docs/measurements/demo.json.

    python benchmarks/demo_seeds.py --seeds 3 --json docs/measurements/demo.json

Each seed is a fresh demo in its own work directory under --workdir (training, evaluation, export, infer); a seed
whose record exists there is reused, so an interrupted run continues. The file keeps each seed's figures and,
per figure, the mean, min and max over the seeds, so the docs quote a spread, not a snapshot; it is rewritten
after every seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atld_deploy.measure import write_measurement  # noqa: E402


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--json", type=Path, default=Path("docs/measurements/demo.json"))
    ap.add_argument("--workdir", type=Path, default=Path("runs/demo-seeds"))
    args = ap.parse_args()
    runs = []
    for seed in range(args.seeds):
        work, rec = args.workdir / f"demo-{seed}", args.workdir / f"demo-{seed}.json"
        if not rec.is_file():
            cmd = [sys.executable, "-m", "atld_deploy", "demo", "--workdir", str(work), "--epochs", str(args.epochs),
                   "--n", str(args.n), "--seed", str(seed), "--fresh", "--record", str(rec)]
            print(f"seed {seed}: {' '.join(cmd[2:])}", flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        runs.append(json.loads(rec.read_text()))
        write(args, runs)


def write(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    flat = [_flatten(r["figures"]) for r in runs]
    spread = {k: {"mean": round(mean(f[k] for f in flat), 6), "min": min(f[k] for f in flat),
                  "max": max(f[k] for f in flat)} for k in flat[0] if all(k in f for f in flat)}
    command = f"python benchmarks/demo_seeds.py --seeds {args.seeds} --epochs {args.epochs} --n {args.n} --json {args.json}"
    path = write_measurement(args.json, command, spread, seeds=list(range(len(runs))),
                             per_seed=[r["figures"] for r in runs],
                             machine_during_runs=[r["machine"] for r in runs])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
