"""Mutation suite: deliberately wrong IMT pipelines, exported to ONNX as a real bug would produce them, must
all be rejected by parity -- in float32 and float16 -- while the correct export of the same models passes.

Each mutant is the project's `PipelineFunction` with one bug (a wrong configuration baked into the graph,
or one wrong line in its forward), traced and exported by the project's own `export_onnx`, then judged by
`onnx_graph_parity` against the correct PyTorch reference through the runtime's ONNX Runtime runner, exactly
as `export` and `verify` judge a graph.
The float16 classifier graph (`classifier_fp16`) has no IMT step; its mutants are the graph with one weight
corrupted in its file and the graph traced without the classifier's Normalize.
The models are tiny (a 2-conv classifier, a 2-layer discriminator, fixed seeds) so the suite stays fast.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atld_deploy.export.parity import GraphParity
from atld_deploy.export.trace import PipelineFunction, export_onnx, graph_module
from atld_deploy.export.verify import onnx_graph_parity
from atld_deploy.graphs import kind_of
from atld_deploy.imt import IMTConfig, natural_gradient, step_multiplier
from atld_deploy.models import Normalize

# mutant -> (what the bug is, phrases of which one must be in the failures: the check meant to catch it)
MUTANTS = {
    "step x0.75": ("the graph steps 0.75 x eps", ("differs from m x eps",)),
    "step x0.5": ("the graph steps 0.5 x eps", ("differs from m x eps", "other band's step")),
    "sign flipped": ("x - eps * sign(g)", ("sign agrees",)),
    "band ignored": ("IMT+ built as plain IMT (m = 1 everywhere)", ("other band's step",)),
    "factor 0.75": ("IMT+ factor 0.75 instead of 0.5", ("differs from m x eps",)),
    "class-head gradient": ("the gradient of the discriminator's class head, not its natural head", ("sign agrees",)),
    "p of transformed": ("p_natural of the transformed image, not the incoming one", ("p_natural:",)),
    "clamp missing": ("no clamp to [0, 1]", ("outside [0, 1]",)),
    "no /255": ("uint8 frames not divided by 255 (uint8 variant only)", ("p_natural:",)),
    "normalisation dropped": ("the classifier without its Normalize", ("logits:",)),
}
UINT8_ONLY = {"no /255"}
VARIANTS = {  # variant -> (graph kind parity judges it as, precision, uint8 input)
    "fp32": ("pipeline", "fp32", False),
    "fp16": ("pipeline_fp16", "fp16", False),
    "uint8 fp32": ("pipeline_uint8", "fp32", True),
    "uint8 fp16": ("pipeline_uint8", "fp16", True),
}


def _mutants_of(variant: str) -> list[str]:
    return [m for m in MUTANTS if (m in UINT8_ONLY) == VARIANTS[variant][2]]


class TinyClassifier(nn.Module):
    """Normalize -> conv 3x3 -> ReLU -> conv 3x3 stride 2 -> ReLU -> mean -> linear: a classifier in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize([0.4], [0.3])
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, 1, 1), nn.Conv2d(8, 16, 3, 2, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.conv2(F.relu(self.conv1(self.normalize(x)))))
        return self.fc(o.mean(dim=(2, 3)))


class TinyDiscriminator(nn.Module):
    """logits -> (natural_logit, class_logits), like the ATLD discriminator."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.head = nn.Linear(10, 32), nn.Linear(32, 11)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(F.relu(self.hidden(z)))
        return out[:, 0], out[:, 1:]


class _HeadsSwapped(nn.Module):
    """The discriminator with its outputs unpacked the wrong way round: the class head feeds the gradient."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        natural, classes = self.discriminator(z)
        return classes, natural


