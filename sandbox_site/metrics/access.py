"""Who may read /metrics (SANDBOX_METRICS_TOKEN, SANDBOX_METRICS_ALLOW; docs/operations.md).

- a request with `Authorization: Bearer <SANDBOX_METRICS_TOKEN>`; a wrong token (or a token when none is set)
  is a 401 whatever the address, so a misconfigured scraper is told so instead of being let in by address;
- a request without an Authorization header from an address in SANDBOX_METRICS_ALLOW (default: loopback);
- a logged-in, active staff user of the console;
and nobody else: 401 when a token is set (it would let the request in), else 403. The client address is
REMOTE_ADDR, which uvicorn takes from X-Forwarded-For only for the proxies in SANDBOX_FORWARDED_ALLOW_IPS.

API keys never open the metrics: they are the platform's numbers across every tenant.
Imports no prometheus_client: settings use `parse_allow` to check SANDBOX_METRICS_ALLOW at start-up.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NOBODY = "none"


def parse_allow(value: str) -> tuple[Network, ...]:
    """`127.0.0.1,::1,10.0.0.0/8` as networks (`none`: no address); a malformed entry raises ValueError."""
    networks = []
    for entry in (item.strip() for item in value.split(",")):
        if not entry or entry.lower() == NOBODY:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"SANDBOX_METRICS_ALLOW: {entry!r} is not an IP address or network (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(networks)


@cache
def _networks(value: str) -> tuple[Network, ...]:
    return parse_allow(value)


def address_allowed(address: str, allow: str) -> bool:
    try:
        client = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    return any(client in network for network in _networks(allow))


def _unauthorized(request: HttpRequest, message: str) -> HttpResponse:
    from sandbox_site.api.errors import json_error

    response = json_error(request, 401, "unauthorized", message)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the metrics, else the 401 or 403 to answer."""
    from sandbox_site.api.errors import json_error

    token = settings.SANDBOX_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, presented = header.partition(" ")
        if token and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip(), token):
            return None
        return _unauthorized(request, "the metrics token is not valid")
    if address_allowed(request.META.get("REMOTE_ADDR", ""), settings.SANDBOX_METRICS_ALLOW):
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return None
    if token:
        return _unauthorized(request, "metrics need `Authorization: Bearer <SANDBOX_METRICS_TOKEN>`")
    return json_error(
        request, 403, "forbidden", "metrics are served to the addresses in SANDBOX_METRICS_ALLOW only"
    )
