"""Canonical JSON (RFC 8785, the JSON Canonicalization Scheme) and the digests built on it.

Signatures, action digests and ledger hashes are all taken over these bytes, so two parties who hold
the same JSON value compute the same digest whatever their JSON library does with key order or
whitespace. The `rfc8785` package implements the scheme; this module only fixes how etlb uses it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

__all__ = ["canonical_bytes", "sha256_digest", "sha256_hex"]


def canonical_bytes(value: Any) -> bytes:
    """Serialise a JSON value as RFC 8785 bytes.

    Raises `ValueError` for a value JSON cannot hold (a set, a `Decimal`, NaN, a lone surrogate, an
    integer outside the I-JSON range of ±(2**53 - 1)) instead of guessing a representation.
    """
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError) as error:
        message = f"value cannot be written as canonical JSON: {error}"
        raise ValueError(message) from error


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_digest(value: Any) -> str:
    """Return `sha256:<hex>` over the canonical JSON of a value."""
    return "sha256:" + sha256_hex(canonical_bytes(value))
