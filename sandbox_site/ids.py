"""Public ids: a prefix and 16 lowercase alphanumerics from the OS CSPRNG (about 82 bits)."""

from __future__ import annotations

import secrets
import string

from django.core.validators import RegexValidator

ID_ALPHABET = string.ascii_lowercase + string.digits
ID_RANDOM_LENGTH = 16

# The first character must be alphanumeric: ids name directories and containers, so "." and ".." are out.
CLIENT_ID_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    "Ids are 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit.",
)


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_RANDOM_LENGTH))


def new_session_id() -> str:
    return new_id("sess_")


def new_execution_id() -> str:
    return new_id("exec_")


def new_warm_id() -> str:
    return new_id("warm_")
