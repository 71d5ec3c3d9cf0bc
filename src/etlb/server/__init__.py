"""The HTTP service of `etlb serve`: agents bind tool calls over HTTP, and the service only decides.

The service parses requests, authenticates agents and the administrator, calls the `Gate` and
renders its responses; it never runs a tool. docs/service.md describes the API.
"""

from etlb.server.app import create_app
from etlb.server.group_commit import GroupCommitter
from etlb.server.run import serve
from etlb.server.settings import ServiceSettings

__all__ = ["GroupCommitter", "ServiceSettings", "create_app", "serve"]
