"""Settings of the HTTP service, from the `[service]` section of etlb.toml and the environment."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from etlb.config import Config, ServiceSection
from etlb.errors import ConfigError
from etlb.gate import API_KEY_PREFIX

__all__ = ["ADMIN_TOKEN_ENVIRONMENT_VARIABLE", "MIN_ADMIN_TOKEN_LENGTH", "ServiceSettings", "admin_token_digest"]

ADMIN_TOKEN_ENVIRONMENT_VARIABLE = "ETLB_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token

# 32 characters of secrets.token_urlsafe carry 192 bits, far beyond guessing over the network.
MIN_ADMIN_TOKEN_LENGTH = 32


def admin_token_digest(token: str) -> bytes:
    """SHA-256 of an administrator token. Digests of equal length compare in constant time."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Settings that `create_app` takes besides the gate. Times are in seconds, sizes in bytes.

    `admin_token_sha256` is None when no administrator token is configured, and then every
    /v1/admin request is rejected.
    """

    host: str = "127.0.0.1"
    port: int = 8470
    admin_token_sha256: bytes | None = None
    max_body_bytes: int = 1_048_576
    max_json_depth: int = 64
    group_commit: bool = True
    group_commit_window: float = 0.002
    group_commit_max_batch: int = 64

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServiceSettings:
        """Read `[service]` and `ETLB_ADMIN_TOKEN`; keyword overrides (from the command line) win over both.

        Raises `ConfigError` for an administrator token shorter than `MIN_ADMIN_TOKEN_LENGTH`.
        """
        environment = os.environ if environ is None else environ
        section: ServiceSection = config.service
        digest = bytes.fromhex(section.admin_token_sha256) if section.admin_token_sha256 else None

        token = environment.get(ADMIN_TOKEN_ENVIRONMENT_VARIABLE)
        if token:
            if len(token) < MIN_ADMIN_TOKEN_LENGTH:
                message = (
                    f"{ADMIN_TOKEN_ENVIRONMENT_VARIABLE} has {len(token)} characters; "
                    f"an administrator token needs at least {MIN_ADMIN_TOKEN_LENGTH}"
                )
                hint = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                raise ConfigError(message, hint=hint)
            if token.startswith(API_KEY_PREFIX):
                message = (
                    f"{ADMIN_TOKEN_ENVIRONMENT_VARIABLE} starts with {API_KEY_PREFIX!r}, the prefix of agent API keys"
                )
                raise ConfigError(message, hint="choose a token without that prefix, so the two cannot be confused")
            digest = admin_token_digest(token)

        settings = cls(
            host=section.host,
            port=section.port,
            admin_token_sha256=digest,
            max_body_bytes=section.max_body_bytes,
            max_json_depth=section.max_json_depth,
            group_commit=section.group_commit,
            group_commit_window=section.group_commit_window_ms / 1000,
            group_commit_max_batch=section.group_commit_max_batch,
        )
        changes = {name: value for name, value in overrides.items() if value is not None}
        return replace(settings, **changes)
