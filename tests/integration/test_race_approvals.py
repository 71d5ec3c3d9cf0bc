"""Approvers answering one request from several processes at once: exactly one binding, on both stores."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from etlb.declarations import SCOPE_TYP
from etlb.errors import ApprovalPending
from etlb.gate import Gate
from etlb.model import ToolCall
from etlb.signing import sign_payload
from tests.backends import Backend, both_backends
from tests.conftest import PAYMENTS_CONFIG, build_world
from tests.integration import approval_worker

pytestmark = [pytest.mark.integration, both_backends]

APPROVERS = ["bob", "carol", "dave", "erin"]
CONFIG = PAYMENTS_CONFIG + (
    "[approvals]\nwait = false\ndeadline_seconds = 86400\n"
    f'[[approvals.routes]]\nkinds = ["payments.*"]\napprovers = {json.dumps(APPROVERS)}\n'
)


def test_racing_acceptances_bind_once(tmp_path: Path, backend: Backend) -> None:
    world = build_world(tmp_path, CONFIG, backend)
    for approver in APPROVERS:
        world.add_bearer(approver)
    # The worker processes read the real clock, so the request is opened on it too.
    gate = Gate.from_config(tmp_path / "etlb.toml")
    call = ToolCall(tool="transfer", server="bank", arguments={"from_account": "DE1", "amount": "5", "currency": "EUR"})
    with pytest.raises(ApprovalPending) as caught:
        gate.bind(call)
    request_id = caught.value.request_id
    answers = [
        sign_payload(world.keys[approver], gate.approval_payload(request_id, approver), typ=SCOPE_TYP)
        for approver in APPROVERS
    ]
    gate.close()
    world.gate.close()

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(answers))
    results = context.Queue()
    processes = [
        context.Process(
            target=approval_worker.answer, args=(str(tmp_path / "etlb.toml"), request_id, jws, barrier, results)
        )
        for jws in answers
    ]
    for process in processes:
        process.start()
    collected = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    winners = [who for outcome, who in collected if outcome == "accepted"]
    assert len(winners) == 1
    assert sorted(outcome for outcome, _ in collected) == ["accepted", "closed", "closed", "closed"]
    with Gate.from_config(tmp_path / "etlb.toml") as reopened:
        records = [json.loads(entry.record) for entry in reopened.store.ledger_entries()]
        assert reopened.resume(request_id, call).bearer == winners[0]
    assert [record["type"] for record in records].count("binding") == 1
    assert [record["type"] for record in records].count("approval.closed") == 1
