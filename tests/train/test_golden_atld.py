"""Golden tests: the project's ATLD step, discriminator and IMT against the authors' computation.

`authors_reference.py` transcribes the authors' code independently (their module structure for D, their
statement order). From identical weights, data and random start, the project's `step_atld` must leave the
same `scale`, classifier and discriminator weights, running statistics and optimiser states, to 1e-6.
Each deliberately wrong variant of the step (the mutants below) must make that comparison fail.

Everything runs in float64, so the comparison judges the computation, not float32 summation order (in
float32 the two sides already differ by 2.4e-6 relative in D's momentum buffers after 4 batches, while
every mutant moves some quantity by orders of magnitude more).
"""

from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atld_deploy import config as config_module
from atld_deploy import losses
from atld_deploy.config import TrainConfig, make_config
from atld_deploy.imt import IMTConfig, imt_transform
from atld_deploy.models import Discriminator, create_model
from atld_deploy.train import methods
from atld_deploy.train.methods import Nets

from authors_reference import (
    AuthorsDiscriminator,
    authors_imt,
    authors_step,
    load_into_authors,
    project_layout,
)

TOL = 1e-6
NUM_CLASSES, BATCH, SHAPE = 10, 8, (1, 8, 8)
D_DEPTH, D_WIDEN = 10, 1  # one block per group: every kind of block (with and without shortcut) appears
BLOCKS_PER_GROUP = (D_DEPTH - 4) // 6


@pytest.fixture(autouse=True)
def _float64_one_thread() -> object:
    # one thread: on these tiny tensors a second thread only adds synchronisation (tens of ms per op)
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def _networks(seed: int = 0) -> tuple[nn.Module, Discriminator]:
    torch.manual_seed(seed)
    f = create_model("wrn-10-1", num_classes=NUM_CLASSES, in_channels=SHAPE[0])
    d = Discriminator(NUM_CLASSES, depth=D_DEPTH, widen=D_WIDEN)
    with torch.no_grad():  # non-trivial batch-norm affine parameters on both networks
        for m in list(f.modules()) + list(d.modules()):
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return f, d


def _batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand((BATCH, *SHAPE), generator=g), torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)) for _ in range(n)]


def _noise(gen: torch.Generator, x: torch.Tensor, eps: float) -> torch.Tensor:
    # the same uniform draw the project's perturbation makes from the step's generator
    return (torch.rand(x.shape, generator=gen) * 2 - 1) * eps


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _compare(what: str, ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], out: list[str]) -> None:
    if set(ours) != set(theirs):
        out.append(f"{what}: different tensors {sorted(set(ours) ^ set(theirs))}")
        return
    for k in ours:
        diff = _max_diff(ours[k], theirs[k])
        if diff > TOL:
            out.append(f"{what} {k}: max |diff| {diff:.3g}")


def _momentum(opt: torch.optim.Optimizer, module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: opt.state[p]["momentum_buffer"] for name, p in module.named_parameters() if p in opt.state}


