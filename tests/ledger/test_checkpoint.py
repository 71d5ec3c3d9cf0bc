"""Signed checkpoints: the C2SP signed-note layout, verifier keys, forged notes and an independent verifier.

The independent verifier is tlog-scales, a Python implementation of C2SP signed notes and
checkpoints. It verifies the notes the gate signs, and the gate verifies the notes it signs.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from tlog_scales.signing import PlainEd25519Signer, Vkey
from tlog_scales.tlog import Checkpoint as OracleCheckpoint

from etlb.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    checkpoint_text,
    parse_verifier_key,
    verify_checkpoint,
)
from etlb.model import ToolCall
from tests.conftest import PAYMENTS_CONFIG, build_world

ORIGIN = "etlb/test-log"
ROOT = bytes(range(32))
EM_DASH = "\u2014"


def seeded_key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def expected_key_hash(name: str, key: Ed25519PrivateKey) -> bytes:
    """Compute the C2SP signed-note key hash of an Ed25519 key without etlb's code."""
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + raw_public(key)).digest()[:4]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sign_text(key: Ed25519PrivateKey, name: str, text: str, key_hash: bytes | None = None) -> str:
    """Assemble a signed note over `text` by hand, for bodies the gate would never sign."""
    blob = (key_hash or expected_key_hash(name, key)) + key.sign(text.encode())
    return f"{text}\n{EM_DASH} {name} {b64(blob)}\n"


def verifier_text(name: str, key: Ed25519PrivateKey, type_byte: bytes = b"\x01") -> str:
    return f"{name}+{expected_key_hash(name, key).hex()}+{b64(type_byte + raw_public(key))}"


def key_with_plus() -> Ed25519PrivateKey:
    """Return the first seeded key whose verifier key base64 contains '+', the verifier key separator."""
    for number in range(1000):
        key = seeded_key(f"plus-{number}")
        if "+" in b64(b"\x01" + raw_public(key)):
            return key
    raise AssertionError("no seeded key has a '+' in its base64 encoding")


GATE_KEY = seeded_key("gate")
OTHER_KEY = seeded_key("other")
BODY = f"{ORIGIN}\n7\n{b64(ROOT)}\n"
GATE_HASH_HEX = expected_key_hash(ORIGIN, GATE_KEY).hex()
GATE_KEY_B64 = b64(b"\x01" + raw_public(GATE_KEY))


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(GATE_KEY, ORIGIN)


@pytest.fixture
def note(signer: CheckpointSigner) -> str:
    return signer.sign(7, ROOT)


# signing and layout


def test_sign_then_verify(signer: CheckpointSigner, note: str) -> None:
    checkpoint = verify_checkpoint(note, signer.verifier)

    assert checkpoint == Checkpoint(origin=ORIGIN, size=7, root=ROOT, extensions=(), note=note)


def test_checkpoint_text_layout() -> None:
    assert checkpoint_text(ORIGIN, 7, ROOT) == BODY
    assert checkpoint_text("log", 0, bytes(32)) == "log\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"


def test_note_lines(note: str) -> None:
    lines = note.split("\n")

    assert lines[:4] == [ORIGIN, "7", b64(ROOT), ""]
    assert lines[4].startswith(f"{EM_DASH} {ORIGIN} ")
    assert lines[5:] == [""]


def test_note_signature_blob(note: str) -> None:
    blob = base64.b64decode(note.split("\n")[4].split(" ")[2], validate=True)

    assert len(blob) == 4 + 64
    assert blob[:4] == expected_key_hash(ORIGIN, GATE_KEY)
    GATE_KEY.public_key().verify(blob[4:], BODY.encode())


def test_note_matches_hand_signed(note: str) -> None:
    # Ed25519 signatures are deterministic, so the whole note can be compared byte for byte.
    assert note == sign_text(GATE_KEY, ORIGIN, BODY)


def test_signer_key_hash(signer: CheckpointSigner) -> None:
    assert signer.verifier.key_hash == expected_key_hash(ORIGIN, GATE_KEY)


def test_verifier_key_text(signer: CheckpointSigner) -> None:
    assert str(signer.verifier) == verifier_text(ORIGIN, GATE_KEY)


def test_signer_rejects_bad_origin() -> None:
    with pytest.raises(CheckpointError, match=r"note key name 'etlb\+log' is invalid"):
        CheckpointSigner(GATE_KEY, "etlb+log")


