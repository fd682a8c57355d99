"""API key authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from sessions_app.models import ApiKey


def raw_key_from(request) -> str | None:
    """The key a request carries, or None when it carries none (so other authenticators may try)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        return None
    api_key = request.META.get("HTTP_X_API_KEY")
    return api_key.strip() if api_key is not None else None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """A present but unknown or revoked key is a 401, never a silent fall-through to anonymous."""

    keyword = "Bearer"

    def authenticate(self, request):
        raw = raw_key_from(request)
        if raw is None:
            return None
        key = ApiKey.objects.authenticate(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("The API key is unknown or has been revoked.")
        return key.owner, key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "sandbox_site.api.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from create_api_key or the console.",
        }
