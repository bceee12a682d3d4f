"""Helpers for the card tests: hand-made cards written into copies of an artifact."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from atld_deploy.artifact import CARD_FILE, Manifest
from atld_deploy.io import sha256_file

CARD_N = 180  # the card's images; the other 180 of the digits test split fit the temperature and threshold
CARD_FPR = 0.1

def hand_card(worst: dict[str, float], n: int) -> dict[str, Any]:
    """A card with the given worst-case accuracies per mode (the gate reads nothing else)."""
    return {"n": n, "eps": 0.2, "seed": 0, "attacks": ["clean"],
            "modes": {m: {"clean": 1.0, "worst_case": w, "published": {}, "adaptive": {}} for m, w in worst.items()}}


def with_card(src: Path, dest: Path, card: dict[str, Any], **sections: dict[str, Any]) -> Path:
    """A copy of artifact `src` at `dest` carrying `card` (and e.g. calibration=..., detector=...) with a CARD.md
    listed and hashed, as `atld-deploy card` leaves it."""
    shutil.copytree(src, dest)
    (dest / CARD_FILE).write_text(f"# hand-made card\n{card}\n")
    m = Manifest.load(dest)
    replace(m, card=card, files={**m.files, CARD_FILE: sha256_file(dest / CARD_FILE)}, **sections).save(dest)
    return dest
