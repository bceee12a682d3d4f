"""Signed artifacts with the field's standard, OpenSSF model-signing (optional extra `sign`).

`sign_artifact(ART, key)` writes ART/model.sig, a signature over every file in the directory. A loading
command given a trust key (`--public-key PATH`, or the environment variable ATLD_DEPLOY_TRUST_KEY) refuses an
artifact that is unsigned or whose signature does not verify, so a graph swapped in with its SHA-256
rewritten into the manifest is refused. Keys are elliptic-curve PEM files (`openssl ecparam -genkey -name
prime256v1 -noout -out key.pem; openssl ec -in key.pem -pubout -out key.pub`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from .artifact import SIGNATURE, Manifest
from .errors import ArtifactError, ConfigError
from .io import write_bytes_atomic

log = logging.getLogger(__name__)

TRUST_ENV = "ATLD_DEPLOY_TRUST_KEY"
EXTRA_HINT = "install the optional extra: pip install 'atld-deploy[sign]'"


def _model_signing():  # type: ignore[no-untyped-def]
    try:
        import model_signing  # noqa: F401
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as e:
        raise ConfigError(f"signing and signature checks need OpenSSF model-signing ({e}); {EXTRA_HINT}") from None
    return model_signing


def _key_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} is not a readable file; give the PEM file of an elliptic-curve key")
    return p


def _hashing(ms, art: Path):  # type: ignore[no-untyped-def]
    return ms.hashing.Config().set_ignored_paths(paths=[art / SIGNATURE], ignore_git_paths=False)


def trust_key(public_key: str | Path | None) -> Path | None:
    """The key artifacts must be signed with: `public_key`, else $ATLD_DEPLOY_TRUST_KEY, else None (no check)."""
    chosen = public_key if public_key is not None else os.environ.get(TRUST_ENV) or None
    return _key_file(chosen, "trust key" if public_key is None else "--public-key") if chosen is not None else None


def sign_artifact(art: str | Path, private_key: str | Path, password: str | None = None) -> Path:
    """Sign every file of artifact directory `art` (checked first: schema, confinement, hashes); returns model.sig.

    Raises:
        ArtifactError: the artifact does not load. ConfigError: no key file, or the extra is missing.
    """
    art = Path(art)
    Manifest.load(art)
    key = _key_file(private_key, "--key")
    ms = _model_signing()
    with tempfile.TemporaryDirectory() as tmp:
        sig = Path(tmp) / SIGNATURE
        try:
            (ms.signing.Config().use_elliptic_key_signer(private_key=key, password=password)
             .set_hashing_config(_hashing(ms, art)).sign(art, sig))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"could not sign with {key}: {e}; give an unencrypted (or --password) EC private key") from None
        write_bytes_atomic(art / SIGNATURE, sig.read_bytes())
    return art / SIGNATURE


def verify_signature(art: str | Path, public_key: str | Path) -> None:
    """Check ART/model.sig against `public_key` over every file in `art`.

    Raises:
        ArtifactError: unsigned, or the signature does not verify (a file was added, removed or changed, or
            another key signed it). ConfigError: no key file, or the extra is missing.
    """
    art = Path(art)
    key = _key_file(public_key, "public key")
    sig = art / SIGNATURE
    if not sig.is_file() or sig.is_symlink():
        raise ArtifactError(f"{art} is not signed ({SIGNATURE} missing) but a trust key was given; sign it with "
                            f"`atld-deploy sign {art} --key PRIVATE.pem`, or drop the trust key")
    ms = _model_signing()
    try:
        ms.verifying.Config().use_elliptic_key_verifier(public_key=key).set_hashing_config(_hashing(ms, art)).verify(art, sig)
    except Exception as e:  # noqa: BLE001 - model-signing raises ValueError and library-specific errors alike
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"the signature of {art} does not verify with {key} ({reason}): a file was changed, added "
                            f"or removed after signing, or another key signed it; do not serve it") from None
    log.info("%s: signature verified with %s", art, key)


def drop_signature(art: str | Path, why: str) -> bool:
    """Remove ART/model.sig after a command changed the artifact; returns True (and logs why) if there was one."""
    sig = Path(art) / SIGNATURE
    if sig.is_file() and not sig.is_symlink():
        sig.unlink()
        log.warning("%s changed (%s): its signature no longer holds and was removed; sign it again with "
                    "`atld-deploy sign %s --key PRIVATE.pem`", art, why, art)
        return True
    return False


def open_artifact(art: str | Path, *, allow_unverified: bool = False, public_key: str | Path | None = None) -> Manifest:
    """Load an artifact for serving: the manifest and every file checked, the signature if a trust key is
    configured, and the verification gate.

    Raises:
        ArtifactError: as for `Manifest.load`, `verify_signature` and `Manifest.require_verified`.
    """
    art = Path(art)
    manifest = Manifest.load(art, check_hashes=True)
    key = trust_key(public_key)
    if key is not None:
        verify_signature(art, key)
    manifest.require_verified(art, allow_unverified)
    return manifest
