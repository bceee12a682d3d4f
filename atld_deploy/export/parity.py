"""Parity: the exported graphs against PyTorch (the core IMT on the run's modules), per backend.

Backends run through Polygraphy runners and `Comparator.run` (ONNX Runtime CPU always; TensorRT engines
when TensorRT and a GPU are present). The PyTorch reference is computed here, because IMT needs autograd
and Polygraphy's `PytRunner` is CUDA-only and runs under `no_grad`.

Metrics per output: max/mean absolute and relative error; for `logits` the top-1 label agreement; for the
pipeline the sign agreement of the IMT step (sign of images_imt - images vs the reference gradient's sign)
outside a small |gradient| band, where float rounding legitimately flips signs (atld-method.md).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from ..imt import IMTConfig, IMTPipeline, natural_gradient

log = logging.getLogger(__name__)

NO_LABEL_OUTPUTS = ("images_imt",)


@dataclass(frozen=True)
class Thresholds:
    """Pass criteria for one precision. `abs_err` is max |err| (fp32) or mean |err| (fp16), relative to
    max(1, max |reference|) of that output. `grad_band`: pixels with |g| below this fraction of their
    example's max |g| are left out of the IMT sign agreement (float16 carries ~3 significant digits
    through ~20 backward layers, so its band is wider).

    Float16 labels are judged on the real test images when there are any: a uniform-noise image sits near a
    tie between classes (demo model: median top-2 logit margin 0.35 against 2.12 for real digits), so float16
    rounding legitimately flips some of those labels; the random images still count in every error bound
    and in the sign agreement, and their label agreement is reported. Float32 labels are judged on all images.

    The float16 sign bar (97%) is set by what float16 weights allow at all: on the demo model, float32
    arithmetic with every weight rounded to float16 agrees with the reference on 97.9% of the signs outside
    the band (ReLU gates flip under a 5e-4 relative weight change), the float16 graph on 98.2-98.4%
    (benchmarks/fp16_floor.py prints these). A broken gradient scores far lower: an underflowed one (sign 0)
    agrees nowhere, a wrong one about half the time."""

    label_agreement: float
    sign_agreement: float
    abs_err: float
    use_mean: bool
    grad_band: float


THRESHOLDS = {
    "fp32": Thresholds(label_agreement=0.999, sign_agreement=0.999, abs_err=1e-3, use_mean=False, grad_band=1e-3),
    "fp16": Thresholds(label_agreement=0.99, sign_agreement=0.97, abs_err=1e-2, use_mean=True, grad_band=1e-2),
}


@dataclass
class OutputStats:
    """Errors of one output against the reference."""

    max_abs: float
    mean_abs: float
    max_rel: float
    mean_rel: float
    ref_scale: float


@dataclass
class GraphParity:
    """Parity of one graph or engine on one backend."""

    graph: str
    backend: str
    precision: str
    samples: int
    outputs: dict[str, OutputStats] = field(default_factory=dict)
    label_agreement: float | None = None  # the judged one: on the real test images when there are any
    label_scope: str | None = None  # "real test images" or "all images"
    label_agreement_random: float | None = None  # on the random images (reported, judged only when alone)
    sign_agreement: float | None = None
    sign_excluded: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class ParityReport:
    """All graphs on all backends. `.passed` is True when every entry passed."""

    entries: list[GraphParity]
    inputs: dict[str, Any]
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.entries) and all(e.passed for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "inputs": self.inputs,
            "skipped": self.skipped,
            "thresholds": {k: asdict(v) for k, v in THRESHOLDS.items()},
            "entries": [dict(asdict(e), passed=e.passed) for e in self.entries],
        }

    def table(self) -> str:
        """A plain-text table for the terminal."""
        rows = [("graph", "backend", "prec", "output", "max|err|", "mean|err|", "max rel", "labels", "IMT sign", "ok")]
        for e in self.entries:
            for i, (name, s) in enumerate(e.outputs.items()):
                rows.append((
                    e.graph if i == 0 else "", e.backend if i == 0 else "", e.precision if i == 0 else "", name,
                    f"{s.max_abs:.2e}", f"{s.mean_abs:.2e}", f"{s.max_rel:.2e}",
                    f"{e.label_agreement:.2%}" if name == "logits" and e.label_agreement is not None else "",
                    f"{e.sign_agreement:.3%}" if name == "images_imt" and e.sign_agreement is not None else "",
                    ("PASS" if e.passed else "FAIL") if i == 0 else "",
                ))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        rnd = [f"{e.graph} {e.label_agreement_random:.2%}" for e in self.entries
               if e.label_scope == "real test images" and e.label_agreement_random is not None]
        if rnd:
            lines.append("float16 labels judged on the real test images; on the random images (near ties, not "
                         "judged): " + ", ".join(rnd))
        for e in self.entries:
            lines += [f"FAIL {e.graph} on {e.backend}: {f}" for f in e.failures]
        lines += [f"skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- reference


def reference_outputs(
    classifier: torch.nn.Module,
    discriminator: torch.nn.Module,
    cfg: IMTConfig,
    graph: str,
    x: torch.Tensor,
    batch: int = 64,
) -> dict[str, np.ndarray]:
    """PyTorch outputs of graph `graph` on [0,1] float images `x` (plus `imt_gradient` for pipelines)."""
    pipe = IMTPipeline(classifier, discriminator, cfg)
    outs: dict[str, list[np.ndarray]] = {}
    for xb in x.split(batch):
        if graph == "classifier":
            with torch.no_grad():
                res = {"logits": classifier(xb)}
        elif graph == "discriminator":
            with torch.no_grad():
                nat, cls = discriminator(classifier(xb))
            res = {"natural_logit": nat, "class_logits": cls}
        else:
            logits, p, x_t = pipe(xb)
            g = natural_gradient(classifier, discriminator, xb)[0] if cfg.mode != "off" else torch.zeros_like(xb)
            res = {"logits": logits, "p_natural": p, "images_imt": x_t, "imt_gradient": g}
        for k, v in res.items():
            outs.setdefault(k, []).append(v.detach().float().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def graph_feed(graph: str, x: torch.Tensor, classifier: torch.nn.Module) -> tuple[str, np.ndarray]:
    """The input name and array a graph takes for the float images `x`."""
    if graph == "classifier" or (graph.startswith("pipeline") and graph != "pipeline_uint8"):
        return "images", x.numpy()
    if graph == "pipeline_uint8":
        return "images_uint8", (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    if graph == "discriminator":
        with torch.no_grad():
            return "logits", classifier(x).numpy()
    raise ValueError(f"unknown graph {graph!r}")


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """What `pipeline_uint8` sees after its own /255: the reference for that graph."""
    return (x * 255).round().clamp(0, 255) / 255.0


# ----------------------------------------------------------------------------------------- comparison


def run_backend(runner: Any, input_name: str, array: np.ndarray, batch_sizes: Iterable[int]) -> dict[str, np.ndarray]:
    """Run `array` through a Polygraphy runner with `Comparator.run`, in batches of varying size."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    feeds = []
    start = 0
    sizes = list(batch_sizes)
    i = 0
    while start < len(array):
        n = sizes[i % len(sizes)]
        feeds.append({input_name: np.ascontiguousarray(array[start:start + n])})
        start += n
        i += 1
    with G_LOGGER.verbosity(G_LOGGER.WARNING):
        results = Comparator.run([runner], data_loader=feeds)
    iterations = results[0][1]
    names = list(iterations[0].keys())
    return {k: np.concatenate([np.asarray(it[k]) for it in iterations]) for k in names}


