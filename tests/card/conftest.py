"""Card fixtures: the session's tiny artifact with a real card written by `write_card`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from card_fixtures import CARD_FPR, CARD_N


@pytest.fixture(scope="session")
def carded(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of tiny_artifacts with a real card (clean and FGSM only, to stay fast), FPR 10%."""
    from atld_deploy.evaluate.card import write_card

    art = tmp_path_factory.mktemp("carded") / "art"
    shutil.copytree(tiny_artifacts, art)
    write_card(art, n=CARD_N, fpr=CARD_FPR, attacks="clean,fgsm", batch_size=200)
    return art
