"""Checks that make a broken evaluation loud (docs/EVALUATION.md).

Each check returns warnings, dicts with `check`, `model`, `protocol`, `attack` and a `message` saying what
was seen and what it usually means. Differences are judged against paired sampling noise: with `b` examples
that only the second run gets right and `c` that only the first gets right, the difference of accuracies has
standard deviation about sqrt(b + c) / n under "no real difference"; we warn beyond two of those (and at
least one example).
"""

from __future__ import annotations

import math

import torch

from .protocols import Outcome
from .suite import WHITE_BOX

Warning_ = dict[str, object]
STEP_PAIRS = (("pgd20", "pgd100"), ("cw20", "cw100"))
RANGE_TOL = 1e-6


def paired_excess(better: torch.Tensor, worse: torch.Tensor) -> tuple[float, float]:
    """`(acc(better) - acc(worse), noise)` for two bool per-example results on the same examples."""
    n = max(len(better), 1)
    b = int((better & ~worse).sum())
    c = int((worse & ~better).sum())
    return (b - c) / n, max(2 * math.sqrt(b + c), 1.0) / n


def _w(check: str, o: Outcome, message: str) -> Warning_:
    return {"check": check, "model": o.model, "protocol": o.protocol, "attack": o.attack, "message": message}


def check_outcomes(outcomes: list[Outcome], eps: float) -> list[Warning_]:
    """Every per-outcome check: robust above clean, more steps helping, Square beating the white-box
    attacks, inputs outside [0,1] or outside the eps-ball."""
    warnings: list[Warning_] = []
    runs = [o for o in outcomes if o.protocol != "worst-case"]
    groups: dict[tuple[str, str], dict[str, Outcome]] = {}
    for o in runs:
        groups.setdefault((o.model, o.protocol), {})[o.attack] = o
        if o.note.startswith("the deployed function is the classifier"):
            continue  # a replay of the published run: its warnings are already there
        lo, hi = o.input_range
        if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
            warnings.append(_w("input-range", o, f"the attacked model received inputs in [{lo:.4g}, {hi:.4g}], "
                               "expected [0, 1]: the data or the attack is not scaled/clamped to [0,1] images"))
        if o.max_perturbation > eps + 1e-5:
            warnings.append(_w("input-range", o, f"max |x_adv - x| = {o.max_perturbation:.4g} exceeds eps = {eps:.4g}: "
                               "the attack left the threat model"))
    for (model, protocol), by_attack in groups.items():
        clean = by_attack.get("clean")
        if clean is not None:
            for name, o in by_attack.items():
                diff, noise = paired_excess(o.correct, clean.correct) if name != "clean" else (0.0, 1.0)
                if diff > noise:
                    warnings.append(_w("robust-above-clean", o, f"{name} accuracy {o.accuracy:.2%} exceeds clean "
                                       f"{clean.accuracy:.2%} by more than noise ({noise:.2%}): the attack is broken "
                                       "or the model's answers change between queries"))
        for short, long in STEP_PAIRS:
            if short in by_attack and long in by_attack:
                o_s, o_l = by_attack[short], by_attack[long]
                diff, noise = paired_excess(o_l.correct, o_s.correct)
                if diff > noise:
                    warnings.append(_w("more-steps-help", o_l, f"{long} accuracy {o_l.accuracy:.2%} is above {short}'s "
                                       f"{o_s.accuracy:.2%} by more than noise ({noise:.2%}): more attack steps should "
                                       "never help the defender (unstable gradients or a stateful model)"))
        square = by_attack.get("square")
        white = [by_attack[a] for a in WHITE_BOX if a in by_attack]
        if square is not None and white:
            best = min(white, key=lambda o: o.accuracy)
            diff, noise = paired_excess(best.correct, square.correct)
            if diff > noise:
                warnings.append(_w("square-beats-white-box", square, f"black-box Square leaves {square.accuracy:.2%}, "
                                   f"below the best white-box attack ({best.attack}: {best.accuracy:.2%}) by more than "
                                   f"noise ({noise:.2%}): the gradients are masked or obfuscated; trust Square"))
    return warnings


def check_logits(model: str, outputs: torch.Tensor) -> list[Warning_]:
    """Warn when a model's outputs on clean inputs look like probabilities instead of logits."""
    if outputs.ndim != 2 or len(outputs) == 0:
        return []
    in_unit = bool(((outputs >= -RANGE_TOL) & (outputs <= 1 + RANGE_TOL)).all())
    sums_to_one = bool(((outputs.sum(1) - 1).abs() < 1e-3).all())
    if in_unit and sums_to_one:
        return [{"check": "probability-outputs", "model": model, "protocol": "*", "attack": "*",
                 "message": "the model's outputs are in [0,1] and every row sums to 1: they are probabilities, not "
                            "logits; CE and margin losses on probabilities are flat and attacks look weaker than they "
                            "are. Evaluate the module that returns logits (remove the final softmax)."}]
    return []
