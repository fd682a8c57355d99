"""Host paths out of text that API clients and console users see: `public_text()`.

Runtime errors are written for operators ("executor at /srv/sandbox/data/sandboxes/s-1/run/executor.sock did
not answer"); a tenant reading them learns the data dir, the socket layout and the install prefix, which help
an attack on the host. Every place where such text becomes an API body or console page (session
status_detail as it is stored, dependency install errors, execution errors, API error messages,
/health/detailed) passes it through `public_text`: the server's own roots become placeholders and executor
addresses become "the sandbox's executor". The full text stays in the server log, where operators look.

Container paths (`/workspace/...`, `/usr/lib/python3...` inside a sandbox) are left alone: they are the same
for every sandbox and the tenant can read them anyway.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from django.conf import settings

# "executor at <socket path or http://ip:port>" is how runtime/client.py names the executor in every error.
_EXECUTOR_AT = re.compile(r"executor at (?:/\S*?|https?://\S+?)(?=[:\s,;)]|$)")


def _host_roots() -> list[tuple[str, str]]:
    """(host path, placeholder) pairs, longest first so a nested root wins over its parent."""
    roots: list[tuple[str, str]] = []

    def add(path: Any, label: str) -> None:
        if not path:
            return
        text = str(path).rstrip("/")
        if len(text) < 2:
            return
        for variant in {text, os.path.realpath(text)}:
            roots.append((variant, label))

    add(getattr(settings, "DATA_DIR", ""), "<data dir>")
    add(getattr(settings, "SANDBOX_PIP_CACHE_DIR", ""), "<package cache>")
    add(getattr(settings, "BASE_DIR", ""), "<install dir>")
    if sys.prefix != sys.base_prefix:  # a virtualenv; a system prefix (/usr) is also every sandbox's
        add(sys.prefix, "<install dir>")
    docker_url = str(getattr(settings, "SANDBOX_DOCKER_URL", "") or "")
    if docker_url.startswith("unix://"):
        add(docker_url[len("unix://") :], "<docker socket>")
    add("/var/run/docker.sock", "<docker socket>")
    add("/run/docker.sock", "<docker socket>")
    return sorted(set(roots), key=lambda pair: len(pair[0]), reverse=True)


def public_text(text: str | None) -> str:
    """`text` with executor addresses and the server's own paths replaced by placeholders."""
    if not text:
        return text or ""
    text = _EXECUTOR_AT.sub("the sandbox's executor", text)
    for root, label in _host_roots():
        if root in text:
            text = text.replace(root, label)
    return text


def public_data(value: Any) -> Any:
    """`public_text` applied to every string inside a JSON-like value (error details, health checks)."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {key: public_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [public_data(item) for item in value]
    return value
