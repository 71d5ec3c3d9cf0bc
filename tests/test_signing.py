"""Ed25519 keys, key files and EdDSA JWS verification.

Bad tokens are built by hand (base64url parts signed with `cryptography`), so that each case changes
exactly one thing that `sign_payload` would never produce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.jwk import OKPKey

from etlb.declarations import REVOCATION_TYP, SCOPE_TYP
from etlb.errors import KeyFileError, SignatureError
from etlb.signing import (
    generate_private_key,
    key_id,
    load_private_key,
    load_public_jwk,
    parse_public_jwk,
    public_jwk,
    read_unverified,
    sign_payload,
    verify_jws,
    write_private_key,
    write_public_jwk,
)

PAYLOAD = {"type": "etlb.scope.v1", "bearer": "alice", "kinds": ["payments.transfer"]}
CANONICAL_PAYLOAD = b'{"bearer":"alice","kinds":["payments.transfer"],"type":"etlb.scope.v1"}'

# RFC 8037 Appendix A.1 private key and A.3 thumbprint of its public key.
RFC_8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC_8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC_8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"

# Every case below is signed by these module-wide keys, which keeps the table readable.
SIGNER = generate_private_key()
OTHER_SIGNER = generate_private_key()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def hand_signed(header: dict[str, Any], payload: bytes, key: Ed25519PrivateKey = SIGNER) -> str:
    """Build a compact JWS by hand, signed with Ed25519 over the exact header and payload given."""
    signing_input = f"{b64url_json(header)}.{b64url(payload)}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


def raw_private_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def replace_part(token: str, index: int, part: str) -> str:
    parts = token.split(".")
    parts[index] = part
    return ".".join(parts)


# Token builders for the case table


def token_eddsa() -> str:
    return sign_payload(SIGNER, PAYLOAD, typ=SCOPE_TYP)


def token_ed25519_alg_name() -> str:
    okp = OKPKey.import_key({**public_jwk(SIGNER), "d": b64url(raw_private_bytes(SIGNER))})
    header = {"alg": "Ed25519", "typ": SCOPE_TYP}
    return jws.serialize_compact(header, CANONICAL_PAYLOAD, okp, algorithms=["Ed25519"])


def token_hand_signed_eddsa() -> str:
    return hand_signed({"alg": "EdDSA", "typ": SCOPE_TYP}, CANONICAL_PAYLOAD)


def token_wrong_key() -> str:
    return sign_payload(OTHER_SIGNER, PAYLOAD, typ=SCOPE_TYP)


def token_changed_payload() -> str:
    changed = CANONICAL_PAYLOAD.replace(b"alice", b"mallory")
    return replace_part(token_eddsa(), 1, b64url(changed))


def token_changed_header() -> str:
    header, _ = read_unverified(token_eddsa())
    return replace_part(token_eddsa(), 0, b64url_json({**header, "kid": "another-key"}))


def token_alg_none() -> str:
    header = b64url_json({"alg": "none", "typ": SCOPE_TYP})
    return f"{header}.{b64url(CANONICAL_PAYLOAD)}."


def token_alg_hs256() -> str:
    # The classic confusion attack: an HMAC keyed with the public key's text.
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': SCOPE_TYP})}.{b64url(CANONICAL_PAYLOAD)}"
    secret = public_jwk(SIGNER)["x"].encode("ascii")
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def token_revocation_typ() -> str:
    return sign_payload(SIGNER, PAYLOAD, typ=REVOCATION_TYP)


def token_without_typ() -> str:
    return hand_signed({"alg": "EdDSA"}, CANONICAL_PAYLOAD)


def token_spaced_payload() -> str:
    return hand_signed({"alg": "EdDSA", "typ": SCOPE_TYP}, json.dumps(PAYLOAD).encode("utf-8"))


def token_unsorted_payload() -> str:
    return hand_signed({"alg": "EdDSA", "typ": SCOPE_TYP}, b'{"type":"etlb.scope.v1","bearer":"alice"}')


def token_nan_payload() -> str:
    return hand_signed({"alg": "EdDSA", "typ": SCOPE_TYP}, b'{"bearer":"alice","limit":NaN}')


def token_big_integer_payload() -> str:
    return hand_signed({"alg": "EdDSA", "typ": SCOPE_TYP}, b'{"bearer":"alice","limit":9007199254740993}')


def token_crit_header() -> str:
    return hand_signed({"alg": "EdDSA", "typ": SCOPE_TYP, "crit": ["exp"], "exp": 1}, CANONICAL_PAYLOAD)


def token_truncated_signature() -> str:
    return token_eddsa()[:-8]


def token_two_parts() -> str:
    header, payload, _ = token_eddsa().split(".")
    return f"{header}.{payload}"


def token_array_payload() -> str:
    return hand_signed({"alg": "EdDSA", "typ": SCOPE_TYP}, b'["alice"]')


def token_not_base64_json() -> str:
    return "not.a.token"


GOOD_TOKENS = [
    pytest.param(token_eddsa, id="eddsa-from-sign-payload"),
    pytest.param(token_ed25519_alg_name, id="ed25519-alg-name"),
    pytest.param(token_hand_signed_eddsa, id="eddsa-hand-signed"),
]

BAD_TOKENS = [
    pytest.param(token_wrong_key, r"does not verify with key .*: bad_signature", id="wrong-key"),
    pytest.param(token_changed_payload, r"does not verify with key .*: bad_signature", id="changed-payload"),
    pytest.param(token_changed_header, r"does not verify with key .*: bad_signature", id="changed-header"),
    pytest.param(token_alg_none, r"'none' is not allowed", id="alg-none"),
    pytest.param(token_alg_hs256, r"'HS256' is not allowed", id="alg-hs256"),
    pytest.param(
        token_revocation_typ, r"JWS typ is 'etlb-revocation\+jws'; expected 'etlb-scope\+jws'", id="wrong-typ"
    ),
    pytest.param(token_without_typ, r"JWS typ is None; expected 'etlb-scope\+jws'", id="missing-typ"),
    pytest.param(token_spaced_payload, r"payload is not RFC 8785 canonical JSON", id="spaced-payload"),
    pytest.param(token_unsorted_payload, r"payload is not RFC 8785 canonical JSON", id="unsorted-payload"),
    pytest.param(token_nan_payload, r"payload has no RFC 8785 canonical form: .*nan", id="nan-payload"),
    pytest.param(token_big_integer_payload, r"payload has no RFC 8785 canonical form", id="big-integer-payload"),
    pytest.param(token_crit_header, r"critical header members \['exp'\]", id="crit-header"),
    pytest.param(token_truncated_signature, r"does not verify with key", id="truncated-signature"),
    pytest.param(token_two_parts, r"not a compact JWS: expected three base64url parts", id="two-parts"),
    pytest.param(token_array_payload, r"header and payload must both be JSON objects", id="array-payload"),
    pytest.param(token_not_base64_json, r"not a compact JWS", id="not-base64-json"),
]


@pytest.mark.parametrize("build", GOOD_TOKENS)
def test_good_token_verifies(build: Callable[[], str]) -> None:
    payload = verify_jws(build(), public_jwk(SIGNER), typ=SCOPE_TYP)

    assert payload == PAYLOAD


@pytest.mark.parametrize(("build", "error"), BAD_TOKENS)
def test_bad_token_rejected(build: Callable[[], str], error: str) -> None:
    token = build()

    with pytest.raises(SignatureError, match=error):
        verify_jws(token, public_jwk(SIGNER), typ=SCOPE_TYP)


def test_signed_header_members() -> None:
    header, _ = read_unverified(token_eddsa())

    assert header == {"alg": "EdDSA", "kid": key_id(public_jwk(SIGNER)), "typ": SCOPE_TYP}


def test_signed_payload_is_canonical() -> None:
    payload_part = token_eddsa().split(".")[1]

    assert base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4)) == CANONICAL_PAYLOAD


def test_verify_with_invalid_jwk() -> None:
    with pytest.raises(SignatureError, match="invalid public key: public key member x='AAAA' is not a valid"):
        verify_jws(token_eddsa(), {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, typ=SCOPE_TYP)


# Keys and key ids


def rfc_8037_private_key() -> Ed25519PrivateKey:
    raw = base64.urlsafe_b64decode(RFC_8037_D + "=")
    return Ed25519PrivateKey.from_private_bytes(raw)


def test_public_jwk_rfc_8037() -> None:
    assert public_jwk(rfc_8037_private_key()) == {"kty": "OKP", "crv": "Ed25519", "x": RFC_8037_X}


def test_key_id_rfc_8037_thumbprint() -> None:
    assert key_id({"kty": "OKP", "crv": "Ed25519", "x": RFC_8037_X}) == RFC_8037_THUMBPRINT


def test_key_id_ignores_extra_members() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC_8037_X, "kid": "mine", "use": "sig"}

    assert key_id(jwk) == RFC_8037_THUMBPRINT


def test_parse_jwk_keeps_public_members() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC_8037_X, "kid": "mine"}

    assert parse_public_jwk(jwk) == {"kty": "OKP", "crv": "Ed25519", "x": RFC_8037_X}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(["not", "an", "object"], "must be a JSON object, got list", id="list"),
        pytest.param({"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}, "kty='EC' crv='P-256'", id="ec-key"),
        pytest.param({"kty": "OKP", "crv": "Ed448", "x": "a"}, "kty='OKP' crv='Ed448'", id="ed448-key"),
        pytest.param(
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}, "x='AAAA' is not a valid Ed25519 key", id="short-x"
        ),
        pytest.param({"kty": "OKP", "crv": "Ed25519"}, "x=None is not a valid Ed25519 key", id="missing-x"),
        pytest.param(
            {"kty": "OKP", "crv": "Ed25519", "x": RFC_8037_X, "d": RFC_8037_D},
            "contains a private key member 'd'",
            id="private-member",
        ),
    ],
)
def test_parse_jwk_rejected(data: Any, error: str) -> None:
    with pytest.raises(KeyFileError, match=error):
        parse_public_jwk(data)


# Key files


def test_key_file_mode_600(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    write_private_key(path, SIGNER, None)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    write_private_key(path, SIGNER, None)

    assert public_jwk(load_private_key(path)) == public_jwk(SIGNER)


def test_encrypted_key_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    write_private_key(path, SIGNER, b"correct horse")

    assert public_jwk(load_private_key(path, b"correct horse")) == public_jwk(SIGNER)


def test_encrypted_key_is_encrypted_pem(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    write_private_key(path, SIGNER, b"correct horse")

    assert path.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_existing_key_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    path.write_text("old content")

    with pytest.raises(KeyFileError, match="already exists"):
        write_private_key(path, SIGNER, None)

    assert path.read_text() == "old content"


def test_key_readable_by_group_rejected(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    write_private_key(path, SIGNER, None)
    path.chmod(0o644)

    with pytest.raises(KeyFileError, match=r"readable by other users \(mode 644\)") as caught:
        load_private_key(path)

    assert caught.value.hint == f"restrict it: chmod 600 {path}"


def test_encrypted_key_needs_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    write_private_key(path, SIGNER, b"correct horse")

    with pytest.raises(KeyFileError, match="is encrypted and no passphrase was given") as caught:
        load_private_key(path)

    assert caught.value.hint == "pass --passphrase-file FILE"


def test_wrong_passphrase_rejected(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    write_private_key(path, SIGNER, b"correct horse")

    with pytest.raises(KeyFileError, match="wrong passphrase or not a PEM private key"):
        load_private_key(path, b"battery staple")


def test_passphrase_for_plain_key(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    write_private_key(path, SIGNER, None)

    with pytest.raises(KeyFileError, match="is not encrypted, but a passphrase was given"):
        load_private_key(path, b"correct horse")


def test_p256_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p256.key"
    p256 = ec.generate_private_key(ec.SECP256R1())
    pem = p256.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)

    with pytest.raises(KeyFileError, match="etlb signs with Ed25519 keys only") as caught:
        load_private_key(path)

    assert caught.value.hint == "create one with: etlb keygen --out NAME.key"


def test_garbage_key_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.key"
    path.write_text("not a key")
    path.chmod(0o600)

    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"cannot read key file .*: No such file or directory"):
        load_private_key(tmp_path / "missing.key")


def test_public_jwk_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "alice.pub.jwk"
    write_public_jwk(path, public_jwk(SIGNER))

    assert load_public_jwk(path) == public_jwk(SIGNER)


def test_public_file_with_d_rejected(tmp_path: Path) -> None:
    path = tmp_path / "alice.pub.jwk"
    jwk = {**public_jwk(SIGNER), "d": b64url(raw_private_bytes(SIGNER))}
    path.write_text(json.dumps(jwk))

    with pytest.raises(KeyFileError, match="contains a private key member 'd'") as caught:
        load_public_jwk(path)

    assert caught.value.hint == "register the .pub.jwk file that etlb keygen wrote, never the key"


def test_public_file_not_json(tmp_path: Path) -> None:
    path = tmp_path / "alice.pub.jwk"
    path.write_text("-----BEGIN PUBLIC KEY-----")

    with pytest.raises(KeyFileError, match="is not JSON"):
        load_public_jwk(path)


def test_public_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read public key file"):
        load_public_jwk(tmp_path / "missing.pub.jwk")


def test_public_key_passed_as_private_key(tmp_path: Path) -> None:
    path = tmp_path / "alice.pub.jwk"
    write_public_jwk(path, public_jwk(generate_private_key()))

    with pytest.raises(KeyFileError) as caught:
        load_private_key(path)

    assert str(caught.value) == f"{path} is a public key (JWK), not the private key that signs"
    assert caught.value.hint.endswith("wrote beside it: alice.key")
