"""The gate's own signing key: created by `etlb init`, loaded at start-up to sign ledger checkpoints.

The key file is a PKCS #8 PEM readable by its owner only, kept apart from the store so that someone
who can write the database cannot also sign checkpoints. Beside it, `<key>.pub` holds the signed-note
verifier key that auditors and `etlb receipt verify --gate-key` use.
"""

from __future__ import annotations

from pathlib import Path

from etlb.errors import KeyFileError
from etlb.ledger.checkpoint import CheckpointSigner
from etlb.signing import generate_private_key, key_id, load_private_key, public_jwk, write_private_key

__all__ = ["create_gate_key", "default_origin", "load_gate_signer", "verifier_path"]


def verifier_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name.removesuffix(".key") + ".pub")


def default_origin(jwk: dict[str, str]) -> str:
    """Name the log after its key, so that two gates never share an origin by accident."""
    return f"etlb/{key_id(jwk)[:16]}"


def create_gate_key(key_path: Path, origin: str | None) -> CheckpointSigner:
    """Create the gate key and its verifier file; an existing key file is never overwritten."""
    private_key = generate_private_key()
    write_private_key(key_path, private_key, passphrase=None)
    signer = CheckpointSigner(private_key, origin or default_origin(public_jwk(private_key)))
    verifier_path(key_path).write_text(f"{signer.verifier}\n", encoding="utf-8")
    return signer


def load_gate_signer(key_path: Path, origin: str | None) -> CheckpointSigner:
    if not key_path.exists():
        message = f"gate key {key_path} not found"
        raise KeyFileError(message, hint="create it with: etlb init")
    private_key = load_private_key(key_path)
    return CheckpointSigner(private_key, origin or default_origin(public_jwk(private_key)))
