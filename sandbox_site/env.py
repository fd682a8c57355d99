"""Strict parsing of environment variables for settings.

Every reader names the variable in its error, so a malformed value stops start-up with a message that says
which variable to fix. `<NAME>_FILE` holds a path whose contents replace `<NAME>` (for secrets mounted as
files); setting both is refused, because which one wins would be a guess.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Env:
    """Reads typed values from a mapping (os.environ by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        file_path = self.environ.get(f"{name}_FILE")
        if file_path:
            if value is not None:
                raise ImproperlyConfigured(f"{name} and {name}_FILE are both set; set only one")
            try:
                return Path(file_path).read_text().strip()
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"{name}_FILE={file_path!r} cannot be read: {exc.strerror}"
                ) from exc
        return value

    def string(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        return default if value is None or value == "" else value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None or value == "":
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use true or false")

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = int(value.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum {maximum}")
        return number

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default).strip()
        if value not in choices:
            raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}")
        return value

    def items(self, name: str, default: list[str]) -> list[str]:
        value = self.raw(name)
        if value is None or value.strip() == "":
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def url(self, name: str, schemes: tuple[str, ...]) -> str:
        value = self.string(name).strip()
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ImproperlyConfigured(f"{name}={value!r} is not a URL with scheme {' or '.join(schemes)}")
        return value


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed DATABASE_URL."""

    engine: str
    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: str = ""
    options: tuple[tuple[str, str], ...] = ()


_DB_NAME = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


def parse_database_url(name: str, value: str) -> DatabaseUrl:
    """Parse `sqlite:///path` or `mysql://user:pass@host:port/db` (also `mariadb://`)."""
    parts = urlsplit(value)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path.startswith("/") or path in ("/", "//"):
            raise ImproperlyConfigured(f"{name}={value!r}: use sqlite:////absolute/path.sqlite3")
        # sqlite:////abs/db -> /abs/db ; sqlite:///rel/db -> rel/db (relative to the working directory)
        return DatabaseUrl(engine="sqlite", name=path[1:])
    if parts.scheme in ("mysql", "mariadb"):
        db_name = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not _DB_NAME.match(db_name):
            raise ImproperlyConfigured(f"{name}={value!r}: use mysql://user:password@host:port/database")
        try:
            port = str(parts.port or "")
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r}: the port is not a number") from None
        return DatabaseUrl(
            engine="mysql",
            name=db_name,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname,
            port=port,
            options=tuple(parse_qsl(parts.query)),
        )
    raise ImproperlyConfigured(f"{name}={value!r} is not a database URL; use sqlite:///... or mysql://...")
