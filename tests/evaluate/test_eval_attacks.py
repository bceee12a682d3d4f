"""Every attack's definition on tiny models, the CW-k margin loss against hand-computed values, and our
PGD-20 against torchattacks' independent PGD on the same model and examples."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from atld_deploy.attacks import ce_loss, cw_margin_loss, fgsm, pgd
from atld_deploy.errors import ConfigError
from atld_deploy.evaluate.suite import ATTACKS, AttackContext, parse_attacks
from atld_deploy.evaluate.targets import Target


def _linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


def _data(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_cw_margin_loss_matches_hand_computed_values() -> None:
    logits = torch.tensor([[3.0, 1.0, -2.0], [0.0, 5.0, 4.5], [1.0, 1.0, 60.0]])
    y = torch.tensor([0, 2, 2])
    # z_y - max_{j != y} z_j + 50, clamped at 0, negated: (3-1+50), (4.5-5+50), (60-1+50)
    expected = -(52.0 + 49.5 + 109.0)
    assert cw_margin_loss(logits, y).item() == pytest.approx(expected)
    # clamped at 0 once the wrong class leads by more than the margin
    assert cw_margin_loss(torch.tensor([[0.0, 70.0]]), torch.tensor([0])).item() == 0.0
    assert cw_margin_loss(torch.tensor([[2.0, 1.0]]), torch.tensor([0]), margin=0.0).item() == pytest.approx(-1.0)


def test_pgd_one_step_is_a_signed_step_of_the_loss_gradient() -> None:
    model = _linear_model()
    x, y = _data()
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(ce_loss(model(x), y), x)
    expected = (x.detach() + 0.05 * g.sign()).clamp(0, 1)
    out = pgd(model, x.detach(), y, eps=0.1, step_size=0.05, steps=1, random_start=False)
    torch.testing.assert_close(out, expected)


def test_fgsm_is_one_step_of_eps_from_a_uniform_random_start() -> None:
    model = _linear_model()
    x, y = _data()
    eps = 0.1
    gen = torch.Generator().manual_seed(3)
    x0 = (x + eps * (torch.rand(x.shape, generator=gen) * 2 - 1)).clamp(0, 1).requires_grad_(True)
    (g,) = torch.autograd.grad(ce_loss(model(x0), y), x0)
    expected = torch.min(torch.max(x0.detach() + eps * g.sign(), x - eps), x + eps).clamp(0, 1)
    torch.testing.assert_close(fgsm(model, x, y, eps, generator=torch.Generator().manual_seed(3)), expected)


@pytest.mark.parametrize("name,steps,loss", [("pgd20", 20, ce_loss), ("pgd100", 100, ce_loss),
                                             ("cw20", 20, cw_margin_loss), ("cw100", 100, cw_margin_loss)])
def test_registry_pgd_family_uses_step_eps_over_4_random_start_and_its_loss(name: str, steps: int, loss: object) -> None:
    model = _linear_model()
    x, y = _data()
    ctx = AttackContext(eps=0.2, num_classes=3, seed=0, generator=torch.Generator().manual_seed(5))
    ours = ATTACKS[name].fn(model, x, y, ctx)
    ref = pgd(model, x, y, 0.2, 0.05, steps, loss=loss, random_start=True, generator=torch.Generator().manual_seed(5))  # type: ignore[arg-type]
    torch.testing.assert_close(ours, ref)


def test_imt_aware_loss_adds_lambda_log_p_natural_to_the_ascended_objective() -> None:
    model = _linear_model()
    x, y = _data()
    # a "discriminator" term whose gradient dominates: ascending +1000 * sum(x) pushes every pixel up
    ctx = AttackContext(0.2, 3, 0, torch.Generator().manual_seed(0), log_p_natural=lambda xa: 1000 * xa.flatten(1).sum(1))
    out = ATTACKS["pgd20-imtloss"].fn(model, x, y, ctx)
    torch.testing.assert_close(out, (x + 0.2).clamp(0, 1))
    with pytest.raises(ConfigError, match="needs a model with IMT"):
        ATTACKS["pgd20-imtloss"].fn(model, x, y, AttackContext(0.2, 3, 0, torch.Generator()))


_SLOW = pytest.mark.slow  # torchattacks' multi-target and query-based attacks: minutes on a CPU


@pytest.mark.parametrize("name", ["fgsm", "pgd20", "cw20", "apgd-ce", pytest.param("apgd-t", marks=_SLOW),
                                  pytest.param("square", marks=_SLOW), pytest.param("autoattack", marks=_SLOW)])
def test_every_attack_stays_in_the_threat_model_and_breaks_a_non_robust_model(tiny_standard_run, name: str) -> None:
    from atld_deploy.data import load_dataset
    from atld_deploy.run import load_run

    run = load_run(tiny_standard_run)
    x, y = load_dataset("digits").test.batch(torch.arange(16))
    model = Target(run.classifier)
    eps = 0.2
    ctx = AttackContext(eps, 10, 0, torch.Generator().manual_seed(0))
    x_adv = ATTACKS[name].fn(model, x, y, ctx)
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        clean = (run.classifier(x).argmax(1) == y).float().mean().item()
        robust = (run.classifier(x_adv).argmax(1) == y).float().mean().item()
    # an undefended model at eps 0.2 on digits is not robust: PGD-20 takes most of its accuracy
    assert robust < clean - 0.2, (name, clean, robust)


def test_our_pgd20_agrees_with_torchattacks_pgd_within_sampling_noise(tiny_standard_run) -> None:
    import torchattacks

    from atld_deploy.data import load_dataset
    from atld_deploy.run import load_run

    run = load_run(tiny_standard_run)
    x, y = load_dataset("digits").test.batch(torch.arange(120))
    eps = 0.05  # a budget where accuracy is neither 0 nor clean, so a disagreement would show
    ours = pgd(run.classifier, x, y, eps, eps / 4, 20, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    theirs = torchattacks.PGD(run.classifier, eps=eps, alpha=eps / 4, steps=20, random_start=True)(x, y)
    with torch.no_grad():
        a = (run.classifier(ours).argmax(1) == y)
        b = (run.classifier(theirs).argmax(1) == y)
        clean = (run.classifier(x).argmax(1) == y).float().mean().item()
    assert a.float().mean() < clean  # the attack did something at this eps
    disagree = int((a != b).sum())
    diff = abs(a.float().mean().item() - b.float().mean().item())
    assert diff <= 2 * max(math.sqrt(disagree), 1.0) / len(y) + 1e-9, (a.float().mean(), b.float().mean(), disagree)


def test_parse_attacks_orders_validates_and_always_includes_clean() -> None:
    assert parse_attacks("pgd20, fgsm") == ("clean", "fgsm", "pgd20")
    with pytest.raises(ConfigError, match="unknown attack.*pgd7.*choose from"):
        parse_attacks("pgd7")
