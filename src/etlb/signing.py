"""Bearer keys and JWS signatures: Ed25519 keys, EdDSA JWS (RFC 7515 with RFC 8037), RFC 7638 key ids.

A bearer signs with a private key that only they hold; the gate stores public keys only. Payloads are
canonical JSON (RFC 8785), and verification rejects a payload that is not in canonical form, so one
declaration has exactly one byte string that its signature covers.

Tokens are emitted with `alg: EdDSA`, which every common JOSE library accepts. Verification accepts
both `EdDSA` and the fully specified `Ed25519` name of RFC 9864, and only for Ed25519 keys.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from etlb.canonical import canonical_bytes
from etlb.errors import KeyFileError, SignatureError

__all__ = [
    "JWS_ALGORITHMS",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_jwk",
    "parse_public_jwk",
    "public_jwk",
    "read_unverified",
    "sign_payload",
    "verify_jws",
    "write_private_key",
    "write_public_jwk",
]

JWS_ALGORITHMS = ("EdDSA", "Ed25519")


class _EdDSARegistry(JWSRegistry):
    """A joserfc registry that allows only the Ed25519 names and does not warn about `EdDSA`.

    joserfc warns on every use of `EdDSA` because RFC 9864 deprecates the polymorphic name. etlb emits
    it on purpose, since PyJWT and other verifiers do not accept `Ed25519` yet, and keys are checked
    to be Ed25519 (never Ed448) before use.
    """

    def __init__(self) -> None:
        super().__init__(algorithms=list(JWS_ALGORITHMS))

    def get_alg(self, name: str) -> JWSAlgModel:
        if name not in JWS_ALGORITHMS or name not in self.algorithms:
            message = f"JWS algorithm {name!r} is not allowed; expected one of {', '.join(JWS_ALGORITHMS)}"
            raise UnsupportedAlgorithmError(message)
        return self.algorithms[name]


_REGISTRY = _EdDSARegistry()


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_jwk(private_key: Ed25519PrivateKey) -> dict[str, str]:
    """Return the RFC 8037 OKP JWK of the public half of a key."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def key_id(jwk: dict[str, str]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of a public JWK, used as its key id."""
    return str(_okp_key(parse_public_jwk(jwk)).thumbprint())


def parse_public_jwk(data: Any) -> dict[str, str]:
    """Check that a value is an Ed25519 public JWK and return only its public members."""
    if not isinstance(data, dict):
        message = f"public key must be a JSON object, got {type(data).__name__}"
        raise KeyFileError(message)
    if data.get("kty") != "OKP" or data.get("crv") != "Ed25519":
        message = f"public key has kty={data.get('kty')!r} crv={data.get('crv')!r}; expected OKP and Ed25519"
        raise KeyFileError(message, hint="create a key with: etlb keygen --out NAME.key")
    if "d" in data:
        message = "the public key file contains a private key member 'd'"
        raise KeyFileError(message, hint="register the .pub.jwk file that etlb keygen wrote, never the key")

    x = data.get("x")
    try:
        _okp_key({"kty": "OKP", "crv": "Ed25519", "x": str(x)})
    except (JoseError, ValueError, TypeError) as error:
        message = f"public key member x={x!r} is not a valid Ed25519 key: {error}"
        raise KeyFileError(message) from error
    return {"kty": "OKP", "crv": "Ed25519", "x": str(x)}


def write_private_key(path: Path, private_key: Ed25519PrivateKey, passphrase: bytes | None) -> None:
    """Write a PKCS #8 PEM key readable by its owner only. An existing file is never overwritten."""
    if passphrase:
        encryption: serialization.KeySerializationEncryption = serialization.BestAvailableEncryption(passphrase)
    else:
        encryption = serialization.NoEncryption()
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        message = f"key file {path} already exists"
        raise KeyFileError(message, hint="choose another --out path or move the old key away") from error
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)


