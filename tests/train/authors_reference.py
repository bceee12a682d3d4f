"""The authors' ATLD computation, transcribed independently for the golden tests.

Source: the public repository LitterQ/ATLD-pytorch -- `cifar10/attack_methods_new_cifar10.py`
(`Attack_FeaScatter.forward`: the training perturbation and the discriminator updates),
`cifar10/fs_main_cifar10.py` (`train_fun`: the classifier loss and its optimiser), `cifar10/models_new/dis.py`
(`Discriminator_2`), `cifar10/attack_methods_new_imt_cifar10.py` and `svhn/attack_methods_new_imt_svhn.py`
(IMT+). Written here in plain PyTorch, statement by statement in their order, with their module structure
for D (3x3 convolutions on logits reshaped to C x 1 x 1, two linear heads, sigmoid on the first).

Two changes of units only, no change of computation: pixels are in [0, 1] (the authors normalise to
[-1, 1], so their eps 16/255 is 8/255 here and their clamp to [-1, 1] is a clamp to [0, 1]); the random
start is passed in (`noise`, uniform in [-eps, eps]) so both sides start from the same point. Their
hard-coded 10 classes become `num_classes`. Nothing here imports the project's losses or step.
"""

from __future__ import annotations

import copy
import math
import re

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------ models_new/dis.py

