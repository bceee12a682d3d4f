"""Parity: the exported graphs against PyTorch (the core IMT on the run's modules), per backend.

Backends run through the runtime's own runners (`atld_deploy.runtime`), opened exactly as the backend
selector opens them for `infer`, so a verdict is about the code that serves the bytes. What each graph kind
takes, computes and returns comes from the graph catalogue (`atld_deploy.graphs`); the PyTorch reference is
the float32 module the catalogue names for the kind, computed here because IMT needs autograd.

Every output is judged on the function that produced it. A pipeline is three functions, checked apart:
`p_natural` (of the incoming image) against the reference's; the IMT step, exactly (`step.py`: where graph
and reference agree on a pixel's sign and the pixel is not clamped, |x_t - x| = m * eps to float32
rounding, m from the example's band decision, which must match the reference's unless its p_natural lies
within the graph's own p error of a band edge; nothing outside [0, 1]); and `logits` against the float32
classifier applied to the graph's own transformed image. End to end, the labels and the step's signs are
compared with the reference pipeline. TensorRT engines are built from graphs whose `images_imt` is
internal, so they are judged on labels and errors only (noted in the report); checking their step needs a
verification-only engine built from the graph with `images_imt` kept as an output, which the same
`compare` would then judge -- not built yet, since it cannot run without a GPU.

Statistics. Label agreement and sign agreement are counts over independent images, so their bars are
stated up front as one-sided binomial bounds with false-rejection probability ALPHA = 0.1% for a correct
graph. Labels: the number of images whose label differs from the reference is held to the 99.9% quantile
of Binomial(N, r), and never below N*r + 3 flips, so that at least three flips separate a correct graph's
expected result from the bar and one flip never decides (N: every parity image, real and random). Float32
tolerates r = 0.1%. Float16 takes r from a floor measured at every export on the same images: float32
arithmetic with every weight the float16 graph stores in float16 (the classifier's) rounded to float16 --
the disagreement that the float16 weights alone cause: for its k flips, r = 2 (k + 1) / (N + 2), twice the
floor's rate (Laplace's estimate, never 0) because the graph rounds every activation as well, a second
rounding of the same size. Signs are counted per example (the share of an example's pixels
outside the |g| band whose step sign differs from the reference gradient's) because pixels of one image
flip together (one ReLU gate moves many): the mean of N independent shares in [0, 1] with mean r has a
standard deviation of at most sqrt(r(1-r)/N) whatever the correlation inside an image (Bhatia-Davis), so
the float16 graph's mean share may exceed the floor's by z = 3.09 (one-sided 0.1%) times twice that bound
(two such means), with r the floor's share (at least 1/N); float32 tolerates a 0.1% share. Error bounds
are not statistical (a correct graph meets them on every image, as it meets the exact step checks):
float32 max |err| <= 1e-3 x max(1, |ref|); float16 mean |err| <= 8 x the floor's mean |err| on that output
(the graph rounds every activation as well as the weights; never below 8 float16 unit roundoffs of the
output's mean magnitude), and never above 1e-2 x max(1, |ref|). The float16 classifier (`classifier_fp16`) has
no step: its logits and labels are held to these same float16 bars against the float32 classifier, from the
same floor (the float32 classifier with its weights rounded to float16), so it needs no statistic of its own.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from ..graphs import GraphKind, kind_of
from ..imt import IMTConfig, natural_gradient
from ..runtime.runner import Runner, to_host
from .step import StepCheck, check_step
from .trace import frames_to_images, graph_module, images_to_frames, outputs_of

log = logging.getLogger(__name__)

ALPHA = 1e-3  # a correct graph fails a statistical bar with probability <= 0.1%
MIN_FLIP_GAP = 3  # flips between a correct graph's expected disagreement and the label bar
FLOOR_RATE_FACTOR = 2.0  # the float16 graph rounds its activations as well as the floor's weights
FP16_UNIT_ROUNDOFF = 2.0 ** -11
STEP_CHECKED = ("images_imt",)  # judged by the exact step check, not by an error bound


@dataclass(frozen=True)
class Thresholds:
    """Pass criteria for one precision.

    `abs_err` bounds max |err| (fp32) or mean |err| (fp16), relative to max(1, max |reference|) of that
    output. `err_factor` (fp16): mean |err| is also held to that many times the floor's mean |err| (or, if
    larger, float16's unit roundoff times the output's mean magnitude). `label_rate` and `sign_rate` are the
    disagreement rates a correct graph is allowed (fp32); fp16 derives its rates from the float16-weight
    floor of each export instead (None). `grad_band`: pixels with |g| below this fraction of their
    example's max |g| are left out of the sign agreement (float16 carries ~3 significant digits through ~20
    backward layers, so its band is wider).
    """

    abs_err: float
    use_mean: bool
    grad_band: float
    label_rate: float | None
    sign_rate: float | None
    err_factor: float | None = None


THRESHOLDS = {
    "fp32": Thresholds(abs_err=1e-3, use_mean=False, grad_band=1e-3, label_rate=1e-3, sign_rate=1e-3),
    "fp16": Thresholds(abs_err=1e-2, use_mean=True, grad_band=1e-2, label_rate=None, sign_rate=None, err_factor=8.0),
}


def binomial_bar(n: int, rate: float) -> int:
    """Most label flips out of `n` a correct graph may show when it flips each with probability `rate`:
    the (1 - ALPHA) quantile of Binomial(n, rate), and at least MIN_FLIP_GAP above the expected n * rate."""
    from scipy.stats import binom

    quantile = int(binom.ppf(1.0 - ALPHA, n, rate)) if rate > 0 else 0
    return min(n, max(quantile, math.ceil(n * rate + MIN_FLIP_GAP)))


def floor_label_rate(floor_flips: int, n: int) -> float:
    """The label flip rate a float16 graph is allowed: FLOOR_RATE_FACTOR x the floor's rate (Laplace: never 0)."""
    return min(1.0, FLOOR_RATE_FACTOR * (floor_flips + 1) / (n + 2))


