"""Worst-case aggregation on hand-made per-example results."""

from __future__ import annotations

import torch

from atld_deploy.evaluate.protocols import ALL, Outcome, worst_case


def _o(model: str, attack: str, protocol: str, bits: str) -> Outcome:
    return Outcome(model, attack, protocol, torch.tensor([b == "1" for b in bits]))


def test_worst_case_requires_surviving_every_run_per_attack_and_overall() -> None:
    outcomes = [
        _o("imt", "clean", "published", "11110"),
        _o("imt", "pgd20", "published", "11100"),
        _o("imt", "pgd20", "adaptive", "10110"),
        _o("imt", "square", "adaptive", "11011"),  # robust on example 4 despite clean failing: still not robust
        _o("static", "clean", "published", "10000"),
        _o("imt", "clean", "worst-case", "11111"),  # earlier worst-case rows are ignored
    ]
    got = {(o.model, o.attack): o.correct.int().tolist() for o in worst_case(outcomes)}
    assert got[("imt", "pgd20")] == [1, 0, 1, 0, 0]
    assert got[("imt", "clean")] == [1, 1, 1, 1, 0]
    assert got[("imt", "square")] == [1, 1, 0, 1, 1]
    assert got[("imt", ALL)] == [1, 0, 0, 0, 0]
    assert got[("static", ALL)] == [1, 0, 0, 0, 0]
    wc = {(o.model, o.attack): o for o in worst_case(outcomes)}
    assert wc[("imt", ALL)].accuracy == 0.2 and wc[("imt", ALL)].protocol == "worst-case"
    assert list(dict.fromkeys(o.model for o in worst_case(outcomes))) == ["imt", "static"]
