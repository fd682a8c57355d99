"""Who may call the E2B surface: an API key (`X-API-KEY`, the control API) or a sandbox's access token.

The SDK sends its API key only to the control API. Requests to the in-sandbox services (envd and the code
interpreter) carry the sandbox id and the `envdAccessToken` we returned at create or connect, as
`X-Access-Token` (and, for the code interpreter's context calls, `E2B-Traffic-Access-Token`, which we return
with the same value). The token is an HMAC of the session's id and its executor token under SECRET_KEY: one
per sandbox, never stored, and useless once the sandbox is gone. An API key is accepted there too (the owner's
or staff's), so `curl` users need only their key.

Whatever fails for a named sandbox - no such session, another owner's, a token that does not verify - is the
same 404, so a caller learns nothing about sandboxes it may not touch. No credential at all is a 401.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from sandbox_site.api.authentication import UnknownApiKey, api_key_of
from sessions_app.models import NotVisible, SandboxSession

ACCESS_TOKEN_HEADERS = ("HTTP_X_ACCESS_TOKEN", "HTTP_E2B_TRAFFIC_ACCESS_TOKEN")


class E2BAuthError(Exception):
    """A request the surface refuses: `status` 401 (no or bad credentials) or 404 (no such sandbox for you)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def access_token(session: SandboxSession) -> str:
    """The sandbox's envd access token (stable for the session's life, different for every session)."""
    message = f"e2b-envd:{session.pk}:{session.executor_token}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def owner_of(meta: dict[str, Any]) -> Any:
    """The owner of the request's API key; E2BAuthError 401 when it has none or an unknown one."""
    try:
        key = api_key_of("", meta.get("HTTP_X_API_KEY"))
    except UnknownApiKey as exc:
        raise E2BAuthError(401, str(exc)) from None
    if key is None:
        raise E2BAuthError(401, "the X-API-KEY header is missing: set E2B_API_KEY to one of your API keys")
    return key.owner


def not_found(sandbox_id: str) -> E2BAuthError:
    return E2BAuthError(404, f"sandbox {sandbox_id!r} not found")


def session_for_owner(owner: Any, sandbox_id: str) -> SandboxSession:
    """The owner's (or, for staff, anyone's) session with that sandbox id, else E2BAuthError 404."""
    try:
        return SandboxSession.objects.get_visible(owner, sandbox_id)
    except NotVisible:
        raise not_found(sandbox_id) from None


@dataclass(frozen=True)
class SandboxCaller:
    """A request to a sandbox's own services, authorised for `session`."""

    session: SandboxSession
    owner: Any


def sandbox_caller(meta: dict[str, Any]) -> SandboxCaller:
    """Authorise a request to a sandbox's services from its headers (see the module docstring)."""
    sandbox_id = meta.get("HTTP_E2B_SANDBOX_ID", "").strip()
    if not sandbox_id:
        raise E2BAuthError(400, "the E2b-Sandbox-Id header is missing")
    token = next((meta[name] for name in ACCESS_TOKEN_HEADERS if meta.get(name)), "")
    if meta.get("HTTP_X_API_KEY"):
        owner = owner_of(meta)
        session = session_for_owner(owner, sandbox_id)
        return SandboxCaller(session=session, owner=owner)
    if not token:
        raise E2BAuthError(401, "the sandbox's access token (X-Access-Token) or an X-API-KEY is required")
    session = SandboxSession.objects.select_related("template", "owner").filter(pk=sandbox_id).first()
    if session is None or not hmac.compare_digest(access_token(session), token.strip()):
        raise not_found(sandbox_id)
    return SandboxCaller(session=session, owner=session.owner)


def credentials_refusal(meta: dict[str, Any]) -> str | None:
    """For the body guard (large bodies only): None when the request is authenticated, else why not.

    A valid API key is authenticated whichever sandbox it names (one it may not open is the view's 404 or
    502, as for a small body); an access token authenticates only for the sandbox it belongs to.
    """
    try:
        if meta.get("HTTP_X_API_KEY"):
            owner_of(meta)
        elif meta.get("HTTP_E2B_SANDBOX_ID"):
            sandbox_caller(meta)
        else:
            return NO_CREDENTIALS_MESSAGE
    except E2BAuthError as exc:
        return exc.message
    return None


def carries_credentials(meta: dict[str, Any]) -> bool:
    return bool(meta.get("HTTP_X_API_KEY") or any(meta.get(name) for name in ACCESS_TOKEN_HEADERS))


NO_CREDENTIALS_MESSAGE = "an X-API-KEY (or, for a sandbox's services, its access token) is required"