def compare(
    graph: str,
    backend: str,
    precision: str,
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    x: np.ndarray | None,
    n_real: int = 0,
) -> GraphParity:
    """Compare backend outputs `got` with `ref`; `x` (float NCHW) enables the IMT sign check.

    The first `n_real` examples are real test images (labels are judged on them when there are any),
    the rest random ones."""
    th = THRESHOLDS[precision]
    res = GraphParity(graph=graph, backend=backend, precision=precision, samples=len(next(iter(ref.values()))))
    for name, out in got.items():
        if name not in ref:
            continue
        r = ref[name].astype(np.float64)
        o = np.asarray(out, dtype=np.float64)
        if r.shape != o.shape:
            res.failures.append(f"{name} has shape {o.shape}, reference {r.shape}")
            continue
        err = np.abs(o - r)
        scale = max(1.0, float(np.abs(r).max(initial=0.0)))
        rel = err / np.maximum(np.abs(r), 1e-6 * scale)
        stats = OutputStats(float(err.max(initial=0)), float(err.mean()), float(rel.max(initial=0)), float(rel.mean()), scale)
        res.outputs[name] = stats
        if name in NO_LABEL_OUTPUTS:
            continue
        measured = stats.mean_abs if th.use_mean else stats.max_abs
        if not np.isfinite(o).all() or measured > th.abs_err * scale:
            kind = "mean" if th.use_mean else "max"
            res.failures.append(f"{name}: {kind} |err| {measured:.3g} > {th.abs_err:g} x max(1, |ref|) = {th.abs_err * scale:.3g}")
    if "logits" in got and "logits" in ref and got["logits"].shape == ref["logits"].shape:
        same = got["logits"].argmax(1) == ref["logits"].argmax(1)
        real_only = n_real > 0 and precision == "fp16"  # float32 is held to every image, near ties included
        judged = same[:n_real] if real_only else same
        res.label_agreement = float(judged.mean())
        res.label_scope = "real test images" if real_only else "all images"
        if len(same) > n_real:
            res.label_agreement_random = float(same[n_real:].mean())
        if res.label_agreement < th.label_agreement:
            res.failures.append(f"labels agree on {res.label_agreement:.2%} < {th.label_agreement:.1%} "
                                f"({res.label_scope})")
    if x is not None and "images_imt" in got and "imt_gradient" in ref:
        agree, excluded = step_sign_agreement(x, np.asarray(got["images_imt"]), ref["imt_gradient"], th.grad_band)
        if agree is not None:
            res.sign_agreement, res.sign_excluded = agree, excluded
            if agree < th.sign_agreement:
                res.failures.append(f"IMT step sign agrees on {agree:.3%} < {th.sign_agreement:.1%} (outside the |g| band)")
    return res


