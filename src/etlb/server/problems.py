"""RFC 9457 problem details: every error the service returns, and how etlb errors map to them.

A problem type is named by a relative URI, `/problems/<name>`, which RFC 9457 resolves against the
service's own URL, where `GET /problems/<name>` describes it. A refusal's type is named after its
reason code (`/problems/no_covering_scope`); other errors are named after their kind
(`/problems/unauthorized`). Every problem document has `type`, `title`, `status`, `detail`, `code`
(the name) and `reasons` (the scopes that came close, empty unless it is a refusal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

from etlb.errors import (
    ApprovalClosed,
    BindingConsumed,
    ClassificationError,
    DeclarationError,
    EtlbError,
    KeyFileError,
    NotFoundError,
    Refused,
    SignatureError,
    StoreError,
)
from etlb.model import ReasonCode
from etlb.wire import refusal_json

__all__ = [
    "APPROVAL_CLOSED",
    "BODY_TOO_LARGE",
    "DECLARATION_REJECTED",
    "ERROR_KINDS",
    "INVALID_ANSWER",
    "INVALID_REQUEST",
    "INVALID_SIGNATURE",
    "JSON_TOO_DEEP",
    "MALFORMED_JSON",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "PROBLEM_MEDIA_TYPE",
    "UNAUTHORIZED",
    "ProblemError",
    "ProblemResponse",
    "ProblemType",
    "find_problem_type",
    "problem_for_error",
    "problem_response",
    "reason_problem_type",
    "refusal_response",
]

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_PATH = "/problems/"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One kind of problem: its name (the `code` member), HTTP status, fixed title and type URI."""

    name: str
    status: int
    title: str
    description: str
    uri: str

    @classmethod
    def named(cls, name: str, status: int, title: str, description: str) -> ProblemType:
        """Build a problem type whose URI is /problems/NAME."""
        return cls(name, status, title, description, PROBLEM_PATH + name)

    @classmethod
    def generic(cls, status: int) -> ProblemType:
        """Build the RFC 9457 `about:blank` type for an HTTP error that has no type of its own."""
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        return cls(f"http_{status}", status, phrase, phrase, "about:blank")


UNAUTHORIZED = ProblemType.named(
    "unauthorized",
    401,
    "Authentication failed",
    "The request has no valid credentials: an agent's API key, or the administrator token for /v1/admin.",
)
NOT_FOUND = ProblemType.named(
    "not_found",
    404,
    "Not found",
    "No such path, or no binding, scope, bearer or checkpoint with this id that the caller may see.",
)
METHOD_NOT_ALLOWED = ProblemType.named(
    "method_not_allowed", 405, "Method not allowed", "The path exists but does not accept this HTTP method."
)
MALFORMED_JSON = ProblemType.named("malformed_json", 400, "Malformed JSON", "The request body is not valid JSON.")
INVALID_REQUEST = ProblemType.named(
    "invalid_request",
    422,
    "Invalid request",
    "The body or a parameter does not match the schema of the operation in /openapi.json.",
)
JSON_TOO_DEEP = ProblemType.named(
    "json_too_deep",
    422,
    "JSON nested too deeply",
    "The JSON body nests arrays and objects deeper than the service's max_json_depth setting.",
)
BODY_TOO_LARGE = ProblemType.named(
    "body_too_large", 413, "Request body too large", "The body is larger than the service's max_body_bytes setting."
)
INVALID_SIGNATURE = ProblemType.named(
    "invalid_signature",
    422,
    "Invalid signature",
    "The compact JWS is malformed, or does not verify against a key registered to the bearer it names.",
)
DECLARATION_REJECTED = ProblemType.named(
    "declaration_rejected",
    422,
    "Declaration rejected",
    "The gate rejected a scope, revocation, bearer or agent: for example an unregistered or suspended "
    "bearer, a duplicate, or an invalid key.",
)
INVALID_ANSWER = ProblemType.named(
    "invalid_answer",
    400,
    "Invalid approval answer",
    "The answer to an approval request is not valid for it: the JWS does not verify with a key registered "
    "to the bearer it names, the bearer is not an approver or their turn has not opened, or it was signed "
    "for another request or action. The request stays pending.",
)
APPROVAL_CLOSED = ProblemType.named(
    "approval_closed",
    409,
    "Approval request closed",
    "The approval request was already accepted, declined or failed, or its deadline has passed.",
)

ERROR_KINDS = (
    UNAUTHORIZED,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    MALFORMED_JSON,
    INVALID_REQUEST,
    JSON_TOO_DEEP,
    BODY_TOO_LARGE,
    INVALID_SIGNATURE,
    DECLARATION_REJECTED,
    INVALID_ANSWER,
    APPROVAL_CLOSED,
)