def write_public_jwk(path: Path, jwk: dict[str, str]) -> None:
    path.write_text(json.dumps(jwk, indent=2) + "\n", encoding="utf-8")


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Load a bearer's private key, refusing one that other users can read."""
    try:
        mode = path.stat().st_mode
        pem = path.read_bytes()
    except OSError as error:
        message = f"cannot read key file {path}: {error.strerror}"
        raise KeyFileError(message) from error

    if pem.lstrip().startswith(b"{"):
        message = f"{path} is a public key (JWK), not the private key that signs"
        private_name = path.name.removesuffix(".pub.jwk") + ".key"
        raise KeyFileError(message, hint=f"pass the private key file that etlb keygen wrote beside it: {private_name}")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        message = f"key file {path} is readable by other users (mode {stat.S_IMODE(mode):o})"
        raise KeyFileError(message, hint=f"restrict it: chmod 600 {path}")

    try:
        key = serialization.load_pem_private_key(pem, password=passphrase or None)
    except TypeError as error:
        # cryptography raises TypeError both for a missing and for an unexpected passphrase.
        if passphrase:
            message = f"key file {path} is not encrypted, but a passphrase was given"
            raise KeyFileError(message, hint="omit --passphrase-file for this key") from error
        message = f"key file {path} is encrypted and no passphrase was given"
        raise KeyFileError(message, hint="pass --passphrase-file FILE") from error
    except ValueError as error:
        message = f"cannot load key file {path}: wrong passphrase or not a PEM private key"
        raise KeyFileError(message) from error

    if not isinstance(key, Ed25519PrivateKey):
        message = f"key file {path} holds a key of type {type(key).__name__}; etlb signs with Ed25519 keys only"
        raise KeyFileError(message, hint="create one with: etlb keygen --out NAME.key")
    return key


def load_public_jwk(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        message = f"cannot read public key file {path}: {error.strerror}"
        raise KeyFileError(message) from error
    except json.JSONDecodeError as error:
        message = f"public key file {path} is not JSON: {error}"
        raise KeyFileError(message) from error
    return parse_public_jwk(data)


def sign_payload(private_key: Ed25519PrivateKey, payload: dict[str, Any], *, typ: str) -> str:
    """Sign the canonical JSON of a payload and return a compact JWS with `alg: EdDSA`."""
    jwk = public_jwk(private_key)
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    okp = _okp_key({**jwk, "d": _b64url(raw)})
    header = {"alg": "EdDSA", "kid": key_id(jwk), "typ": typ}
    return jws.serialize_compact(header, canonical_bytes(payload), okp, registry=_REGISTRY)


def read_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode the header and payload of a compact JWS without checking its signature.

    Only for finding the key to verify with; nothing read here may be trusted before `verify_jws`.
    """
    try:
        header_part, payload_part, _ = token.split(".")
        header = json.loads(_b64url_decode(header_part))
        payload = json.loads(_b64url_decode(payload_part))
    except (ValueError, UnicodeDecodeError) as error:
        message = "not a compact JWS: expected three base64url parts holding JSON"
        raise SignatureError(message) from error

    if not isinstance(header, dict) or not isinstance(payload, dict):
        message = "JWS header and payload must both be JSON objects"
        raise SignatureError(message)
    return header, payload


def verify_jws(token: str, jwk: dict[str, str], *, typ: str) -> dict[str, Any]:
    """Verify a compact JWS against one public key and return its payload.

    Raises `SignatureError` for a wrong key, a changed header or payload, an unexpected `typ`, an
    algorithm other than EdDSA/Ed25519, or a payload not in RFC 8785 canonical form.
    """
    header, _ = read_unverified(token)
    if header.get("typ") != typ:
        message = f"JWS typ is {header.get('typ')!r}; expected {typ!r}"
        raise SignatureError(message)
    if header.get("crit"):
        message = f"JWS has critical header members {header['crit']!r} that etlb does not understand"
        raise SignatureError(message)

    try:
        okp = _okp_key(parse_public_jwk(jwk))
    except KeyFileError as error:
        # Checked apart from the signature, because an invalid key has no key id to name.
        message = f"JWS cannot be verified with an invalid public key: {error.message}"
        raise SignatureError(message) from error
    try:
        verified = jws.deserialize_compact(token, okp, registry=_REGISTRY)
    except (JoseError, ValueError) as error:
        message = f"JWS signature does not verify with key {key_id(jwk)}: {error}"
        raise SignatureError(message) from error

    payload = json.loads(verified.payload)
    try:
        canonical = canonical_bytes(payload)
    except ValueError as error:
        # JSON allows values that RFC 8785 cannot write, such as NaN or integers beyond 2**53 - 1.
        message = f"JWS payload has no RFC 8785 canonical form: {error}"
        raise SignatureError(message) from error
    if canonical != verified.payload:
        message = "JWS payload is not RFC 8785 canonical JSON, so its bytes are ambiguous"
        raise SignatureError(message)
    return dict(payload)


def _okp_key(jwk: dict[str, str]) -> OKPKey:
    members: dict[str, str | list[str]] = dict(jwk)
    return OKPKey.import_key(members)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
