"""Gradient attacks on any module mapping [0,1] images to logits: FGSM, PGD-k (cross-entropy) and CW-k
(PGD on the margin loss), exactly as the evaluation protocol defines them."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor, margin: float = 50.0) -> torch.Tensor:
    """Sum over the batch of -clamp(z_y - max_{j != y} z_j + margin, min=0) (ascended by the attack)."""
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -torch.clamp(z_y - others.max(dim=1).values + margin, min=0).sum()


def pgd(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    loss: Loss = ce_loss,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    input_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """L-inf PGD: `steps` signed-gradient ascent steps on `loss`, projected to the eps-ball and [0, 1].

    The loss is summed over the batch so each example's step is independent of the others.
    `input_loss(x_adv)` (a scalar, e.g. an IMT-aware term on the input) is added to the ascended loss.
    """
    x = x.detach()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
        x_adv = (x + eps * noise).clamp(0.0, 1.0)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            objective = loss(model(x_adv), y)
            if input_loss is not None:
                objective = objective + input_loss(x_adv)
            (g,) = torch.autograd.grad(objective, x_adv)
        x_adv = x_adv.detach() + step_size * g.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One step of size eps from a uniform random start (the protocol's FGSM)."""
    return pgd(model, x, y, eps, eps, 1, ce_loss, True, generator)


@torch.no_grad()
def accuracy(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(1) == y).float().mean().item()