# Titles of refusal problems, one per reason code; docs/concepts.md explains each code.
_REASON_TITLES = {
    ReasonCode.NO_COVERING_SCOPE: "Refused: no scope names this kind of action",
    ReasonCode.AGENT_NOT_COVERED: "Refused: no scope covers this agent",
    ReasonCode.RESOURCE_NOT_COVERED: "Refused: no scope covers this resource",
    ReasonCode.CONDITION_FALSE: "Refused: a scope's condition is false",
    ReasonCode.SCOPE_NOT_YET_VALID: "Refused: the scope is not valid yet",
    ReasonCode.SCOPE_EXPIRED: "Refused: the scope has expired",
    ReasonCode.SCOPE_REVOKED: "Refused: the scope was revoked",
    ReasonCode.BEARER_SUSPENDED: "Refused: the scope's bearer is suspended",
    ReasonCode.SIGNATURE_INVALID: "Refused: the scope's signature does not verify",
    ReasonCode.DEFINITION_CHANGED: "Refused: the tool's definition changed",
    ReasonCode.AMOUNT_EXCEEDS_SCOPE: "Refused: the amount exceeds the scope's cap per action",
    ReasonCode.BUDGET_EXHAUSTED: "Refused: the scope's total budget is used up",
    ReasonCode.COUNT_EXHAUSTED: "Refused: every execution the scope allows is used",
    ReasonCode.WINDOW_EXHAUSTED: "Refused: the scope's rolling window is used up",
    ReasonCode.UNIT_MISMATCH: "Refused: the amount's unit does not match the scope",
    ReasonCode.BINDING_CONSUMED: "The binding was already used",
    ReasonCode.OPAQUE_TARGET: "Refused: the action's target cannot be determined",
    ReasonCode.ANALYSIS_LIMIT_EXCEEDED: "Refused: the command is too large to analyse",
    ReasonCode.APPROVAL_DECLINED: "Refused: the approval request was declined",
    ReasonCode.APPROVAL_TIMED_OUT: "Refused: the approval request timed out",
    ReasonCode.NO_APPROVERS: "Refused: no bearer can approve this action",
    ReasonCode.STORE_UNAVAILABLE: "The gate's store is unavailable; nothing ran",
    ReasonCode.INTERNAL_ERROR: "Internal error in the gate; nothing ran",
    ReasonCode.CLASSIFICATION_FAILED: "Refused: the tool call could not be classified",
}

# Refusals are 403. These codes are errors of the gate or of the request rather than decisions about
# liability, so they keep a status that shows it: 409 for reuse, 503 and 500 so that proxies and
# clients see a server failure.
_REASON_STATUS = {
    ReasonCode.BINDING_CONSUMED: 409,
    ReasonCode.STORE_UNAVAILABLE: 503,
    ReasonCode.INTERNAL_ERROR: 500,
}


def reason_problem_type(code: ReasonCode) -> ProblemType:
    """Return the problem type of a reason code: 403, except the codes in `_REASON_STATUS`."""
    title = _REASON_TITLES.get(code, f"Refused: {code.value}")
    description = f"The gate refused the action with reason code {code.value}. docs/concepts.md explains each code."
    return ProblemType.named(code.value, _REASON_STATUS.get(code, 403), title, description)


def find_problem_type(name: str) -> ProblemType | None:
    """Return the problem type named `name`, or None when there is none."""
    for kind in ERROR_KINDS:
        if kind.name == name:
            return kind
    try:
        return reason_problem_type(ReasonCode(name))
    except ValueError:
        return None


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class ProblemError(Exception):
    """Raised by a route to respond with a problem document. `extra` adds members to the document."""

    def __init__(
        self,
        kind: ProblemType,
        detail: str,
        *,
        hint: str = "",
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.hint = hint
        self.extra = extra or {}
        self.headers = headers

    def response(self) -> ProblemResponse:
        return problem_response(self.kind, self.detail, hint=self.hint, extra=self.extra, headers=self.headers)


def problem_response(
    kind: ProblemType,
    detail: str,
    *,
    hint: str = "",
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemResponse:
    document: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        "code": kind.name,
        "reasons": [],
    }
    if hint:
        document["hint"] = hint
    document.update(extra or {})
    return ProblemResponse(document, status_code=kind.status, headers=headers)


def refusal_response(refused: Refused) -> ProblemResponse:
    """Build the response to a refusal: the problem type of its code, its message as `detail`, and every reason."""
    kind = reason_problem_type(refused.code)
    return problem_response(kind, refused.refusal.message, extra=refusal_json(refused))


def problem_for_error(error: EtlbError) -> ProblemError:
    """Map an etlb error raised by the gate to the problem the service responds with."""
    if isinstance(error, NotFoundError):
        return ProblemError(NOT_FOUND, error.message, hint=error.hint)
    if isinstance(error, BindingConsumed):
        return ProblemError(reason_problem_type(ReasonCode.BINDING_CONSUMED), error.message, hint=error.hint)
    if isinstance(error, ApprovalClosed):
        return ProblemError(APPROVAL_CLOSED, error.message, hint=error.hint)
    if isinstance(error, SignatureError):
        return ProblemError(INVALID_SIGNATURE, error.message, hint=error.hint)
    if isinstance(error, DeclarationError | KeyFileError):
        return ProblemError(DECLARATION_REJECTED, error.message, hint=error.hint)
    if isinstance(error, ClassificationError):
        return ProblemError(INVALID_REQUEST, error.message, hint=error.hint)
    if isinstance(error, StoreError):
        logger.error("store failed: %s", error.message)
        return ProblemError(reason_problem_type(ReasonCode.STORE_UNAVAILABLE), error.message, hint=error.hint)

    logger.error("unexpected etlb error %s: %s", type(error).__name__, error.message)
    return ProblemError(reason_problem_type(ReasonCode.INTERNAL_ERROR), error.message, hint=error.hint)
