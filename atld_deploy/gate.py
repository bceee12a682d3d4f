"""The deployment gate: which IMT mode `auto` serves, decided from the robustness card in the manifest.

The card records, per mode, the adaptive worst-case accuracy (an example counts only if every attack of both
protocols failed on it) on `n` test examples. `auto` serves the mode with the highest figure; two modes *tie*
when their figures differ by less than the 95% binomial half-width of the evaluation set (Wilson's interval at
the pair's pooled accuracy, never zero), and a tie goes to the cheaper mode: static < imt < imt-plus. Without
a card `auto` serves the pipeline as exported and says that no evidence exists.

Torch-free: the runtime imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

MODES = ("static", "imt", "imt-plus")  # cheapest first: the order ties are settled in
PIPELINE_MODES = {"plain": "imt", "plus": "imt-plus"}  # the manifest's imt.mode -> the mode its pipeline serves
LABELS = {"static": "static", "imt": "IMT", "imt-plus": "IMT+"}
Z95 = 1.959964


def half_width(p: float, n: int, z: float = Z95) -> float:
    """Wilson's 95% half-width for an accuracy `p` measured on `n` examples (positive even at p = 0 or 1)."""
    if n < 1:
        return 1.0
    p = min(max(p, 0.0), 1.0)
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


@dataclass(frozen=True)
class Decision:
    """The mode `auto` serves and why: `figures` maps each mode considered to its worst-case accuracy."""

    mode: str
    reason: str
    figures: dict[str, float]
    preferred: str | None = None  # the card's choice over every mode, when the artifact lacks it

    def line(self) -> str:
        return self.reason


def worst_cases(card: Mapping[str, Any]) -> tuple[dict[str, float], int]:
    """(mode -> adaptive worst-case accuracy, n) from a card; modes the card lacks are left out."""
    modes = card.get("modes", {}) if isinstance(card, Mapping) else {}
    figures = {m: float(modes[m]["worst_case"]) for m in MODES if isinstance(modes.get(m), Mapping)
               and isinstance(modes[m].get("worst_case"), (int, float))}
    return figures, int(card.get("n", 0)) if isinstance(card, Mapping) else 0


def choose(figures: Mapping[str, float], n: int, among: Sequence[str] = MODES) -> tuple[str, str]:
    """The mode to serve among `among` (at least one of them in `figures`) and the sentence saying why.

    The cheapest mode whose worst case ties with the best one wins (see the module docstring)."""
    cands = [m for m in MODES if m in among and m in figures]
    if not cands:
        raise ValueError(f"no mode of {list(among)} has a worst-case figure")
    best = max(cands, key=lambda m: (figures[m], -MODES.index(m)))
    for m in cands:  # cheapest first
        if m == best:
            break
        hw = half_width((figures[m] + figures[best]) / 2, n)
        if figures[best] - figures[m] < hw:
            return m, (f"{LABELS[best]} worst case {100 * figures[best]:.1f}% vs {LABELS[m]} {100 * figures[m]:.1f}%: "
                       f"difference {100 * (figures[best] - figures[m]):.1f} points < the 95% half-width "
                       f"{100 * hw:.1f} (n={n}), a tie: deploy the cheaper {LABELS[m]}")
    others = [m for m in cands if m != best]
    if not others:
        return best, f"{LABELS[best]} worst case {100 * figures[best]:.1f}% (the only mode measured): deploy {LABELS[best]}"
    parts = []
    for m in others:
        hw = half_width((figures[m] + figures[best]) / 2, n)
        rel = "<" if figures[m] < figures[best] else "="
        parts.append(f"{LABELS[m]} {100 * figures[m]:.1f}% {rel} {LABELS[best]} {100 * figures[best]:.1f}% "
                     f"(+-{100 * hw:.1f})")
    return best, f"worst case {'; '.join(parts)}, n={n}: deploy {LABELS[best]}"


def available_modes(manifest_imt_mode: str, graphs: Sequence[str]) -> list[str]:
    """The modes an artifact can serve: static (the classifier graph) and its pipeline's own mode."""
    out = ["static"] if "classifier" in graphs else []
    pipe = PIPELINE_MODES.get(manifest_imt_mode)
    if pipe is not None and "pipeline" in graphs:
        out.append(pipe)
    return out


def decide(card: Mapping[str, Any] | None, available: Sequence[str], exported: str) -> Decision:
    """What `auto` serves for an artifact offering `available` modes whose pipeline serves `exported`.

    Without a card (or one without worst-case figures) it is `exported`, today's behaviour, with a reason that
    says no evidence exists. If the card prefers a mode the artifact lacks, the best available one is served and
    the reason says so.
    """
    figures, n = worst_cases(card or {})
    as_exported = f"the pipeline as exported ({LABELS.get(exported, exported)})"
    if not figures:
        return Decision(exported, f"{as_exported}: the artifact carries no robustness card, so there is no evidence "
                        "for choosing a mode (`atld-deploy card ART` writes one)", figures)
    if not any(m in figures for m in available):
        return Decision(exported, f"{as_exported}: the card has no worst case for the modes this artifact ships "
                        f"({', '.join(LABELS[m] for m in available)}); `atld-deploy card ART` measures them", figures)
    preferred, why = choose(figures, n)
    if preferred in available:
        return Decision(preferred, why, figures)
    mode, why_here = choose(figures, n, available)
    return Decision(mode, f"the card prefers {LABELS[preferred]} ({why}), which this artifact does not ship; "
                    f"best available: {why_here}; to serve {LABELS[preferred]}, re-export with "
                    f"`{reexport_command(preferred)}`", figures, preferred)


def reexport_command(mode: str) -> str:
    """The export command whose artifact ships `mode` (its pipeline graph serves one IMT mode)."""
    return f"atld-deploy export RUN --output ART --imt {mode}"


def verdict(figures: Mapping[str, float], n: int) -> str:
    """The one-line verdict `eval` prints under its table."""
    if not figures:
        return "verdict: no worst-case figures (evaluate with --protocol published,adaptive,worst-case)"
    return "verdict: " + choose(figures, n)[1]
