"""The API's index at /api/v1: links to its collections, schema and docs, and every operation it serves.

JSON for clients, DRF's browsable page in a browser (links clickable, a log-in link for the rest). Public like
the schema it summarises: it names paths, never data. The operation list is the schema's own, so it cannot
drift from it.
"""

from __future__ import annotations

from functools import cache

from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

# name in the index -> URL name
LINKS = {
    "sessions": "sessions",
    "templates": "template-list",
    "health": "health",
    "health_detailed": "health-detailed",
    "schema": "schema",
    "docs": "api-docs",
}


@cache
def api_operations() -> tuple[tuple[str, str], ...]:
    """(method, path) of every operation in the OpenAPI schema, in the schema's order; built once per process
    (about as long as one request for /api/v1/schema/)."""
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    return tuple((method.upper(), path) for path, item in paths.items() for method in item)


class OperationSerializer(serializers.Serializer):
    method = serializers.CharField()
    path = serializers.CharField()


class ApiRootView(APIView):
    """Links to the API's collections, its schema and docs, and the list of its operations."""

    permission_classes = [AllowAny]
    # The console login only, so the browsable page shows who is logged in; an API key is not looked at, so
    # an unknown or revoked one cannot turn the public index into a 401.
    authentication_classes = [SessionAuthentication]

    def get_view_name(self) -> str:
        return "API index"  # the browsable page's title and breadcrumb, rather than "Api Root"

    @extend_schema(
        operation_id="api_root",
        responses={
            200: inline_serializer(
                "ApiRoot",
                {
                    **{name: serializers.URLField() for name in LINKS},
                    "operations": OperationSerializer(many=True),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        links = {name: reverse(url_name, request=request) for name, url_name in LINKS.items()}
        operations = [{"method": method, "path": path} for method, path in api_operations()]
        return Response({**links, "operations": operations})
