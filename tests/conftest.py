"""Shared fixtures: tiny real runs trained once per test session on the embedded digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


def _train_tiny(root: Path, method: str, **kw: object) -> Path:
    from atld_deploy.config import make_config
    from atld_deploy.train import Trainer

    cfg = make_config("digits", method=method, arch="wrn-10-1", epochs=2, d_depth=10, d_widen=1, eval_pgd_n=50, **kw)
    out = root / method
    Trainer(cfg, out, progress=False).fit()
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ATLD run (WRN-10-1, 2 epochs on digits, discriminator WRN-10-1 body); seconds to train."""
    return _train_tiny(tmp_path_factory.mktemp("runs"), "atld")


@pytest.fixture(scope="session")
def tiny_standard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real standard (non-robust) run, same architecture, no discriminator."""
    return _train_tiny(tmp_path_factory.mktemp("runs"), "standard")


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`atld-deploy export` of `tiny_run` with its float32 parity check: classifier, discriminator and IMT pipeline
    graphs, run/ copy, `verified: true` (the runtime serves only verified artifacts). The export tests judge
    parity itself; the consumers compare backends themselves."""
    from atld_deploy.export import export_run

    art = tmp_path_factory.mktemp("art") / "art"
    assert export_run(tiny_run, art).verified
    return art
