"""Group commit: decide the bind requests that arrive close together in one store transaction.

Each binding costs a write transaction and an fsync, and writes to one store are serialised. Under
load, the `GroupCommitter` gathers the requests that arrive within `window` seconds of the first
(at most `max_batch`) and hands them to `Gate.bind_many`. It judges each request against the budget
that the requests before it left, and commits them all with one fsync. Requests that arrive while a batch is being
committed form the next batch. Every caller gets its response only after its batch is committed.

With `enabled=False` every request is decided alone, as soon as it arrives, through the same
`bind_many` call with a batch of one.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from etlb.errors import Refused
from etlb.gate import Gate
from etlb.model import Binding, ToolCall
from etlb.server.metrics import ServiceMetrics

__all__ = ["GroupCommitter", "ServiceClosed"]

logger = logging.getLogger(__name__)


class ServiceClosed(Exception):
    """Raised for a bind request that arrives after the committer stopped; nothing was decided."""


@dataclass(eq=False)
class _Request:
    call: ToolCall
    agent: str
    redeem: bool
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Binding | Refused | None = None
    error: Exception | None = None


class GroupCommitter:
    """Collects bind requests for `window` seconds and decides each batch with one `Gate.bind_many` call.

    `run` is the worker, which must run in a task group for the life of the service. After `close`,
    it decides what is queued and returns.
    """

    def __init__(
        self,
        gate: Gate,
        *,
        window: float,
        max_batch: int,
        enabled: bool = True,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if window < 0 or max_batch < 1:
            message = f"group commit needs window >= 0 and max_batch >= 1, got {window} and {max_batch}"
            raise ValueError(message)

        self.enabled = enabled
        self._gate = gate
        self._window = window
        self._max_batch = max_batch
        self._metrics = metrics
        self._send: MemoryObjectSendStream[_Request]
        self._receive: MemoryObjectReceiveStream[_Request]
        self._send, self._receive = anyio.create_memory_object_stream[_Request](math.inf)

    async def bind(self, call: ToolCall, agent: str, *, redeem: bool = False) -> Binding | None:
        """Decide one call as `agent`: return its binding, or None for a reversible action.

        Raises `Refused` for a refusal, `ServiceClosed` after `close`, and any other error that
        deciding the batch raised. The decision is not cancelled with the caller: once queued, the
        request is decided and committed even if its caller stopped waiting.
        """
        request = _Request(call, agent, redeem)
        if not self.enabled:
            with anyio.CancelScope(shield=True):
                await self._decide([request])
            return _result(request)

        try:
            self._send.send_nowait(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as error:
            raise ServiceClosed("the service is shutting down; no new bind request is accepted") from error

        await request.done.wait()
        return _result(request)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Decide batches until `close` is called and the queue is empty."""
        task_status.started()
        if not self.enabled:
            return

        async with self._receive:
            async for first in self._receive:
                batch = [first]
                self._take_queued(batch)
                if len(batch) < self._max_batch and self._window > 0:
                    await self._wait_for_more(batch)
                # Shielded, because the callers of a batch in flight must all get their result.
                with anyio.CancelScope(shield=True):
                    await self._decide(batch)

    def close(self) -> None:
        """Stop accepting requests; `run` returns after deciding those already queued."""
        self._send.close()

    def _take_queued(self, batch: list[_Request]) -> None:
        while len(batch) < self._max_batch:
            try:
                batch.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                return

    async def _wait_for_more(self, batch: list[_Request]) -> None:
        with anyio.move_on_after(self._window):
            while len(batch) < self._max_batch:
                try:
                    batch.append(await self._receive.receive())
                except anyio.EndOfStream:
                    return

    async def _decide(self, batch: list[_Request]) -> None:
        calls = [(request.call, request.agent) for request in batch]
        redeem = [request.redeem for request in batch]
        try:
            results = await anyio.to_thread.run_sync(functools.partial(self._gate.bind_many, calls, redeem=redeem))
        except Exception as error:
            # bind_many turns store and resolution errors into refusals itself, so this is a bug.
            # Each caller gets the error and responds with internal_error. Nothing was bound.
            logger.exception("deciding a batch of %d bind requests failed", len(batch))
            for request in batch:
                request.error = error
        else:
            for request, result in zip(batch, results, strict=True):
                request.result = result
        finally:
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(batch))
            for request in batch:
                request.done.set()


def _result(request: _Request) -> Binding | None:
    if request.error is not None:
        raise request.error
    if isinstance(request.result, Refused):
        raise request.result
    return request.result
