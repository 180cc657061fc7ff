"""Signatures over registry manifests: HMAC-SHA256 (shared key) or Ed25519 (key pair).

The signature covers the exact bytes of ``manifest.json``, and the manifest lists the SHA-256
of every artifact file, so one signature check plus one hash per file proves the whole version
is what the trainer wrote.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Literal

import platformdirs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, SecretStr


class SignatureError(Exception):
    """A registry version is unsigned, tampered with, or signed with another key."""


class SigningKeyError(SignatureError):
    """This service has no usable key to sign or verify with (a setup problem, not tampering)."""


class SigningConfig(BaseModel):
    """Which algorithm and key sign and verify registry versions.

    HMAC: ``hmac_key`` (or env ``RAY_APP_REGISTRY_HMAC_KEY``), else a key file generated once at
    ``key_file`` (default in the user config dir) — fine on one machine, not across a cluster.
    Ed25519: the trainer needs ``ed25519_private_key_file``; serving only the public key.
    """

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["hmac-sha256", "ed25519"] = "hmac-sha256"
    """Shared-key HMAC, or an Ed25519 key pair (serving then needs only the public key)."""
    hmac_key: SecretStr | None = None
    """The HMAC key itself (else ``RAY_APP_REGISTRY_HMAC_KEY``, else ``key_file``)."""
    key_file: Path | None = None
    """HMAC key file, created on first signing (default: in the user config dir)."""
    ed25519_private_key_file: Path | None = None
    """PEM private key that signs (the trainer's)."""
    ed25519_public_key_file: Path | None = None
    """PEM public key that verifies (the server's; default: derived from the private key)."""


def default_key_file() -> Path:
    """Where the HMAC key is kept when neither the config nor the environment gives one."""
    return Path(platformdirs.user_config_dir("ray-app")) / "registry-hmac.key"


def _hmac_key(cfg: SigningConfig, create: bool) -> bytes:
    if cfg.hmac_key is not None:
        return cfg.hmac_key.get_secret_value().encode()
    env = os.environ.get("RAY_APP_REGISTRY_HMAC_KEY")
    if env:
        return env.encode()
    path = cfg.key_file or default_key_file()
    if not path.exists():
        if not create:
            raise SigningKeyError(
                f"no HMAC key: set RAY_APP_REGISTRY_HMAC_KEY or signing.hmac_key ({path} missing)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def key_id(cfg: SigningConfig) -> str:
    """A short public fingerprint of the verification key (never the key itself)."""
    if cfg.algorithm == "hmac-sha256":
        return hashlib.sha256(b"ray-app-key-id:" + _hmac_key(cfg, create=True)).hexdigest()[:16]
    pub = _public_key(cfg).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(pub).hexdigest()[:16]


def _public_key(cfg: SigningConfig) -> Ed25519PublicKey:
    if cfg.ed25519_public_key_file:
        key = serialization.load_pem_public_key(cfg.ed25519_public_key_file.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{cfg.ed25519_public_key_file} is not an Ed25519 public key")
        return key
    return _private_key(cfg).public_key()


def _private_key(cfg: SigningConfig) -> Ed25519PrivateKey:
    if not cfg.ed25519_private_key_file:
        raise SigningKeyError("algorithm=ed25519 needs signing.ed25519_private_key_file to sign")
    key = serialization.load_pem_private_key(cfg.ed25519_private_key_file.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{cfg.ed25519_private_key_file} is not an Ed25519 private key")
    return key


def sign(payload: bytes, cfg: SigningConfig) -> dict[str, str]:
    """Signature record for ``payload`` (stored as ``signature.json``)."""
    if cfg.algorithm == "hmac-sha256":
        mac = hmac.new(_hmac_key(cfg, create=True), payload, hashlib.sha256).hexdigest()
        return {"algorithm": cfg.algorithm, "key_id": key_id(cfg), "signature": mac}
    sig = _private_key(cfg).sign(payload)
    return {
        "algorithm": cfg.algorithm,
        "key_id": key_id(cfg),
        "signature": base64.b64encode(sig).decode(),
    }


def verify(payload: bytes, record: dict[str, str], cfg: SigningConfig, what: str) -> None:
    """Raise :class:`SignatureError` naming ``what`` unless ``record`` signs ``payload``."""
    alg = record.get("algorithm")
    if alg != cfg.algorithm:
        raise SignatureError(
            f"{what}: signed with {alg!r}, but this service verifies {cfg.algorithm}"
        )
    sig = record.get("signature", "")
    if cfg.algorithm == "hmac-sha256":
        want = hmac.new(_hmac_key(cfg, create=False), payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig):
            raise SignatureError(f"{what}: HMAC signature does not match (tampered or other key)")
        return
    try:
        _public_key(cfg).verify(base64.b64decode(sig), payload)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"{what}: Ed25519 signature does not verify") from exc


def generate_ed25519(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair as PEM files (private key mode 0600)."""
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
