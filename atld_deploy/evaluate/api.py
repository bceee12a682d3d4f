"""Entry points: `evaluate_run(run_dir, ...)` for a trained run and `evaluate_models(...)` for any
classifier (+ discriminator) on any batch (what the tests use with tiny or deliberately broken models)."""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..imt import IMTConfig
from .checks import check_logits, check_outcomes
from .protocols import PROTOCOLS, Outcome, RunSpec, run_protocols
from .report import EvalReport, make_records
from .suite import DEFAULT_ATTACKS, SQUARE_QUERIES, parse_attacks
from .targets import MODEL_NAMES, build_views

log = logging.getLogger(__name__)

DEFAULT_N = 500


def _parse_list(value: str | Sequence[str], valid: Sequence[str], what: str) -> tuple[str, ...]:
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [v for v in items if v not in valid]
    if bad or not items:
        raise ConfigError(f"unknown or empty {what} {bad or items}; choose from {', '.join(valid)}")
    return tuple(v for v in valid if v in items)


def machine_info() -> dict[str, object]:
    """Platform, CPU count, torch version and threads: recorded beside every number."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def evaluate_models(
    classifier: nn.Module,
    discriminator: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    num_classes: int,
    imt_config: Callable[[str], IMTConfig] | None = None,
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    models: str | Sequence[str] = MODEL_NAMES,
    protocols: str | Sequence[str] = PROTOCOLS,
    batch_size: int = 500,
    seed: int = 0,
    square_queries: int | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    on_adversarial: Callable[[tuple[str, ...], torch.Tensor], None] | None = None,
) -> EvalReport:
    """Evaluate `classifier` (and its IMT pipelines, if `discriminator` is given) on `(x, y)`.

    Args:
        imt_config: maps an IMT mode ("plain" | "plus") to its `IMTConfig`; required with a discriminator.
        square_queries: Square's query budget (default `suite.SQUARE_QUERIES`).
        on_adversarial: called with (("published", attack) | ("adaptive", model, attack), x_adv) per batch.
        models: static | imt | imt+ ; without a discriminator only `static` runs (the others are dropped
            with a note in `report.meta["notes"]`).
    Raises:
        ConfigError: unknown attack/model/protocol names, eps outside [0, 1], non-positive batch size.
    """
    if not 0.0 < eps <= 1.0:
        raise ConfigError(f"eps is in (0, 1] pixel units (8/255 = 0.0314 for CIFAR), got {eps}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if square_queries is not None and square_queries < 1:
        raise ConfigError(f"--square-queries must be >= 1, got {square_queries}")
    attack_names = parse_attacks(attacks)
    model_names = _parse_list(models, MODEL_NAMES, "model(s)")
    protocol_names = _parse_list(protocols, PROTOCOLS, "protocol(s)")
    notes: list[str] = []
    if discriminator is None and any(m != "static" for m in model_names):
        dropped = [m for m in model_names if m != "static"]
        notes.append(f"this run has no discriminator (not an ATLD run): {', '.join(dropped)} cannot be evaluated, "
                     "only the static classifier")
        model_names = ("static",)
    if protocol_names == ("worst-case",):
        protocol_names = PROTOCOLS  # worst-case is defined over the other two
        notes.append("worst-case needs the published and adaptive runs: they were evaluated too")
    views = [build_views(m, classifier, discriminator, imt_config) for m in model_names]
    spec = RunSpec(attack_names, protocol_names, eps, num_classes, batch_size, seed, square_queries, on_adversarial)
    t0 = time.perf_counter()
    with torch.no_grad():
        clean_out = torch.cat([classifier(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    outcomes = run_protocols(views, x, y, spec, on_outcome, on_progress)
    warnings = check_logits("static", clean_out) + check_outcomes(outcomes, eps)
    if "worst-case" not in protocol_names:
        outcomes = [o for o in outcomes if o.protocol != "worst-case"]
    seconds = time.perf_counter() - t0
    meta = {"eps": eps, "n": len(y), "seed": seed, "attacks": list(attack_names), "models": list(model_names),
            "protocols": list(protocol_names), "batch_size": batch_size,
            "square_queries": square_queries or SQUARE_QUERIES, "seconds": round(seconds, 1),
            "notes": notes, "machine": machine_info()}
    return EvalReport(make_records(outcomes, warnings, eps, seed), warnings, meta, outcomes)


def subset_indices(num_test: int, n: int, seed: int) -> torch.Tensor:
    """The fixed, seeded subset of test indices (sorted) evaluated for `--n n --seed seed`."""
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    perm = torch.randperm(num_test, generator=torch.Generator().manual_seed(seed))
    return perm[: min(n, num_test)].sort().values


def evaluate_run(
    run_dir: str | Path,
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    models: str | Sequence[str] = MODEL_NAMES,
    protocols: str | Sequence[str] = PROTOCOLS,
    n: int = DEFAULT_N,
    eps: float | None = None,
    batch_size: int = 500,
    seed: int = 0,
    square_queries: int | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> EvalReport:
    """Evaluate a trained run on a fixed, seeded subset of its test split (default eps: the run's training eps).

    Returns:
        `EvalReport` (`.records`, `.warnings`, `.meta`); render with `format_table(report)`.
    Raises:
        CheckpointError: the run directory is missing or damaged. DataError: its data set cannot be loaded.
        ConfigError: bad attack/model/protocol names or numbers.
    """
    from ..data import load_dataset
    from ..run import load_run

    run = load_run(run_dir)
    cfg = run.config
    data = load_dataset(cfg.dataset, cfg.data_dir, False, cfg.image_size)
    idx = subset_indices(len(data.test), n, seed)
    x, y = data.test.batch(idx)
    eps = cfg.eps if eps is None else eps
    report = evaluate_models(
        run.classifier, run.discriminator, x, y, eps=eps, num_classes=run.shape.num_classes,
        imt_config=lambda mode: run.imt_config(mode), attacks=attacks, models=models, protocols=protocols,
        batch_size=batch_size, seed=seed, square_queries=square_queries, on_outcome=on_outcome, on_progress=on_progress,
    )
    if len(idx) < n:
        report.meta["notes"].append(f"--n {n} asked for, but the {cfg.dataset} test split has {len(idx)} examples: all used")
    report.meta.update(run=str(run_dir), method=cfg.method, arch=cfg.arch, dataset=cfg.dataset,
                       imt_eps=run.imt_config().eps)
    return report