def test_extension_lines_kept() -> None:
    text = f"{BODY}extension one\n"
    note = sign_text(GATE_KEY, ORIGIN, text)

    checkpoint = verify_checkpoint(note, parse_verifier_key(verifier_text(ORIGIN, GATE_KEY)))

    assert checkpoint.extensions == ("extension one",)
    assert checkpoint.size == 7


# verifier keys


def test_verifier_key_round_trip(signer: CheckpointSigner) -> None:
    parsed = parse_verifier_key(f"{signer.verifier}\n")

    assert parsed.name == ORIGIN
    assert parsed.key_hash == expected_key_hash(ORIGIN, GATE_KEY)
    assert parsed.public_key.public_bytes_raw() == raw_public(GATE_KEY)
    assert str(parsed) == str(signer.verifier)


def test_verifier_key_with_plus() -> None:
    key = key_with_plus()
    text = verifier_text(ORIGIN, key)

    parsed = parse_verifier_key(text)

    assert text.count("+") > 2
    assert parsed.public_key.public_bytes_raw() == raw_public(key)
    assert str(parsed) == text
    assert verify_checkpoint(CheckpointSigner(key, ORIGIN).sign(3, ROOT), parsed).size == 3


BAD_KEYS = [
    pytest.param(
        f"{ORIGIN}+00000000+{GATE_KEY_B64}",
        f"verifier key for '{ORIGIN}' has key hash 00000000, which does not match its key",
        id="wrong-hash",
    ),
    pytest.param(
        verifier_text(ORIGIN, GATE_KEY, type_byte=b"\x04"),
        f"verifier key for '{ORIGIN}' is not an Ed25519 signed-note key",
        id="wrong-type-byte",
    ),
    pytest.param(
        f"{ORIGIN}+{GATE_HASH_HEX}+{b64(raw_public(GATE_KEY))}",
        f"verifier key for '{ORIGIN}' is not an Ed25519 signed-note key",
        id="missing-type-byte",
    ),
    pytest.param(
        f"{ORIGIN}+{GATE_HASH_HEX[:6]}+{GATE_KEY_B64}",
        f"verifier key for '{ORIGIN}' is not an Ed25519 signed-note key",
        id="short-hash",
    ),
    pytest.param(
        f"{ORIGIN}+{GATE_HASH_HEX}+not*base64",
        f"verifier key for '{ORIGIN}' is not valid hex and base64",
        id="bad-base64",
    ),
    pytest.param(
        f"{ORIGIN}+zzzzzzzz+{GATE_KEY_B64}",
        f"verifier key for '{ORIGIN}' is not valid hex and base64",
        id="bad-hex",
    ),
    pytest.param(
        verifier_text("etlb log", GATE_KEY),
        "the verifier key is not of the form NAME+HASH+KEY",
        id="name-with-space",
    ),
    pytest.param(
        # The first '+' ends the name, so the rest of a name with '+' is read as the key hash.
        verifier_text("etlb+log", GATE_KEY),
        "verifier key for 'etlb' is not valid hex and base64",
        id="name-with-plus",
    ),
    pytest.param(
        verifier_text("", GATE_KEY),
        "note key name '' is invalid",
        id="empty-name",
    ),
    pytest.param(ORIGIN, "the verifier key is not of the form NAME+HASH+KEY", id="no-separators"),
    pytest.param(
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2Vw+BCIEIA+secret\n-----END PRIVATE KEY-----\n",
        "the verifier key is not of the form NAME+HASH+KEY, as in the gate's etlb-gate.pub file",
        id="private-key-file",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_KEYS)
def test_bad_verifier_key(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=re.escape(message)) as caught:
        parse_verifier_key(text)

    assert "secret" not in str(caught.value)


# forged and malformed notes


def replace_once(note: str, old: str, new: str) -> str:
    assert note.count(old) == 1, f"{old!r} occurs {note.count(old)} times in the note"
    return note.replace(old, new)


def signature_line(note: str) -> str:
    return note.split("\n")[4]


def signature_blob(note: str) -> bytes:
    return base64.b64decode(signature_line(note).split(" ")[2])


def with_last_character_bumped(encoded: str) -> str:
    """Change the last base64 character before the padding so that it decodes to the same bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stripped = encoded.rstrip("=")
    last = alphabet.index(stripped[-1])
    return stripped[:-1] + alphabet[last ^ 1] + encoded[len(stripped) :]


def forged_by_other_key_with_our_hash(note: str) -> str:
    blob = expected_key_hash(ORIGIN, GATE_KEY) + OTHER_KEY.sign(BODY.encode())
    return replace_once(note, signature_line(note), f"{EM_DASH} {ORIGIN} {b64(blob)}")


def non_canonical_signature(note: str) -> str:
    encoded = signature_line(note).split(" ")[2]
    assert base64.b64decode(with_last_character_bumped(encoded)) == base64.b64decode(encoded)
    return replace_once(note, encoded, with_last_character_bumped(encoded))


NO_SIGNATURE = f"checkpoint has no signature by {ORIGIN} with key hash {GATE_HASH_HEX}"
NOT_VERIFIED = f"checkpoint signature by {ORIGIN} does not verify: the note was changed or forged"
BAD_SIZE = "is not a decimal number without leading zeros"

FORGERIES: list[object] = [
    pytest.param(lambda note: replace_once(note, "\n7\n", "\n8\n"), NOT_VERIFIED, id="changed-size"),
    pytest.param(lambda note: replace_once(note, b64(ROOT), b64(bytes(32))), NOT_VERIFIED, id="changed-root"),
    pytest.param(lambda note: replace_once(note, f"{ORIGIN}\n7", "etlb/other\n7"), NOT_VERIFIED, id="changed-origin"),
    pytest.param(lambda note: sign_text(OTHER_KEY, ORIGIN, BODY), NO_SIGNATURE, id="signed-by-other-key"),
    pytest.param(forged_by_other_key_with_our_hash, NOT_VERIFIED, id="other-key-claims-our-hash"),
    pytest.param(lambda note: note.replace(ORIGIN + " ", "etlb/other "), NO_SIGNATURE, id="other-signer-name"),
    pytest.param(
        lambda note: replace_once(note, signature_line(note), signature_line(note)[:-4]),
        NOT_VERIFIED,
        id="signature-truncated-whole-groups",
    ),
    pytest.param(
        lambda note: replace_once(note, signature_line(note), signature_line(note)[:-10]),
        f"checkpoint signature by '{ORIGIN}' is not valid base64",
        id="signature-truncated-mid-group",
    ),
    pytest.param(
        lambda note: replace_once(note, signature_line(note), f"{EM_DASH} {ORIGIN} {b64(signature_blob(note)[:4])}"),
        NOT_VERIFIED,
        id="signature-only-key-hash",
    ),
    pytest.param(non_canonical_signature, f"checkpoint signature by {ORIGIN} is not in canonical base64", id="sig-b64"),
    pytest.param(
        lambda note: replace_once(note, "=\n\n", "=\n"),
        "checkpoint note has no signature block after a blank line",
        id="missing-blank-line",
    ),
    pytest.param(
        lambda note: note[:-1],
        "checkpoint note has no signature block after a blank line",
        id="missing-final-newline",
    ),
    pytest.param(
        lambda note: replace_once(note, f"{EM_DASH} ", "- "),
        "' does not start with an em dash and a space",
        id="hyphen-not-em-dash",
    ),
    pytest.param(lambda note: "", "checkpoint note has no signature block after a blank line", id="empty"),
    pytest.param(
        lambda note: "x" * ((1 << 20) + 1),
        "checkpoint note of 1048577 characters is larger than 1048576",
        id="too-large",
    ),
    pytest.param(
        lambda note: sign_text(GATE_KEY, ORIGIN, f"{ORIGIN}\n007\n{b64(ROOT)}\n"),
        f"checkpoint tree size '007' {BAD_SIZE}",
        id="leading-zeros",
    ),
    pytest.param(
        lambda note: sign_text(GATE_KEY, ORIGIN, f"{ORIGIN}\n-7\n{b64(ROOT)}\n"),
        f"checkpoint tree size '-7' {BAD_SIZE}",
        id="negative-size",
    ),
    pytest.param(
        lambda note: sign_text(GATE_KEY, ORIGIN, f"{ORIGIN}\n\u0667\n{b64(ROOT)}\n"),
        f"checkpoint tree size '\u0667' {BAD_SIZE}",
        id="arabic-indic-digit",
    ),
    pytest.param(
        lambda note: sign_text(GATE_KEY, ORIGIN, f"{ORIGIN}\n\u00b2\n{b64(ROOT)}\n"),
        f"checkpoint tree size '\u00b2' {BAD_SIZE}",
        id="superscript-digit",
    ),
    pytest.param(
        lambda note: sign_text(GATE_KEY, ORIGIN, f"{ORIGIN}\n7\n{b64(ROOT[:31])}\n"),
        "checkpoint root hash has 31 bytes; expected 32",
        id="short-root",
    ),
    pytest.param(
        lambda note: sign_text(GATE_KEY, ORIGIN, f"{ORIGIN}\n7\n{b64(ROOT)[:-1]}!\n"),
        f"checkpoint root hash '{b64(ROOT)[:-1]}!' is not valid base64",
        id="root-not-base64",
    ),
    pytest.param(
        lambda note: sign_text(GATE_KEY, ORIGIN, f"{ORIGIN}\n7\n"),
        "checkpoint body has 2 lines; expected origin, tree size and root hash",
        id="two-line-body",
    ),
]


@pytest.mark.parametrize(("forge", "message"), FORGERIES)
def test_forged_note_rejected(signer: CheckpointSigner, note: str, forge: Callable[[str], str], message: str) -> None:
    with pytest.raises(CheckpointError, match=re.escape(message)):
        verify_checkpoint(forge(note), signer.verifier)


def test_unknown_cosigner_accepted(signer: CheckpointSigner, note: str) -> None:
    cosigned = note + sign_text(OTHER_KEY, "witness.example/w1", BODY).split("\n\n")[1]

    checkpoint = verify_checkpoint(cosigned, signer.verifier)

    assert cosigned.count(EM_DASH) == 2
    assert checkpoint.size == 7
    assert checkpoint.root == ROOT


def test_cosigner_line_first_accepted(signer: CheckpointSigner, note: str) -> None:
    witness_line = sign_text(OTHER_KEY, "witness.example/w1", BODY).split("\n\n")[1]
    cosigned = note.replace("\n\n", "\n\n" + witness_line)

    assert verify_checkpoint(cosigned, signer.verifier).size == 7


# independent verifier: tlog-scales


def test_oracle_verifies_note(signer: CheckpointSigner, note: str) -> None:
    parsed = OracleCheckpoint.from_text(note)

    parsed.verify(Vkey.from_string(str(signer.verifier)))

    assert (parsed.origin, parsed.size, parsed.root_hash) == (ORIGIN, 7, ROOT)


def test_oracle_verifier_key_matches(signer: CheckpointSigner) -> None:
    oracle_key = Vkey(ORIGIN, None, 1, raw_public(GATE_KEY))

    assert oracle_key.serialize() == str(signer.verifier)
    assert oracle_key.key_id == int.from_bytes(signer.verifier.key_hash, "big")


def test_oracle_rejects_changed_size(signer: CheckpointSigner, note: str) -> None:
    parsed = OracleCheckpoint.from_text(note.replace("\n7\n", "\n8\n"))

    with pytest.raises(InvalidSignature):
        parsed.verify(Vkey.from_string(str(signer.verifier)))


def test_oracle_note_verified(signer: CheckpointSigner, note: str) -> None:
    oracle_note = OracleCheckpoint.make_signed(ORIGIN, 7, ROOT, [PlainEd25519Signer(ORIGIN, GATE_KEY)]).serialize()

    assert verify_checkpoint(oracle_note, signer.verifier).root == ROOT
    assert oracle_note == note


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=0, max_value=2**63 - 1), root=st.binary(min_size=32, max_size=32))
def test_oracle_agrees_on_any_head(size: int, root: bytes) -> None:
    signer = CheckpointSigner(GATE_KEY, ORIGIN)
    note = signer.sign(size, root)
    parsed = OracleCheckpoint.from_text(note)

    parsed.verify(Vkey.from_string(str(signer.verifier)))

    assert (parsed.size, parsed.root_hash) == (size, root)
    assert verify_checkpoint(note, signer.verifier) == Checkpoint(ORIGIN, size, root, (), note)


def test_oracle_verifies_gate_checkpoints(tmp_path: Path) -> None:
    world = build_world(tmp_path, PAYMENTS_CONFIG)
    try:
        world.add_bearer("alice")
        world.declare("alice", kinds=["git.commit"])
        with world.gate.execution(ToolCall(tool="git_commit", server="git", arguments={"repo_path": "/srv/app"})):
            pass
        stored = list(world.gate.store.checkpoints())
        size, root = world.gate.store.tree_head()
    finally:
        world.gate.close()
    oracle_key = Vkey.from_string((tmp_path / "etlb-gate.pub").read_text().strip())

    parsed = [OracleCheckpoint.from_text(note) for _, note in stored]
    for checkpoint in parsed:
        checkpoint.verify(oracle_key)

    assert [checkpoint.size for checkpoint in parsed] == [1, 2, 3, 4]
    assert [stored_size for stored_size, _ in stored] == [1, 2, 3, 4]
    assert (parsed[-1].size, parsed[-1].root_hash) == (size, root)
