"""Losses of ATLD and its baselines: label smoothing, soft cross-entropy, the ATLD training perturbation,
the discriminator loss and the optimal-transport distance of Feature Scattering."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def smooth_labels(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """True class gets 1 - smoothing, every other class smoothing / (C - 1) (the authors' convention)."""
    off = smoothing / (num_classes - 1)
    t = torch.full((len(y), num_classes), off, device=y.device)
    return t.scatter_(1, y.view(-1, 1), 1.0 - smoothing)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c target_c log softmax(logits)_c."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def discriminator_bce(natural_logit: torch.Tensor, is_natural: bool) -> torch.Tensor:
    target = torch.ones_like(natural_logit) if is_natural else torch.zeros_like(natural_logit)
    return F.binary_cross_entropy_with_logits(natural_logit, target)


def perturbation_objective(natural_logit: torch.Tensor) -> torch.Tensor:
    """What the ATLD perturbation descends: BCE(D0(f(x0)), adversarial), summed over the batch.

    Summed, not averaged: the sign is the same, and per-example gradients stay far from float underflow
    (denormals slow the CPU backward several-fold and float16 would round them to 0).
    """
    return F.binary_cross_entropy_with_logits(natural_logit, torch.zeros_like(natural_logit), reduction="sum")


def atld_perturbation(
    classifier: nn.Module,
    discriminator: nn.Module,
    x: torch.Tensor,
    z_nat: torch.Tensor,
    eps: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ATLD's unsupervised one-step perturbation (no labels).

    Start at x + U(-eps, eps), take one signed step of size eps that makes D call the perturbed logits
    adversarial (descend `perturbation_objective`), project to the eps-ball around x and clamp to [0, 1].
    Modes are the caller's: the authors run f in eval mode and D in train mode here.

    Args:
        z_nat: the clean logits. The authors' loss also scores them as natural; that term has no
            x-gradient, but its train-mode pass is one of D's batch-norm updates, so it runs here too.
    """
    with torch.no_grad():
        discriminator(z_nat)  # first, as in the authors' step: D's running statistics see it
    noise = (torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1) * eps
    x0 = (x + noise).detach().requires_grad_(True)
    natural_logit, _ = discriminator(classifier(x0))
    (g,) = torch.autograd.grad(perturbation_objective(natural_logit), x0)
    x_adv = torch.min(torch.max(x0 - eps * g.sign(), x - eps), x + eps)
    return x_adv.clamp(0.0, 1.0).detach()


def discriminator_loss(
    discriminator: nn.Module, z_nat: torch.Tensor, z_adv: torch.Tensor, soft_targets: torch.Tensor
) -> torch.Tensor:
    """BCE(D0(z_nat), natural) + BCE(D0(z_adv), adversarial) + soft-CE of the class head on both.

    D sees the adversarial batch first and the natural one last, as in the authors' loop: in train mode the
    order decides D's running statistics, which IMT uses at test time.
    """
    adv_logit, adv_cls = discriminator(z_adv)
    nat_logit, nat_cls = discriminator(z_nat)
    return (
        discriminator_bce(nat_logit, True)
        + discriminator_bce(adv_logit, False)
        + soft_cross_entropy(nat_cls, soft_targets)
        + soft_cross_entropy(adv_cls, soft_targets)
    )


def sinkhorn_distance(a: torch.Tensor, b: torch.Tensor, epsilon: float = 1.0, iters: int = 30) -> torch.Tensor:
    """Entropic optimal-transport distance between two equal-size batches with uniform marginals and
    cosine cost 1 - cos(a_i, b_j) (Feature Scattering's feature-matching distance)."""
    cost = 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    n, m = cost.shape
    log_mu = torch.full((n,), -torch.log(torch.tensor(float(n))).item(), device=a.device)
    log_nu = torch.full((m,), -torch.log(torch.tensor(float(m))).item(), device=a.device)
    u = torch.zeros(n, device=a.device)
    v = torch.zeros(m, device=a.device)
    k = -cost / epsilon
    for _ in range(iters):
        u = log_mu - torch.logsumexp(k + v.view(1, -1), dim=1)
        v = log_nu - torch.logsumexp(k + u.view(-1, 1), dim=0)
    plan = torch.exp(k + u.view(-1, 1) + v.view(1, -1))
    return (plan * cost).sum()
