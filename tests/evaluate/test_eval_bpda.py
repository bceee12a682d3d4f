"""The three differentiable views of the deployed function F(x) = f(IMT(x)): same forward as the core
IMTPipeline, and BPDA gives a gradient where naive autograd through IMT gives none."""

from __future__ import annotations

import torch

from atld_deploy.imt import IMTConfig, IMTPipeline
from atld_deploy.run import load_run
from atld_deploy.evaluate.targets import BPDAModel, DeployedModel, SurrogateModel, build_views


def _batch(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    from atld_deploy.data import load_dataset

    return load_dataset("digits").test.batch(torch.arange(n))


def _input_grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
    return g


def test_all_views_have_the_deployed_pipelines_forward(tiny_run) -> None:
    run = load_run(tiny_run)
    x, _ = _batch()
    cfg = run.imt_config("plus")
    with torch.no_grad():
        reference, _, _ = IMTPipeline(run.classifier, run.discriminator, cfg)(x)
    for cls in (DeployedModel, BPDAModel, SurrogateModel):
        view = cls(run.classifier, run.discriminator, cfg)
        out = view(x.clone().requires_grad_(True)).detach()
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_bpda_gradient_is_non_zero_where_naive_autograd_through_imt_is_zero(tiny_run) -> None:
    run = load_run(tiny_run)
    x, y = _batch()
    # a full-range IMT step pushes every pixel past 0 or 1, so the clamp cuts the identity path and the
    # sign step has derivative 0: naive autograd through IMT gives exactly zero
    cfg = IMTConfig(mode="plain", eps=1.0)
    naive = _input_grad(DeployedModel(run.classifier, run.discriminator, cfg), x, y)
    bpda = _input_grad(BPDAModel(run.classifier, run.discriminator, cfg), x, y)
    smooth = _input_grad(SurrogateModel(run.classifier, run.discriminator, cfg), x, y)
    assert float(naive.abs().max()) == 0.0
    assert bool((bpda.flatten(1).abs().sum(1) > 0).all())  # every example gets a gradient
    assert bool((smooth.flatten(1).abs().sum(1) > 0).all())
    # BPDA is the classifier's gradient at IMT(x); the surrogate also differentiates IMT's own step
    x_t, _ = BPDAModel(run.classifier, run.discriminator, cfg).transform(x)
    torch.testing.assert_close(bpda, _input_grad(run.classifier, x_t, y))
    assert not torch.allclose(smooth, bpda)


def test_build_views_static_has_no_imt_views(tiny_run) -> None:
    run = load_run(tiny_run)
    static = build_views("static", run.classifier, None)
    assert not static.has_imt and static.bpda is None
    plus = build_views("imt+", run.classifier, run.discriminator, run.imt_config)
    assert plus.has_imt and plus.deployed.cfg.mode == "plus"  # type: ignore[union-attr]