def step_sign_agreement(x: np.ndarray, x_t: np.ndarray, g: np.ndarray, band: float = 1e-3) -> tuple[float | None, float]:
    """Fraction of pixels whose step direction sign(x_t - x) equals sign(g_ref), among pixels with
    |g| > band x the example's max |g| that are not pinned at 0 or 1 by the clamp.

    Returns (agreement or None when no pixel qualifies, fraction excluded)."""
    flat = np.abs(g).reshape(len(g), -1).max(axis=1).reshape(-1, *([1] * (g.ndim - 1)))
    big = np.abs(g) > band * np.maximum(flat, 1e-30)
    pinned = ((x <= 0.0) & (g < 0)) | ((x >= 1.0) & (g > 0))
    mask = big & ~pinned
    if not mask.any():
        return None, 1.0
    agree = np.sign(x_t - x)[mask] == np.sign(g)[mask]
    return float(agree.mean()), float(1.0 - mask.mean())


def check_graph_parity(
    graph: str,
    backend: str,
    precision: str,
    runner: Any,
    classifier: torch.nn.Module,
    discriminator: torch.nn.Module,
    cfg: IMTConfig,
    x: torch.Tensor,
    batch_sizes: Iterable[int] = (64, 1, 3),
    ref_cache: dict[str, dict[str, np.ndarray]] | None = None,
    n_real: int = 0,
) -> GraphParity:
    """Run graph `graph` on `x` through `runner` and compare it with the PyTorch reference."""
    input_name, array = graph_feed(graph, x, classifier)
    x_ref = quantize_uint8(x) if graph == "pipeline_uint8" else x
    ref_key = "pipeline_uint8" if graph == "pipeline_uint8" else ("pipeline" if graph.startswith("pipeline") else graph)
    cache = ref_cache if ref_cache is not None else {}
    if ref_key not in cache:
        cache[ref_key] = reference_outputs(classifier, discriminator, cfg, ref_key, x_ref)
    got = run_backend(runner, input_name, array, batch_sizes)
    return compare(graph, backend, precision, cache[ref_key], got, x_ref.numpy() if graph.startswith("pipeline") else None,
                   n_real=n_real)

