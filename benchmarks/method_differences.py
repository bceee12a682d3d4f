"""Measured effect of the differences from the authors' code that this project keeps (docs/METHOD.md).

    .venv/bin/python benchmarks/method_differences.py [--epochs 15] [--seeds 3] [--json docs/measurements/method_differences.json]

On the embedded digits (ATLD, wrn-10-1, discriminator depth 10 widen 2, as `atld-deploy reproduce`):

  logging forward   the authors' training loop runs the classifier in train mode on the clean batch every 10th
                    batch (to log an accuracy), which moves its batch-norm running statistics. For each seed, two
                    runs, without and with that forward; clean and PGD-20 accuracy on all 360 test images.
  scale fallback    how many batches had a non-positive signed max of the invariance gradient, where the
                    project falls back to max|.| and the authors' ratio would be negative or infinite.
  PGD start clamp   the evaluation PGD clamps its random start to [0, 1]; the authors' does not. PGD-20 (step
                    eps/4) accuracy of the seed-0 run both ways, same random starts, over 5 attack seeds.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atld_deploy.attacks import ce_loss, pgd  # noqa: E402
from atld_deploy.config import make_config  # noqa: E402
from atld_deploy.data import load_dataset  # noqa: E402
from atld_deploy.run import load_run  # noqa: E402
from atld_deploy.train import Trainer, methods  # noqa: E402

LOG_STEP = 10  # fs_main_cifar10.py's --log_step default


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _train(out: Path, epochs: int, seed: int, logging_forward: bool) -> dict[str, int]:
    """Train one run; returns how many batches the scale fell back to max|.|."""
    counts = {"batches": 0, "scale_fallbacks": 0}
    cfg = make_config("digits", arch="wrn-10-1", epochs=epochs, d_depth=10, d_widen=2, seed=seed,
                      eval_pgd_n=20)  # the per-epoch monitor only; it does not touch training
    batches_per_epoch = -(-1437 // cfg.batch_size)
    step, balance = methods.STEPS["atld"], methods.gradient_balance

    def counted_balance(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        counts["scale_fallbacks"] += int(den.max() <= 0)
        return balance(num, den)

    def step_with_log(nets: methods.Nets, c: Any, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        terms = step(nets, c, x, y, gen)
        if logging_forward and counts["batches"] % batches_per_epoch % LOG_STEP == 0:
            nets.classifier.train()  # the authors' `net_org(inputs, targets, attack=False)` after the update
            with torch.no_grad():
                nets.classifier(x)
        counts["batches"] += 1
        return terms

    methods.STEPS["atld"], methods.gradient_balance = step_with_log, counted_balance
    try:
        Trainer(cfg, out, progress=False).fit()
    finally:
        methods.STEPS["atld"], methods.gradient_balance = step, balance
    return counts


def _pgd_unclamped_start(f: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                         gen: torch.Generator) -> torch.Tensor:
    x_adv = x + eps * (torch.rand(x.shape, generator=gen) * 2 - 1)  # the authors' start: not clamped
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(ce_loss(f(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + eps / 4 * g.sign(), x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


def _accuracy(f: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (f(x).argmax(1) == y).float().mean().item()


def main() -> None:
    from atld_deploy.io import write_json_atomic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, default=1, help="training seeds 0..N-1, each trained both ways")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    test = load_dataset("digits", None, False, 32).test
    x, y = test.batch(torch.arange(len(test)))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for name, logging_forward in (("project", False), ("with_logging_forward", True)):
                run_dir = Path(tmp) / f"{name}-{seed}"
                counts = _train(run_dir, args.epochs, seed, logging_forward)
                run = load_run(run_dir)
                f, eps = run.classifier, run.config.eps
                robust = _accuracy(f, pgd(f, x, y, eps, eps / 4, 20, generator=torch.Generator().manual_seed(0)), y)
                results.setdefault(name, []).append({"seed": seed, "clean_acc": _accuracy(f, x, y), "pgd20_acc": robust, **counts})
                print(f"{name} seed {seed}: clean {results[name][-1]['clean_acc']:.2%}, PGD-20 {robust:.2%}, "
                      f"scale fallbacks {counts['scale_fallbacks']}/{counts['batches']} batches")
                if name == "project" and seed == 0:
                    pairs = []
                    for attack_seed in range(5):
                        gen = torch.Generator().manual_seed(attack_seed)
                        clamped = _accuracy(f, pgd(f, x, y, eps, eps / 4, 20, generator=gen), y)
                        free = _accuracy(f, _pgd_unclamped_start(f, x, y, eps, 20, torch.Generator().manual_seed(attack_seed)), y)
                        pairs.append((clamped, free))
                    results["pgd_start"] = {"clamped": [p[0] for p in pairs], "unclamped": [p[1] for p in pairs]}
                    mean = [sum(p[i] for p in pairs) / len(pairs) for i in (0, 1)]
                    print(f"PGD-20 start clamped {mean[0]:.2%} vs unclamped {mean[1]:.2%} (mean of 5 attack seeds, n={len(y)})")
    for name in ("project", "with_logging_forward"):
        rows = results[name]
        print(f"{name}: mean over {len(rows)} seeds clean {sum(r['clean_acc'] for r in rows) / len(rows):.2%}, "
              f"PGD-20 {sum(r['pgd20_acc'] for r in rows) / len(rows):.2%}")
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{time.perf_counter() - t0:.0f} s, load {' '.join(load)}")
    if args.json:
        record = {"command": " ".join(["python", "benchmarks/method_differences.py"] + sys.argv[1:]), "commit": _commit(),
                  "machine": {"platform": platform.platform(), "loadavg": load, "torch": torch.__version__, "threads": 1},
                  "epochs": args.epochs, "seeds": args.seeds, "n_test": len(y), "results": results}
        write_json_atomic(args.json, record)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
