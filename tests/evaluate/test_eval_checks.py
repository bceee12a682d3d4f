"""Each check that makes a broken evaluation loud is provoked by a deliberately broken model or input, and
stays silent on a sound evaluation."""

from __future__ import annotations

import torch
from torch import nn

from atld_deploy.evaluate import evaluate_models
from atld_deploy.evaluate.checks import check_logits, paired_excess


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from atld_deploy.data import load_dataset

    return load_dataset("digits").test.batch(torch.arange(n))


def _checks(report) -> set[str]:
    return {w["check"] for w in report.warnings}


class SoftmaxOutputs(nn.Module):
    """Returns probabilities instead of logits."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.f(x), dim=1)


class OffGridIsRight(nn.Module):
    """Predicts class 1 (the true label of every test example) only off the 1/16 grid the digits live on:
    any perturbation makes it 'right', so attacked accuracy exceeds clean accuracy."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        off_grid = (x * 16 - torch.round(x * 16)).abs().flatten(1).mean(1, keepdim=True)
        return torch.cat([torch.full_like(off_grid, 0.5), 1000 * self.w * off_grid], dim=1)


class QueryCounting(nn.Module):
    """A stateful defence: right on its first two queries and after the 60th, wrong in between, so PGD-100
    'does better' for the defender than PGD-20."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        right = self.calls <= 2 or self.calls > 60
        base = self.w * x.flatten(1).mean(1, keepdim=True)
        return torch.cat([base + (0.0 if right else 5.0), base + (5.0 if right else 0.0)], dim=1)


class MaskedGradients(nn.Module):
    """The real classifier with its input gradient cut (a shattered-gradient defence)."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x.detach()) + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_paired_excess_counts_only_discordant_examples() -> None:
    a = torch.tensor([True, True, True, False])
    b = torch.tensor([True, False, False, False])
    diff, noise = paired_excess(a, b)
    assert diff == 0.5 and abs(noise - 2 * 2**0.5 / 4) < 1e-9


def test_probability_outputs_warn(tiny_standard_run) -> None:
    from atld_deploy.run import load_run

    f = load_run(tiny_standard_run).classifier
    x, y = _digits(16)
    report = evaluate_models(SoftmaxOutputs(f), None, x, y, eps=0.2, num_classes=10, attacks="clean",
                             models="static", protocols="published")
    assert _checks(report) == {"probability-outputs"}
    assert "probabilities, not logits" in report.records[0]["warnings"][0]
    with torch.no_grad():
        assert check_logits("static", f(x)) == []  # the real logits pass


def test_inputs_outside_unit_range_warn(tiny_standard_run) -> None:
    from atld_deploy.run import load_run

    f = load_run(tiny_standard_run).classifier
    x, y = _digits(16)
    report = evaluate_models(f, None, x * 16, y, eps=0.2, num_classes=10, attacks="clean,fgsm", models="static",
                             protocols="published")  # pixel values 0..16: a data set not scaled to [0,1]
    ranged = [w for w in report.warnings if w["check"] == "input-range"]
    assert any("expected [0, 1]" in w["message"] for w in ranged)
    assert any("exceeds eps" in w["message"] and w["attack"] == "fgsm" for w in ranged)
    sound = evaluate_models(f, None, x, y, eps=0.2, num_classes=10, attacks="clean,fgsm", models="static",
                            protocols="published")
    assert "input-range" not in _checks(sound)


def _all_ones_label(model: nn.Module, attacks: str):
    """Evaluate a 2-class toy `model` on 40 digits images, every label 1 (static model, published)."""
    x, _ = _digits(40)
    return evaluate_models(model, None, x, torch.ones(40, dtype=torch.long), eps=0.2, num_classes=2,
                           attacks=attacks, models="static", protocols="published")


def test_robust_above_clean_warns() -> None:
    report = _all_ones_label(OffGridIsRight(), "clean,pgd20")
    assert report.accuracy("static", "clean", "published") == 0.0
    assert report.accuracy("static", "pgd20", "published") == 1.0
    assert "robust-above-clean" in _checks(report)


def test_more_steps_helping_the_defender_warns() -> None:
    report = _all_ones_label(QueryCounting(), "clean,pgd20,pgd100")
    assert report.accuracy("static", "pgd20", "published") == 0.0
    assert report.accuracy("static", "pgd100", "published") == 1.0
    assert _checks(report) == {"more-steps-help"}


def test_square_beating_white_box_attacks_warns_on_masked_gradients(tiny_standard_run, monkeypatch) -> None:
    from atld_deploy.evaluate import suite
    from atld_deploy.run import load_run

    monkeypatch.setattr(suite, "SQUARE_QUERIES", 100)  # enough on 8x8 digits at eps 0.2; keeps the test short
    f = load_run(tiny_standard_run).classifier
    x, y = _digits(20)
    kw = dict(eps=0.2, num_classes=10, attacks="clean,pgd20,square", models="static", protocols="published")
    masked = evaluate_models(MaskedGradients(f), None, x, y, **kw)
    assert "square-beats-white-box" in _checks(masked)
    honest = evaluate_models(f, None, x, y, **kw)
    assert "square-beats-white-box" not in _checks(honest)
