"""One optimisation step per training method: ATLD and the baselines it is compared with.

Each step function takes the networks, the config and one batch, performs the optimiser steps and
returns the loss terms as floats (for the progress bar and metrics.jsonl).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd
from ..config import TrainConfig
from ..losses import (
    atld_perturbation,
    discriminator_bce,
    discriminator_loss,
    sinkhorn_distance,
    smooth_labels,
    soft_cross_entropy,
)


@dataclass
class Nets:
    """The networks and optimisers. `train_classifier`/`train_discriminator` are what the trained
    forward passes go through (DDP wrappers when distributed, else the modules themselves); attack and
    eval-mode passes use the plain modules so DDP sees exactly one backward per training forward."""

    classifier: nn.Module
    opt_c: torch.optim.Optimizer
    discriminator: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    train_classifier: nn.Module | None = None
    train_discriminator: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.train_classifier is None:
            self.train_classifier = self.classifier
        if self.train_discriminator is None:
            self.train_discriminator = self.discriminator


StepFn = Callable[[Nets, TrainConfig, torch.Tensor, torch.Tensor, torch.Generator], dict[str, float]]


def gradient_balance(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """The authors' magnitude balance max(num) / max(den) (signed max, as their code). If the signed
    max of `den` is not positive, fall back to max|.| so the weight stays finite and positive."""
    d = den.max()
    if d > 0:
        return (num.max() / d).detach()
    return (num.abs().max() / den.abs().max().clamp_min(1e-12)).detach()


def clean_logits(classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of the clean batch, classifier in eval mode (the authors' frozen copy): no batch statistics,
    no running-statistics update, no gradient. The classifier is left in eval mode for the perturbation."""
    classifier.eval()
    with torch.no_grad():
        return classifier(x)


def mse_invariance(discriminator: nn.Module, z_adv: torch.Tensor, z_nat: torch.Tensor) -> torch.Tensor:
    """The authors' code: MSE between adversarial and clean logits."""
    return F.mse_loss(z_adv, z_nat)


def divergence_invariance(discriminator: nn.Module, z_adv: torch.Tensor, z_nat: torch.Tensor) -> torch.Tensor:
    """The paper's eq. (6): the classifier minimises the divergence D estimates,
    mean log(1 - p(z_adv)) + mean log p(z_nat) -- the negative of D's natural/adversarial loss, with D in
    train mode as for its own loss (adversarial first) and the clean logits constant as in the code."""
    adv_logit, _ = discriminator(z_adv)
    nat_logit, _ = discriminator(z_nat)
    return -(discriminator_bce(nat_logit, is_natural=True) + discriminator_bce(adv_logit, is_natural=False))


InvarianceFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
INVARIANCE_TERMS: dict[str, InvarianceFn] = {"mse": mse_invariance, "divergence": divergence_invariance}


def step_atld(nets: Nets, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
    """One ATLD batch as the authors' code runs it (docs/METHOD.md lists what is exact and what differs)."""
    f, d = nets.classifier, nets.discriminator
    assert d is not None and nets.opt_d is not None  # built by the trainer for method atld
    num_classes = f.fc.out_features  # type: ignore[union-attr]
    targets = smooth_labels(y, num_classes, cfg.label_smoothing)

    # 1-2. clean logits and the perturbation: classifier in eval mode, D in train mode
    d.train()
    z_nat = clean_logits(f, x)
    x_adv = atld_perturbation(f, d, x, z_nat, cfg.eps, gen)

    # 3. adversarial logits with the classifier in train mode
    f.train()
    x_adv.requires_grad_(True)
    z_adv = nets.train_classifier(x_adv)

    # 4. discriminator: d_iters updates on detached logits
    for _ in range(cfg.d_iters):
        nets.opt_d.zero_grad(set_to_none=True)
        loss_d = discriminator_loss(nets.train_discriminator, z_nat, z_adv.detach(), targets)
        loss_d.backward()
        nets.opt_d.step()

    # 5. classifier: smoothed CE + invariance term balanced by the ratio of input-gradient maxima
    ce = soft_cross_entropy(z_adv, targets)
    inv = INVARIANCE_TERMS[cfg.invariance](d, z_adv, z_nat)
    (g_ce,) = torch.autograd.grad(ce, x_adv, retain_graph=True)
    (g_inv,) = torch.autograd.grad(inv, x_adv, retain_graph=True)
    scale = gradient_balance(g_ce, g_inv)
    loss = ce + scale / cfg.invariance_divisor * inv
    nets.opt_c.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt_c.step()
    if cfg.invariance == "divergence":
        d.zero_grad(set_to_none=True)  # the divergence term reached D's parameters; D steps only on its own loss
    return {"loss": loss.item(), "ce": ce.item(), "inv": inv.item(), "scale": scale.item(), "loss_d": loss_d.item()}


def step_standard(nets: Nets, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
    nets.classifier.train()
    loss = F.cross_entropy(nets.train_classifier(x), y)
    nets.opt_c.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt_c.step()
    return {"loss": loss.item()}


def step_pgd_at(nets: Nets, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
    """Madry et al.: PGD-k with random start on cross-entropy, train on the adversarial batch."""
    f = nets.classifier
    f.eval()
    x_adv = pgd(f, x, y, cfg.eps, cfg.step_size, cfg.pgd_steps, generator=gen)
    f.train()
    loss = F.cross_entropy(nets.train_classifier(x_adv), y)
    nets.opt_c.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt_c.step()
    return {"loss": loss.item()}


def step_fgsm_rs(nets: Nets, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
    """Wong et al. ("Fast is better than free"): one step of 1.25 eps from a uniform random start."""
    f = nets.classifier
    f.train()
    delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * cfg.eps).to(x.device)
    x0 = (x + delta).clamp(0.0, 1.0).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(f(x0), y), x0)
    x_adv = torch.min(torch.max(x0.detach() + 1.25 * cfg.eps * g.sign(), x - cfg.eps), x + cfg.eps).clamp(0.0, 1.0)
    loss = F.cross_entropy(nets.train_classifier(x_adv), y)
    nets.opt_c.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt_c.step()
    return {"loss": loss.item()}


def step_feature_scattering(nets: Nets, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
    """Zhang & Wang (2019): one step from a random start that maximises the OT distance between the
    batch's clean and perturbed logits (Sinkhorn, cosine cost), then smoothed CE on the result."""
    f = nets.classifier
    num_classes = f.fc.out_features  # type: ignore[union-attr]
    f.eval()
    with torch.no_grad():
        z_nat = f(x)
    x0 = (x + ((torch.rand(x.shape, generator=gen) * 2 - 1) * cfg.eps).to(x.device)).requires_grad_(True)
    ot = sinkhorn_distance(z_nat, f(x0), cfg.ot_epsilon, cfg.ot_iters)
    (g,) = torch.autograd.grad(ot, x0)
    x_adv = torch.min(torch.max(x0.detach() + cfg.eps * g.sign(), x - cfg.eps), x + cfg.eps).clamp(0.0, 1.0)
    f.train()
    loss = soft_cross_entropy(nets.train_classifier(x_adv), smooth_labels(y, num_classes, cfg.label_smoothing))
    nets.opt_c.zero_grad(set_to_none=True)
    loss.backward()
    nets.opt_c.step()
    return {"loss": loss.item(), "ot": ot.item()}


STEPS: dict[str, StepFn] = {
    "atld": step_atld,
    "standard": step_standard,
    "pgd-at": step_pgd_at,
    "fgsm-rs": step_fgsm_rs,
    "feature-scattering": step_feature_scattering,
}
