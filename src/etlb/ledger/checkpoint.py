"""Signed checkpoints: the C2SP tlog-checkpoint body inside a C2SP signed note, signed with Ed25519.

No I/O. A checkpoint commits the gate to the first `size` records of its ledger through their RFC 9162
Merkle root. Its text is what transparency-log tooling reads (C2SP tlog-checkpoint):

    <origin>\\n<tree size in decimal>\\n<root hash in standard base64>\\n

The signed note (C2SP signed-note) appends a blank line and one signature line per signer,
`\\u2014 <key name> <base64(key hash || signature)>\\n`. For Ed25519 the key hash is the first four
bytes of SHA-256(key name || "\\n" || 0x01 || public key), and the signature covers the text exactly.
A verifier key is written `<name>+<key hash in hex>+<base64(0x01 || public key)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from etlb.errors import EtlbError

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "NoteVerifier",
    "checkpoint_text",
    "parse_verifier_key",
    "verify_checkpoint",
]

_ED25519_TYPE = b"\x01"
_SIGNATURE_PREFIX = "\u2014 "
_MAX_NOTE_SIZE = 1 << 20


class CheckpointError(EtlbError):
    """A checkpoint or verifier key is malformed, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A signed-note verifier key: the signer's name, its 4-byte key hash and its Ed25519 public key."""

    name: str
    key_hash: bytes
    public_key: Ed25519PublicKey

    def __str__(self) -> str:
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        encoded = base64.b64encode(_ED25519_TYPE + raw).decode("ascii")
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"


def _key_hash(name: str, raw_public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519_TYPE + raw_public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(character.isspace() for character in name) or "+" in name:
        message = f"note key name {name!r} is invalid: it must be non-empty, without spaces or '+'"
        raise CheckpointError(message)


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """Return the C2SP tlog-checkpoint body for a tree of `size` leaves with Merkle root `root`."""
    _check_name(origin)
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


class CheckpointSigner:
    """Signs checkpoints with the gate's Ed25519 key under one key name, which is also the log's origin."""

    def __init__(self, private_key: Ed25519PrivateKey, origin: str) -> None:
        _check_name(origin)
        self._private_key = private_key
        self.origin = origin
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.verifier = NoteVerifier(origin, _key_hash(origin, raw), private_key.public_key())

    def sign(self, size: int, root: bytes) -> str:
        """Return the signed note of the checkpoint for `size` records with Merkle root `root`."""
        text = checkpoint_text(self.origin, size, root)
        signature = self._private_key.sign(text.encode("utf-8"))
        encoded = base64.b64encode(self.verifier.key_hash + signature).decode("ascii")
        return f"{text}\n{_SIGNATURE_PREFIX}{self.origin} {encoded}\n"


def parse_verifier_key(text: str) -> NoteVerifier:
    """Parse a `<name>+<hash>+<base64 key>` verifier key and check that its hash matches the key."""
    parts = text.strip().split("+", 2)
    # A verifier key is one word; anything with spaces or line breaks (a PEM file, a private key) is
    # rejected without echoing it.
    if len(parts) != 3 or any(character.isspace() for character in text.strip()):
        # The text is not echoed: a wrong file passed as the key may be a private key.
        message = "the verifier key is not of the form NAME+HASH+KEY, as in the gate's etlb-gate.pub file"
        raise CheckpointError(message, hint="use the contents of the gate's .pub file that etlb init wrote")

    name, hash_hex, encoded = parts
    _check_name(name)
    try:
        key_hash = bytes.fromhex(hash_hex)
        decoded = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error) as error:
        message = f"verifier key for {name!r} is not valid hex and base64: {error}"
        raise CheckpointError(message) from error

    if len(key_hash) != 4 or len(decoded) != 33 or decoded[:1] != _ED25519_TYPE:
        message = f"verifier key for {name!r} is not an Ed25519 signed-note key"
        raise CheckpointError(message)
    if _key_hash(name, decoded[1:]) != key_hash:
        message = f"verifier key for {name!r} has key hash {hash_hex}, which does not match its key"
        raise CheckpointError(message)
    return NoteVerifier(name, key_hash, Ed25519PublicKey.from_public_bytes(decoded[1:]))


def verify_checkpoint(note: str, verifier: NoteVerifier) -> Checkpoint:
    """Check the note's signature by `verifier` and parse its checkpoint body.

    Signature lines of other keys are ignored, as the signed-note format allows cosigners.
    """
    if len(note) > _MAX_NOTE_SIZE:
        message = f"checkpoint note of {len(note)} characters is larger than {_MAX_NOTE_SIZE}"
        raise CheckpointError(message)

    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise CheckpointError("checkpoint note has no signature block after a blank line")
    text += "\n"

    signed = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith(_SIGNATURE_PREFIX):
            message = f"checkpoint signature line {line!r} does not start with an em dash and a space"
            raise CheckpointError(message)
        name, _, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error) as error:
            message = f"checkpoint signature by {name!r} is not valid base64"
            raise CheckpointError(message) from error
        if name != verifier.name or blob[:4] != verifier.key_hash:
            continue
        if base64.b64encode(blob).decode("ascii") != encoded:
            message = f"checkpoint signature by {name} is not in canonical base64"
            raise CheckpointError(message)
        try:
            verifier.public_key.verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature as error:
            message = f"checkpoint signature by {name} does not verify: the note was changed or forged"
            raise CheckpointError(message) from error
        signed = True

    if not signed:
        message = f"checkpoint has no signature by {verifier.name} with key hash {verifier.key_hash.hex()}"
        raise CheckpointError(message, hint="check that the gate key given is the key of this gate")
    return _parse_body(text, note)


def _parse_body(text: str, note: str) -> Checkpoint:
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        message = f"checkpoint body has {len(lines)} lines; expected origin, tree size and root hash"
        raise CheckpointError(message)

    origin, size_text, root_text, *extensions = lines
    if not (size_text.isascii() and size_text.isdigit()) or (len(size_text) > 1 and size_text.startswith("0")):
        message = f"checkpoint tree size {size_text!r} is not a decimal number without leading zeros"
        raise CheckpointError(message)
    try:
        root = base64.b64decode(root_text, validate=True)
    except (ValueError, binascii.Error) as error:
        message = f"checkpoint root hash {root_text!r} is not valid base64"
        raise CheckpointError(message) from error
    if len(root) != 32:
        message = f"checkpoint root hash has {len(root)} bytes; expected 32"
        raise CheckpointError(message)
    return Checkpoint(origin, int(size_text), root, tuple(extensions), note)
