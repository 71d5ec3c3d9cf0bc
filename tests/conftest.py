"""Shared fixtures: a gate on a real store with a settable clock, and bearers who sign scopes.

The store is a SQLite file unless a test module opts into both backends with
`pytestmark = both_backends`, which runs each of its tests on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from etlb.config import parse_config
from etlb.declarations import DELEGATION_TYP, SCOPE_TYP, acceptance_payload, delegation_payload, scope_payload
from etlb.gate import Gate
from etlb.gate_key import create_gate_key
from etlb.model import Bearer, BearerKey, Limits, Scope
from etlb.signing import generate_private_key, key_id, public_jwk, read_unverified, sign_payload
from etlb.store.sqlite import SQLiteStore
from tests.backends import Backend, backend_for

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    """A gate, its store and clock, and the private keys of the bearers registered in it."""

    gate: Gate
    clock: Clock
    path: Path
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    backend: Backend | None = None

    def add_bearer(self, bearer_id: str) -> Ed25519PrivateKey:
        private_key = generate_private_key()
        jwk = public_jwk(private_key)
        self.gate.register_bearer(Bearer(bearer_id, bearer_id.title(), (BearerKey(key_id(jwk), jwk),)))
        self.keys[bearer_id] = private_key
        return private_key

    def sign_scope(
        self,
        bearer_id: str,
        *,
        kinds: list[str],
        resources: list[str] | None = None,
        agents: list[str] | None = None,
        max_amount: str | None = None,
        max_total: str | None = None,
        unit: str | None = None,
        max_count: int | None = None,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        signer: Ed25519PrivateKey | None = None,
    ) -> str:
        start = valid_from or self.clock.now - timedelta(minutes=1)
        payload = scope_payload(
            bearer=bearer_id,
            kinds=kinds,
            resources=resources or ["**"],
            agents=agents or ["*"],
            limits=Limits(
                max_amount=Decimal(max_amount) if max_amount is not None else None,
                max_total=Decimal(max_total) if max_total is not None else None,
                max_count=max_count,
                unit=unit,
            ),
            valid_from=start,
            valid_until=valid_until or start + timedelta(days=30),
            terms=f"{bearer_id} accepts liability for {', '.join(kinds)}",
            issued_at=self.clock.now,
        )
        return sign_payload(signer or self.keys[bearer_id], payload, typ=SCOPE_TYP)

    def declare(self, bearer_id: str, **fields: Any) -> Scope:
        return self.gate.declare_scope(self.sign_scope(bearer_id, **fields))

    def offer(
        self,
        parent: Scope,
        stand_in: str,
        *,
        kinds: list[str] | None = None,
        resources: list[str] | None = None,
        agents: list[str] | None = None,
        max_amount: str | None = None,
        max_total: str | None = None,
        max_count: int | None = None,
        valid_until: datetime | None = None,
        signer: Ed25519PrivateKey | None = None,
    ) -> str:
        """Return the delegation offer `parent`'s bearer signs, handing (part of) it to `stand_in`."""
        limits = parent.limits
        payload = delegation_payload(
            parent=parent,
            delegate=stand_in,
            kinds=kinds or list(parent.kinds),
            resources=resources or list(parent.resources),
            agents=agents or list(parent.agents),
            limits=Limits(
                max_amount=Decimal(max_amount) if max_amount is not None else limits.max_amount,
                max_total=Decimal(max_total) if max_total is not None else limits.max_total,
                max_count=max_count if max_count is not None else limits.max_count,
                unit=limits.unit,
            ),
            valid_from=self.clock.now,
            valid_until=valid_until or parent.valid_until,
            terms=f"{stand_in} stands in for {parent.bearer}",
            issued_at=self.clock.now,
        )
        return sign_payload(signer or self.keys[parent.bearer], payload, typ=DELEGATION_TYP)

    def accept(self, offer: str, stand_in: str) -> Scope:
        """Accept an offer with the stand-in's own signature and declare the delegated scope."""
        _, fields = read_unverified(offer)
        payload = acceptance_payload(fields, offer, issued_at=self.clock.now)
        return self.gate.declare_scope(sign_payload(self.keys[stand_in], payload, typ=SCOPE_TYP))


def build_world(tmp_path: Path, config_text: str, backend: Backend | None = None) -> World:
    """Build a gate in `tmp_path`, on `backend` or else on `tmp_path / "etlb.db"`.

    A PostgreSQL backend's URL must reach the configuration through ETLB_STORE, as the `backend`
    fixture sets it, so that processes started from the configuration file find the same store.
    """
    config_path = tmp_path / "etlb.toml"
    config_path.write_text(config_text, encoding="utf-8")
    config = parse_config(config_text, path=config_path)
    clock = Clock()
    signer = create_gate_key(tmp_path / "etlb-gate.key", None)
    store = (
        backend.open_store(signer=signer) if backend is not None else SQLiteStore(tmp_path / "etlb.db", signer=signer)
    )
    return World(Gate(config, store, clock=clock), clock, tmp_path / "etlb.db", backend=backend)


PAYMENTS_CONFIG = """
[gate]
store = "sqlite:///etlb.db"
agent = "agent-1"

[servers.docs]
trusted = true

[[rules]]
server = "bank"
tool = "transfer"
kind = "payments.transfer"
resource = "account:{from_account}"
amount = "{amount}"
unit = "{currency}"

[[rules]]
server = "git"
tool = "git_commit"
kind = "git.commit"
resource = "repo:{repo_path}"

[[rules]]
server = "docs"
tool = "search"
kind = "docs.search"
consequence = "reversible"
"""


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """The test's store backend: SQLite, or the one named by `both_backends` parametrization."""
    with backend_for(getattr(request, "param", "sqlite"), tmp_path) as chosen:
        if chosen.name != "sqlite":
            # Configuration files name SQLite; the environment points every gate of the test here.
            monkeypatch.setenv("ETLB_STORE", chosen.url)
        yield chosen


@pytest.fixture
def world(tmp_path: Path, backend: Backend) -> Iterator[World]:
    built = build_world(tmp_path, PAYMENTS_CONFIG, backend)
    yield built
    built.gate.close()
