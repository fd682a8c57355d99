"""`api_path`: Django's `path()` for the API, where a route also matches with one trailing slash.

The public paths have no trailing slash (`/api/v1/sessions`), while every console URL ends in one, so people
typing or pasting API URLs write both. APPEND_SLASH-style redirects would not do: a client following a 301
or 302 resends a POST as a GET without its body. Instead the route's regular expression ends in `/?`, and
both spellings reach the same view. The route's text is unchanged, so the OpenAPI schema (which reads it)
lists each operation once, at the path as written; `reverse()` gives the URL without the slash.
"""

from __future__ import annotations

from functools import partial

from django.urls.conf import _path
from django.urls.resolvers import RoutePattern


class OptionalSlashRoutePattern(RoutePattern):
    """A route pattern whose endpoint also matches with a trailing slash (never two)."""

    def __init__(self, route: str, name: str | None = None, is_endpoint: bool = False) -> None:
        super().__init__(route, name=name, is_endpoint=is_endpoint)
        if is_endpoint:
            # _route_to_regex ends an endpoint's regex in \Z; the regex descriptor compiles `_regex`. A route
            # written with its slash (`schema/`) matches without one as well.
            regex: str = self._regex  # type: ignore[has-type]
            self._regex = regex.removesuffix(r"\Z").removesuffix("/") + r"/?\Z"


api_path = partial(_path, Pattern=OptionalSlashRoutePattern)
