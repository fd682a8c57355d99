"""The base of the API's viewsets: objects the caller may not see are 404s, and routes can name operations.

Routes are listed by hand in each app's `api/urls.py` (`ViewSet.as_view({"get": "retrieve"}, ...)`): the
public paths predate the viewsets and do not follow a router's layout. Most actions name their OpenAPI
operation with `extend_schema(operation_id=...)`. An action served at several paths (the mirrored
`/executions/sessions/...` family, an execution's `/status` and `/result`) needs one id per path: its route
gives it with `operation_ids={"post": "..."}` (the action then sets none: its own id would win on every
path), and leaves methods out of the schema with `undocumented=`.
"""

from __future__ import annotations

from typing import ClassVar

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_doc
from rest_framework import viewsets
from rest_framework.response import Response

from sandbox_site.api.errors import ApiError
from sessions_app.models import NotVisible


class RouteSchema(AutoSchema):
    """Takes an operation's id, or its absence from the schema, from its route when the action sets none."""

    def get_operation_id(self) -> str:
        named = getattr(self.view, "operation_ids", {}).get(self.method.lower())
        return named or super().get_operation_id()

    def get_description(self) -> str:  # type: ignore[override]
        # An operation is described by its action's docstring alone: a viewset's docstring is for readers
        # of the code, and would otherwise become the description of every operation it serves.
        return get_doc(getattr(self.view, getattr(self.view, "action", None) or "", None))

    def is_excluded(self) -> bool:
        return self.method.lower() in getattr(self.view, "undocumented", ()) or super().is_excluded()


class ApiViewSet(viewsets.ViewSet):
    """A viewset of /api/v1: `NotVisible` from a lookup becomes the API's 404 with its machine code."""

    schema = RouteSchema()
    # Set per route through as_view(); see the module docstring.
    operation_ids: ClassVar[dict[str, str]] = {}
    undocumented: ClassVar[tuple[str, ...]] = ()

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, NotVisible):
            exc = ApiError(404, exc.code, exc.message)
        return super().handle_exception(exc)
