"""Models, registry and the core IMT transform."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atld_deploy.errors import ConfigError
from atld_deploy.imt import IMTConfig, IMTPipeline, imt_transform, step_multiplier
from atld_deploy.models import Discriminator, create_model


@pytest.mark.parametrize("name,channels,size", [("wrn-10-1", 1, 8), ("wrn-16-2", 3, 32), ("wrn-10-2", 3, 17)])
def test_wrn_any_depth_width_channels_size(name: str, channels: int, size: int) -> None:
    m = create_model(name, num_classes=7, in_channels=channels).eval()
    assert m(torch.rand(3, channels, size, size)).shape == (3, 7)


def test_wrn_depth_and_width_follow_the_name() -> None:
    m = create_model("wrn-16-4", num_classes=10)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]
    assert len(convs) == 1 + 2 * 2 * 3  # stem + 2 blocks x 2 convs x 3 groups
    assert m.fc.in_features == 64 * 4


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown architecture 'resnet50'.*wrn-28-10"):
        create_model("resnet50", num_classes=10)
    with pytest.raises(ConfigError, match="6n\\+4"):
        create_model("wrn-12-2", num_classes=10)


def test_normalisation_is_inside_the_classifier() -> None:
    m = create_model("wrn-10-1", num_classes=10, in_channels=3)
    assert torch.allclose(m.normalize(torch.full((1, 3, 2, 2), 0.5)), torch.zeros(1, 3, 2, 2))


def test_discriminator_matches_a_wrn_body_on_a_1x1_map() -> None:
    """A 3x3 conv with padding 1 on a 1x1 map uses only its centre tap: the residual MLP is exact."""
    conv = nn.Conv2d(10, 16, 3, 1, 1, bias=False)
    lin = nn.Linear(10, 16, bias=False)
    lin.weight.data = conv.weight.data[:, :, 1, 1].clone()
    z = torch.randn(5, 10)
    assert torch.allclose(conv(z.view(5, 10, 1, 1)).view(5, 16), lin(z), atol=1e-6)

    d = Discriminator(num_classes=10, depth=28, widen=5).eval()
    widths = sorted({m.out_features for m in d.blocks.modules() if isinstance(m, nn.Linear)})
    assert widths == [80, 160, 320]
    natural, cls = d(z)
    assert natural.shape == (5,) and cls.shape == (5, 10)


def _tiny_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    f = create_model("wrn-10-1", num_classes=10, in_channels=1).eval()
    d = Discriminator(10, depth=10, widen=1).eval()
    return f, d


def test_imt_is_per_example_and_moves_by_eps() -> None:
    f, d = _tiny_pair()
    x = torch.rand(6, 1, 8, 8)
    cfg = IMTConfig(mode="plain", eps=0.1)
    xt, p = imt_transform(f, d, x, cfg)
    assert p.shape == (6,) and ((p > 0) & (p < 1)).all()
    assert xt.min() >= 0 and xt.max() <= 1
    moved = (xt - x).abs()
    # every pixel moves by eps unless the clamp cut it or its gradient is exactly zero
    interior = (x > 0.1) & (x < 0.9)
    assert torch.allclose(moved[interior & (moved > 0)], torch.tensor(0.1), atol=1e-6)
    # one example's result does not depend on the others in its batch
    for i in range(6):
        xi, pi = imt_transform(f, d, x[i : i + 1], cfg)
        assert torch.allclose(xi, xt[i : i + 1], atol=1e-6)
        assert torch.allclose(pi, p[i : i + 1], atol=1e-6)


def test_imt_step_increases_p_natural_to_first_order() -> None:
    f, d = _tiny_pair()
    x = torch.rand(16, 1, 8, 8) * 0.6 + 0.2
    xt, p = imt_transform(f, d, x, IMTConfig(mode="plain", eps=1e-3))
    with torch.no_grad():
        p_after = torch.sigmoid(d(f(xt))[0])
    assert (p_after >= p - 1e-6).float().mean() > 0.9


def test_imt_plus_band_halves_the_step() -> None:
    cfg = IMTConfig(mode="plus", eps=0.1)
    p = torch.tensor([0.1, 0.3, 0.31, 0.5, 0.69, 0.7, 0.9])
    assert step_multiplier(p, cfg).flatten().tolist() == [1.0, 1.0, 0.5, 0.5, 0.5, 1.0, 1.0]
    assert step_multiplier(p, IMTConfig(mode="plain")).flatten().tolist() == [1.0] * 7


def test_imt_off_returns_input_and_p() -> None:
    f, d = _tiny_pair()
    x = torch.rand(2, 1, 8, 8)
    xt, p = imt_transform(f, d, x, IMTConfig(mode="off"))
    assert torch.equal(xt, x) and p.shape == (2,)


def test_imt_config_validates() -> None:
    with pytest.raises(ConfigError, match="mode"):
        IMTConfig(mode="strong")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="band"):
        IMTConfig(band=(0.7, 0.3))
    assert IMTConfig.from_dict(IMTConfig(eps=0.2).to_dict()) == IMTConfig(eps=0.2)


def test_pipeline_stays_in_eval_mode() -> None:
    f, d = _tiny_pair()
    pipe = IMTPipeline(f, d, IMTConfig()).train()
    assert not f.training and not d.training
    logits, p, xt = pipe(torch.rand(2, 1, 8, 8))
    assert logits.shape == (2, 10) and p.shape == (2,) and xt.shape == (2, 1, 8, 8)


def test_unit_logit_grad_rescales_each_example_and_keeps_every_sign() -> None:
    from atld_deploy.imt import natural_gradient

    f, d = _tiny_pair()
    x = torch.rand(5, 1, 8, 8)
    g, p = natural_gradient(f, d, x)
    gu, pu = natural_gradient(f, d, x, unit_logit_grad=True)
    assert torch.equal(p, pu)
    assert torch.equal(torch.sign(gu), torch.sign(g))
    factors = []
    for i in range(5):  # one positive factor per example
        r = (gu[i] / g[i])[g[i].abs() > 1e-12]
        assert len(r) > 0 and (r > 0).all() and torch.allclose(r, r[0].expand_as(r), rtol=1e-3)
        factors.append(float(r[0]))
    assert len({round(f, 3) for f in factors}) > 1  # per example, not one batch-wide scale


def test_float16_pipeline_step_survives_a_confident_discriminator() -> None:
    """With p_natural within 1e-7 of 1, d log p / d logits is ~1e-7: cast to float16 as it is, it underflows and
    the step vanishes; rescaled to unit size per example (what the float16 export does) it matches float32."""
    from atld_deploy.export.trace import PipelineFunction

    f, d = _tiny_pair()
    with torch.no_grad():
        d.head.bias[0] += 16.0  # natural logit ~16: 1 - p ~ 1e-7
    x = torch.rand(8, 1, 8, 8) * 0.6 + 0.2  # away from the clamp
    cfg = IMTConfig(mode="plain", eps=0.05)
    _, p_ref, x_ref = PipelineFunction(f, d, cfg, emit_transformed=True)(x)
    assert (1 - p_ref).max() < 1e-5
    half = PipelineFunction(f, d, cfg, emit_transformed=True, half=True)
    logits, p, x_t = half(x)
    assert logits.dtype == p.dtype == x_t.dtype == torch.float32
    assert (torch.sign(x_t - x) == torch.sign(x_ref - x)).float().mean() > 0.95
    half.pipeline.unit_logit_grad = False  # the gradient as float16 sees it without the rescale
    _, _, x_raw = half(x)
    assert (x_raw == x).float().mean() > 0.5  # most of the step underflowed to sign(0) = 0