class MutantPipeline(PipelineFunction):
    """`PipelineFunction` with one bug; "none" is the correct function, through the same code."""

    def __init__(self, classifier: nn.Module, discriminator: nn.Module, cfg: IMTConfig, bug: str, half: bool,
                 uint8: bool) -> None:
        if bug == "normalisation dropped":
            classifier = copy.deepcopy(classifier)
            classifier.normalize = nn.Identity()
        baked = {"step x0.75": replace(cfg, eps=0.75 * cfg.eps), "step x0.5": replace(cfg, eps=0.5 * cfg.eps),
                 "band ignored": replace(cfg, mode="plain"), "factor 0.75": replace(cfg, factor=0.75)}
        super().__init__(classifier, discriminator, baked.get(bug, cfg), emit_transformed=True, uint8_input=uint8, half=half)
        self.bug = bug

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.bug not in ("sign flipped", "class-head gradient", "p of transformed", "clamp missing", "no /255"):
            return super().forward(images)
        x = images.permute(0, 3, 1, 2).to(torch.float32) / (1.0 if self.bug == "no /255" else 255.0) if self.uint8_input else images
        pipe = self.pipeline
        clf, disc, cfg = pipe.classifier, pipe.discriminator, pipe.cfg
        g, p = natural_gradient(clf, _HeadsSwapped(disc) if self.bug == "class-head gradient" else disc, x,
                                unit_logit_grad=pipe.unit_logit_grad)
        if self.bug == "class-head gradient":
            p = torch.sigmoid(disc(clf(x))[0])
        step = step_multiplier(p, cfg) * cfg.eps * torch.sign(g)
        x_t = x - step if self.bug == "sign flipped" else x + step
        x_t = x_t if self.bug == "clamp missing" else x_t.clamp(0.0, 1.0)
        logits = clf(x_t)
        if self.bug == "p of transformed":
            p = torch.sigmoid(disc(logits)[0])
        return logits, p, x_t


@pytest.fixture(scope="module")
def setting() -> tuple[nn.Module, nn.Module, IMTConfig, torch.Tensor]:
    """Tiny models (fixed seed), the IMT+ configuration, and the parity images: every test digit plus
    random ones. The band is set between quantiles of p_natural on these images, so both band decisions
    occur (a band no example falls into could not tell IMT+ from IMT)."""
    from atld_deploy.data import load_dataset

    torch.manual_seed(0)
    clf, disc = TinyClassifier().eval(), TinyDiscriminator().eval()
    with torch.no_grad():
        disc.head.weight.mul_(4.0)  # a natural logit that varies across images, so p_natural spreads out
    test = load_dataset("digits").test
    x_real, _ = test.batch(torch.arange(len(test)))
    x = torch.cat([x_real.float(), torch.rand(40, *x_real.shape[1:], generator=torch.Generator().manual_seed(1))])
    with torch.no_grad():
        p = torch.sigmoid(disc(clf(x))[0])
    lo, hi = (float(v) for v in p.quantile(torch.tensor([0.3, 0.7])))
    return clf, disc, IMTConfig(mode="plus", eps=0.1, band=(lo, hi), factor=0.5), x


@pytest.fixture(scope="module")
def verdicts(setting: tuple[nn.Module, nn.Module, IMTConfig, torch.Tensor],
             tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], GraphParity]:
    """Parity of the correct export ("none") and of every mutant in every variant."""
    clf, disc, cfg, x = setting
    out = tmp_path_factory.mktemp("mutants")
    results: dict[tuple[str, str], GraphParity] = {}
    for variant, (key, precision, uint8) in VARIANTS.items():
        refs: dict = {}  # the reference (and float16 floor) is shared by every mutant of a variant
        for bug in ["none", *_mutants_of(variant)]:
            fn = MutantPipeline(clf, disc, cfg, bug, half=precision == "fp16", uint8=uint8)
            example = torch.randint(0, 256, (2, 8, 8, 1), dtype=torch.uint8) if uint8 else torch.rand(2, 1, 8, 8)
            path = out / f"{variant}-{bug}.onnx".replace(" ", "_").replace("/", "")
            export_onnx(fn, example, "images_uint8" if uint8 else "images", ["logits", "p_natural", "images_imt"], path, 18)
            results[variant, bug] = onnx_graph_parity(path, key, precision, clf, disc, cfg, x, refs)
    return results


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_correct_export_passes(verdicts: dict[tuple[str, str], GraphParity], variant: str) -> None:
    res = verdicts[variant, "none"]
    assert res.passed, res.failures
    assert res.runner.startswith("atld_deploy.runtime.ort_runner.OnnxRuntimeRunner on ")  # the runner infer serves with
    # the step check had something to check, both band decisions among it
    assert res.step is not None and res.step.pixels_checked > 1000 and 0 < res.step.examples_in_band < res.step.examples