def share_bar(floor_share: float, n: int) -> float:
    """Highest mean per-example sign-disagreement share the float16 graph may show, from the floor's."""
    from scipy.stats import norm

    r = max(floor_share, 1.0 / max(n, 1))
    z = float(norm.isf(ALPHA))
    return max(THRESHOLDS["fp32"].sign_rate or 0.0, floor_share + z * 2.0 * math.sqrt(r * (1.0 - r) / max(n, 1)))


@dataclass
class OutputStats:
    """Errors of one output against its reference."""

    max_abs: float
    mean_abs: float
    max_rel: float
    mean_rel: float
    ref_scale: float
    ref_mean: float
    reference: str = "reference"
    bar: float | None = None  # the bound the judged error (max or mean) was held to


@dataclass
class GraphParity:
    """Parity of one graph or engine on one backend, with every bar it was held to."""

    graph: str
    backend: str
    precision: str
    samples: int
    runner: str = ""  # the runtime runner class (and provider) whose outputs were judged
    outputs: dict[str, OutputStats] = field(default_factory=dict)
    label_flips: int | None = None
    label_bar: int | None = None  # most flips allowed (binomial, stated before the graph runs)
    label_agreement: float | None = None
    floor_label_flips: int | None = None  # fp16: flips of float32 arithmetic with float16-rounded weights
    sign_agreement: float | None = None  # 1 - mean per-example share of disagreeing signs
    sign_bar: float | None = None
    floor_sign_agreement: float | None = None
    sign_excluded: float | None = None
    step: StepCheck | None = None
    notes: list[str] = field(default_factory=list)
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
            "statistics": {"alpha": ALPHA, "min_flip_gap": MIN_FLIP_GAP},
            "thresholds": {k: asdict(v) for k, v in THRESHOLDS.items()},
            "entries": [dict(asdict(e), passed=e.passed) for e in self.entries],
        }

    def table(self) -> str:
        """A plain-text table for the terminal."""
        rows = [("graph", "backend", "prec", "output", "max|err|", "mean|err|", "max rel", "err bar", "labels (flips<=bar)",
                 "IMT sign (>=bar)", "ok")]
        for e in self.entries:
            for i, (name, s) in enumerate(e.outputs.items()):
                labels = (f"{e.label_agreement:.2%} ({e.label_flips}<={e.label_bar})"
                          if name == "logits" and e.label_agreement is not None else "")
                signs = (f"{e.sign_agreement:.2%} (>={e.sign_bar:.2%})"
                         if name == "images_imt" and e.sign_agreement is not None and e.sign_bar is not None else "")
                rows.append((
                    e.graph if i == 0 else "", e.backend if i == 0 else "", e.precision if i == 0 else "", name,
                    f"{s.max_abs:.2e}", f"{s.mean_abs:.2e}", f"{s.max_rel:.2e}",
                    "exact step" if name in STEP_CHECKED else (f"{s.bar:.2e}" if s.bar is not None else ""), labels, signs,
                    ("PASS" if e.passed else "FAIL") if i == 0 else "",
                ))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        for e in self.entries:
            if e.floor_label_flips is not None:
                signs = "" if e.floor_sign_agreement is None else f", signs {e.floor_sign_agreement:.2%}"
                lines.append(f"{e.graph}: float16-weight floor flips {e.floor_label_flips}/{e.samples} labels{signs}; "
                             f"bars derived from it")
            if e.step is not None:
                lines.append(f"{e.graph}: IMT step {e.step.summary()}")
            lines += [f"note {e.graph} on {e.backend}: {n}" for n in e.notes]
        for e in self.entries:
            lines += [f"FAIL {e.graph} on {e.backend}: {f}" for f in e.failures]
        lines += [f"skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- reference


def rounded_to_float16(module: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy whose parameters and buffers hold float16-representable values (the floor's weights)."""
    m = copy.deepcopy(module)
    with torch.no_grad():
        for t in [*m.parameters(), *m.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    return m


def _kind(graph: str | GraphKind) -> GraphKind:
    return graph if isinstance(graph, GraphKind) else kind_of(graph)


def graph_feed(graph: str | GraphKind, x: torch.Tensor, classifier: torch.nn.Module) -> torch.Tensor:
    """The input graph kind `graph` takes for the float parity images `x` (its catalogue input)."""
    kind = _kind(graph)
    if kind.input.dtype == "uint8":
        return images_to_frames(x)
    if kind.computes == "discriminator":  # a discriminator graph is fed the classifier's logits
        with torch.no_grad():
            return classifier(x)
    return x


def seen_images(graph: str | GraphKind, feed: torch.Tensor) -> torch.Tensor | None:
    """The float images a pipeline kind transforms, given its feed (None for kinds without an IMT step)."""
    kind = _kind(graph)
    if not kind.is_pipeline:
        return None
    return frames_to_images(feed) if kind.input.dtype == "uint8" else feed


def reference_outputs(
    classifier: torch.nn.Module,
    discriminator: torch.nn.Module,
    cfg: IMTConfig,
    graph: str | GraphKind,
    feed: torch.Tensor,
    batch: int = 64,
) -> dict[str, np.ndarray]:
    """PyTorch outputs of graph kind `graph` on its input `feed` (`graph_feed`), computed in float32 by the
    module the catalogue names for it (`graph_module`), plus `imt_gradient` for pipelines."""
    kind = _kind(graph)
    module = graph_module(kind, classifier, discriminator, cfg, precision="fp32")
    outs: dict[str, list[np.ndarray]] = {}
    for fb in feed.split(batch):
        with torch.no_grad():  # IMT turns gradients back on for its own step only
            res = outputs_of(kind, module, fb)
        xb = seen_images(kind, fb)
        if xb is not None:
            res["imt_gradient"] = (natural_gradient(classifier, discriminator, xb)[0] if cfg.mode != "off"
                                   else torch.zeros_like(xb))
        for k, v in res.items():
            outs.setdefault(k, []).append(v.detach().float().numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def classifier_logits(classifier: torch.nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Float32 logits of `classifier` on images `x`: the reference for a pipeline's logits on its own step."""
    with torch.no_grad():
        return np.concatenate([classifier(xb).float().numpy() for xb in torch.from_numpy(np.ascontiguousarray(x)).float().split(batch)])


# ----------------------------------------------------------------------------------------- comparison


def run_backend(runner: Runner, feed: torch.Tensor | np.ndarray, batch_sizes: Iterable[int]) -> dict[str, np.ndarray]:
    """Run `feed` through an open runtime `Runner` (the code that serves) in batches of cycling sizes, so
    the dynamic batch dimension is exercised; every output back on the host."""
    array = feed.numpy() if isinstance(feed, torch.Tensor) else np.asarray(feed)
    (name,) = (t.name for t in runner.inputs)
    sizes = list(batch_sizes)
    parts: dict[str, list[np.ndarray]] = {}
    start, i = 0, 0
    while start < len(array):
        n = sizes[i % len(sizes)]
        for k, v in runner.infer({name: np.ascontiguousarray(array[start:start + n])}).items():
            parts.setdefault(k, []).append(to_host(v))
        start, i = start + n, i + 1
    return {k: np.concatenate(v) for k, v in parts.items()}


def _output_stats(r: np.ndarray, o: np.ndarray, reference: str) -> OutputStats:
    err = np.abs(o - r)
    scale = max(1.0, float(np.abs(r).max(initial=0.0)))
    rel = err / np.maximum(np.abs(r), 1e-6 * scale)
    return OutputStats(float(err.max(initial=0)), float(err.mean()), float(rel.max(initial=0)), float(rel.mean()), scale,
                       float(np.abs(r).mean()), reference)


def sign_shares(x: np.ndarray, x_t: np.ndarray, g: np.ndarray, band: float) -> tuple[np.ndarray, float]:
    """Per example, the share of pixels whose step sign(x_t - x) differs from sign(g_ref), among pixels with
    |g| > band x the example's max |g| that the clamp does not pin at 0 or 1 (NaN where none qualifies).

    Returns (shares [B], fraction of pixels excluded)."""
    b = len(g)
    flat_g, flat_x, flat_t = g.reshape(b, -1), x.reshape(b, -1), x_t.reshape(b, -1)
    peak = np.abs(flat_g).max(axis=1, keepdims=True)
    big = np.abs(flat_g) > band * np.maximum(peak, 1e-30)
    pinned = ((flat_x <= 0.0) & (flat_g < 0)) | ((flat_x >= 1.0) & (flat_g > 0))
    mask = big & ~pinned
    wrong = (np.sign(flat_t - flat_x) != np.sign(flat_g)) & mask
    counted = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(counted > 0, wrong.sum(axis=1) / np.maximum(counted, 1), np.nan)
    return shares, float(1.0 - mask.mean())


def step_sign_agreement(x: np.ndarray, x_t: np.ndarray, g: np.ndarray, band: float = 1e-3) -> tuple[float | None, float]:
    """1 - the mean per-example share of disagreeing step signs (see `sign_shares`).

    Returns (agreement or None when no pixel qualifies, fraction of pixels excluded)."""
    shares, excluded = sign_shares(x, x_t, g, band)
    if np.isnan(shares).all():
        return None, 1.0
    return float(1.0 - np.nanmean(shares)), excluded


def _judge_errors(res: GraphParity, th: Thresholds, name: str, stats: OutputStats, finite: bool,
                  floor: OutputStats | None) -> None:
    measured = stats.mean_abs if th.use_mean else stats.max_abs
    bar, why = th.abs_err * stats.ref_scale, f"{th.abs_err:g} x max(1, |ref|)"
    if th.err_factor is not None and floor is not None:
        derived = th.err_factor * max(floor.mean_abs, FP16_UNIT_ROUNDOFF * stats.ref_mean)
        if derived < bar:
            bar, why = derived, f"{th.err_factor:g} x the float16-weight floor's {floor.mean_abs:.3g}"
    stats.bar = bar
    if not finite or measured > bar:
        kind = "mean" if th.use_mean else "max"
        res.failures.append(f"{name}: {kind} |err| {measured:.3g} > {why} = {bar:.3g} (against the {stats.reference})")


def _judge_labels(res: GraphParity, precision: str, ref: np.ndarray, got: np.ndarray, floor: np.ndarray | None) -> None:
    th = THRESHOLDS[precision]
    n = len(ref)
    ref_labels = ref.argmax(1)
    if th.label_rate is not None:
        rate = th.label_rate
    elif floor is not None:
        res.floor_label_flips = int((floor.argmax(1) != ref_labels).sum())
        rate = floor_label_rate(res.floor_label_flips, n)
    else:
        res.failures.append(f"{precision} labels have no floor to be judged against")
        return
    res.label_bar = binomial_bar(n, rate)  # fixed before the graph's labels are counted
    res.label_flips = int((got.argmax(1) != ref_labels).sum())
    res.label_agreement = 1.0 - res.label_flips / n
    if res.label_flips > res.label_bar:
        res.failures.append(f"labels differ on {res.label_flips} of {n} images > {res.label_bar} allowed "
                            f"(99.9% binomial bound at flip rate {rate:.3%})")


def _judge_signs(res: GraphParity, precision: str, x: np.ndarray, x_t: np.ndarray, g: np.ndarray,
                 floor_x_t: np.ndarray | None) -> None:
    th = THRESHOLDS[precision]
    shares, excluded = sign_shares(x, x_t, g, th.grad_band)
    counted = ~np.isnan(shares)
    if not counted.any():
        res.notes.append("no pixel outside the |g| band: the step's signs were not compared")
        return
    n = int(counted.sum())
    if th.sign_rate is not None:
        allowed = th.sign_rate
    elif floor_x_t is not None:
        floor_shares, _ = sign_shares(x, floor_x_t, g, th.grad_band)
        floor_share = float(np.nanmean(floor_shares[counted])) if counted.any() else 0.0
        res.floor_sign_agreement = 1.0 - floor_share
        allowed = share_bar(floor_share, n)
    else:
        res.failures.append(f"{precision} signs have no floor to be judged against")
        return
    share = float(shares[counted].mean())
    res.sign_agreement, res.sign_bar, res.sign_excluded = 1.0 - share, 1.0 - allowed, excluded
    if share > allowed:
        res.failures.append(f"IMT step sign agrees on {1 - share:.3%} < {1 - allowed:.3%} of the pixels outside the "
                            f"|g| band (mean over {n} examples)")


def compare(
    graph: str,
    backend: str,
    precision: str,
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    x: np.ndarray | None,
    cfg: IMTConfig | None = None,
    floor: dict[str, np.ndarray] | None = None,
    own_logits: np.ndarray | None = None,
    expect_step: bool = True,
) -> GraphParity:
    """Compare backend outputs `got` with `ref`; `x` (float NCHW) and `cfg` enable the IMT step checks.

    `floor`: the float16-weight floor's outputs (required for fp16). `own_logits`: the float32 classifier on
    the graph's own `images_imt`, the reference for a pipeline's `logits` (None: the reference pipeline's).
    `expect_step`: a missing `images_imt` fails (ONNX graphs always expose it); False for engines, which
    do not output it (noted instead)."""
    th = THRESHOLDS[precision]
    res = GraphParity(graph=graph, backend=backend, precision=precision, samples=len(next(iter(ref.values()))))
    for name, out in got.items():
        if name not in ref:
            continue
        o = np.asarray(out, dtype=np.float64)
        mine = name == "logits" and own_logits is not None
        r = (own_logits if mine else ref[name]).astype(np.float64)
        if r.shape != o.shape:
            res.failures.append(f"{name} has shape {o.shape}, reference {r.shape}")
            continue
        stats = _output_stats(r, o, "classifier on the graph's own transformed images" if mine else "reference")
        res.outputs[name] = stats
        if name not in STEP_CHECKED:
            floor_stats = None
            if floor is not None and name in floor:  # the floor judged the same way: its logits on its own step
                floor_ref = floor["own_logits"] if mine and "own_logits" in floor else ref[name]
                floor_stats = _output_stats(floor_ref.astype(np.float64), floor[name].astype(np.float64), "reference")
            _judge_errors(res, th, name, stats, bool(np.isfinite(o).all()), floor_stats)
    if "logits" in got and "logits" in ref and np.shape(got["logits"]) == ref["logits"].shape:
        _judge_labels(res, precision, ref["logits"], np.asarray(got["logits"]), None if floor is None else floor["logits"])
    if x is not None and "imt_gradient" in ref:
        if "images_imt" not in got or np.shape(got["images_imt"]) != x.shape:
            if expect_step or "images_imt" in got:
                res.failures.append(f"images_imt has shape {np.shape(got.get('images_imt'))}, expected {x.shape}: "
                                    "the IMT step cannot be checked")
            else:
                res.notes.append("no images_imt output: logits judged against the reference pipeline, the step unchecked")
            return res
        x_t = np.asarray(got["images_imt"])
        _judge_signs(res, precision, x, x_t, ref["imt_gradient"], None if floor is None else floor["images_imt"])
        if cfg is not None:
            res.step = check_step(x, x_t, ref["imt_gradient"], ref["p_natural"], np.asarray(got["p_natural"]), cfg)
            res.failures += res.step.failures()
    return res


def same_computation(served: np.ndarray, twin: np.ndarray, device: str, precision: str) -> bool:
    """Whether a twin graph's output is the served graph's: bit for bit on the CPU (ONNX Runtime's CPU kernels
    are deterministic); elsewhere (GPU kernels may pick other algorithms per session) within the precision's
    error bar, relative to max(1, |served|)."""
    if served.shape != twin.shape:
        return False
    if device == "cpu":
        return bool(np.array_equal(served, twin))
    th = THRESHOLDS[precision]
    err = np.abs(served.astype(np.float64) - twin)
    return bool(np.isfinite(twin).all() and (err.mean() if th.use_mean else err.max(initial=0.0))
                <= th.abs_err * max(1.0, float(np.abs(served).max(initial=0.0))))


def check_graph_parity(
    graph: str | GraphKind,
    runner: Runner,
    classifier: torch.nn.Module,
    discriminator: torch.nn.Module,
    cfg: IMTConfig,
    x: torch.Tensor,
    batch_sizes: Iterable[int] = (64, 1, 3),
    ref_cache: dict[Any, dict[str, np.ndarray]] | None = None,
    expect_step: bool = True,
    precision: str | None = None,
    step_runner: Runner | None = None,
    label: str | None = None,
) -> GraphParity:
    """Run graph kind `graph` on the parity images `x` through an open runtime `runner` and compare it with
    the PyTorch reference (and, for float16, with the float16-weight floor computed here on the same images).

    `precision`: what to judge it as (default the kind's; an engine's own precision). `step_runner`: the same
    graph with its optional outputs exposed, opened the same way, when the served graph keeps `images_imt`
    internal: its transformed images are judged, and its served outputs must be the served graph's
    (`same_computation`), so the step checked is the served graph's. `expect_step`: see `compare`. `label`: the graph
    name in the report (default the kind's key)."""
    kind = _kind(graph)
    precision = precision or kind.precision
    feed = graph_feed(kind, x, classifier)
    x_seen = seen_images(kind, feed)
    cache = ref_cache if ref_cache is not None else {}
    cache_key = (kind.computes, kind.input.name)  # the float32 reference depends on nothing else
    if cache_key not in cache:
        cache[cache_key] = reference_outputs(classifier, discriminator, cfg, kind, feed)
    floor = None
    if THRESHOLDS[precision].label_rate is None:
        floor_key = (*cache_key, "float16 weights")
        if floor_key not in cache:
            floor = reference_outputs(rounded_to_float16(classifier), discriminator, cfg, kind, feed)
            if kind.is_pipeline:
                floor["own_logits"] = classifier_logits(classifier, floor["images_imt"])
            cache[floor_key] = floor
        floor = cache[floor_key]
    got = run_backend(runner, feed, batch_sizes)
    mismatched: list[str] = []
    if step_runner is not None:
        exposed = run_backend(step_runner, feed, batch_sizes)
        mismatched = [n for n in got if n not in exposed or not same_computation(got[n], exposed[n], runner.device, precision)]
        got.update({n: v for n, v in exposed.items() if n not in got})
    own = classifier_logits(classifier, got["images_imt"]) if kind.is_pipeline and "images_imt" in got else None
    res = compare(label or kind.key, f"{runner.backend} ({runner.device})", precision, cache[cache_key], got,
                  None if x_seen is None else x_seen.numpy(), cfg, floor, own, expect_step)
    res.runner = f"{type(runner).__module__}.{type(runner).__qualname__} on {runner.describe()}"
    res.failures += [f"{n}: the served graph and its variant with images_imt exposed disagree, so the step checked "
                     f"would not be the served graph's" for n in mismatched]
    return res
