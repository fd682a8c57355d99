"""What every view of the E2B surface shares: CSRF-exempt (API-key or token authenticated, never a cookie),
its allowed methods, and refusals answered in E2B's error shape."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from sandbox_site.e2b.auth import E2BAuthError
from sandbox_site.e2b.errors import e2b_error
from sessions_app.files import BadPath

View = Callable[..., HttpResponse]


def e2b_endpoint(methods: list[str]) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = e2b_error(405, f"{request.method} is not allowed here", code="method_not_allowed")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return view(request, *args, **kwargs)
            except E2BAuthError as exc:
                return e2b_error(exc.status, exc.message)
            except BadPath as exc:
                return e2b_error(400, str(exc), code="bad_path")

        return wrapper

    return decorate
