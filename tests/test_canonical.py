"""RFC 8785 canonical JSON and the `sha256:` digests built on it.

The vectors come from RFC 8785 itself. They are the sample object of section 3.2.2 with its UTF-8
bytes from section 3.2.4, the property sorting example of section 3.2.3, and the number
serialisation samples of Appendix B, which gives them as IEEE 754 bit patterns.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from decimal import Decimal

import pytest

from etlb.canonical import canonical_bytes, sha256_digest, sha256_hex

# RFC 8785 section 3.2.2, the sample input as JSON text.
RFC_SAMPLE_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""

# RFC 8785 section 3.2.4, the canonical form of the sample in UTF-8, as hex.
RFC_SAMPLE_OUTPUT_HEX = """
7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 75 65 2c 66 61 6c 73 65 5d 2c 22 6e
75 6d 62 65 72 73 22 3a 5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 65 2b 33 30
2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24
5c 75 30 30 30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d
"""

# RFC 8785 section 3.2.3, the sorting example.
RFC_SORTING_INPUT = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""

RFC_SORTED_VALUES = [
    "Carriage Return",
    "One",
    "Control",
    "Latin Small Letter O With Diaeresis",
    "Euro Sign",
    "Emoji: Grinning Face",
    "Hebrew Letter Dalet With Dagesh",
]

# RFC 8785 Appendix B: IEEE 754 binary64 bit patterns and their canonical text.
RFC_NUMBER_SAMPLES = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def double_from_hex(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


def test_rfc_sample_bytes() -> None:
    expected = bytes.fromhex(RFC_SAMPLE_OUTPUT_HEX)

    assert canonical_bytes(json.loads(RFC_SAMPLE_INPUT)) == expected


def test_rfc_sample_text() -> None:
    expected = '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    expected += r'"string":"€$\u000f\nA' + "'" + r'B\"\\\\\"/"}'

    assert canonical_bytes(json.loads(RFC_SAMPLE_INPUT)).decode("utf-8") == expected


def test_rfc_sorting_by_utf16_units() -> None:
    canonical = canonical_bytes(json.loads(RFC_SORTING_INPUT))

    assert list(json.loads(canonical).values()) == RFC_SORTED_VALUES


@pytest.mark.parametrize(("bits", "expected"), RFC_NUMBER_SAMPLES, ids=[bits for bits, _ in RFC_NUMBER_SAMPLES])
def test_rfc_number_sample(bits: str, expected: str) -> None:
    assert canonical_bytes(double_from_hex(bits)) == expected.encode("ascii")


@pytest.mark.parametrize(
    "bits",
    ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"],
    ids=["nan", "infinity", "minus-infinity"],
)
def test_rfc_non_finite_rejected(bits: str) -> None:
    with pytest.raises(ValueError, match="cannot be written as canonical JSON"):
        canonical_bytes(double_from_hex(bits))


def test_keys_sorted_recursively() -> None:
    value = {"b": [1, {"d": 1, "c": 2}], "a": {"z": None, "y": True}}

    assert canonical_bytes(value) == b'{"a":{"y":true,"z":null},"b":[1,{"c":2,"d":1}]}'


def test_array_order_kept() -> None:
    assert canonical_bytes([3, 1, 2]) == b"[3,1,2]"


def test_whitespace_removed() -> None:
    text = '{\n  "b" : [ 1 , 2 ] ,\n\t"a" : { "c" : null }\n}'

    assert canonical_bytes(json.loads(text)) == b'{"a":{"c":null},"b":[1,2]}'


def test_insertion_order_ignored() -> None:
    first = {"kind": "payments.transfer", "amount": {"value": "10", "unit": "EUR"}}
    second = {"amount": {"unit": "EUR", "value": "10"}, "kind": "payments.transfer"}

    assert canonical_bytes(first) == canonical_bytes(second)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\b\t\n\f\r", rb'"\b\t\n\f\r"'),
        ("\x00\x1f", rb'"\u0000\u001f"'),
        ('"\\', rb'"\"\\"'),
        ("/", b'"/"'),
        ("é", b'"\xc3\xa9"'),
        ("\u2028", b'"\xe2\x80\xa8"'),
        ("\U0001f600", b'"\xf0\x9f\x98\x80"'),
    ],
    ids=[
        "short-escapes",
        "control-lowercase-hex",
        "quote-backslash",
        "slash-unescaped",
        "latin-utf8",
        "u2028-raw",
        "emoji-utf8",
    ],
)
def test_string_escapes(text: str, expected: bytes) -> None:
    assert canonical_bytes(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-0.0, b"0"),
        (1.0, b"1"),
        (4.50, b"4.5"),
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        (1e-7, b"1e-7"),
        (2**53 - 1, b"9007199254740991"),
        (-(2**53 - 1), b"-9007199254740991"),
    ],
    ids=[
        "minus-zero",
        "integral-float",
        "trailing-zero",
        "exponent-from-1e21",
        "plain-below-1e21",
        "small-exponent",
        "max-safe-int",
        "min-safe-int",
    ],
)
def test_number_forms(value: float | int, expected: bytes) -> None:
    assert canonical_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "nan is not representable"),
        (float("inf"), "inf is not representable"),
        ({1, 2}, "unsupported type: <class 'set'>"),
        (Decimal("1.5"), "unsupported type: <class 'decimal.Decimal'>"),
        (b"bytes", "unsupported type: <class 'bytes'>"),
        ({1: "a"}, "object keys must be strings"),
        (2**53, "exceeds safe integer domain"),
        (-(2**53), "exceeds safe integer domain"),
        ("\ud800", "non-UTF-8 codepoints"),
    ],
    ids=[
        "nan",
        "infinity",
        "set",
        "decimal",
        "bytes",
        "integer-key",
        "int-above-2-53",
        "int-below-minus-2-53",
        "lone-surrogate",
    ],
)
def test_unrepresentable_value_rejected(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match="cannot be written as canonical JSON") as caught:
        canonical_bytes(value)

    assert reason in str(caught.value)


def test_nested_nan_rejected() -> None:
    with pytest.raises(ValueError, match="nan is not representable"):
        canonical_bytes({"arguments": {"amount": [1, float("nan")]}})


def test_digest_exact_value() -> None:
    expected = "sha256:" + hashlib.sha256(b'{"a":"x","b":[1,true,null]}').hexdigest()

    assert sha256_digest({"b": [1, True, None], "a": "x"}) == expected


def test_digest_of_string() -> None:
    expected = "sha256:" + hashlib.sha256('"I accept €"'.encode()).hexdigest()

    assert sha256_digest("I accept €") == expected


def test_digest_of_rfc_sample() -> None:
    expected = "sha256:" + hashlib.sha256(bytes.fromhex(RFC_SAMPLE_OUTPUT_HEX)).hexdigest()

    assert sha256_digest(json.loads(RFC_SAMPLE_INPUT)) == expected


def test_digest_format() -> None:
    digest = sha256_digest({"kind": "payments.transfer"})

    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)


def test_digest_of_empty_object() -> None:
    assert sha256_digest({}) == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def test_digest_rejects_set() -> None:
    with pytest.raises(ValueError, match="unsupported type"):
        sha256_digest({"tags": {"a"}})


def test_sha256_hex_of_bytes() -> None:
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
