"""Signed declarations: the JSON payloads bearers sign for scopes, revocations and delegations, and their parsing.

A delegation takes two signatures. The delegator signs an offer (`delegation_payload`): the parent
scope's id and a scope for the stand-in, no wider than the parent. The stand-in accepts by signing an
ordinary scope payload with the same fields plus the offer itself (`acceptance_payload`). Only that
scope, signed by the stand-in, can cover anything.

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
from etlb.errors import DeclarationError, SignatureError
from etlb.model import Bearer, Limits, Scope, format_time, parse_time
from etlb.patterns import AGENT_SEPARATOR, KIND_SEPARATOR, RESOURCE_SEPARATOR, pattern_within
from etlb.signing import read_unverified, verify_jws

__all__ = [
    "DELEGATION_TYP",
    "DELEGATION_TYPE",
    "REVOCATION_TYP",
    "REVOCATION_TYPE",
    "SCOPE_TYP",
    "SCOPE_TYPE",
    "acceptance_payload",
    "check_offer",
    "delegation_failure",
    "delegation_payload",
    "narrowing_failure",
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
DELEGATION_TYPE = "etlb.delegation.v1"
DELEGATION_TYP = "etlb-delegation+jws"

# The fields of a scope payload that an offer fixes and its acceptance must repeat unchanged.
_OFFERED_FIELDS = (
    "bearer",
    "kinds",
    "resources",
    "agents",
    "limits",
    "valid_from",
    "valid_until",
    "domain",
    "terms",
    "terms_digest",
    "when",
    "definitions",
    "parent",
    "delegator",
)


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
        parent_id=payload.get("parent"),
        delegator=payload.get("delegator"),
        delegation=payload.get("delegation"),
        action_digest=payload.get("action_digest"),
        approval=payload.get("approval"),
    )


def delegation_payload(
    *,
    parent: Scope,
    delegate: str,
    kinds: list[str],
    resources: list[str],
    agents: list[str],
    limits: Limits,
    valid_from: datetime,
    valid_until: datetime,
    terms: str,
    issued_at: datetime,
    when: str | None = None,
) -> dict[str, Any]:
    """Build the offer a delegator signs to hand part of `parent` to `delegate`; raise if it is wider."""
    fields = scope_payload(
        bearer=delegate,
        kinds=kinds,
        resources=resources,
        agents=agents,
        limits=limits,
        valid_from=valid_from,
        valid_until=valid_until,
        terms=terms,
        domain=parent.domain,
        issued_at=issued_at,
        when=when,
        definitions=dict(parent.definitions) or None,
    )
    payload = {**fields, "type": DELEGATION_TYPE, "parent": parent.id, "delegator": parent.bearer}
    offered = scope_from_payload(fields, jws=".", key_id="")
    failure = narrowing_failure(offered, parent)
    if failure is not None:
        message = f"the delegation would be wider than scope {parent.id}: {failure}"
        raise DeclarationError(message, hint="narrow the delegated kinds, resources, agents, limits or window")
    if delegate == parent.bearer:
        message = f"bearer {delegate} cannot delegate scope {parent.id} to themselves"
        raise DeclarationError(message)
    return payload


def acceptance_payload(offer: dict[str, Any], offer_jws: str, *, issued_at: datetime) -> dict[str, Any]:
    """Build the scope payload a stand-in signs to accept an offer: its fields, and the offer itself."""
    check_offer(offer)
    payload = {name: offer[name] for name in _OFFERED_FIELDS if name in offer}
    payload.update(
        {
            "type": SCOPE_TYPE,
            "issued_at": format_time(issued_at),
            "nonce": secrets.token_hex(16),
            "delegation": offer_jws,
        }
    )
    _check_scope_payload(payload)
    return payload


def check_offer(offer: dict[str, Any]) -> None:
    """Check the shape of a delegation offer; raises `DeclarationError` naming the bad field."""
    if offer.get("type") != DELEGATION_TYPE:
        message = f"delegation offer has type {offer.get('type')!r}; expected {DELEGATION_TYPE!r}"
        raise DeclarationError(message)
    for name in ("parent", "delegator"):
        if not isinstance(offer.get(name), str) or not offer[name]:
            message = f"delegation offer field {name!r} must be a non-empty string, got {offer.get(name)!r}"
            raise DeclarationError(message)
    fields = {name: value for name, value in offer.items() if name not in ("parent", "delegator")}
    _check_scope_payload({**fields, "type": SCOPE_TYPE})


def offer_mismatch(offer: dict[str, Any], accepted: dict[str, Any]) -> str | None:
    """Name the first field where an accepted scope differs from the offer it carries, or None."""
    for name in _OFFERED_FIELDS:
        if offer.get(name) != accepted.get(name):
            return name
    return None


def delegation_failure(scope: Scope, parent: Scope, delegator: Bearer | None) -> str | None:
    """Say why a delegated scope's chain does not hold, or None when it does.

    The offer inside `scope` must be signed by a key registered to `delegator`, the bearer of
    `parent`, and must name `parent` and the stand-in. The stand-in's signed fields must repeat the
    offer, and the scope must be no wider than `parent`. The stand-in's own signature is checked
    separately, as for any scope.
    """
    if scope.parent_id != parent.id or scope.delegation is None:
        return f"scope names parent {scope.parent_id}, not {parent.id}"
    if delegator is None or scope.delegator != parent.bearer or delegator.id != parent.bearer:
        return f"the delegator {scope.delegator} is not {parent.bearer}, the bearer of scope {parent.id}"

    try:
        header, _ = read_unverified(scope.delegation)
        key = delegator.key(str(header.get("kid", "")))
        if key is None:
            return f"the offer is signed with key {header.get('kid')!r}, which is not registered to {delegator.id}"
        offer = verify_jws(scope.delegation, key.public_jwk, typ=DELEGATION_TYP)
        check_offer(offer)
        _, accepted = read_unverified(scope.jws)
    except (DeclarationError, SignatureError) as error:
        return f"the delegation offer is invalid: {error}"

    if offer["parent"] != parent.id or offer["bearer"] != scope.bearer:
        return f"the offer hands scope {offer['parent']} to {offer['bearer']}, not {parent.id} to {scope.bearer}"
    mismatch = offer_mismatch(offer, accepted)
    if mismatch is not None:
        return f"the accepted scope changes the offered field {mismatch!r}"
    return narrowing_failure(scope, parent)


def narrowing_failure(child: Scope, parent: Scope) -> str | None:
    """Say how `child` is wider than `parent`, or None when it is no wider in what a declaration fixes.

    Checked here: kinds, resources and agents (every child pattern inside a parent pattern), the
    validity window, the unit, and the per-action, total and count caps. The parent's `when`
    condition, pinned definitions, rolling windows and remaining budget cannot be compared ahead of
    time; they are enforced at every binding instead, because a binding under a delegated scope must
    also be covered by each of its ancestors.
    """
    for name, separator in (("kinds", KIND_SEPARATOR), ("resources", RESOURCE_SEPARATOR), ("agents", AGENT_SEPARATOR)):
        outer: tuple[str, ...] = getattr(parent, name)
        for pattern in getattr(child, name):
            if not any(pattern_within(pattern, candidate, separator) for candidate in outer):
                return f"{name[:-1]} {pattern} is not inside {', '.join(outer)}"

    if child.valid_from < parent.valid_from or child.valid_until > parent.valid_until:
        return (
            f"window {format_time(child.valid_from)} to {format_time(child.valid_until)} is not inside "
            f"{format_time(parent.valid_from)} to {format_time(parent.valid_until)}"
        )

    mine, theirs = child.limits, parent.limits
    if theirs.caps_amounts and mine.unit != theirs.unit:
        return f"unit {mine.unit} is not the parent's unit {theirs.unit}"
    for cap in ("max_amount", "max_total", "max_count"):
        limit = getattr(theirs, cap)
        value = getattr(mine, cap)
        if limit is not None and (value is None or value > limit):
            return f"{cap} {value if value is not None else 'unlimited'} is above the parent's {limit}"
    return None


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
        _check_patterns(name, payload.get(name))

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

    digest = payload.get("action_digest")
    if digest is not None and (not isinstance(digest, str) or not _DIGEST.fullmatch(digest)):
        raise DeclarationError(f"scope action_digest must be 'sha256:<64 hex>', got {digest!r}")
    approval = payload.get("approval")
    if approval is not None and (not isinstance(approval, str) or digest is None):
        raise DeclarationError("an approval scope needs a request id in 'approval' and the action's 'action_digest'")

    delegated = [name for name in ("parent", "delegator", "delegation") if name in payload]
    if delegated and len(delegated) != 3:
        message = "a delegated scope needs all of 'parent', 'delegator' and 'delegation'"
        raise DeclarationError(message)
    for name in delegated:
        if not isinstance(payload[name], str) or not payload[name]:
            message = f"scope declaration field {name!r} must be a non-empty string, got {payload[name]!r}"
            raise DeclarationError(message)

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


def _check_patterns(name: str, patterns: Any) -> None:
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        message = f"scope declaration field {name!r} must be a non-empty list of patterns, got {patterns!r}"
        raise DeclarationError(message, hint=f"give at least one --{name[:-1]} pattern")

    # Kinds and agent ids never contain spaces, so such a pattern would match nothing. A resource
    # may: a file path with a space is a resource like any other.
    if name != "resources":
        spaced = [pattern for pattern in patterns if any(character.isspace() for character in pattern)]
        if spaced:
            message = (
                f"scope declaration field {name!r} has a pattern with spaces, {spaced[0]!r}, which matches nothing"
            )
            raise DeclarationError(message, hint="remove the spaces, e.g. payments.transfer or agent-1")
