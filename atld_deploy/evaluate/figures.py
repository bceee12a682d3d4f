"""`atld-deploy figures`: the paper's toy illustrations on two moons (Figures 1/4, 6 and 7), as PNGs.

A small MLP classifier and the core `Discriminator` on its logits are trained with the project's own training
steps (`atld_deploy.train.methods.STEPS`: pgd-at, feature-scattering, atld), so the pictures show what this
code base does, not a re-implementation. Points are 2-D, stored as 1x1x2 "images" in [0,1] so that the core
attacks, losses and IMT apply unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..attacks import pgd
from ..config import make_config
from ..imt import IMTConfig, imt_transform, natural_gradient
from ..losses import atld_perturbation, sinkhorn_distance
from ..models import create_discriminator
from ..train.methods import STEPS, Nets

log = logging.getLogger(__name__)

EPS = 0.06
METHODS = ("pgd-at", "feature-scattering", "atld")
TITLES = {"pgd-at": "PGD (Madry)", "feature-scattering": "Feature Scattering", "atld": "ATLD"}


class PointMLP(nn.Module):
    """2-D points (as [B,1,1,2]) -> logits; `.fc` is the last layer, as the training steps expect."""

    def __init__(self, hidden: int = 64, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@dataclass
class ToyModel:
    method: str
    classifier: nn.Module
    discriminator: nn.Module | None


def two_moons(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two moons scaled into [0.1, 0.9]^2, as [n,1,1,2] float points and labels."""
    from sklearn.datasets import make_moons

    pts, y = make_moons(n_samples=n, noise=0.08, random_state=seed)
    pts = torch.tensor(pts, dtype=torch.float32)
    lo, hi = pts.min(0).values, pts.max(0).values
    pts = 0.1 + 0.8 * (pts - lo) / (hi - lo)
    return pts.view(n, 1, 1, 2), torch.tensor(y, dtype=torch.long)


def train_toy(method: str, x: torch.Tensor, y: torch.Tensor, epochs: int = 60, seed: int = 0) -> ToyModel:
    """Train one toy model with the project's own training step for `method`."""
    torch.manual_seed(seed)
    cfg = make_config("digits", method=method, eps=EPS, lr=0.1, d_lr=1e-3, epochs=epochs, label_smoothing=0.5)
    f = PointMLP()
    d = create_discriminator(2, depth=10, widen=1) if method == "atld" else None
    nets = Nets(f, torch.optim.SGD(f.parameters(), lr=cfg.lr, momentum=0.9),
                d, torch.optim.SGD(d.parameters(), lr=cfg.d_lr, momentum=0.9) if d is not None else None)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 60):
            idx = order[i:i + 60]
            STEPS[method](nets, cfg, x[idx], y[idx], gen)
    f.eval()
    if d is not None:
        d.eval()
    return ToyModel(method, f, d)


