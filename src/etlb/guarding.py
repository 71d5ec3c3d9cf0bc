"""The decorator behind `Gate.guard` and `Client.guard`: bind, run the function, record the outcome.

Both interfaces hand in how to bind a call (already redeemed, so the binding runs once) and how to
record an outcome; this module owns the rest, for sync and async functions alike.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

import anyio.to_thread

from etlb.canonical import sha256_digest
from etlb.model import Binding, Outcome, ToolCall

__all__ = ["error_text", "guard_function", "success_outcome"]

P = ParamSpec("P")
R = TypeVar("R")

Bind = Callable[[ToolCall], Binding | None]
RecordOutcome = Callable[[Binding, Outcome], None]


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def success_outcome(result: Any) -> Outcome:
    """Return a `succeeded` outcome carrying the digest of the result when it is plain JSON."""
    try:
        return Outcome.succeeded(sha256_digest(result))
    except ValueError:
        return Outcome.succeeded()


def guard_function(
    function: Callable[P, R], *, tool: str | None, server: str | None, bind: Bind, record_outcome: RecordOutcome
) -> Callable[P, R]:
    """Wrap `function` so that each call is bound first, and its outcome recorded after it ran.

    The function's bound arguments, with defaults applied, are the tool call's arguments, and the
    tool name defaults to the function's name. `bind` raises `Refused` before the body runs, and an
    exception from the body is recorded as `failed` and re-raised.
    """
    signature = inspect.signature(function)
    tool_name = tool or function.__name__

    def tool_call(*args: Any, **kwargs: Any) -> ToolCall:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return ToolCall(tool=tool_name, arguments=dict(bound.arguments), server=server)

    if inspect.iscoroutinefunction(function):
        asynchronous = cast(Callable[..., Awaitable[Any]], function)

        @functools.wraps(function)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            binding = await anyio.to_thread.run_sync(bind, tool_call(*args, **kwargs))
            if binding is None:
                return await asynchronous(*args, **kwargs)

            try:
                result = await asynchronous(*args, **kwargs)
            except BaseException as error:
                await anyio.to_thread.run_sync(record_outcome, binding, Outcome.failed(error_text(error)))
                raise
            await anyio.to_thread.run_sync(record_outcome, binding, success_outcome(result))
            return result

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        binding = bind(tool_call(*args, **kwargs))
        if binding is None:
            return function(*args, **kwargs)

        try:
            result = function(*args, **kwargs)
        except BaseException as error:
            record_outcome(binding, Outcome.failed(error_text(error)))
            raise
        record_outcome(binding, success_outcome(result))
        return result

    return wrapper