def golden_mismatches(n_batches: int = 1, invariance: str = "mse", dataset: str = "cifar10") -> list[str]:
    """Run the project's step and the authors' from the same state; list every quantity that differs."""
    cfg = make_config(dataset, invariance=invariance)
    f, d = _networks()
    f_ref = copy.deepcopy(f)
    d_ref = AuthorsDiscriminator(D_DEPTH, NUM_CLASSES, D_WIDEN)
    load_into_authors(d_ref, d.state_dict(), BLOCKS_PER_GROUP)

    # the project: optimisers as the trainer builds them from the config
    opt_c = torch.optim.SGD(f.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt_d = torch.optim.SGD(d.parameters(), lr=cfg.d_lr, momentum=cfg.d_momentum, weight_decay=cfg.d_weight_decay)
    nets = Nets(f, opt_c, d, opt_d)
    # the authors: fs_main_cifar10.py's optimisers (lr 0.1, D lr 1e-3, momentum 0.9, weight decay 2e-4)
    ref_opt = torch.optim.SGD(f_ref.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    ref_opt_d = torch.optim.SGD(d_ref.parameters(), lr=1e-3, momentum=0.9, weight_decay=2e-4)

    gen, gen_ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    out: list[str] = []
    for i, (x, y) in enumerate(_batches(n_batches)):
        ours = methods.STEPS["atld"](nets, cfg, x, y, gen)["scale"]
        theirs = authors_step(f_ref, d_ref, ref_opt, ref_opt_d, x, y, _noise(gen_ref, x, 8 / 255),
                              invariance="mse" if invariance == "mse" else "eq6")
        if abs(ours - theirs) > TOL * max(1.0, abs(theirs)):
            out.append(f"batch {i} scale: {ours:.7g} vs {theirs:.7g}")
    _compare("classifier", f.state_dict(), f_ref.state_dict(), out)
    _compare("discriminator", d.state_dict(), project_layout(d_ref.state_dict(), BLOCKS_PER_GROUP), out)
    _compare("classifier momentum", _momentum(opt_c, f), _momentum(ref_opt, f_ref), out)
    _compare("discriminator momentum", _momentum(opt_d, d), project_layout(_momentum(ref_opt_d, d_ref), BLOCKS_PER_GROUP), out)
    return out


# ------------------------------------------------------------------------------------------ golden

@pytest.mark.parametrize("n_batches", [1, 4])
def test_step_atld_matches_the_authors(n_batches: int) -> None:
    assert golden_mismatches(n_batches) == []


def test_divergence_mode_matches_the_papers_eq6() -> None:
    """`--invariance divergence` is CE + scale/2 * [mean log(1 - p(z_adv)) + mean log p(z_nat)]."""
    assert golden_mismatches(2, invariance="divergence") == []


def test_discriminator_takes_six_batch_norm_updates_per_batch_ending_on_natural_logits() -> None:
    f, d = _networks()
    cfg = make_config("cifar10")
    nets = Nets(f, torch.optim.SGD(f.parameters(), lr=cfg.lr), d, torch.optim.SGD(d.parameters(), lr=cfg.d_lr))
    x, y = _batches(1)[0]
    f.eval()
    with torch.no_grad():
        z_nat = f(x)
    calls: list[tuple[bool, torch.Tensor]] = []
    d.register_forward_pre_hook(lambda module, args: calls.append((module.training, args[0].detach().clone())))
    methods.step_atld(nets, cfg, x, y, torch.Generator().manual_seed(0))
    assert [training for training, _ in calls] == [True] * 6
    assert int(d.bn.num_batches_tracked) == 6
    natural = [torch.allclose(z, z_nat) for _, z in calls]
    assert natural == [True, False, False, True, False, True]  # perturbation, then 2 x (adversarial, natural)


# ----------------------------------------------------------------------------------- discriminator

def test_discriminator_outputs_match_the_authors_layout() -> None:
    torch.manual_seed(3)
    d_ref = AuthorsDiscriminator(28, NUM_CLASSES, 5)
    d = Discriminator(NUM_CLASSES, depth=28, widen=5)
    d.load_state_dict(project_layout(d_ref.state_dict(), 4))
    z = torch.randn(16, NUM_CLASSES) * 3
    for train in (True, False):
        d.train(train)
        d_ref.train(train)
        natural_logit, cls = d(z)
        p_ref, cls_ref = d_ref(z.view(16, NUM_CLASSES, 1, 1))
        assert _max_diff(torch.sigmoid(natural_logit), p_ref.view(-1)) < TOL
        assert _max_diff(cls, cls_ref) < TOL
    state_mismatches: list[str] = []
    _compare("after train-mode passes", d.state_dict(), project_layout(d_ref.state_dict(), 4), state_mismatches)
    assert state_mismatches == []
    # the comparison sees a wrong layout: class head and natural unit swapped
    wrong = project_layout(d_ref.state_dict(), 4)
    wrong["head.weight"] = wrong["head.weight"].roll(1, dims=0)
    d.load_state_dict(wrong)
    d.eval()
    d_ref.eval()
    assert _max_diff(torch.sigmoid(d(z)[0]), d_ref(z.view(16, NUM_CLASSES, 1, 1))[0].view(-1)) > 1e-3


def _init_deviations(d: Discriminator) -> list[str]:
    """Layers whose weights do not look like normal(0, sqrt(2 / (taps * out))) (4-sigma bars on the std,
    relative standard error 1/sqrt(2n)), or heads with a non-zero bias."""
    bad = []
    layers = [(d.stem, 9)] + [(lin, 9) for b in d.blocks for lin in (b.fc1, b.fc2)]
    layers += [(b.shortcut, 1) for b in d.blocks if b.shortcut is not None]
    for lin, taps in layers:
        w = lin.weight.detach()
        target = (2.0 / (taps * lin.out_features)) ** 0.5
        bar = 4 / (2 * w.numel()) ** 0.5
        if abs(w.std().item() / target - 1) > bar or abs(w.mean().item()) > 4 * target / w.numel() ** 0.5:
            bad.append(f"{tuple(w.shape)} std {w.std().item():.4f} vs {target:.4f}")
    if d.head.bias.abs().max() > 0:
        bad.append("head bias not zero")
    return bad


def test_discriminator_initialisation_is_the_authors() -> None:
    torch.manual_seed(0)
    assert _init_deviations(Discriminator(NUM_CLASSES, depth=28, widen=5)) == []
    # the check rejects PyTorch's default nn.Linear initialisation (what the layers would have without ours)
    d = Discriminator(NUM_CLASSES, depth=28, widen=5)
    for m in d.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    assert len(_init_deviations(d)) > 10


# -------------------------------------------------------------------------------------------- IMT

def _imt_pair(seed: int = 5) -> tuple[nn.Module, Discriminator, AuthorsDiscriminator, torch.Tensor]:
    f, d = _networks(seed)
    x = torch.rand((64, *SHAPE), generator=torch.Generator().manual_seed(seed))
    f.eval(), d.eval()
    with torch.no_grad():  # spread p_natural over (0, 1) so every side of both bands is populated
        natural_logit = d(f(x))[0]
        d.head.weight[0] *= 1.5 / natural_logit.std()
        d.head.bias[0] -= d(f(x))[0].mean()
    d_ref = AuthorsDiscriminator(D_DEPTH, NUM_CLASSES, D_WIDEN)
    load_into_authors(d_ref, d.state_dict(), BLOCKS_PER_GROUP)
    d_ref.eval()
    return f, d, d_ref, x


@pytest.mark.parametrize("mode,band", [("plain", None), ("plus", (0.3, 0.7)), ("plus", (0.3, 0.6))])
def test_imt_matches_the_authors(mode: str, band: tuple[float, float] | None) -> None:
    f, d, d_ref, x = _imt_pair()
    cfg = IMTConfig(mode=mode, eps=8 / 255, band=band or (0.3, 0.7))  # type: ignore[arg-type]
    x_t, p = imt_transform(f, d, x, cfg)
    with torch.no_grad():
        logits = f(x_t)
    logits_ref, p_ref, x_t_ref = authors_imt(copy.deepcopy(f), d_ref, x, band=band)
    assert ((p > 0.6) & (p < 0.7)).any() and (p < 0.3).any() and (p > 0.7).any() and ((p > 0.3) & (p < 0.6)).any()
    assert _max_diff(p, p_ref) < TOL
    assert _max_diff(x_t, x_t_ref) < TOL
    assert _max_diff(logits, logits_ref) < TOL


def test_imt_comparison_sees_the_wrong_band() -> None:
    f, d, d_ref, x = _imt_pair()
    x_t, _ = imt_transform(f, d, x, IMTConfig(mode="plus", eps=8 / 255, band=(0.3, 0.7)))
    _, _, x_t_ref = authors_imt(copy.deepcopy(f), d_ref, x, band=(0.3, 0.6))
    assert _max_diff(x_t, x_t_ref) > 1e-3


# ---------------------------------------------------------------------------------------- mutants

def _flipped_perturbation(original: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda natural_logit: -original(natural_logit)


def _clean_logits_in_train_mode(classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    classifier.train()
    with torch.no_grad():
        z = classifier(x)
    classifier.eval()
    return z


def _d_loss_without_class_head(d: nn.Module, z_nat: torch.Tensor, z_adv: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    adv_logit, _ = d(z_adv)
    nat_logit, _ = d(z_nat)
    return losses.discriminator_bce(nat_logit, True) + losses.discriminator_bce(adv_logit, False)


def _d_loss_natural_first(d: nn.Module, z_nat: torch.Tensor, z_adv: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    nat_logit, nat_cls = d(z_nat)
    adv_logit, adv_cls = d(z_adv)
    return (losses.discriminator_bce(nat_logit, True) + losses.discriminator_bce(adv_logit, False)
            + losses.soft_cross_entropy(nat_cls, t) + losses.soft_cross_entropy(adv_cls, t))


MUTANTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "perturbation sign flipped": lambda mp: mp.setattr(
        losses, "perturbation_objective", _flipped_perturbation(losses.perturbation_objective)),
    "MSE term dropped": lambda mp: mp.setitem(
        methods.INVARIANCE_TERMS, "mse", lambda d, z_adv, z_nat: 0.0 * F.mse_loss(z_adv, z_nat)),
    "scale fixed to 1": lambda mp: mp.setattr(methods, "gradient_balance", lambda num, den: torch.tensor(1.0)),
    "one D iteration": lambda mp: mp.setitem(config_module.PRESETS, "cifar10", {**config_module.PRESETS["cifar10"], "d_iters": 1}),
    "label smoothing 0.1": lambda mp: mp.setattr(
        methods, "smooth_labels", lambda y, c, s, _orig=methods.smooth_labels: _orig(y, c, 0.1)),
    "D class head dropped from its loss": lambda mp: mp.setattr(methods, "discriminator_loss", _d_loss_without_class_head),
    "classifier in train mode for the clean logits": lambda mp: mp.setattr(methods, "clean_logits", _clean_logits_in_train_mode),
    "D sees natural logits before adversarial ones": lambda mp: mp.setattr(methods, "discriminator_loss", _d_loss_natural_first),
}
_KILLED: dict[str, bool] = {}


def _mutant_killed(name: str) -> bool:
    if name not in _KILLED:
        with pytest.MonkeyPatch.context() as mp:
            MUTANTS[name](mp)
            _KILLED[name] = bool(golden_mismatches(1))
    return _KILLED[name]


@pytest.mark.parametrize("name", list(MUTANTS))
def test_mutant_fails_the_golden_comparison(name: str) -> None:
    assert _mutant_killed(name), f"the golden comparison does not notice: {name}"


def test_mutant_kill_rate_is_100_percent(capsys: pytest.CaptureFixture[str]) -> None:
    killed = [name for name in MUTANTS if _mutant_killed(name)]
    with capsys.disabled():
        print(f"\nATLD step mutants killed: {len(killed)}/{len(MUTANTS)} ({100 * len(killed) / len(MUTANTS):.0f}%)")
    assert len(killed) == len(MUTANTS), f"survivors: {sorted(set(MUTANTS) - set(killed))}"


def test_patches_are_undone_after_each_mutant() -> None:
    _mutant_killed("one D iteration")
    assert make_config("cifar10").d_iters == 2 and isinstance(make_config("cifar10"), TrainConfig)
    assert golden_mismatches(1) == []
