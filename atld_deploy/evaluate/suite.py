"""The attack registry: each attack is a function `(model, x, y, ctx) -> x_adv` with its protocol-document
definition, plus which view of an IMT model the adaptive protocol differentiates.

Our own loop (`atld_deploy.attacks.pgd`) implements FGSM / PGD-k / CW-k exactly as the protocol document
states (step eps/4, uniform random start, CE or the margin loss with margin 50). APGD-CE, APGD-T, Square and
AutoAttack come from torchattacks (an independent implementation), imported only when used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..attacks import ce_loss, cw_margin_loss, fgsm, pgd
from ..errors import ConfigError

# Budgets of the torchattacks-based attacks (fixed so that reports are comparable; see docs/REPRODUCTION.md).
APGD_STEPS = 25
APGDT_STEPS = 50
SQUARE_QUERIES = 300  # the library default; `eval` uses 100 (--square-queries) to fit in minutes
IMT_LOSS_LAMBDA = 1.0


@dataclass
class AttackContext:
    """What an attack needs besides the model and the batch."""

    eps: float
    num_classes: int
    seed: int
    generator: torch.Generator
    # for the IMT-aware loss: log p_natural(x) per example (None for models without IMT)
    log_p_natural: Callable[[torch.Tensor], torch.Tensor] | None = None
    square_queries: int | None = None  # None: SQUARE_QUERIES


AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, AttackContext], torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """An attack and the view of the deployed IMT function it differentiates under the adaptive protocol:
    `bpda` (identity through IMT), `surrogate` (tanh through IMT), `deployed` (the real F, black-box)."""

    name: str
    fn: AttackFn
    adaptive_view: str = "bpda"
    adaptive_only: bool = False  # meaningless on a model without IMT
    description: str = ""


def _clean(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    return x.clone()


def _fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    return fgsm(model, x, y, ctx.eps, generator=ctx.generator)


def _pgd(steps: int, loss: Callable[..., torch.Tensor]) -> AttackFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        return pgd(model, x, y, ctx.eps, ctx.eps / 4, steps, loss=loss, random_start=True, generator=ctx.generator)

    return run


def _pgd_imt_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    """PGD-20 on CE(F(x)) + lambda * log p_natural(x): the attack also makes its point look natural to D,
    so that IMT's step is small (or halved inside the band) and the adversarial point survives it."""
    if ctx.log_p_natural is None:
        raise ConfigError("pgd20-imtloss needs a model with IMT")
    return pgd(model, x, y, ctx.eps, ctx.eps / 4, 20, loss=ce_loss, random_start=True, generator=ctx.generator,
               input_loss=lambda xa: IMT_LOSS_LAMBDA * ctx.log_p_natural(xa).sum())  # type: ignore[misc]


def _seeded(fn: AttackFn) -> AttackFn:
    """torchattacks draws from torch's global generator: fix it per call so that runs repeat exactly."""

    @functools.wraps(fn)
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            return fn(model, x, y, ctx).detach()

    return run


@_seeded
def _apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    import torchattacks

    return torchattacks.APGD(model, norm="Linf", eps=ctx.eps, steps=APGD_STEPS, n_restarts=1, loss="ce", seed=ctx.seed)(x, y)


@_seeded
def _apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    import torchattacks

    return torchattacks.APGDT(model, norm="Linf", eps=ctx.eps, steps=APGDT_STEPS, n_restarts=1, seed=ctx.seed,
                              n_classes=ctx.num_classes)(x, y)


@_seeded
def _square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    import torchattacks

    return torchattacks.Square(model, norm="Linf", eps=ctx.eps, n_queries=ctx.square_queries or SQUARE_QUERIES, n_restarts=1, seed=ctx.seed)(x, y)


@_seeded
def _autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
    import torchattacks

    return torchattacks.AutoAttack(model, norm="Linf", eps=ctx.eps, version="standard", n_classes=ctx.num_classes,
                                   seed=ctx.seed)(x, y)


ATTACKS: dict[str, AttackSpec] = {
    s.name: s
    for s in (
        AttackSpec("clean", _clean, "deployed", description="no attack"),
        AttackSpec("fgsm", _fgsm, description="one step of eps from a uniform random start, CE"),
        AttackSpec("pgd20", _pgd(20, ce_loss), description="PGD-20, step eps/4, random start, CE"),
        AttackSpec("pgd100", _pgd(100, ce_loss), description="PGD-100, step eps/4, random start, CE"),
        AttackSpec("cw20", _pgd(20, cw_margin_loss), description="PGD-20 on the margin loss (margin 50)"),
        AttackSpec("cw100", _pgd(100, cw_margin_loss), description="PGD-100 on the margin loss (margin 50)"),
        AttackSpec("apgd-ce", _apgd_ce, description=f"torchattacks APGD-CE, {APGD_STEPS} steps"),
        AttackSpec("apgd-t", _apgd_t, description=f"torchattacks APGD-T (DLR, all targets), {APGDT_STEPS} steps"),
        AttackSpec("square", _square, "deployed", description="torchattacks Square (black-box), --square-queries queries"),
        AttackSpec("autoattack", _autoattack, description="torchattacks AutoAttack, standard version"),
        AttackSpec("pgd20-smooth", _pgd(20, ce_loss), "surrogate", adaptive_only=True,
                   description="PGD-20 through IMT with tanh in place of sign (create_graph)"),
        AttackSpec("pgd20-imtloss", _pgd_imt_loss, adaptive_only=True,
                   description="PGD-20 (BPDA) on CE + lambda log p_natural(x)"),
    )
}

# The default fits `eval --n 500` on the digits demo model into minutes on 2 CPU cores; pgd100/cw100 (the
# more-steps check), apgd-t and autoattack are opt-in (--attacks).
DEFAULT_ATTACKS = ("clean", "fgsm", "pgd20", "cw20", "apgd-ce", "square", "pgd20-smooth", "pgd20-imtloss")
WHITE_BOX = ("fgsm", "pgd20", "pgd100", "cw20", "cw100", "apgd-ce", "apgd-t", "pgd20-smooth", "pgd20-imtloss")


def parse_attacks(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate a comma-separated list (or sequence) of attack names; `clean` is always evaluated first.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones).
    """
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in items if n not in ATTACKS]
    if unknown:
        raise ConfigError(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
    ordered = ["clean"] + [n for n in ATTACKS if n in items and n != "clean"]
    return tuple(ordered)
