"""Signed declarations: the JSON payloads bearers sign for scopes and revocations, and their parsing.

No I/O. A declaration is only trusted after `etlb.signing.verify_jws` checked it against a key
registered to its bearer; this module builds payloads and turns verified payloads into records.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

from etlb.canonical import sha256_digest, sha256_hex
from etlb.conditions import check_condition
from etlb.errors import DeclarationError
from etlb.model import Limits, Scope, format_time, parse_time

__all__ = [
    "REVOCATION_TYP",
    "REVOCATION_TYPE",
    "SCOPE_TYP",
    "SCOPE_TYPE",
    "revocation_payload",
    "scope_from_payload",
    "scope_id_for",
    "scope_payload",
    "terms_digest",
]

SCOPE_TYPE = "etlb.scope.v1"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
SCOPE_TYP = "etlb-scope+jws"
REVOCATION_TYPE = "etlb.revocation.v1"
REVOCATION_TYP = "etlb-revocation+jws"


def terms_digest(terms: str) -> str:
    """Digest of the exact terms text the bearer was shown, bound into the signed payload."""
    return sha256_digest(terms)


def scope_id_for(jws: str) -> str:
    """Derive a scope id from the signed token, so that an id names exactly one signed declaration."""
    return "scope-" + sha256_hex(jws.encode("ascii"))[:32]


def scope_payload(
    *,
    bearer: str,
    kinds: list[str],
    resources: list[str],
    agents: list[str],
    limits: Limits,
    valid_from: datetime,
    valid_until: datetime,
    terms: str,
    domain: str = "",
    issued_at: datetime,
    when: str | None = None,
    definitions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build the payload a bearer signs to declare a scope, after checking it is well formed."""
    payload: dict[str, Any] = {
        "type": SCOPE_TYPE,
        "bearer": bearer,
        "kinds": kinds,
        "resources": resources,
        "agents": agents,
        "limits": limits.to_json(),
        "valid_from": format_time(valid_from),
        "valid_until": format_time(valid_until),
        "domain": domain,
        "terms": terms,
        "terms_digest": terms_digest(terms),
        "issued_at": format_time(issued_at),
        "nonce": secrets.token_hex(16),
    }
    # Optional fields are written only when set, so that older verifiers read plain scopes unchanged.
    if when:
        payload["when"] = when
    if definitions:
        payload["definitions"] = definitions
    _check_scope_payload(payload)
    return payload


def scope_from_payload(payload: dict[str, Any], *, jws: str, key_id: str) -> Scope:
    """Turn a verified scope payload into a `Scope`; raises `DeclarationError` naming the bad field."""
    _check_scope_payload(payload)
    try:
        limits = Limits.from_json(payload["limits"])
        valid_from = parse_time(payload["valid_from"])
        valid_until = parse_time(payload["valid_until"])
    except (ValueError, TypeError) as error:
        message = f"scope declaration is invalid: {error}"
        raise DeclarationError(message) from error

    return Scope(
        id=scope_id_for(jws),
        bearer=payload["bearer"],
        key_id=key_id,
        kinds=tuple(payload["kinds"]),
        resources=tuple(payload["resources"]),
        agents=tuple(payload["agents"]),
        limits=limits,
        valid_from=valid_from,
        valid_until=valid_until,
        domain=payload["domain"],
        terms=payload["terms"],
        jws=jws,
        when=payload.get("when"),
        definitions=dict(payload.get("definitions", {})),
    )


def revocation_payload(*, scope_id: str, bearer: str, reason: str, issued_at: datetime) -> dict[str, Any]:
    return {
        "type": REVOCATION_TYPE,
        "scope_id": scope_id,
        "bearer": bearer,
        "reason": reason,
        "issued_at": format_time(issued_at),
    }


def _check_scope_payload(payload: dict[str, Any]) -> None:
    if payload.get("type") != SCOPE_TYPE:
        message = f"scope declaration has type {payload.get('type')!r}; expected {SCOPE_TYPE!r}"
        raise DeclarationError(message)

    for name in ("bearer", "terms", "domain", "valid_from", "valid_until", "terms_digest"):
        if not isinstance(payload.get(name), str):
            message = f"scope declaration field {name!r} must be a string, got {payload.get(name)!r}"
            raise DeclarationError(message)
    if not payload["bearer"]:
        raise DeclarationError("scope declaration has an empty bearer id")
    if not payload["terms"].strip():
        message = "scope declaration has no terms text; the bearer must be shown what they accept"
        raise DeclarationError(message, hint="pass --terms with the text the bearer agrees to")
    if payload["terms_digest"] != terms_digest(payload["terms"]):
        raise DeclarationError("scope terms_digest does not match the terms text")

    for name in ("kinds", "resources", "agents"):
        patterns = payload.get(name)
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
            message = f"scope declaration field {name!r} must be a non-empty list of patterns, got {patterns!r}"
            raise DeclarationError(message, hint=f"give at least one --{name[:-1]} pattern")

    when = payload.get("when")
    if when is not None:
        if not isinstance(when, str) or not when.strip():
            raise DeclarationError(f"scope condition 'when' must be a non-empty string, got {when!r}")
        check_condition(when)
    definitions = payload.get("definitions", {})
    if not isinstance(definitions, dict) or not all(
        isinstance(name, str) and "/" in name and isinstance(digest, str) and _DIGEST.fullmatch(digest)
        for name, digest in definitions.items()
    ):
        message = f"scope definitions must map 'server/tool' to 'sha256:<64 hex>', got {definitions!r}"
        raise DeclarationError(message, hint="get the digests with: etlb mcp-tools -- COMMAND")

    if not isinstance(payload.get("limits"), dict):
        raise DeclarationError("scope declaration field 'limits' must be an object")
    try:
        valid_from = parse_time(payload["valid_from"])
        valid_until = parse_time(payload["valid_until"])
    except ValueError as error:
        raise DeclarationError(str(error)) from error
    if valid_until <= valid_from:
        message = f"scope valid_until {payload['valid_until']} is not after valid_from {payload['valid_from']}"
        raise DeclarationError(message)
