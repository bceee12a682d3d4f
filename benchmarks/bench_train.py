"""Training throughput: one ATLD step vs one FGSM-RS adversarial-training step, same model and batch.

    .venv/bin/python benchmarks/bench_train.py [--arch wrn-16-4] [--batch 50] [--size 32] [--iters 3]
        [--repeats 3] [--device cpu] [--amp] [--channels-last] [--json docs/measurements/bench_train.json]

Each repeat times `--iters` steps of each method in turn (FGSM-RS, then ATLD), so load from other processes
hits both alike; the best repeat of each is reported, with the spread of all repeats and the load average
before and after. Prints images/s for each and the ratio of step times: the ATLD step's pass count puts its
floor at about 1.6x the FGSM-RS step; the guard is 1.75x. `--amp` and `--channels-last` run the steps as the
trainer does with those options (bfloat16 autocast, channels-last classifier and batches).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch

from atld_deploy.config import make_config
from atld_deploy.models import create_discriminator, create_model
from atld_deploy.train.methods import STEPS, Nets

GUARD = 1.75  # the ATLD step may cost at most this many FGSM-RS steps


def _nets(arch: str, channels: int, device: torch.device, with_d: bool, channels_last: bool,
          d_body: tuple[int, int] = (28, 5)) -> Nets:
    torch.manual_seed(0)
    f = create_model(arch, 10, in_channels=channels).to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    opt_c = torch.optim.SGD(f.parameters(), lr=0.01, momentum=0.9)
    if not with_d:
        return Nets(f, opt_c)
    d = create_discriminator(10, *d_body).to(device)
    return Nets(f, opt_c, d, torch.optim.SGD(d.parameters(), lr=1e-3, momentum=0.9))


class StepTimer:
    """One method's training step, set up once (networks, a fixed batch), timed `iters` steps per call."""

    def __init__(self, method: str, arch: str, batch: int, size: int, device: str, amp: bool = False,
                 channels_last: bool = False, d_body: tuple[int, int] = (28, 5)) -> None:
        self.device = torch.device(device)
        self.cfg = make_config("cifar10", method=method, arch=arch, batch_size=batch, device=device)
        self.nets = _nets(arch, 3, self.device, method == "atld", channels_last, d_body)
        self.gen = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, size, size, generator=self.gen).to(self.device)
        self.x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        self.y = torch.randint(0, 10, (batch,), generator=self.gen).to(self.device)
        self.step, self.amp, self.batch = STEPS[method], amp, batch
        self.run(1)  # warm-up

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def run(self, iters: int) -> float:
        """Images per second over `iters` steps."""
        self._sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                self.step(self.nets, self.cfg, self.x, self.y, self.gen)
        self._sync()
        return iters * self.batch / (time.perf_counter() - t0)


def measure_ratio(arch: str, batch: int, size: int, iters: int, repeats: int, device: str, amp: bool = False,
                  channels_last: bool = False, d_body: tuple[int, int] = (28, 5)) -> dict[str, Any]:
    """The ATLD / FGSM-RS step-time ratio, best of `repeats` rounds (each method timed in turn in each round).

    `d_body`: the discriminator's WRN depth and width (the trainer's default, 28 x 5, unless a probe asks less).
    """
    load_before = [round(v, 2) for v in os.getloadavg()]
    timers = {m: StepTimer(m, arch, batch, size, device, amp, channels_last, d_body) for m in ("fgsm-rs", "atld")}
    rates: dict[str, list[float]] = {m: [] for m in timers}
    for _ in range(repeats):
        for m, timer in timers.items():
            rates[m].append(timer.run(iters))
    best = {m: max(v) for m, v in rates.items()}
    return {
        "arch": arch, "batch": batch, "size": size, "iters": iters, "repeats": repeats, "device": device,
        "amp": amp, "channels_last": channels_last, "threads": torch.get_num_threads(),
        "fgsm_rs_images_per_s": round(best["fgsm-rs"], 2), "atld_images_per_s": round(best["atld"], 2),
        "images_per_s_all": {m: [round(r, 2) for r in v] for m, v in rates.items()},
        "ratio": round(best["fgsm-rs"] / best["atld"], 3),
        "ratio_spread": [round(min(f / a for f, a in zip(rates["fgsm-rs"], rates["atld"])), 3),
                         round(max(f / a for f, a in zip(rates["fgsm-rs"], rates["atld"])), 3)],
        "guard": GUARD, "loadavg_before": load_before, "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="wrn-16-4")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast, as train --amp")
    p.add_argument("--channels-last", action="store_true", help="channels-last classifier and batches, as train --channels-last")
    p.add_argument("--json", help="also write the figures to this measurement file")
    args = p.parse_args()
    r = measure_ratio(args.arch, args.batch, args.size, args.iters, args.repeats, args.device, args.amp, args.channels_last)
    print(f"{args.arch}, batch {args.batch}, {args.size}x{args.size}x3, {args.device}, torch {torch.__version__}, "
          f"{r['threads']} threads, amp {args.amp}, channels-last {args.channels_last}; best of {args.repeats} x {args.iters} steps")
    print(f"FGSM-RS step: {r['fgsm_rs_images_per_s']:8.1f} images/s   (all: {r['images_per_s_all']['fgsm-rs']})")
    print(f"ATLD step:    {r['atld_images_per_s']:8.1f} images/s   (all: {r['images_per_s_all']['atld']})")
    verdict = "within" if r["ratio"] <= GUARD else "OVER"
    print(f"ATLD step time / FGSM-RS step time: {r['ratio']:.2f}x (rounds {r['ratio_spread'][0]:.2f}-{r['ratio_spread'][1]:.2f}x; "
          f"{verdict} the {GUARD}x guard); load average {r['loadavg_before']} -> {r['loadavg_after']}")
    if args.json:
        from atld_deploy.measure import write_measurement

        write_measurement(args.json, "python " + " ".join(sys.argv), {"train_step_ratio": r})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
