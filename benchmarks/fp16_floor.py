"""How close float16 can get to the float32 IMT pipeline on a run: the figures behind the fp16 parity bars.

    .venv/bin/python benchmarks/fp16_floor.py --run demo/run [--n-random 64]

On the run's test images plus uniform random ones (as parity uses), against the float32 pipeline, prints the
IMT step sign agreement outside the fp16 |g| band and the label agreement of:
  float32 arithmetic with every weight rounded to float16 (what float16 weights allow at all), and
  the exported float16 pipeline's function (PipelineFunction(half=True)) in PyTorch;
and the median top-2 logit margin of real vs random images (why fp16 labels are judged on real images).
"""

from __future__ import annotations

import argparse
import copy

import torch

from atld_deploy.data import load_dataset
from atld_deploy.export.parity import THRESHOLDS, step_sign_agreement
from atld_deploy.export.trace import PipelineFunction
from atld_deploy.imt import natural_gradient
from atld_deploy.run import load_run


def rounded_to_float16(module: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy whose parameters and buffers hold float16-representable values."""
    m = copy.deepcopy(module)
    with torch.no_grad():
        for t in [*m.parameters(), *m.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="demo/run")
    ap.add_argument("--n-random", type=int, default=64)
    args = ap.parse_args()
    run = load_run(args.run)
    test = load_dataset(run.config.dataset, run.config.data_dir).test
    x_real, _ = test.batch(torch.arange(len(test)))
    x = torch.cat([x_real, torch.rand(args.n_random, *x_real.shape[1:], generator=torch.Generator().manual_seed(0))])
    n_real, cfg, band = len(x_real), run.imt_config(), THRESHOLDS["fp16"].grad_band
    with torch.no_grad():
        ref_logits, _, _ = PipelineFunction(run.classifier, run.discriminator, cfg, emit_transformed=True)(x)
    g_ref, _ = natural_gradient(run.classifier, run.discriminator, x)
    candidates = {
        "float32 arithmetic, float16-rounded weights": PipelineFunction(
            rounded_to_float16(run.classifier), rounded_to_float16(run.discriminator), cfg, emit_transformed=True),
        "float16 pipeline (as exported)": PipelineFunction(run.classifier, run.discriminator, cfg, emit_transformed=True,
                                                           half=True),
    }
    print(f"{args.run}: {n_real} test images + {args.n_random} random, eps {cfg.eps}, sign band {band} x max |g|")
    for name, fn in candidates.items():
        logits, _, x_t = fn(x)
        agree, _ = step_sign_agreement(x.numpy(), x_t.detach().numpy(), g_ref.numpy(), band)
        same = (logits.argmax(1) == ref_logits.argmax(1)).float()
        print(f"{name}: IMT step signs {agree:.1%}, labels {same[:n_real].mean():.2%} on test images, "
              f"{same[n_real:].mean():.2%} on random ones")
    top2 = ref_logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    print(f"median top-2 logit margin: test images {margin[:n_real].median():.2f}, random {margin[n_real:].median():.2f}")


if __name__ == "__main__":
    main()
