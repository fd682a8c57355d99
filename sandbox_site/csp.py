"""Content-Security-Policy on every response, so injected markup in a console page cannot run script.

The console loads only its own files: console.js, htmx (django-htmx's copy, served from static) and
console.css, with no inline script, style or event handler (htmx's own indicator style is turned off in
base.html and lives in console.css; `allowEval` is off, so htmx never evaluates attribute text). The admin
and the Swagger UI (drf-spectacular-sidecar, the split view: its start-up script is a separate file) work
under the same policy. Two pages of third parties carry inline styles - the browsable API's syntax
colouring and layout, the Swagger page's box-sizing - so HTML under /api/ also allows inline *styles*
('unsafe-inline' style only: it cannot run script); scripts stay 'self' everywhere.

frame-ancestors 'none' (with X-Frame-Options: DENY from Django) keeps every page out of frames.
X-Content-Type-Options: nosniff and Referrer-Policy come from Django's SecurityMiddleware
(SECURE_CONTENT_TYPE_NOSNIFF, SECURE_REFERRER_POLICY in settings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

HEADER = "Content-Security-Policy"

BASE_POLICY: dict[str, str] = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
# Third-party pages with inline styles (see the module docstring).
INLINE_STYLE_PREFIXES = ("/api/",)


def policy_for(request: HttpRequest) -> str:
    policy = dict(BASE_POLICY)
    if request.path.startswith(INLINE_STYLE_PREFIXES):
        policy["style-src"] = "'self' 'unsafe-inline'"
    try:
        host = request.get_host()
    except Exception:  # DisallowedHost: Django answers 400 for it; the policy just names no websocket
        host = ""
    if host:
        # 'self' covers same-host websockets in current browsers; older ones need the ws(s) origin spelled out.
        policy["connect-src"] = f"'self' ws://{host} wss://{host}"
    return "; ".join(f"{name} {value}" for name, value in policy.items())


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every response that does not carry one of its own."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return self._add(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]
        return self._add(request, response)

    @staticmethod
    def _add(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if HEADER not in response:
            response[HEADER] = policy_for(request)
        return response


__all__ = ["ContentSecurityPolicyMiddleware", "policy_for"]
