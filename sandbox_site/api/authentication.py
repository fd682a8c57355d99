"""API key authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from sessions_app.models import ApiKey

UNKNOWN_KEY_MESSAGE = "The API key is unknown or has been revoked."


class UnknownApiKey(Exception):
    """The request carries an API key that does not authenticate (unknown, revoked, or its owner inactive)."""


def raw_key_of(authorization: str, x_api_key: str | None) -> str | None:
    """The key these header values carry, or None when they carry none (so other authenticators may try)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        return None
    return x_api_key.strip() if x_api_key is not None else None


def api_key_of(authorization: str, x_api_key: str | None) -> ApiKey | None:
    """The active key named by these header values; None when they name none; UnknownApiKey when they name
    one that does not authenticate.

    The one credential check of the API: DRF's authentication below and the front door that refuses
    requests before their bodies are read (sandbox_site/body_guard.py) both decide here.
    """
    raw = raw_key_of(authorization, x_api_key)
    if raw is None:
        return None
    key = ApiKey.objects.authenticate(raw)
    if key is None:
        raise UnknownApiKey(UNKNOWN_KEY_MESSAGE)
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """A present but unknown or revoked key is a 401, never a silent fall-through to anonymous."""

    keyword = "Bearer"

    def authenticate(self, request):
        try:
            key = api_key_of(request.META.get("HTTP_AUTHORIZATION", ""), request.META.get("HTTP_X_API_KEY"))
        except UnknownApiKey as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        if key is None:
            return None
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