class BasicBlock2(nn.Module):
    """Their `BasicBlock_2`: pre-activation WRN block; the projection shortcut sees the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.equal_in_out:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out)))
        out = self.conv2(out)
        return torch.add(x if self.equal_in_out else self.convShortcut(x), out)


class NetworkBlock2(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock2(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(nb_layers)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class AuthorsDiscriminator(nn.Module):
    """Their `Discriminator_2(depth, num_classes=1, widen_factor)`: input [B, C, 1, 1], returns
    (sigmoid of the 1-unit head `fc` [B, 1], class logits of `fc2` [B, C])."""

    def __init__(self, depth: int, num_classes: int, widen_factor: int) -> None:
        super().__init__()
        n_channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(num_classes, n_channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock2(n, n_channels[0], n_channels[1], 1)
        self.block2 = NetworkBlock2(n, n_channels[1], n_channels[2], 2)
        self.block3 = NetworkBlock2(n, n_channels[2], n_channels[3], 2)
        self.bn1 = nn.BatchNorm2d(n_channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(n_channels[3], 1)
        self.fc2 = nn.Linear(n_channels[3], num_classes)
        self.n_channels = n_channels[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 1).view(-1, self.n_channels)
        return torch.sigmoid(self.fc(out)), self.fc2(out)


def project_layout(named: dict[str, torch.Tensor], blocks_per_group: int) -> dict[str, torch.Tensor]:
    """Tensors named as in `AuthorsDiscriminator` -> the names and shapes of the project's `Discriminator`.

    Convolutions keep the tap that a 1x1 map uses (centre of a 3x3, the only one of a 1x1); the two heads
    are stacked (natural unit first). Works on state dicts and on any per-parameter dict (momentum buffers).
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in named.items():
        if name.startswith(("fc.", "fc2.")):
            continue
        m = re.fullmatch(r"block(\d)\.layer\.(\d+)\.(.+)", name)
        if m:
            k = (int(m.group(1)) - 1) * blocks_per_group + int(m.group(2))
            rest = m.group(3).replace("conv1.", "fc1.").replace("conv2.", "fc2.").replace("convShortcut.", "shortcut.")
            key = f"blocks.{k}.{rest}"
        elif name.startswith("conv1."):
            key = "stem." + name[len("conv1."):]
        elif name.startswith("bn1."):
            key = "bn." + name[len("bn1."):]
        else:
            raise KeyError(name)
        if t.dim() == 4:
            t = t[:, :, t.shape[2] // 2, t.shape[3] // 2]
        out[key] = t
    for suffix in ("weight", "bias"):
        if f"fc.{suffix}" in named:
            out[f"head.{suffix}"] = torch.cat([named[f"fc.{suffix}"], named[f"fc2.{suffix}"]], dim=0)
    return out


def load_into_authors(authors: AuthorsDiscriminator, project_state: dict[str, torch.Tensor], blocks_per_group: int) -> None:
    """Copy the project's discriminator weights into the authors' layout (centre taps; other taps untouched)."""
    with torch.no_grad():
        own = authors.state_dict()
        mapped_names = project_layout({k: v for k, v in own.items()}, blocks_per_group)
        assert set(mapped_names) == set(project_state), sorted(set(mapped_names) ^ set(project_state))
        for name, t in own.items():
            if name.startswith(("fc.", "fc2.")):
                continue
            key = next(iter(project_layout({name: t}, blocks_per_group)))
            src = project_state[key]
            if t.dim() == 4:
                t[:, :, t.shape[2] // 2, t.shape[3] // 2] = src
            else:
                t.copy_(src)
        for suffix in ("weight", "bias"):
            head = project_state[f"head.{suffix}"]
            own[f"fc.{suffix}"].copy_(head[:1])
            own[f"fc2.{suffix}"].copy_(head[1:])


# ------------------------------------------------------------------------------------- utils.py

def one_hot_tensor(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    t = torch.zeros(y.size(0), num_classes)
    t[torch.arange(len(y)), y] = 1.0
    return t


def label_smoothing(y_one_hot: torch.Tensor, num_classes: int, delta: float) -> torch.Tensor:
    return (1 - delta - delta / (num_classes - 1)) * y_one_hot + delta / (num_classes - 1)


def soft_cross_entropy(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    log_likelihood = -F.log_softmax(inputs, dim=1)
    return torch.sum(torch.mul(log_likelihood, targets)) / targets.shape[0]


# ------------------------------------------ attack_methods_new_cifar10.py + fs_main_cifar10.py

def paper_eq6_term(discriminator: nn.Module, logits_adv_d: torch.Tensor, logits_nat_d: torch.Tensor) -> torch.Tensor:
    """The paper's eq. (6) manifold loss L_d as the classifier minimises it, written with D's output
    p = probability of natural (the paper's D is the adversarial one, 1 - p):
    mean log(1 - p(f(x_adv))) + mean log p(f(x)); D evaluated adversarial first, in its current mode."""
    p_adv, _ = discriminator(logits_adv_d)
    p_nat, _ = discriminator(logits_nat_d)
    return torch.log(1 - p_adv).mean() + torch.log(p_nat).mean()


def authors_step(
    basic_net: nn.Module,
    discriminator: AuthorsDiscriminator,
    optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    noise: torch.Tensor,
    *,
    epsilon: float = 8 / 255,
    ls_factor: float = 0.5,
    scale_divisor: float = 2.0,
    invariance: str = "mse",
) -> float:
    """One batch of the authors' training: `Attack_FeaScatter.forward` then the body of `train_fun`'s loop.
    Returns `scale`. `invariance="eq6"` replaces their MSE by `paper_eq6_term` (the project's divergence mode)."""
    batch, num_classes = inputs.size(0), discriminator.fc2.out_features
    optimizer.zero_grad()
    # --- Attack_FeaScatter.forward (num_steps = 1, step_size = epsilon, random_start)
    aux_net = copy.deepcopy(basic_net)  # their pickle round trip: a frozen copy with the current weights
    aux_net.eval()
    x = inputs.detach()
    x = x + noise
    basic_net.train()
    logits_pred_nat = aux_net(inputs)
    logits_pred_nat_d = torch.reshape(logits_pred_nat, [batch, num_classes, 1, 1])
    y_sm = label_smoothing(one_hot_tensor(targets, num_classes), num_classes, ls_factor)
    adversarial_criterion = nn.BCELoss()
    mse = nn.MSELoss()

    x.requires_grad_()
    logits_pred = aux_net(x)
    logits_pred_d = torch.reshape(logits_pred, [batch, num_classes, 1, 1])
    valid = torch.ones(batch, 1)
    fake = torch.zeros(batch, 1)
    discriminator.zero_grad()
    logits_fea_nat, _ = discriminator(logits_pred_nat_d)
    logits_fea_adv, _ = discriminator(logits_pred_d)
    adv_loss = adversarial_criterion(logits_fea_nat, valid) + adversarial_criterion(logits_fea_adv, fake)
    aux_net.zero_grad()
    d_optimizer.zero_grad()
    discriminator.zero_grad()
    adv_loss.backward(retain_graph=True)
    x_adv = x.data - epsilon * torch.sign(x.grad.data)
    x_adv = torch.min(torch.max(x_adv, inputs - epsilon), inputs + epsilon)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    x = x_adv.clone().requires_grad_(True)

    logits_pred_2 = basic_net(x)
    logits_pred_2_d = torch.reshape(logits_pred_2, [batch, num_classes, 1, 1])
    for _ in range(2):
        logits_fea_adv2, d_cla_adv2 = discriminator(logits_pred_2_d.detach())
        logits_fea_nat2, d_cla_nat2 = discriminator(logits_pred_nat_d.detach())
        discriminator_loss = (adversarial_criterion(logits_fea_nat2, valid) + adversarial_criterion(logits_fea_adv2, fake)
                              + soft_cross_entropy(d_cla_nat2, y_sm.detach()) + soft_cross_entropy(d_cla_adv2, y_sm.detach()))
        d_optimizer.zero_grad()
        discriminator_loss.backward(retain_graph=True)
        d_optimizer.step()

    if invariance == "mse":
        gan_loss = mse(logits_pred_2_d, logits_pred_nat_d)
    else:
        gan_loss = paper_eq6_term(discriminator, logits_pred_2_d, logits_pred_nat_d.detach())
    basic_net.zero_grad()
    adv_loss = soft_cross_entropy(logits_pred_2, y_sm.detach())
    discriminator.zero_grad()
    gd_gan = torch.autograd.grad(outputs=gan_loss, inputs=x, retain_graph=True)
    gd_adv = torch.autograd.grad(outputs=adv_loss, inputs=x, retain_graph=True)
    scale = gd_adv[0].max() / gd_gan[0].max()
    # --- train_fun
    optimizer.zero_grad()
    loss = adv_loss.mean() + gan_loss * scale / scale_divisor
    loss.backward(retain_graph=True)
    optimizer.step()
    return float(scale)


# ---------------------------------------------------------------- attack_methods_new_imt_cifar10.py

def authors_imt(
    basic_net: nn.Module,
    discriminator: AuthorsDiscriminator,
    inputs: torch.Tensor,
    *,
    epsilon: float = 8 / 255,
    band: tuple[float, float] | None = (0.3, 0.7),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Their `Attack_None.forward` IMT step on `inputs` (both networks in eval mode, as `net.eval()` leaves
    them). `band=None` is plain IMT (mask 1). Returns (outputs, p_natural of inputs, transformed inputs)."""
    batch, num_classes = inputs.size(0), discriminator.fc2.out_features
    x = inputs.detach().clone().requires_grad_()
    logits_pert = basic_net(x)
    logits_fea, _ = discriminator(torch.reshape(logits_pert, [batch, num_classes, 1, 1]))
    loss_d = nn.BCELoss()(logits_fea, torch.ones(batch, 1))
    mask = torch.ones(batch, 1, 1, 1)
    if band is not None:
        for index, qq in enumerate(logits_fea):
            if band[0] < qq < band[1]:
                mask[index] = 0.5
    mask = mask.expand_as(x)
    loss_d.backward()
    x_adv = x.data - epsilon * mask * torch.sign(x.grad.data)
    x_adv = torch.min(torch.max(x_adv, x.data - epsilon), x.data + epsilon)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    with torch.no_grad():
        outputs = basic_net(x_adv)
    return outputs, logits_fea.detach().view(-1), x_adv
