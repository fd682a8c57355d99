"""`mcp`: the MCP server over stdio, for agents that start their tools as a local process.

Every tool call acts for the owner of one API key, given by --api-key or the SANDBOX_API_KEY environment
variable (the environment keeps it out of the process list); without an active key the command refuses to
start. stdout carries the protocol only: logs go to stderr.

It talks to the same database as the web server: sessions are built by the control plane's workers
(`make run` or `manage.py run_worker`), executions run in this process, as with execute-sync.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from django.core.management.base import BaseCommand, CommandError

from sandbox_site.api.authentication import UNKNOWN_KEY_MESSAGE
from sandbox_site.mcp_server.errors import tool_error
from sandbox_site.mcp_server.tools import build_server
from sessions_app.models import ApiKey

API_KEY_VARIABLE = "SANDBOX_API_KEY"


class Command(BaseCommand):
    help = "Serve the MCP tools over stdio for the owner of an API key (--api-key or $SANDBOX_API_KEY)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--api-key",
            default=None,
            help=f"The API key whose owner the tools act for (default: ${API_KEY_VARIABLE}).",
        )

    def handle(self, *args: Any, api_key: str | None, **options: Any) -> None:
        raw = (api_key or os.environ.get(API_KEY_VARIABLE, "")).strip()
        if not raw:
            raise CommandError(f"an API key is required: set {API_KEY_VARIABLE} or pass --api-key")
        if ApiKey.objects.authenticate(raw) is None:
            raise CommandError(UNKNOWN_KEY_MESSAGE)

        def owner_of(ctx: Any) -> Any:
            key = ApiKey.objects.authenticate(raw)
            if key is None:
                raise tool_error("unauthorized", UNKNOWN_KEY_MESSAGE)
            return key.owner

        anyio.run(build_server(owner_of=owner_of).run_stdio_async)
