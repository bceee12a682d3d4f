"""ART/CARD.md and its two figures: the reliability diagram before/after temperature scaling, and p_natural
histograms of clean vs attacked images with the detector's threshold drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifact import CARD_FILE, Manifest
from ..gate import LABELS
from ..io import atomic_path, sha256_file, write_bytes_atomic
from . import calibration as cal
from .card import EVAL_NAMES

RELIABILITY_PNG = "card_reliability.png"
P_NATURAL_PNG = "card_p_natural.png"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)


def _reliability_png(path: Path, bins: dict[str, Any], calib: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(bins)
    fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 3.8), squeeze=False)
    for ax, m in zip(axes[0], modes):
        for which, color, label in (("before", "tab:red", "T = 1"),
                                    ("after", "tab:blue", f"T = {calib['temperature'][m]:.2f}")):
            rows = [r for r in bins[m][which] if r["n"]]
            ece = calib[f"ece_{which}"][m]
            ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o-", color=color,
                    label=f"{label} (ECE {100 * ece:.1f}%)")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(title=LABELS[m], xlabel="confidence (mean per bin)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("Reliability before / after temperature scaling (the card's clean images)")
    _save(fig, path)


def _p_natural_png(path: Path, detector: dict[str, Any], p_clean: np.ndarray,
                   p_adv: dict[tuple[str, ...], list[torch.Tensor]], modes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 3.8), squeeze=False)
    edges = np.linspace(0, 1, 41)
    for ax, m in zip(axes[0], modes):
        ax.hist(p_clean, bins=edges, density=True, alpha=0.5, color="tab:green", label="clean")
        for key, parts in p_adv.items():  # what an attacker on this mode's deployment sends
            if key[-1] == "clean":
                continue
            mine = key[0] == "published" if m == "static" else key[:2] == ("adaptive", EVAL_NAMES[m])
            if mine:
                ax.hist(torch.cat(parts).numpy(), bins=edges, density=True, histtype="step", label=key[-1])
        ax.axvline(detector["threshold"], color="black", linestyle="--",
                   label=f"threshold {detector['threshold']:.3f}")
        ax.set(title=f"{LABELS[m]} ({'published' if m == 'static' else 'adaptive'} attacks)", xlabel="p_natural",
               ylabel="density", xlim=(0, 1))
        ax.legend(fontsize=7)
    fig.suptitle(f"p_natural: clean vs attacked; below the threshold = suspect (FPR {100 * detector['fpr']:.0f}%)")
    _save(fig, path)


def card_markdown(card: dict[str, Any], calib: dict[str, Any], detector: dict[str, Any], manifest: Manifest) -> str:
    """CARD.md: what was measured, on what, and what the gate concludes."""
    modes = list(card["modes"])
    attacks = list(card["attacks"])
    pub = [a for a in attacks if a != "clean" and any(a in r["published"] for r in card["modes"].values())]
    ada = [a for a in attacks if a != "clean"]
    lines = ["# Robustness card", "",
             f"Classes: {len(manifest.classes)}; exported pipeline IMT mode: {manifest.imt.get('mode')}; "
             f"eps {card['eps']:.4g}; n = {card['n']} images ({card['split']}); seed {card['seed']}; attacks: "
             f"{', '.join(attacks)}; Square queries {card['square_queries']}.", "",
             f"**Verdict:** {card['verdict']}.", "",
             "## Accuracy (%) per mode", "",
             "| mode | clean | " + "".join(f"{a} (published) | " for a in pub)
             + "".join(f"{a} (adaptive) | " for a in ada) + "**worst case** |",
             "|---|---:|" + "---:|" * (len(pub) + len(ada)) + "---:|"]
    for m in modes:
        r = card["modes"][m]
        cells = [_pct(r["published"].get(a)) for a in pub] + [_pct(r["adaptive"].get(a)) for a in ada]
        lines.append(f"| {LABELS[m]} | {_pct(r['clean'])} | " + "".join(f"{c} | " for c in cells)
                     + f"**{_pct(r['worst_case'])}** +-{100 * r['worst_case_half_width']:.1f} |")
    lines += ["", "Worst case: an image counts only if every attack of both protocols failed on it. +-: the 95% "
              "binomial (Wilson) half-width; modes closer than that tie, and a tie goes to the cheaper mode.", ""]
    for w in card.get("warnings", []):
        lines.append(f"- check: {w}")
    lines += ["## Calibration", "",
              f"Temperatures fitted on {calib['fit']['split']} (never the card's images); ECE ({calib['bins']} bins) "
              f"measured on {calib['measured_on']}.", "",
              "| mode | temperature | ECE before | ECE after | NLL before | NLL after |", "|---|---:|---:|---:|---:|---:|"]
    for m in calib["temperature"]:
        lines.append(f"| {LABELS[m]} | {calib['temperature'][m]:.3f} | {100 * calib['ece_before'][m]:.2f}% | "
                     f"{100 * calib['ece_after'][m]:.2f}% | {calib['nll_before'][m]:.3f} | {calib['nll_after'][m]:.3f} |")
    lines += ["", f"![reliability]({RELIABILITY_PNG})", ""]
    if detector:
        q = detector["quantiles"]
        lines += ["## Detector (p_natural)", "",
                  f"Threshold **{detector['threshold']:.4f}**: `suspect` = p_natural below it. It is the "
                  f"k-th smallest p_natural of {detector['n_fit']} clean images ({detector['fit']}), with "
                  f"k = floor(fpr x (n_fit+1)) = {detector['k']}, so a new clean image is flagged with probability "
                  f"{100 * detector['expected_fpr']:.2f}% <= the {100 * detector['fpr']:.1f}% asked for.", "",
                  f"On the card's {detector['heldout_n']} clean images it flags {detector['heldout_flagged']}: "
                  + cal.heldout_line(detector) + ". The interval is beta-binomial: it counts the noise of the "
                  "threshold (a quantile estimated from the fitting set) as well as the card's own sampling noise.", "",
                  "Clean p_natural quantiles (fitting set): " + ", ".join(f"q{float(k):g} {v:.3f}" for k, v in q.items()),
                  "", "| protocol | model | attack | TPR at threshold | ROC AUC | n |", "|---|---|---|---:|---:|---:|"]
        for a in detector["attacks"]:
            lines.append(f"| {a['protocol']} | {a['model']} | {a['attack']} | {100 * a['tpr']:.1f}% | {a['auc']:.3f} | "
                         f"{a['n']} |")
        lines += ["", f"![p_natural]({P_NATURAL_PNG})", ""]
    m = card["machine"]
    lines += ["## Provenance", "", f"Commit {card['commit']}; {card['date']}; {m.get('cpu')} ({m.get('cores')} cores, "
              f"load {m.get('loadavg')}); {card['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def write_card_files(art: Path, manifest: Manifest, card: dict[str, Any], calib: dict[str, Any],
                     detector: dict[str, Any], bins: dict[str, Any], p_clean: np.ndarray | None,
                     p_adv: dict[tuple[str, ...], list[torch.Tensor]]) -> dict[str, str]:
    """Write CARD.md and the figures into `art` (atomically); return {name: SHA-256} for the manifest's `files`."""
    names = [RELIABILITY_PNG]
    _reliability_png(art / RELIABILITY_PNG, bins, calib)
    if detector and p_clean is not None:
        _p_natural_png(art / P_NATURAL_PNG, detector, p_clean, p_adv, list(card["modes"]))
        names.append(P_NATURAL_PNG)
    write_bytes_atomic(art / CARD_FILE, card_markdown(card, calib, detector, manifest).encode())
    return {name: sha256_file(art / name) for name in [CARD_FILE, *names]}
