"""Training throughput: one ATLD step vs one FGSM-RS adversarial-training step, same model and batch.

    .venv/bin/python benchmarks/bench_train.py [--arch wrn-16-4] [--batch 50] [--size 32] [--iters 5] [--device cpu]

Prints images/s for each and the ratio of step times (target in issue 2: ATLD <= 1.4x FGSM-RS).
"""

from __future__ import annotations

import argparse
import time

import torch

from atld_deploy.config import make_config
from atld_deploy.models import create_discriminator, create_model
from atld_deploy.train.methods import STEPS, Nets


def _nets(arch: str, channels: int, device: torch.device, with_d: bool) -> Nets:
    torch.manual_seed(0)
    f = create_model(arch, 10, in_channels=channels).to(device)
    opt_c = torch.optim.SGD(f.parameters(), lr=0.01, momentum=0.9)
    if not with_d:
        return Nets(f, opt_c)
    d = create_discriminator(10).to(device)
    return Nets(f, opt_c, d, torch.optim.SGD(d.parameters(), lr=1e-3, momentum=0.9))


def measure(method: str, args: argparse.Namespace) -> float:
    device = torch.device(args.device)
    cfg = make_config("cifar10", method=method, arch=args.arch, batch_size=args.batch, device=args.device)
    nets = _nets(args.arch, 3, device, method == "atld")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    step = STEPS[method]
    step(nets, cfg, x, y, gen)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step(nets, cfg, x, y, gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.iters * args.batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="wrn-16-4")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    fgsm = measure("fgsm-rs", args)
    atld = measure("atld", args)
    print(f"{args.arch}, batch {args.batch}, {args.size}x{args.size}x3, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"FGSM-RS step: {fgsm:8.1f} images/s")
    print(f"ATLD step:    {atld:8.1f} images/s")
    print(f"ATLD step time / FGSM-RS step time: {fgsm / atld:.2f}x (target <= 1.4x)")


if __name__ == "__main__":
    main()