def test_every_mutant_is_rejected_in_float32_and_float16(verdicts: dict[tuple[str, str], GraphParity]) -> None:
    lines, killed, total, wrong_reason = [], 0, 0, []
    for variant in VARIANTS:
        for bug in _mutants_of(variant):
            res = verdicts[variant, bug]
            total += 1
            killed += not res.passed
            if not any(phrase in f for phrase in MUTANTS[bug][1] for f in res.failures):
                wrong_reason.append(f"{variant} / {bug}: {res.failures}")
            lines.append(f"  {variant:10s} {bug:22s} {'killed' if not res.passed else 'SURVIVED'}: "
                         f"{res.failures[0] if res.failures else MUTANTS[bug][0]}")
    print(f"\nmutation suite: {killed}/{total} mutants killed ({killed / total:.0%})\n" + "\n".join(lines))
    assert killed == total
    assert not wrong_reason, "\n".join(wrong_reason)  # each caught by the check meant for it
    assert {v for v, b in verdicts if b != "none"} == set(VARIANTS)


def test_every_listed_mutant_runs_in_both_precisions() -> None:
    for bug in MUTANTS:
        variants = [v for v in VARIANTS if bug in _mutants_of(v)]
        assert sorted(VARIANTS[v][1] for v in variants) == ["fp16", "fp32"], bug


def _corrupt_first_conv_weight(path: Path, out: Path) -> None:
    """A copy of the graph at `path` with the largest float16 weight of its first convolution negated, as a
    damaged file or a wrong cast would leave it."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    init = inits[conv.input[1]]
    assert init.data_type == onnx.TensorProto.FLOAT16  # the weight the float16 graph stores in float16
    w = numpy_helper.to_array(init).copy()
    at = np.unravel_index(np.abs(w).argmax(), w.shape)
    w[at] = -w[at]
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(out))


@pytest.fixture(scope="module")
def classifier_fp16_verdicts(setting: tuple[nn.Module, nn.Module, IMTConfig, torch.Tensor],
                             tmp_path_factory: pytest.TempPathFactory) -> dict[str, GraphParity]:
    """Parity of the float16 classifier graph as the exporter traces it (`graph_module` of `classifier_fp16`)
    and of its two mutants, judged as `classifier_fp16` against the float32 classifier."""
    clf, disc, cfg, x = setting
    kind = kind_of("classifier_fp16")
    out = tmp_path_factory.mktemp("classifier_fp16")
    unnormalised = copy.deepcopy(clf)
    unnormalised.normalize = nn.Identity()
    for name, model in (("none", clf), ("normalisation dropped", unnormalised)):
        export_onnx(graph_module(kind, model, disc, cfg), torch.rand(2, 1, 8, 8), "images", ["logits"],
                    out / f"{name.replace(' ', '_')}.onnx", 18)
    _corrupt_first_conv_weight(out / "none.onnx", out / "corrupted.onnx")
    refs: dict = {}
    return {bug: onnx_graph_parity(out / f"{file}.onnx", kind.key, None, clf, disc, cfg, x, refs)
            for bug, file in (("none", "none"), ("corrupted weight", "corrupted"),
                              ("normalisation dropped", "normalisation_dropped"))}


def test_classifier_fp16_correct_export_passes_on_the_floor_derived_bars(
        classifier_fp16_verdicts: dict[str, GraphParity]) -> None:
    res = classifier_fp16_verdicts["none"]
    assert res.passed, res.failures
    assert res.precision == "fp16" and res.floor_label_flips is not None  # judged on its float16-weight floor
    assert res.label_bar is not None and res.label_flips is not None and res.label_flips <= res.label_bar
    stats = res.outputs["logits"]
    assert stats.bar is not None and stats.mean_abs <= stats.bar <= 1e-2 * stats.ref_scale
    assert res.step is None and res.sign_agreement is None  # a classifier has no IMT step to check


@pytest.mark.parametrize("bug", ["corrupted weight", "normalisation dropped"])
def test_classifier_fp16_mutant_is_rejected_by_its_logits_bar(classifier_fp16_verdicts: dict[str, GraphParity],
                                                              bug: str) -> None:
    res = classifier_fp16_verdicts[bug]
    assert not res.passed
    assert any(f.startswith("logits: mean |err|") for f in res.failures), res.failures
