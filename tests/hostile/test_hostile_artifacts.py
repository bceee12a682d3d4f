"""Artifacts from elsewhere: the serving gate (verified), signatures, and a rehashed trojan graph."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atld_deploy.io import sha256_file

pytest.importorskip("model_signing", reason="the `sign` extra (OpenSSF model-signing) is not installed")

TIMEOUT = 240


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atld_deploy", *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _keys(d: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = d / "key.pem", d / "key.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _set_verified(art: Path, verified: bool) -> None:
    d = json.loads((art / "manifest.json").read_text())
    d["verified"] = verified
    (art / "manifest.json").write_text(json.dumps(d))


@pytest.fixture()
def setup(tiny_artifacts: Path, tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    if not json.loads((art / "manifest.json").read_text())["verified"]:
        _set_verified(art, True)  # stands for a verified export; parity itself is the export tests' subject
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(images / f"{i}.png")
    priv, pub = _keys(tmp_path)
    return art, images, priv, pub


def test_a_signed_artifact_serves_and_a_rehashed_trojan_is_refused(setup: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    art, images, priv, pub = setup
    res = cli("sign", str(art), "--key", str(priv))
    assert res.returncode == 0 and (art / "model.sig").is_file(), res.stderr
    res = cli("infer", str(images), "--artifacts", str(art), "-o", str(tmp_path / "ok.jsonl"), "--public-key", str(pub),
              "--no-progress")
    assert res.returncode == 0, res.stderr
    # the trojan: another graph in pipeline.onnx's place, its SHA-256 written into the manifest
    shutil.copy(art / "classifier.onnx", art / "pipeline.onnx")
    d = json.loads((art / "manifest.json").read_text())
    d["graphs"]["pipeline"]["sha256"] = sha256_file(art / "pipeline.onnx")
    (art / "manifest.json").write_text(json.dumps(d))
    out = tmp_path / "trojan.jsonl"
    res = cli("infer", str(images), "--artifacts", str(art), "-o", str(out), "--no-progress",
              env={"ATLD_DEPLOY_TRUST_KEY": str(pub)})
    assert res.returncode == 2, res.stderr
    assert "does not verify" in res.stderr and "do not serve it" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_an_unsigned_artifact_is_refused_when_a_trust_key_is_set(setup: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    art, images, _, pub = setup
    res = cli("bench", str(art), "--batch-sizes", "1", "--iters", "1", env={"ATLD_DEPLOY_TRUST_KEY": str(pub)})
    assert res.returncode == 2 and "is not signed (model.sig missing)" in res.stderr, res.stderr


def test_another_key_does_not_verify(setup: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    art, images, priv, _ = setup
    other = tmp_path / "other"
    other.mkdir()
    _, other_pub = _keys(other)
    assert cli("sign", str(art), "--key", str(priv)).returncode == 0
    res = cli("infer", str(images), "--artifacts", str(art), "-o", str(tmp_path / "p.jsonl"), "--public-key",
              str(other_pub), "--no-progress")
    assert res.returncode == 2 and "does not verify" in res.stderr, res.stderr


def test_an_unverified_artifact_needs_allow_unverified(setup: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    art, images, _, _ = setup
    _set_verified(art, False)
    out = tmp_path / "p.jsonl"
    res = cli("infer", str(images), "--artifacts", str(art), "-o", str(out), "--no-progress")
    assert res.returncode == 2 and "has not passed parity verification" in res.stderr, res.stderr
    assert not out.exists()
    res = cli("infer", str(images), "--artifacts", str(art), "-o", str(out), "--no-progress", "--allow-unverified")
    assert res.returncode == 0, res.stderr
    assert len(out.read_text().splitlines()) == 4


def test_verify_is_read_only_and_recording_drops_the_signature(setup: tuple[Path, Path, Path, Path]) -> None:
    art, _, priv, pub = setup
    assert cli("sign", str(art), "--key", str(priv)).returncode == 0
    res = cli("verify", str(art), "--parity-real", "64", "--parity-random", "16")
    assert res.returncode == 0 and (art / "model.sig").is_file(), res.stderr
    res = cli("bench", str(art), "--batch-sizes", "1", "--iters", "1", "--public-key", str(pub))
    assert res.returncode == 0, res.stderr  # the read-only check left the signature valid
    res = cli("verify", str(art), "--parity-real", "64", "--parity-random", "16", "--record")
    assert res.returncode == 0 and not (art / "model.sig").exists(), res.stderr
    assert "signature no longer holds and was removed" in res.stderr