def training_perturbation(m: ToyModel, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The perturbation each method trains on (Figure 1/4): PGD-7, the OT one-step, ATLD's D-guided step."""
    f = m.classifier
    if m.method == "pgd-at":
        return pgd(f, x, y, EPS, EPS / 4, 7, generator=gen)
    if m.method == "feature-scattering":
        with torch.no_grad():
            z = f(x)
        x0 = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS).requires_grad_(True)
        (g,) = torch.autograd.grad(sinkhorn_distance(z, f(x0)), x0)
        return torch.min(torch.max(x0.detach() + EPS * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    assert m.discriminator is not None  # an atld toy model always has one
    with torch.no_grad():
        z = f(x)
    return atld_perturbation(f, m.discriminator, x, z, EPS, gen)


def _grid(res: int = 120) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = torch.linspace(0, 1, res)
    gx, gy = torch.meshgrid(a, a, indexing="xy")
    return gx, gy, torch.stack([gx.flatten(), gy.flatten()], 1).view(-1, 1, 1, 2)


def _boundary(ax: object, f: nn.Module) -> None:
    gx, gy, pts = _grid()
    with torch.no_grad():
        p = torch.softmax(f(pts), 1)[:, 1].view(gx.shape)
    ax.contourf(gx, gy, p, levels=20, cmap="RdBu_r", alpha=0.35)  # type: ignore[attr-defined]
    ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)  # type: ignore[attr-defined]


def _points(ax: object, x: torch.Tensor, y: torch.Tensor, **kw: object) -> None:
    xy = x.view(-1, 2)
    ax.scatter(xy[:, 0], xy[:, 1], c=["tab:blue" if v == 0 else "tab:red" for v in y], s=10, **kw)  # type: ignore[attr-defined]


def _arrows(ax: object, a: torch.Tensor, b: torch.Tensor, color: str) -> None:
    a2, d = a.view(-1, 2), (b - a).view(-1, 2)
    ax.quiver(a2[:, 0], a2[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color=color,  # type: ignore[attr-defined]
              width=0.004)


def make_figures(out: str | Path, seed: int = 0, epochs: int = 60) -> list[Path]:
    """Train the three toy models and write fig1_perturbations.png, fig6_vector_field.png, fig7_imt.png.

    Returns:
        the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    out = Path(out)
    x, y = two_moons(seed=seed)
    models = {m: train_toy(m, x, y, epochs, seed) for m in METHODS}
    gen = torch.Generator().manual_seed(seed)
    shown = torch.arange(0, len(x), 3)
    paths = []

    def save(fig: object, name: str) -> None:
        path = out / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        paths.append(path)

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, m in zip(axes, METHODS):
        xa = training_perturbation(models[m], x[shown], y[shown], gen)
        _boundary(ax, models[m].classifier)
        _points(ax, x[shown], y[shown])
        _arrows(ax, x[shown], xa, "k")
        ax.set_title(f"{TITLES[m]}: training perturbations (eps {EPS})")
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    save(fig, "fig1_perturbations.png")

    atld = models["atld"]
    gx, gy, pts = _grid(18)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    pts_y = atld.classifier(pts).argmax(1).detach()
    pgd_dir = pgd(atld.classifier, pts, pts_y, EPS, EPS, 1, random_start=False) - pts
    g, _ = natural_gradient(atld.classifier, atld.discriminator, pts)  # type: ignore[arg-type]
    for ax, d, title in ((axes[0], pgd_dir, "PGD direction (towards the boundary)"),
                         (axes[1], g, "IMT direction: grad log p_natural (towards the data)")):
        _boundary(ax, atld.classifier)
        _points(ax, x, y, alpha=0.4)
        v = torch.nn.functional.normalize(d.view(-1, 2), dim=1) * 0.03
        ax.quiver(pts.view(-1, 2)[:, 0], pts.view(-1, 2)[:, 1], v[:, 0], v[:, 1], angles="xy", scale_units="xy", scale=1)
        ax.set_title(title)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    save(fig, "fig6_vector_field.png")

    fig, ax = plt.subplots(figsize=(6, 6))
    xs, ys = x[shown], y[shown]
    x_adv = pgd(atld.classifier, xs, ys, EPS, EPS / 4, 20, generator=gen)
    x_back, _ = imt_transform(atld.classifier, atld.discriminator, x_adv, IMTConfig("plain", eps=EPS))  # type: ignore[arg-type]
    _boundary(ax, atld.classifier)
    _points(ax, xs, ys)
    _arrows(ax, xs, x_adv, "tab:orange")
    _arrows(ax, x_adv, x_back.detach(), "tab:green")
    with torch.no_grad():
        acc_adv = (atld.classifier(x_adv).argmax(1) == ys).float().mean().item()
        acc_back = (atld.classifier(x_back).argmax(1) == ys).float().mean().item()
    ax.set_title(f"PGD-20 (orange) then IMT (green): accuracy {acc_adv:.0%} -> {acc_back:.0%}")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    save(fig, "fig7_imt.png")
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths
