"""The approval endpoints of the HTTP service, against the real app and a SQLite gate through httpx's ASGI transport."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from etlb.approval.model import DECLINE_TYP
from etlb.canonical import canonical_bytes
from etlb.declarations import SCOPE_TYP
from etlb.errors import ApprovalPending
from etlb.model import ReasonCode, format_time
from etlb.server.approvals import PAGE_HEADERS
from etlb.signing import key_id, public_jwk, sign_payload
from etlb.wire import pending_from_json, pending_json
from tests.conftest import PAYMENTS_CONFIG, START, World, build_world
from tests.server.conftest import serve_app, service_settings

pytestmark = pytest.mark.anyio

APPROVALS = """
[approvals]
wait = false
deadline_seconds = 600

[[approvals.routes]]
kinds = ["payments.*"]
approvers = ["bob", "carol"]
"""

JSON = {"Content-Type": "application/json"}


@dataclass
class ApprovalApi:
    http: httpx.AsyncClient
    world: World
    agent: dict[str, str]
    other: dict[str, str]

    async def ask(self, amount: str = "7000") -> dict[str, Any]:
        response = await self.http.post("/v1/bindings", json=transfer(amount), headers=self.agent)
        assert response.status_code == 202, response.text
        document: dict[str, Any] = response.json()
        return document

    def sign(self, request_id: str, bearer: str, *, decline: bool = False, signer: str | None = None) -> str:
        payload = self.world.gate.approval_payload(request_id, bearer, decline=decline, reason="too large")
        return sign_payload(self.world.keys[signer or bearer], payload, typ=DECLINE_TYP if decline else SCOPE_TYP)

    async def answer(self, request_id: str, jws: str) -> httpx.Response:
        return await self.http.post(f"/v1/approvals/{request_id}/answer", json={"jws": jws})

    async def status(self, request_id: str) -> str:
        response = await self.http.get(f"/v1/approvals/{request_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["status"])


def transfer(amount: str) -> dict[str, Any]:
    return {
        "server": "bank",
        "tool": "transfer",
        "arguments": {"from_account": "DE89-1", "amount": amount, "currency": "EUR"},
    }


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["code"] == code
    assert document["type"] == f"/problems/{code}"
    return document


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@asynccontextmanager
async def approval_api(tmp_path: Path, config: str) -> AsyncIterator[ApprovalApi]:
    world = build_world(tmp_path, PAYMENTS_CONFIG + config)
    for bearer in ("alice", "bob", "carol"):
        world.add_bearer(bearer)
    agent_key = world.gate.register_agent("agent-1")
    other_key = world.gate.register_agent("agent-2")
    try:
        async with serve_app(world.gate, service_settings()) as (_, http):
            yield ApprovalApi(
                http, world, {"Authorization": f"Bearer {agent_key}"}, {"Authorization": f"Bearer {other_key}"}
            )
    finally:
        world.gate.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApprovalApi]:
    async with approval_api(tmp_path, APPROVALS) as built:
        yield built


# Pending decisions


async def test_bind_without_scope_is_pending(api: ApprovalApi) -> None:
    response = await api.http.post("/v1/bindings", json=transfer("7000"), headers=api.agent)

    assert response.status_code == 202
    document = response.json()
    request_id = document["request_id"]
    assert document["decision"] == "pending"
    assert request_id.startswith("approval-")
    assert len(request_id) == len("approval-") + 24
    assert response.headers["location"] == f"/v1/approvals/{request_id}"
    assert document["approvers"] == ["bob", "carol"]
    assert document["deadline"] == format_time(START + timedelta(seconds=600))
    assert document["page"] == f"http://etlb.test/approvals/{request_id}"
    assert document["action"]["kind"] == "payments.transfer"
    assert document["action"]["agent"] == "agent-1"
    assert document["reasons"] == []
    assert f"approval request {request_id} waits for bob or carol" in document["detail"]
    assert document["hint"] == f"nothing ran; ask bob or carol to answer approval request {request_id}"


async def test_pending_page_link_uses_page_url(tmp_path: Path) -> None:
    config = APPROVALS.replace("wait = false", 'wait = false\npage_url = "https://approve.example/"')
    async with approval_api(tmp_path, config) as api:
        document = await api.ask()

        assert document["page"] == f"https://approve.example/approvals/{document['request_id']}"


async def test_pending_document_round_trip(api: ApprovalApi) -> None:
    document = await api.ask()

    pending = pending_from_json(document)

    assert isinstance(pending, ApprovalPending)
    assert pending.request_id == document["request_id"]
    assert pending.code is ReasonCode.APPROVAL_PENDING
    assert pending.approvers == ("bob", "carol")
    assert pending.deadline == START + timedelta(seconds=600)
    assert pending.refusal.action.digest == document["action"]["digest"]
    assert pending_json(pending, page=document["page"]) == document


@pytest.mark.parametrize("member", ["request_id", "action", "deadline", "approvers", "reasons", "time"])
async def test_pending_document_missing_member(api: ApprovalApi, member: str) -> None:
    document = await api.ask()
    del document[member]

    with pytest.raises(ValueError, match="pending decision is malformed"):
        pending_from_json(document)


# Reading a request and its payloads


async def test_request_document_from_store(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]

    response = await api.http.get(f"/v1/approvals/{request_id}")

    assert response.status_code == 200
    stored = api.world.gate.approval(request_id)
    assert response.json() == {**stored.to_json(), "now": format_time(START)}
    assert response.json()["status"] == "pending"


async def test_payload_is_its_canonical_bytes(api: ApprovalApi) -> None:
    document = await api.ask()
    request_id = document["request_id"]

    response = await api.http.get(f"/v1/approvals/{request_id}/payload", params={"bearer": "bob"})

    assert response.status_code == 200
    body = response.json()
    assert body["typ"] == SCOPE_TYP
    assert body["signing_input_payload"] == base64url(canonical_bytes(body["payload"]))
    assert body["payload"]["bearer"] == "bob"
    assert body["payload"]["approval"] == request_id
    assert body["payload"]["action_digest"] == document["action"]["digest"]
    assert body["payload"]["limits"]["max_count"] == 1
    assert body["payload"]["valid_until"] == document["deadline"]
    assert body["payload"]["terms"].startswith(
        "I, bob, accept liability for exactly one execution of payments.transfer"
    )


async def test_decline_payload(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]

    params = {"bearer": "carol", "decline": "true", "reason": "not this month"}
    response = await api.http.get(f"/v1/approvals/{request_id}/payload", params=params)

    assert response.status_code == 200
    body = response.json()
    assert body["typ"] == DECLINE_TYP
    assert body["payload"]["request_id"] == request_id
    assert body["payload"]["reason"] == "not this month"
    assert body["signing_input_payload"] == base64url(canonical_bytes(body["payload"]))


async def test_payload_for_non_approver(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]

    response = await api.http.get(f"/v1/approvals/{request_id}/payload", params={"bearer": "alice"})

    document = assert_problem(response, 400, "invalid_answer")
    assert document["detail"] == (
        f"alice cannot answer approval request {request_id}: alice is not an approver of request "
        f"{request_id}; its approvers are bob, carol"
    )


# Answers


async def test_browser_style_jws_binds(api: ApprovalApi) -> None:
    """A JWS built as the page builds it, header member order included, verifies and binds bob."""
    request_id = (await api.ask())["request_id"]
    template = (await api.http.get(f"/v1/approvals/{request_id}/payload", params={"bearer": "bob"})).json()
    key = api.world.keys["bob"]
    header = json.dumps({"alg": "EdDSA", "kid": key_id(public_jwk(key)), "typ": template["typ"]}, separators=(",", ":"))
    signing_input = f"{base64url(header.encode())}.{template['signing_input_payload']}"
    jws = f"{signing_input}.{base64url(key.sign(signing_input.encode()))}"

    response = await api.answer(request_id, jws)

    assert response.status_code == 200, response.text
    closed = response.json()
    assert (closed["status"], closed["bearer"]) == ("accepted", "bob")
    assert closed["binding_id"].startswith("binding-")
    state = api.world.gate.store.get_binding(closed["binding_id"])
    assert state is not None
    assert state.binding.bearer == "bob"
    assert state.redeemed is False


async def test_decline_records_refusal(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]

    response = await api.answer(request_id, api.sign(request_id, "carol", decline=True))

    assert response.status_code == 200
    closed = response.json()
    assert (closed["status"], closed["bearer"], closed["code"]) == ("declined", "carol", "approval_declined")
    assert closed["refusal_id"].startswith("refusal-")


async def test_invalid_answers_leave_request_pending(api: ApprovalApi) -> None:
    request_id = (await api.ask("7000"))["request_id"]
    other_id = (await api.ask("7001"))["request_id"]
    valid = api.sign(request_id, "bob")
    header, payload, signature = valid.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    cases = {
        "signed with carol's key in bob's name": (
            api.sign(request_id, "bob", signer="carol"),
            f"the answer is signed with key {key_id(public_jwk(api.world.keys['carol']))!r}, "
            "which is not registered to bob",
        ),
        "signed for another request": (api.sign(other_id, "bob"), f"not request {request_id} and action"),
        "signature changed": (f"{header}.{payload}.{flipped}", "JWS signature does not verify"),
        "decline typ on a scope": (
            sign_payload(api.world.keys["bob"], api.world.gate.approval_payload(request_id, "bob"), typ=DECLINE_TYP),
            "the answer is signed for request None and action",
        ),
    }

    for name, (jws, expected) in cases.items():
        response = await api.answer(request_id, jws)

        document = assert_problem(response, 400, "invalid_answer")
        assert expected in document["detail"], name
        assert await api.status(request_id) == "pending", name


async def test_malformed_answer_body(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]

    response = await api.answer(request_id, "not-a-jws")

    assert_problem(response, 422, "invalid_request")
    assert await api.status(request_id) == "pending"


async def test_second_answer_conflicts(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]
    decline = api.sign(request_id, "carol", decline=True)
    assert (await api.answer(request_id, api.sign(request_id, "bob"))).status_code == 200

    response = await api.answer(request_id, decline)

    document = assert_problem(response, 409, "approval_closed")
    assert document["detail"] == f"approval request {request_id} is already closed: accepted"
    assert_problem(
        await api.http.get(f"/v1/approvals/{request_id}/payload", params={"bearer": "carol"}), 409, "approval_closed"
    )


async def test_unknown_request_not_found(api: ApprovalApi) -> None:
    unknown = "approval-000000000000000000000000"

    responses = [
        await api.http.get(f"/v1/approvals/{unknown}"),
        await api.http.get(f"/v1/approvals/{unknown}/payload", params={"bearer": "bob"}),
        await api.answer(unknown, "e30.e30.AAAA"),
        await api.http.post(f"/v1/approvals/{unknown}/resume", headers=api.agent),
    ]

    for response in responses:
        document = assert_problem(response, 404, "not_found")
        assert document["detail"] == f"approval request {unknown} not found"


async def test_answer_after_deadline_conflicts(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]
    late = api.sign(request_id, "bob")
    api.world.clock.advance(seconds=600)

    response = await api.answer(request_id, late)

    assert_problem(response, 409, "approval_closed")
    assert await api.status(request_id) == "timed_out"
    refused = assert_problem(
        await api.http.post(f"/v1/approvals/{request_id}/resume", headers=api.agent), 403, "approval_timed_out"
    )
    assert refused["refusal_id"] == api.world.gate.approval(request_id).refusal_id


# Resume


async def test_resume_pending_accepted_consumed(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]
    resume = f"/v1/approvals/{request_id}/resume"

    waiting = await api.http.post(resume, headers=api.agent)
    closed = (await api.answer(request_id, api.sign(request_id, "bob"))).json()
    resumed = await api.http.post(resume, headers=api.agent)
    again = await api.http.post(resume, headers=api.agent)

    assert waiting.status_code == 202
    assert waiting.json()["request_id"] == request_id
    assert resumed.status_code == 200
    assert resumed.json()["decision"] == "bind"
    assert resumed.json()["binding"]["binding_id"] == closed["binding_id"]
    assert resumed.json()["binding"]["bearer"] == "bob"
    state = api.world.gate.store.get_binding(closed["binding_id"])
    assert state is not None
    assert state.redeemed is True
    assert_problem(again, 409, "binding_consumed")


async def test_resume_with_call_checks_action(api: ApprovalApi) -> None:
    request_id = (await api.ask("7000"))["request_id"]
    await api.answer(request_id, api.sign(request_id, "bob"))

    other = await api.http.post(f"/v1/approvals/{request_id}/resume", json=transfer("7001"), headers=api.agent)
    same = await api.http.post(f"/v1/approvals/{request_id}/resume", json=transfer("7000"), headers=api.agent)

    assert_problem(other, 422, "declaration_rejected")
    assert same.status_code == 200


async def test_resume_by_other_agent_not_found(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]
    await api.answer(request_id, api.sign(request_id, "bob"))

    stranger = await api.http.post(f"/v1/approvals/{request_id}/resume", headers=api.other)
    anonymous = await api.http.post(f"/v1/approvals/{request_id}/resume")
    owner = await api.http.post(f"/v1/approvals/{request_id}/resume", headers=api.agent)

    assert_problem(stranger, 404, "not_found")
    assert_problem(anonymous, 401, "unauthorized")
    assert owner.status_code == 200


async def test_resume_declined_is_refusal(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]
    closed = (await api.answer(request_id, api.sign(request_id, "carol", decline=True))).json()

    response = await api.http.post(f"/v1/approvals/{request_id}/resume", headers=api.agent)

    document = assert_problem(response, 403, "approval_declined")
    assert document["refusal_id"] == closed["refusal_id"]
    assert document["recorded"] is True
    assert document["detail"].endswith("declined by carol: too large")


# The page and the schema


async def test_page_headers_and_assets(api: ApprovalApi) -> None:
    request_id = (await api.ask())["request_id"]

    page = await api.http.get(f"/approvals/{request_id}")
    script = await api.http.get("/approvals/static/approval.js")
    style = await api.http.get("/approvals/static/approval.css")
    missing = await api.http.get("/approvals/static/other.js")
    unknown = await api.http.get("/approvals/approval-000000000000000000000000")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in PAGE_HEADERS.items():
        assert page.headers[name] == value
    assert page.headers["content-security-policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    assert "http://" not in page.text
    assert "https://" not in page.text
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "crypto.subtle.sign" in script.text
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert_problem(missing, 404, "not_found")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "text/html; charset=utf-8"
    assert "approval-000000000000000000000000" in unknown.text


async def test_openapi_documents_approvals(api: ApprovalApi) -> None:
    document = (await api.http.get("/openapi.json")).json()
    paths = document["paths"]

    assert set(paths) >= {
        "/v1/approvals/{request_id}",
        "/v1/approvals/{request_id}/payload",
        "/v1/approvals/{request_id}/answer",
        "/v1/approvals/{request_id}/resume",
    }
    assert "/approvals/{request_id}" not in paths
    assert "202" in paths["/v1/bindings"]["post"]["responses"]
    assert "202" in paths["/v1/approvals/{request_id}/resume"]["post"]["responses"]
    answer = paths["/v1/approvals/{request_id}/answer"]["post"]["responses"]
    assert list(answer["409"]["content"]) == ["application/problem+json"]
    assert "security" not in paths["/v1/approvals/{request_id}/answer"]["post"]
    assert paths["/v1/approvals/{request_id}/resume"]["post"]["security"] == [{"AgentKey": []}]
