"""Inference with Manifold Transformation (IMT): the one implementation used by eval, export and runtime.

One signed-gradient step that moves each input towards what the discriminator calls natural:

    p   = sigmoid(D0(f(x)))                     probability that x is natural
    g   = d/dx sum_i log p_i                    per example: a sum, never a batch mean
    m   = factor if band[0] < p < band[1] else 1   (IMT+; plain IMT uses m = 1)
    x_t = clamp(x + m * eps * sign(g), 0, 1)

Summing (not averaging) keeps each example's gradient independent of its batch; the float16 export
also rescales each example's logit gradient to unit size (`unit_logit_grad`), which changes no sign. The code is plain autograd, so `make_fx` can trace it to forward ATen ops for ONNX export.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

IMTMode = Literal["plus", "plain", "off"]
SignFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class IMTConfig:
    """IMT parameters. `eps` is in [0, 1] pixel units; `band` and `factor` apply to IMT+ only."""

    mode: IMTMode = "plus"
    eps: float = 8 / 255
    band: tuple[float, float] = (0.3, 0.7)
    factor: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("plus", "plain", "off"):
            raise ConfigError(f"IMT mode must be 'plus', 'plain' or 'off', got {self.mode!r}")
        if not 0.0 <= self.eps <= 1.0:
            raise ConfigError(f"IMT eps is in [0,1] pixel units, got {self.eps}")
        lo, hi = self.band
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"IMT band must satisfy 0 <= low < high <= 1, got {self.band}")
        if not 0.0 < self.factor <= 1.0:
            raise ConfigError(f"IMT factor must be in (0, 1], got {self.factor}")
        object.__setattr__(self, "band", (float(lo), float(hi)))

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["band"] = list(self.band)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> "IMTConfig":
        return cls(mode=d["mode"], eps=float(d["eps"]), band=tuple(d["band"]), factor=float(d["factor"]))  # type: ignore[arg-type]


def natural_gradient(
    classifier: nn.Module,
    discriminator: nn.Module,
    x: torch.Tensor,
    *,
    create_graph: bool = False,
    unit_logit_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of `sum log p_natural` w.r.t. `x`, and `p_natural` of `x` ([B]).

    With `create_graph=True` the result stays differentiable w.r.t. `x` (for adaptive attacks);
    otherwise `x` is detached first.

    `unit_logit_grad=True` rescales each example's gradient w.r.t. the classifier's logits to max |.| = 1
    before it is propagated back through the classifier: a positive factor per example, so the sign of the
    input gradient is unchanged, while a float16 classifier receives a unit-scale gradient whatever D's slope
    -- it can neither underflow to 0 nor overflow (the float16 export uses this; see export/trace.py).
    """
    with torch.enable_grad():
        xg = x if create_graph else x.detach().requires_grad_(True)
        if not xg.requires_grad:
            xg = xg.requires_grad_(True)
        logits = classifier(xg)
        natural_logit, _ = discriminator(logits)
        objective = F.logsigmoid(natural_logit).sum()
        if unit_logit_grad:
            (g_logits,) = torch.autograd.grad(objective, logits, retain_graph=True, create_graph=create_graph)
            peak = g_logits.detach().abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(g_logits.dtype).tiny)
            (g,) = torch.autograd.grad(logits, xg, grad_outputs=g_logits / peak, create_graph=create_graph)
        else:
            (g,) = torch.autograd.grad(objective, xg, create_graph=create_graph)
    return g, torch.sigmoid(natural_logit)


def step_multiplier(p_natural: torch.Tensor, cfg: IMTConfig) -> torch.Tensor:
    """Per-example step multiplier m, shaped [B, 1, 1, 1]."""
    if cfg.mode == "plus":
        in_band = (p_natural > cfg.band[0]) & (p_natural < cfg.band[1])
        m = torch.where(in_band, torch.full_like(p_natural, cfg.factor), torch.ones_like(p_natural))
    else:
        m = torch.ones_like(p_natural)
    return m.view(-1, 1, 1, 1)


def imt_transform(
    classifier: nn.Module,
    discriminator: nn.Module,
    x: torch.Tensor,
    cfg: IMTConfig,
    *,
    sign_fn: SignFn = torch.sign,
    create_graph: bool = False,
    unit_logit_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply IMT to a batch of [0,1] images. Returns `(x_transformed, p_natural_of_x)`.

    Both modules must be in eval mode (IMT is a test-time step; batch statistics would couple examples).
    `sign_fn` lets adaptive attacks substitute a smooth surrogate (e.g. `lambda g: torch.tanh(k * g)`).
    `unit_logit_grad`: see `natural_gradient` (same step, float16-safe gradient magnitudes).
    """
    if cfg.mode == "off":  # no step: p_natural only, no gradient pass
        natural_logit, _ = discriminator(classifier(x))
        return x, torch.sigmoid(natural_logit)
    g, p = natural_gradient(classifier, discriminator, x, create_graph=create_graph, unit_logit_grad=unit_logit_grad)
    x_t = torch.clamp(x + step_multiplier(p, cfg) * cfg.eps * sign_fn(g), 0.0, 1.0)
    return x_t, p


class IMTPipeline(nn.Module):
    """The deployed function: `x -> (logits of IMT(x), p_natural of x, IMT(x))`.

    The modules are always kept in eval mode; `train()` on the pipeline does not change that.
    """

    def __init__(self, classifier: nn.Module, discriminator: nn.Module, cfg: IMTConfig) -> None:
        super().__init__()
        self.classifier = classifier
        self.discriminator = discriminator
        self.cfg = cfg
        self.unit_logit_grad = False  # the float16 export turns this on (see natural_gradient)
        self.eval()

    def train(self, mode: bool = True) -> "IMTPipeline":  # noqa: ARG002 - IMT is inference only
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_t, p = imt_transform(self.classifier, self.discriminator, x, self.cfg, unit_logit_grad=self.unit_logit_grad)
        return self.classifier(x_t), p, x_t
