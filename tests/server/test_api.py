"""The HTTP API against the real app and a real SQLite gate, through httpx's ASGI transport."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from etlb.declarations import REVOCATION_TYP, revocation_payload
from etlb.errors import Refused, StoreError, StoreUnavailable
from etlb.gate import Gate
from etlb.ledger.checkpoint import parse_verifier_key, verify_checkpoint
from etlb.ledger.receipt import verify_receipt
from etlb.model import Binding, ReasonCode, ToolCall
from etlb.server import ServiceSettings, create_app
from etlb.server.group_commit import GroupCommitter, ServiceClosed
from etlb.server.middleware import json_depth_exceeds
from etlb.server.problems import ERROR_KINDS
from etlb.server.settings import admin_token_digest
from etlb.signing import generate_private_key, key_id, public_jwk, sign_payload
from etlb.store import Store, UnavailableStore
from tests.conftest import PAYMENTS_CONFIG, World, build_world
from tests.server.conftest import ADMIN_TOKEN, MAX_BODY_BYTES, MAX_JSON_DEPTH, Api, serve_app, service_settings

JSON = {"Content-Type": "application/json"}
JOSE = {"Content-Type": "application/jose"}


def transfer(amount: str, account: str = "DE89-1") -> dict[str, Any]:
    arguments = {"from_account": account, "amount": amount, "currency": "EUR"}
    return {"server": "bank", "tool": "transfer", "arguments": arguments}


def commit(repo: str = "/srv/app") -> dict[str, Any]:
    return {"server": "git", "tool": "git_commit", "arguments": {"repo_path": repo, "message": "fix"}}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["type"] == f"/problems/{code}"
    assert document["code"] == code
    assert document["status"] == status
    assert document["title"]
    assert document["detail"]
    assert isinstance(document["reasons"], list)
    return document


def sample(api: Api, name: str, labels: dict[str, str] | None = None) -> float:
    value = api.app.state.service.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)


pytestmark = pytest.mark.anyio


# Health, schema and problem types


async def test_health_reports_ledger_size(api: Api) -> None:
    response = await api.http.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "ledger_size": api.world.gate.store.ledger_size()}


async def test_openapi_documents_problem_responses(api: Api) -> None:
    response = await api.http.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    bind = document["paths"]["/v1/bindings"]["post"]
    assert set(bind["responses"]) >= {"200", "201", "401", "403", "413", "422", "503"}
    assert list(bind["responses"]["403"]["content"]) == ["application/problem+json"]
    assert "application/jose" in document["paths"]["/v1/scopes"]["post"]["requestBody"]["content"]
    assert {"AgentKey", "AdministratorToken"} <= set(document["components"]["securitySchemes"])


async def test_problem_types_resolve(api: Api) -> None:
    names = [kind.name for kind in ERROR_KINDS] + [code.value for code in ReasonCode]
    for name in names:
        response = await api.http.get(f"/problems/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith("text/plain")
        assert "status: " in response.text

    assert_problem(await api.http.get("/problems/no_such_problem"), 404, "not_found")


async def test_unknown_route_is_not_found(api: Api) -> None:
    document = assert_problem(await api.http.get("/v1/nothing-here"), 404, "not_found")

    assert "/v1/nothing-here" in document["detail"]


async def test_wrong_method_is_not_allowed(api: Api) -> None:
    response = await api.http.delete("/v1/bindings", headers=api.agent)

    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


# Authentication


async def test_bind_without_key_is_unauthorized(api: Api) -> None:
    response = await api.http.post("/v1/bindings", json=commit())

    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_bind_with_unknown_key_is_unauthorized(api: Api) -> None:
    for key in ("etlb_not-a-registered-key", "something-else", ADMIN_TOKEN):
        response = await api.http.post("/v1/bindings", json=commit(), headers={"Authorization": f"Bearer {key}"})
        document = assert_problem(response, 401, "unauthorized")
        assert key not in document["detail"]


async def test_whoami_names_key_owner(api: Api) -> None:
    assert (await api.http.get("/v1/agent", headers=api.agent)).json() == {"agent": "agent-1"}
    assert (await api.http.get("/v1/agent", headers=api.other)).json() == {"agent": "agent-2"}


async def test_agent_field_in_body_is_rejected(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"], agents=["agent-1"])

    response = await api.http.post("/v1/bindings", json={**commit(), "agent": "agent-1"}, headers=api.other)

    document = assert_problem(response, 422, "invalid_request")
    assert document["errors"][0]["location"] == "body.agent"
    assert "API key" in document["detail"]
    assert sample(api, "etlb_bindings_total") == 0


async def test_agent_cannot_bind_as_another(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"], agents=["agent-1"])

    refused = await api.http.post("/v1/bindings", json=commit(), headers=api.other)
    bound = await api.http.post("/v1/bindings", json=commit(), headers=api.agent)

    document = assert_problem(refused, 403, "agent_not_covered")
    assert document["action"]["agent"] == "agent-2"
    assert bound.status_code == 201
    assert bound.json()["binding"]["action"]["agent"] == "agent-1"


async def test_agent_cannot_see_another_agents_binding(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"])
    binding_id = (await api.http.post("/v1/bindings", json=commit(), headers=api.agent)).json()["binding"]["binding_id"]

    for path in (f"/v1/bindings/{binding_id}", f"/v1/bindings/{binding_id}/receipt"):
        assert_problem(await api.http.get(path, headers=api.other), 404, "not_found")
        assert (await api.http.get(path, headers=api.admin)).status_code == 200
    outcome = {"status": "succeeded", "detail": ""}
    response = await api.http.post(f"/v1/bindings/{binding_id}/outcome", json=outcome, headers=api.other)
    assert_problem(response, 404, "not_found")


# Request limits and parsing


async def test_oversized_body_is_rejected(api: Api) -> None:
    body = transfer("1") | {"arguments": {"padding": "x" * MAX_BODY_BYTES}}

    response = await api.http.post("/v1/bindings", json=body, headers=api.agent)

    document = assert_problem(response, 413, "body_too_large")
    assert str(MAX_BODY_BYTES) in document["detail"]


async def test_oversized_streamed_body_is_rejected(api: Api) -> None:
    async def chunks() -> Any:
        for _ in range(8):
            yield b" " * 1024

    # A generator body is sent without Content-Length, so the limit applies while reading.
    response = await api.http.post("/v1/bindings", content=chunks(), headers=api.agent | JSON)

    assert_problem(response, 413, "body_too_large")


async def test_too_deep_json_is_rejected(api: Api) -> None:
    nested: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH + 1):
        nested = [nested]

    response = await api.http.post("/v1/bindings", json=commit() | {"arguments": {"x": nested}}, headers=api.agent)

    assert_problem(response, 422, "json_too_deep")


async def test_depth_limit_allows_brackets_in_strings(api: Api) -> None:
    text = "[{" * 200 + '\\"' + "]}"
    response = await api.http.post("/v1/bindings", json=commit() | {"call_id": text[:256]}, headers=api.agent)

    assert response.status_code != 422, response.text


def test_json_depth_exceeds_counts_only_structure() -> None:
    assert json_depth_exceeds(b"[[[]]]", 2)
    assert not json_depth_exceeds(b"[[[]]]", 3)
    assert not json_depth_exceeds(b'{"a": "[[[[[[", "b": ["\\"[[["]}', 2)
    assert json_depth_exceeds(b'{"a": {"b": {"c": "}}}"}}}', 2)


async def test_malformed_json_is_bad_request(api: Api) -> None:
    response = await api.http.post("/v1/bindings", content=b'{"tool": ', headers=api.agent | JSON)

    assert_problem(response, 400, "malformed_json")


async def test_body_without_json_content_type_is_invalid(api: Api) -> None:
    response = await api.http.post("/v1/bindings", content=b'{"tool": "x"}', headers=api.agent)

    document = assert_problem(response, 422, "invalid_request")
    assert "Content-Type: application/json" in document["detail"]


async def test_schema_violations_are_listed(api: Api) -> None:
    body = {"tool": "", "arguments": [], "redeem": "yes"}

    response = await api.http.post("/v1/bindings", json=body, headers=api.agent)

    document = assert_problem(response, 422, "invalid_request")
    assert {error["location"] for error in document["errors"]} == {"body.tool", "body.arguments", "body.redeem"}


async def test_non_canonical_arguments_are_invalid(api: Api) -> None:
    too_large = commit() | {"arguments": {"repo_path": "/srv/app", "n": 2**60}}

    response = await api.http.post("/v1/bindings", json=too_large, headers=api.agent)

    document = assert_problem(response, 422, "invalid_request")
    assert "canonical JSON" in document["detail"]


# Decisions


async def test_reversible_call_passes(api: Api) -> None:
    response = await api.http.post(
        "/v1/bindings", json={"server": "docs", "tool": "search", "arguments": {"q": "x"}}, headers=api.agent
    )

    assert response.status_code == 200
    assert response.json() == {"decision": "pass"}
    assert sample(api, "etlb_passes_total") == 1


async def test_refusal_has_structured_reasons(api: Api) -> None:
    api.world.add_bearer("alice")
    scope = api.world.declare("alice", kinds=["payments.transfer"], max_amount="100", unit="EUR")

    response = await api.http.post("/v1/bindings", json=transfer("250"), headers=api.agent)

    document = assert_problem(response, 403, "amount_exceeds_scope")
    assert document["reasons"] == [
        {
            "scope_id": scope.id,
            "bearer": "alice",
            "code": "amount_exceeds_scope",
            "detail": "cap 100 EUR per action is below 250 EUR",
        }
    ]
    assert document["title"] == "Refused: the amount exceeds the scope's cap per action"
    assert document["recorded"] is True
    assert document["refusal_id"].startswith("refusal-")
    assert document["bearers_nearby"] == ["alice"]
    assert document["action"]["kind"] == "payments.transfer"
    assert document["action"]["agent"] == "agent-1"
    assert document["action"]["amount"] == {"value": "250", "unit": "EUR"}
    assert document["hint"].startswith("ask a bearer")


async def test_refusal_without_scopes(api: Api) -> None:
    response = await api.http.post("/v1/bindings", json=transfer("5"), headers=api.agent)

    document = assert_problem(response, 403, "no_covering_scope")
    assert document["reasons"] == []


async def test_unclassifiable_call_is_refused(api: Api) -> None:
    body = {"server": "bank", "tool": "transfer", "arguments": {"from_account": "DE89-1"}}

    response = await api.http.post("/v1/bindings", json=body, headers=api.agent)

    assert_problem(response, 403, "classification_failed")


async def test_count_exhausted_after_last_unit(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"], max_count=1)

    first = await api.http.post("/v1/bindings", json=commit(), headers=api.agent)
    second = await api.http.post("/v1/bindings", json=commit(), headers=api.agent)

    assert first.status_code == 201
    assert_problem(second, 403, "count_exhausted")


async def test_bind_outcome_binding_receipt(api: Api) -> None:
    api.world.add_bearer("alice")
    scope = api.world.declare("alice", kinds=["payments.transfer"], max_amount="100", unit="EUR")

    bound = await api.http.post("/v1/bindings", json=transfer("40"), headers=api.agent)

    assert bound.status_code == 201
    binding = bound.json()["binding"]
    assert bound.headers["location"] == f"/v1/bindings/{binding['binding_id']}"
    assert binding["bearer"] == "alice"
    assert binding["scope_id"] == scope.id
    assert binding["reserved"] == {"count": 1, "amount": {"value": "40", "unit": "EUR"}}
    path = f"/v1/bindings/{binding['binding_id']}"

    before = (await api.http.get(path, headers=api.agent)).json()
    assert before["outcome"] == {"status": "unknown", "detail": ""}
    assert before["redeemed"] is False
    assert before["binding"] == binding

    outcome = await api.http.post(
        f"{path}/outcome", json={"status": "succeeded", "detail": "sha256:ab"}, headers=api.agent
    )
    assert outcome.status_code == 201
    assert outcome.json() == {
        "binding_id": binding["binding_id"],
        "outcome": {"status": "succeeded", "detail": "sha256:ab"},
    }

    after = (await api.http.get(path, headers=api.agent)).json()
    assert after["outcome"] == {"status": "succeeded", "detail": "sha256:ab"}

    receipt = await api.http.get(f"{path}/receipt", headers=api.agent)
    assert receipt.status_code == 200
    verifier = parse_verifier_key((api.world.path.parent / "etlb-gate.pub").read_text(encoding="utf-8"))
    summary = verify_receipt(receipt.json(), verifier)
    assert summary.binding_id == binding["binding_id"]
    assert summary.bearer == "alice"
    assert summary.outcome == "succeeded"


async def test_outcome_is_recorded_once(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"])
    binding_id = (await api.http.post("/v1/bindings", json=commit(), headers=api.agent)).json()["binding"]["binding_id"]
    path = f"/v1/bindings/{binding_id}/outcome"

    first = await api.http.post(path, json={"status": "failed", "detail": "boom"}, headers=api.agent)
    second = await api.http.post(path, json={"status": "succeeded"}, headers=api.agent)

    assert first.status_code == 201
    assert_problem(second, 409, "binding_consumed")


async def test_redeem_once_for_same_action(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"])
    binding_id = (await api.http.post("/v1/bindings", json=commit(), headers=api.agent)).json()["binding"]["binding_id"]
    path = f"/v1/bindings/{binding_id}/redemption"

    other_action = await api.http.post(path, json=commit("/srv/other"), headers=api.agent)
    first = await api.http.post(path, json=commit(), headers=api.agent)
    second = await api.http.post(path, json=commit(), headers=api.agent)

    assert_problem(other_action, 409, "binding_consumed")
    assert first.status_code == 204
    assert_problem(second, 409, "binding_consumed")
    state = (await api.http.get(f"/v1/bindings/{binding_id}", headers=api.agent)).json()
    assert state["redeemed"] is True


async def test_bind_with_redeem_marks_binding_used(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"])

    bound = await api.http.post("/v1/bindings", json=commit() | {"redeem": True}, headers=api.agent)

    binding_id = bound.json()["binding"]["binding_id"]
    assert (await api.http.get(f"/v1/bindings/{binding_id}", headers=api.agent)).json()["redeemed"] is True


async def test_unknown_binding_is_not_found(api: Api) -> None:
    for path in ("/v1/bindings/binding-nope", "/v1/bindings/binding-nope/receipt"):
        assert_problem(await api.http.get(path, headers=api.agent), 404, "not_found")
    response = await api.http.post("/v1/bindings/binding-nope/outcome", json={"status": "failed"}, headers=api.agent)
    assert_problem(response, 404, "not_found")


async def test_checkpoint_is_signed_note(api: Api) -> None:
    response = await api.http.get("/v1/checkpoint")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    verifier = parse_verifier_key((api.world.path.parent / "etlb-gate.pub").read_text(encoding="utf-8"))
    assert verify_checkpoint(response.text, verifier).size == api.world.gate.store.ledger_size()


async def test_checkpoint_of_empty_ledger_is_not_found(tmp_path: Path) -> None:
    world = build_world(tmp_path, PAYMENTS_CONFIG)
    try:
        async with serve_app(world.gate, service_settings()) as (_, http):
            assert_problem(await http.get("/v1/checkpoint"), 404, "not_found")
    finally:
        world.gate.close()


# Scopes


async def test_declare_scope_by_jws(api: Api) -> None:
    api.world.add_bearer("alice")
    jws = api.world.sign_scope("alice", kinds=["git.commit"], max_count=2)

    response = await api.http.post("/v1/scopes", content=jws, headers=JOSE)

    assert response.status_code == 201, response.text
    scope = response.json()
    assert scope["bearer"] == "alice"
    assert scope["kinds"] == ["git.commit"]
    assert scope["limits"]["max_count"] == 2
    assert api.world.gate.store.get_scope(scope["scope_id"]) is not None
    assert (await api.http.post("/v1/bindings", json=commit(), headers=api.agent)).status_code == 201


async def test_declare_same_scope_twice_is_rejected(api: Api) -> None:
    api.world.add_bearer("alice")
    jws = api.world.sign_scope("alice", kinds=["git.commit"])

    first = await api.http.post("/v1/scopes", content=jws, headers=JOSE)
    second = await api.http.post("/v1/scopes", content=jws, headers={"Content-Type": "text/plain"})

    assert first.status_code == 201
    assert_problem(second, 422, "declaration_rejected")


async def test_forged_scope_is_rejected(api: Api) -> None:
    api.world.add_bearer("alice")
    header, payload, _ = api.world.sign_scope("alice", kinds=["git.commit"]).split(".")
    other_signature = api.world.sign_scope("alice", kinds=["payments.transfer"]).split(".")[2]
    foreign_key = api.world.sign_scope("alice", kinds=["git.commit"], signer=generate_private_key())

    for forged in (f"{header}.{payload}.{other_signature}", foreign_key):
        response = await api.http.post("/v1/scopes", content=forged, headers=JOSE)
        assert_problem(response, 422, "invalid_signature")
    assert api.world.gate.store.list_scopes() == []


async def test_scope_of_unregistered_bearer_is_rejected(api: Api) -> None:
    jws = api.world.sign_scope("mallory", kinds=["git.commit"], signer=generate_private_key())

    document = assert_problem(await api.http.post("/v1/scopes", content=jws, headers=JOSE), 422, "declaration_rejected")

    assert "mallory" in document["detail"]


async def test_scope_body_must_be_a_jws(api: Api) -> None:
    assert_problem(await api.http.post("/v1/scopes", content=b"", headers=JOSE), 422, "invalid_request")
    assert_problem(await api.http.post("/v1/scopes", content="é".encode(), headers=JOSE), 422, "invalid_request")
    assert_problem(await api.http.post("/v1/scopes", content=b"not-a-jws", headers=JOSE), 422, "invalid_signature")


async def test_bearer_revokes_scope(api: Api) -> None:
    key = api.world.add_bearer("alice")
    scope = api.world.declare("alice", kinds=["git.commit"])
    payload = revocation_payload(scope_id=scope.id, bearer="alice", reason="done", issued_at=api.world.clock.now)

    response = await api.http.post(
        f"/v1/scopes/{scope.id}/revocation", content=sign_payload(key, payload, typ=REVOCATION_TYP), headers=JOSE
    )

    assert response.status_code == 201
    assert response.json()["revoked_by"] == "bearer"
    assert_problem(await api.http.post("/v1/bindings", json=commit(), headers=api.agent), 403, "scope_revoked")


async def test_revocation_by_other_key_is_rejected(api: Api) -> None:
    api.world.add_bearer("alice")
    scope = api.world.declare("alice", kinds=["git.commit"])
    payload = revocation_payload(scope_id=scope.id, bearer="alice", reason="", issued_at=api.world.clock.now)
    forged = sign_payload(generate_private_key(), payload, typ=REVOCATION_TYP)

    response = await api.http.post(f"/v1/scopes/{scope.id}/revocation", content=forged, headers=JOSE)

    assert_problem(response, 422, "invalid_signature")
    assert (await api.http.post("/v1/bindings", json=commit(), headers=api.agent)).status_code == 201


async def test_revoking_unknown_scope_is_not_found(api: Api) -> None:
    key = api.world.add_bearer("alice")
    payload = revocation_payload(scope_id="scope-nope", bearer="alice", reason="", issued_at=api.world.clock.now)
    jws = sign_payload(key, payload, typ=REVOCATION_TYP)

    assert_problem(await api.http.post("/v1/scopes/scope-nope/revocation", content=jws, headers=JOSE), 404, "not_found")


# Administration


ADMIN_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/admin/agents", {"agent": "agent-3"}),
    ("/v1/admin/bearers", {"id": "carol", "name": "Carol", "keys": [public_jwk(generate_private_key())]}),
    ("/v1/admin/bearers/alice/status", {"status": "suspended"}),
    ("/v1/admin/scopes/scope-x/revocation", {"administrator": "ops"}),
]


@pytest.mark.parametrize(("path", "body"), ADMIN_CALLS, ids=[path for path, _ in ADMIN_CALLS])
async def test_admin_needs_token(api: Api, path: str, body: dict[str, Any]) -> None:
    size = api.world.gate.store.ledger_size()
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef0123456789"}, api.agent):
        assert_problem(await api.http.post(path, json=body, headers=headers), 401, "unauthorized")
    assert api.world.gate.store.ledger_size() == size


async def test_admin_disabled_without_token(world: World) -> None:
    async with serve_app(world.gate, service_settings(admin_token_sha256=None)) as (_, http):
        response = await http.post("/v1/admin/agents", json={"agent": "a"}, headers={"Authorization": "Bearer x" * 5})

    document = assert_problem(response, 401, "unauthorized")
    assert "ETLB_ADMIN_TOKEN" in document["hint"]


async def test_admin_registers_agent(api: Api) -> None:
    response = await api.http.post("/v1/admin/agents", json={"agent": "agent-3", "actor": "ops"}, headers=api.admin)

    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    key = response.json()["api_key"]
    assert key.startswith("etlb_")
    whoami = await api.http.get("/v1/agent", headers={"Authorization": f"Bearer {key}"})
    assert whoami.json() == {"agent": "agent-3"}
    duplicate = await api.http.post("/v1/admin/agents", json={"agent": "agent-3"}, headers=api.admin)
    assert_problem(duplicate, 422, "declaration_rejected")


async def test_admin_registers_bearer(api: Api) -> None:
    private_key = generate_private_key()
    jwk = public_jwk(private_key)
    body = {"id": "carol", "name": "Carol Example", "keys": [jwk], "attributes": {"role": "treasurer"}}

    response = await api.http.post("/v1/admin/bearers", json=body, headers=api.admin)

    assert response.status_code == 201
    assert response.json()["key_ids"] == [key_id(jwk)]
    bearer = api.world.gate.store.get_bearer("carol")
    assert bearer is not None
    assert bearer.attributes == {"role": "treasurer"}
    api.world.keys["carol"] = private_key
    declared = await api.http.post(
        "/v1/scopes", content=api.world.sign_scope("carol", kinds=["git.commit"]), headers=JOSE
    )
    assert declared.status_code == 201


async def test_admin_rejects_bad_bearer_keys(api: Api) -> None:
    private_jwk = public_jwk(generate_private_key()) | {"d": "AAAA"}
    for keys in ([{"kty": "RSA", "n": "x"}], [private_jwk]):
        body = {"id": "carol", "name": "Carol", "keys": keys}
        assert_problem(
            await api.http.post("/v1/admin/bearers", json=body, headers=api.admin), 422, "declaration_rejected"
        )
    assert api.world.gate.store.get_bearer("carol") is None


async def test_admin_suspends_bearer(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"])

    response = await api.http.post("/v1/admin/bearers/alice/status", json={"status": "suspended"}, headers=api.admin)

    assert response.status_code == 200
    assert response.json()["status"] == "suspended"
    assert_problem(await api.http.post("/v1/bindings", json=commit(), headers=api.agent), 403, "bearer_suspended")
    missing = await api.http.post("/v1/admin/bearers/nobody/status", json={"status": "active"}, headers=api.admin)
    assert_problem(missing, 404, "not_found")


async def test_admin_revokes_scope(api: Api) -> None:
    api.world.add_bearer("alice")
    scope = api.world.declare("alice", kinds=["git.commit"])

    response = await api.http.post(
        f"/v1/admin/scopes/{scope.id}/revocation", json={"administrator": "ops", "reason": "audit"}, headers=api.admin
    )

    assert response.status_code == 201
    assert response.json()["revoked_by"] == "administrator"
    assert_problem(await api.http.post("/v1/bindings", json=commit(), headers=api.agent), 403, "scope_revoked")


# Metrics and logs


async def test_metrics_count_bindings_and_refusals(api: Api) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["payments.transfer"], max_amount="100", unit="EUR")
    await api.http.post("/v1/bindings", json=transfer("10"), headers=api.agent)
    await api.http.post("/v1/bindings", json=transfer("1000"), headers=api.agent)

    response = await api.http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert "etlb_bindings_total 1.0" in lines
    assert 'etlb_refusals_total{reason="amount_exceeds_scope"} 1.0' in lines
    assert 'etlb_decision_duration_seconds_count{decision="bind"} 1.0' in lines
    assert 'etlb_decision_duration_seconds_count{decision="refuse"} 1.0' in lines
    assert 'etlb_http_requests_total{method="POST",route="/v1/bindings",status="201"} 1.0' in lines
    assert 'etlb_http_requests_total{method="POST",route="/v1/bindings",status="403"} 1.0' in lines


async def test_decision_logs_one_line_without_secrets(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.world.add_bearer("alice")
    scope = api.world.declare("alice", kinds=["git.commit"])
    caplog.set_level(logging.INFO)

    bound = await api.http.post("/v1/bindings", json=commit(), headers=api.agent)
    registered = await api.http.post("/v1/admin/agents", json={"agent": "agent-9"}, headers=api.admin)
    await api.http.post("/v1/bindings", json=commit(), headers={"Authorization": "Bearer etlb_wrong"})

    binding = bound.json()["binding"]
    decisions = [record.getMessage() for record in caplog.records if record.getMessage().startswith("event=binding")]
    assert decisions == [
        f"event=binding agent=agent-1 action={binding['action']['digest']} bearer=alice scope={scope.id} "
        f"binding={binding['binding_id']}"
    ]
    for secret in (api.agent_key, ADMIN_TOKEN, registered.json()["api_key"], "etlb_wrong"):
        assert secret not in caplog.text


# Failures of the gate


async def test_store_failure_refuses_bind(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"])

    def broken(*_: object, **__: object) -> None:
        raise StoreError("disk I/O error")

    monkeypatch.setattr(api.world.gate.store, "decide_many", broken)
    response = await api.http.post("/v1/bindings", json=commit(), headers=api.agent)

    document = assert_problem(response, 503, "store_unavailable")
    assert document["recorded"] is False
    assert "disk I/O error" in document["detail"]
    assert sample(api, "etlb_refusals_total", {"reason": "store_unavailable"}) == 1


async def test_unavailable_store_is_service_unavailable(world: World) -> None:
    key = world.gate.register_agent("agent-1")
    store = cast(Store, UnavailableStore(StoreUnavailable("store etlb.db cannot be opened")))
    gate = Gate(world.gate.config, store, clock=world.clock)

    async with serve_app(gate, service_settings()) as (_, http):
        health = await http.get("/health")
        bind = await http.post("/v1/bindings", json=commit(), headers={"Authorization": f"Bearer {key}"})

    assert_problem(health, 503, "store_unavailable")
    assert_problem(bind, 503, "store_unavailable")


async def test_unexpected_error_is_internal_error(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(api.world.gate.store, "get_binding", broken)
    response = await api.http.get("/v1/bindings/binding-1", headers=api.agent)

    document = assert_problem(response, 500, "internal_error")
    assert "bug" not in document["detail"]


# Group commit


async def race(api: Api, count: int) -> list[httpx.Response]:
    responses: list[httpx.Response] = []

    async def send() -> None:
        responses.append(await api.http.post("/v1/bindings", json=commit(), headers=api.agent))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(send)
    return responses


@pytest.fixture
async def batching_api(world: World, request: pytest.FixtureRequest) -> Any:
    settings = service_settings(group_commit=request.param, group_commit_window=0.05)
    key = world.gate.register_agent("agent-1")
    async with serve_app(world.gate, settings) as (app, http):
        yield Api(app, http, world, key, key)


@pytest.mark.parametrize("batching_api", [True], indirect=True)
async def test_group_commit_batches_and_keeps_limits(batching_api: Api) -> None:
    batching_api.world.add_bearer("alice")
    batching_api.world.declare("alice", kinds=["git.commit"], max_count=3)

    responses = await race(batching_api, 12)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * 3 + [403] * 9
    assert {response.json()["code"] for response in responses if response.status_code == 403} == {"count_exhausted"}
    assert sample(batching_api, "etlb_group_commit_batch_size_sum") == 12
    assert sample(batching_api, "etlb_group_commit_batch_size_count") < 12


@pytest.mark.parametrize("batching_api", [False], indirect=True)
async def test_without_group_commit_each_request_alone(batching_api: Api) -> None:
    batching_api.world.add_bearer("alice")
    batching_api.world.declare("alice", kinds=["git.commit"], max_count=3)

    responses = await race(batching_api, 6)

    assert sorted(response.status_code for response in responses) == [201] * 3 + [403] * 3
    assert sample(batching_api, "etlb_group_commit_batch_size_count") == 6


def test_bind_many_decides_each_call(world: World) -> None:
    world.add_bearer("alice")
    world.declare("alice", kinds=["git.commit"], max_count=1)
    calls = [
        (ToolCall(server="docs", tool="search", arguments={"q": "x"}), "agent-1"),
        (ToolCall(server="git", tool="git_commit", arguments={"repo_path": "/srv/app"}), "agent-1"),
        (ToolCall(server="git", tool="git_commit", arguments={"repo_path": "/srv/app"}), "agent-2"),
        (ToolCall(server="bank", tool="transfer", arguments={}), "agent-1"),
    ]

    passed, bound, exhausted, unclassified = world.gate.bind_many(calls, redeem=[False, True, False, False])

    assert passed is None
    assert isinstance(bound, Binding)
    assert bound.action.agent == "agent-1"
    assert world.gate.store.get_binding(bound.id).redeemed is True  # type: ignore[union-attr]
    assert isinstance(exhausted, Refused)
    assert exhausted.code is ReasonCode.COUNT_EXHAUSTED
    assert isinstance(unclassified, Refused)
    assert unclassified.code is ReasonCode.CLASSIFICATION_FAILED
    with pytest.raises(ValueError, match="redeem flags"):
        world.gate.bind_many(calls, redeem=[True])


async def test_resolution_bug_refuses_batch(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api.world.add_bearer("alice")
    api.world.declare("alice", kinds=["git.commit"])

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("bug in decide_many")

    monkeypatch.setattr(api.world.gate.store, "decide_many", broken)
    response = await api.http.post("/v1/bindings", json=commit(), headers=api.agent)

    document = assert_problem(response, 500, "internal_error")
    assert document["recorded"] is True
    assert document["refusal_id"].startswith("refusal-")


async def test_closed_committer_accepts_nothing(world: World) -> None:
    committer = GroupCommitter(world.gate, window=0.001, max_batch=8)
    async with anyio.create_task_group() as group:
        await group.start(committer.run)
        committer.close()

    with pytest.raises(ServiceClosed):
        await committer.bind(ToolCall(server="git", tool="git_commit"), "agent-1")


# Settings


def test_settings_from_environment(world: World) -> None:
    token = "t" * 40
    settings = ServiceSettings.from_config(world.gate.config, {"ETLB_ADMIN_TOKEN": token}, port=9000)

    assert settings.admin_token_sha256 == admin_token_digest(token)
    assert settings.port == 9000
    assert settings.group_commit is True


@pytest.mark.parametrize("token", ["short", "etlb_" + "x" * 40])
def test_settings_reject_weak_admin_token(world: World, token: str) -> None:
    from etlb.errors import ConfigError

    with pytest.raises(ConfigError):
        ServiceSettings.from_config(world.gate.config, {"ETLB_ADMIN_TOKEN": token})


# Schemathesis


@pytest.fixture
def live_schema(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    world = build_world(tmp_path, PAYMENTS_CONFIG)
    world.add_bearer("alice")
    world.declare("alice", kinds=["git.commit", "payments.transfer"], max_amount="100", unit="EUR", max_count=50)
    key = world.gate.register_agent("agent-1")
    app = create_app(world.gate, service_settings())
    yield schemathesis.openapi.from_asgi("/openapi.json", app), key
    world.gate.close()


def test_openapi_operations_never_fail_on_server(live_schema: tuple[Any, str]) -> None:
    schema, agent_key = live_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        token = ADMIN_TOKEN if operation.path.startswith("/v1/admin") else agent_key
        fuzz_operation(operation, token)


def fuzz_operation(operation: Any, token: str) -> None:
    # A few examples per operation keep the run short; the point is that no input reaches a 5xx.
    @given(case=operation.as_strategy())
    @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def no_server_error(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error])

    no_server_error()
