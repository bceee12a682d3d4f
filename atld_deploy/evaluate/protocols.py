"""The three protocols, run on per-example outcomes.

- `published`: every attack is computed on the static classifier alone, then each model (static, IMT,
  IMT+) scores the finished adversarial example (IMT is applied afterwards, as the paper did).
- `adaptive`: every attack is computed on the deployed function of each model, through the view its
  spec names (BPDA-identity, smooth surrogate, or the real F for black-box attacks). For the static model
  the deployed function *is* the classifier, so its adaptive outcomes are its published ones.
- `worst-case`: per example, robust only if it was classified correctly after every attack run on that model
  (all attacks of all protocols evaluated; clean included); per attack column, over the protocols.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .suite import ATTACKS, AttackContext
from .targets import ModelViews, Target, natural_log_prob

log = logging.getLogger(__name__)

PROTOCOLS = ("published", "adaptive", "worst-case")
ALL = "all"  # the worst-case column over every attack


@dataclass
class Outcome:
    """Per-example result of one attack run on one model under one protocol."""

    model: str
    attack: str
    protocol: str
    correct: torch.Tensor  # bool [n]
    seconds: float = 0.0
    note: str = ""
    input_range: tuple[float, float] = (0.0, 1.0)  # smallest/largest input value the attacked model received
    max_perturbation: float = 0.0  # max |x_adv - x|

    @property
    def accuracy(self) -> float:
        return int(self.correct.sum()) / len(self.correct) if len(self.correct) else float("nan")


@dataclass
class RunSpec:
    """What to evaluate."""

    attacks: tuple[str, ...]
    protocols: tuple[str, ...]
    eps: float
    num_classes: int
    batch_size: int = 500
    seed: int = 0
    square_queries: int | None = None
    # sees every batch of adversarial examples, keyed like the attack's seed (the card's detector figures)
    on_adversarial: Callable[[tuple[str, ...], torch.Tensor], None] | None = None


@torch.no_grad()
def predict(model: Target, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Labels of `model` on `x`, in batches."""
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _attack_seed(seed: int, *parts: str) -> int:
    # a stable per-(model, attack, protocol) seed: str hashes are salted per process, so sum code points
    return seed * 1_000_003 + sum((i + 1) * ord(c) for i, c in enumerate("/".join(parts)))


def run_attack(
    attack: str, view: Target, scorers: dict[str, Target], x: torch.Tensor, y: torch.Tensor, spec: RunSpec,
    seed_key: tuple[str, ...], log_p_natural: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], tuple[float, float], float]:
    """Attack `view` batch by batch; score the adversarial examples with every target in `scorers`.

    Returns:
        (per-scorer bool correctness [n], input range `view` saw, max |x_adv - x|)
    """
    seed = _attack_seed(spec.seed, *seed_key)
    gen = torch.Generator().manual_seed(seed)
    fn = ATTACKS[attack].fn
    view.reset_range()
    correct: dict[str, list[torch.Tensor]] = {k: [] for k in scorers}
    max_pert = 0.0
    for i in range(0, len(x), spec.batch_size):
        xb, yb = x[i:i + spec.batch_size], y[i:i + spec.batch_size]
        ctx = AttackContext(spec.eps, spec.num_classes, seed + i, gen, log_p_natural, spec.square_queries)
        x_adv = fn(view, xb, yb, ctx).detach()
        if spec.on_adversarial is not None:
            spec.on_adversarial(seed_key, x_adv)
        max_pert = max(max_pert, float((x_adv - xb).abs().max()))
        for name, scorer in scorers.items():
            correct[name].append(predict(scorer, x_adv, spec.batch_size) == yb)
    seen = (view.seen_min, view.seen_max) if view.seen_min <= view.seen_max else (float(x.min()), float(x.max()))
    return {k: torch.cat(v) for k, v in correct.items()}, seen, max_pert


