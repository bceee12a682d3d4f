"""The functions an evaluation attacks and scores: the static classifier and the deployed IMT pipeline,
each as an `nn.Module` mapping [0,1] images to logits (what our attacks and torchattacks expect).

For the deployed function F(x) = f(IMT(x)) there are three differentiable views with the *same forward*
(the real IMT step) and different backward passes:

- `DeployedModel`: naive autograd. IMT's sign step has derivative 0 and its clamp cuts the rest wherever
  the step pushes a pixel out of [0,1]; used for scoring and the score-based (black-box) attacks.
- `BPDAModel`: backward as if IMT(x) = x (BPDA-identity, Athalye et al. 2018).
- `SurrogateModel`: backward through `x + m * eps * tanh(k * g / mean|g|)` computed with `create_graph=True`,
  so the attack sees how moving x changes the IMT step itself.

Every target records the range of the inputs it received, for the [0,1] check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..imt import IMTConfig, imt_transform

MODEL_NAMES = ("static", "imt", "imt+")
IMT_MODES = {"imt": "plain", "imt+": "plus"}


class Target(nn.Module):
    """Base: records the smallest and largest input value seen (reset with `reset_range`)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.reset_range()

    def reset_range(self) -> None:
        self.seen_min = float("inf")
        self.seen_max = float("-inf")

    def _record(self, x: torch.Tensor) -> None:
        self.seen_min = min(self.seen_min, float(x.detach().min()))
        self.seen_max = max(self.seen_max, float(x.detach().max()))

    def train(self, mode: bool = True) -> "Target":  # noqa: ARG002 - evaluation is always in eval mode
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._record(x)
        return self.classifier(x)


class _IMTTarget(Target):
    def __init__(self, classifier: nn.Module, discriminator: nn.Module, cfg: IMTConfig) -> None:
        super().__init__(classifier)
        self.discriminator = discriminator
        self.cfg = cfg

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The real IMT step (no gradient through it): `(IMT(x), p_natural(x))`."""
        x_t, p = imt_transform(self.classifier, self.discriminator, x, self.cfg)
        return x_t.detach(), p.detach()


class DeployedModel(_IMTTarget):
    """F(x) = f(IMT(x)) with naive autograd: the sign step contributes no gradient and the clamp cuts
    the identity path wherever IMT pushes a pixel past 0 or 1. Used for scoring and black-box attacks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._record(x)
        x_t, _ = imt_transform(self.classifier, self.discriminator, x, self.cfg)
        return self.classifier(x_t)


class BPDAModel(_IMTTarget):
    """F(x) with BPDA-identity: forward through the real IMT, backward as if IMT(x) = x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._record(x)
        x_t, _ = self.transform(x)
        return self.classifier(x + (x_t - x).detach())


class SurrogateModel(_IMTTarget):
    """F(x) with the real forward and the gradient of a smooth surrogate of IMT (tanh instead of sign,
    differentiated through the inner gradient with `create_graph=True`)."""

    def __init__(self, classifier: nn.Module, discriminator: nn.Module, cfg: IMTConfig, k: float = 4.0) -> None:
        super().__init__(classifier, discriminator, cfg)
        self.k = k

    def smooth_sign(self, g: torch.Tensor) -> torch.Tensor:
        # per-example scale so that k means the same thing whatever the gradient's magnitude
        scale = g.detach().abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
        return torch.tanh(self.k * g / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._record(x)
        x_t, _ = self.transform(x)
        x_s, _ = imt_transform(self.classifier, self.discriminator, x, self.cfg, sign_fn=self.smooth_sign, create_graph=True)
        return self.classifier(x_s + (x_t - x_s).detach())


def natural_log_prob(target: _IMTTarget, x: torch.Tensor) -> torch.Tensor:
    """log p_natural(x) per example, differentiable w.r.t. x (for the IMT-aware attack loss)."""
    natural_logit, _ = target.discriminator(target.classifier(x))
    return torch.nn.functional.logsigmoid(natural_logit)


@dataclass
class ModelViews:
    """One evaluated model: how it is scored (`deployed`) and the views the attacks differentiate."""

    name: str
    deployed: Target
    bpda: Target | None = None
    surrogate: Target | None = None

    @property
    def has_imt(self) -> bool:
        return self.bpda is not None


def build_views(
    name: str,
    classifier: nn.Module,
    discriminator: nn.Module | None,
    imt_config: Callable[[str], IMTConfig] | IMTConfig | None = None,
    surrogate_k: float = 4.0,
) -> ModelViews:
    """The views of model `name` (static | imt | imt+). `imt_config` maps an IMT mode to its config."""
    classifier.eval()
    if name == "static":
        return ModelViews(name, Target(classifier))
    if discriminator is None or imt_config is None:
        raise ValueError(f"model {name!r} needs a discriminator")
    discriminator.eval()
    cfg = imt_config(IMT_MODES[name]) if callable(imt_config) else imt_config
    return ModelViews(
        name,
        DeployedModel(classifier, discriminator, cfg),
        BPDAModel(classifier, discriminator, cfg),
        SurrogateModel(classifier, discriminator, cfg, surrogate_k),
    )
