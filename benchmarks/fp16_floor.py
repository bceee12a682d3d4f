"""The float16 floor of a run and the parity bars it yields, without exporting.

    .venv/bin/python benchmarks/fp16_floor.py --run demo/run [--n-real 256] [--n-random 64]

Every float16 export measures this floor itself (export/parity.py): float32 arithmetic with the classifier's
weights rounded to float16, on the parity images. This prints the same figures for any run, and judges the
float16 pipeline function (`PipelineFunction(half=True)`, run in PyTorch rather than ONNX Runtime) against
the bars derived from it, so one can see how far inside them a model's float16 pipeline sits.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from atld_deploy.export.parity import ParityReport, classifier_logits, compare, reference_outputs, rounded_to_float16
from atld_deploy.export.trace import PipelineFunction
from atld_deploy.export.verify import parity_inputs
from atld_deploy.run import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="demo/run")
    ap.add_argument("--n-real", type=int, default=256)
    ap.add_argument("--n-random", type=int, default=64)
    args = ap.parse_args()
    t0 = time.perf_counter()
    run = load_run(args.run)
    cfg = run.imt_config()
    x, info = parity_inputs(run, args.n_real, args.n_random)
    ref = reference_outputs(run.classifier, run.discriminator, cfg, "pipeline", x)
    floor = reference_outputs(rounded_to_float16(run.classifier), run.discriminator, cfg, "pipeline", x)
    floor["own_logits"] = classifier_logits(run.classifier, floor["images_imt"])
    fn = PipelineFunction(run.classifier, run.discriminator, cfg, emit_transformed=True, half=True)
    parts = [tuple(t.detach().numpy() for t in fn(xb)) for xb in x.split(64)]
    got = {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(("logits", "p_natural", "images_imt"))}
    res = compare("pipeline_fp16", "pytorch", "fp16", ref, got, x.numpy(), cfg, floor,
                  classifier_logits(run.classifier, got["images_imt"]))
    print(f"{args.run}: {info['real']} test images + {info['random']} random, IMT {cfg.mode} eps {cfg.eps}")
    print(ParityReport([res], info).table())
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
