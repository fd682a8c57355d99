"""Request fields with units: cpu ("1", "0.5", "500m") and sizes ("512Mi", "1Gi", or a number of MiB)."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_TO_MIB = {
    None: Decimal(1),
    "Ki": Decimal(1) / 1024,
    "Mi": Decimal(1),
    "Gi": Decimal(1024),
    "Ti": Decimal(1024 * 1024),
    "K": Decimal(1000) / (1024 * 1024),
    "M": Decimal(1000**2) / (1024 * 1024),
    "G": Decimal(1000**3) / (1024 * 1024),
    "T": Decimal(1000**4) / (1024 * 1024),
}


def format_mib(mib: int) -> str:
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


@extend_schema_field(
    {"oneOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"}, {"type": "integer"}]}
)
class SizeField(serializers.Field):
    """A size in MiB. Integers are MiB; strings take Kubernetes suffixes (Mi, Gi, M, G ...)."""

    def __init__(self, *, min_mib: int, max_mib: int, **kwargs) -> None:
        self.min_mib = min_mib
        self.max_mib = max_mib
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> int:
        if isinstance(data, bool):
            self.fail_invalid(data)
        if isinstance(data, int):
            mib = Decimal(data)
        elif isinstance(data, str) and (match := _SIZE.match(data.strip())):
            mib = Decimal(match.group(1)) * _TO_MIB[match.group(2)]
        else:
            self.fail_invalid(data)
        value = math.ceil(mib)
        if not self.min_mib <= value <= self.max_mib:
            raise serializers.ValidationError(
                f"must be between {format_mib(self.min_mib)} and {format_mib(self.max_mib)}"
            )
        return value

    def fail_invalid(self, data) -> None:
        raise serializers.ValidationError(
            f"{str(data)[:40]!r} is not a size; use a number of MiB or a string such as '512Mi' or '2Gi'"
        )

    def to_representation(self, value: int) -> str:
        return format_mib(value)


@extend_schema_field({"oneOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?m?$"}, {"type": "number"}]})
class CpuField(serializers.Field):
    """CPU cores as a normalised string ("0.5"); accepts numbers, "1.5" or millicores ("500m")."""

    MIN = Decimal("0.1")
    MAX = Decimal("4")

    def to_internal_value(self, data) -> str:
        try:
            if isinstance(data, bool) or not isinstance(data, (int, float, str)):
                raise InvalidOperation
            text = str(data).strip()
            cores = Decimal(text[:-1]) / 1000 if text.endswith("m") else Decimal(text)
            if not cores.is_finite():
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            raise serializers.ValidationError(
                f"{str(data)[:40]!r} is not a cpu amount; use cores ('1', '0.5') or millicores ('500m')"
            ) from None
        if not self.MIN <= cores <= self.MAX:
            raise serializers.ValidationError(f"must be between {self.MIN} and {self.MAX} cores")
        return format(cores.normalize(), "f")

    def to_representation(self, value: str) -> str:
        return value