def run_protocols(
    models: list[ModelViews], x: torch.Tensor, y: torch.Tensor, spec: RunSpec,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> list[Outcome]:
    """Run the requested protocols and attacks; return one `Outcome` per (model, attack, protocol),
    worst-case rows included. `on_progress(done, total, what)` is called after each attack run."""
    outcomes: list[Outcome] = []
    need_static_published = "published" in spec.protocols or (
        "adaptive" in spec.protocols and any(m.name == "static" for m in models))
    total = (sum(not ATTACKS[a].adaptive_only for a in spec.attacks) if need_static_published else 0) + (
        sum(m.has_imt for m in models) * len(spec.attacks) if "adaptive" in spec.protocols else 0)
    done = 0

    def ran(what: str) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total, what)

    def emit(o: Outcome) -> None:
        outcomes.append(o)
        log.debug("%-6s %-10s %-14s %6.2f%%  (%.1f s)", o.model, o.protocol, o.attack, 100 * o.accuracy, o.seconds)
        if on_outcome is not None:
            on_outcome(o)

    static = Target(models[0].deployed.classifier)
    scorers = {m.name: m.deployed for m in models}
    published: dict[tuple[str, str], Outcome] = {}
    if need_static_published:
        for attack in spec.attacks:
            if ATTACKS[attack].adaptive_only:
                continue
            t0 = time.perf_counter()
            res, seen, pert = run_attack(attack, static, scorers, x, y, spec, ("published", attack))
            secs = time.perf_counter() - t0
            ran(f"published {attack}")
            for m in models:
                o = Outcome(m.name, attack, "published", res[m.name], secs, input_range=seen, max_perturbation=pert)
                published[(m.name, attack)] = o
                if "published" in spec.protocols:
                    emit(o)
    if "adaptive" in spec.protocols:
        for m in models:
            for attack in spec.attacks:
                a = ATTACKS[attack]
                if not m.has_imt:
                    if a.adaptive_only:
                        continue
                    p = published[(m.name, attack)]
                    emit(Outcome(m.name, attack, "adaptive", p.correct, 0.0, "the deployed function is the classifier: "
                                 "same run as published", p.input_range, p.max_perturbation))
                    continue
                view = {"bpda": m.bpda, "surrogate": m.surrogate, "deployed": m.deployed}[a.adaptive_view]
                assert view is not None  # has_imt guarantees every view
                lp = log_p_natural_fn(m)
                t0 = time.perf_counter()
                res, seen, pert = run_attack(attack, view, {m.name: m.deployed}, x, y, spec, ("adaptive", m.name, attack), lp)
                ran(f"adaptive {m.name} {attack}")
                emit(Outcome(m.name, attack, "adaptive", res[m.name], time.perf_counter() - t0,
                             f"gradient: {a.adaptive_view}", seen, pert))
    if "worst-case" in spec.protocols:
        for o in worst_case(outcomes):
            emit(o)
    return outcomes


def log_p_natural_fn(m: ModelViews) -> Callable[[torch.Tensor], torch.Tensor]:
    """log p_natural of model `m`'s discriminator, as a function of the attacked input."""
    target = m.deployed
    return lambda x: natural_log_prob(target, x)  # type: ignore[arg-type]


def worst_case(outcomes: list[Outcome]) -> list[Outcome]:
    """Per model: for each attack, an example is robust only if it survived that attack under every protocol
    run; the `all` column requires surviving every attack of every protocol.

    Worst-case outcomes already in `outcomes` are ignored; models keep their first-seen order.
    """
    result: list[Outcome] = []
    models = list(dict.fromkeys(o.model for o in outcomes if o.protocol != "worst-case"))
    for model in models:
        mine = [o for o in outcomes if o.model == model and o.protocol != "worst-case"]
        overall: torch.Tensor | None = None
        for attack in dict.fromkeys(o.attack for o in mine):
            runs = [o for o in mine if o.attack == attack]
            robust = runs[0].correct.clone()
            for o in runs[1:]:
                robust &= o.correct
            overall = robust.clone() if overall is None else overall & robust
            result.append(Outcome(model, attack, "worst-case", robust, note=f"over {len(runs)} run(s)"))
        if overall is not None:
            result.append(Outcome(model, ALL, "worst-case", overall, note=f"over {len(mine)} runs"))
    return result
