"""Execution request parsing and response rendering (DESIGN.md §6, bounds of §5a)."""

from __future__ import annotations

import json
import re
from typing import Any

from rest_framework import serializers

from executions_app.models import Execution, ExecutionOutputChunk, Language
from sandbox_site.api.fields import BuiltOnceModelSerializer, StrictCharField

MAX_CODE_BYTES = 1024 * 1024
MAX_EVENT_BYTES = 1024 * 1024
ENTRYPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ExecuteSerializer(serializers.Serializer):
    # Code is kept byte for byte: trimming would break indentation-sensitive languages.
    code = StrictCharField(trim_whitespace=False, allow_blank=False)
    language = serializers.ChoiceField(choices=Language.choices)
    event = serializers.JSONField(required=False)
    timeout = serializers.IntegerField(required=False, min_value=1, max_value=3600, default=30)
    entrypoint = serializers.RegexField(
        ENTRYPOINT, required=False, allow_blank=True, error_messages={"invalid": "must be a function name"}
    )

    def validate_code(self, code: str) -> str:
        size = len(code.encode("utf-8", errors="surrogatepass"))
        if size > MAX_CODE_BYTES:
            raise serializers.ValidationError(f"code is {size} bytes; the limit is {MAX_CODE_BYTES}")
        if "\x00" in code:
            raise serializers.ValidationError("code may not contain NUL characters")
        return code

    def validate_event(self, event: Any) -> Any:
        if event is None:
            return {}
        if not isinstance(event, dict):
            raise serializers.ValidationError("event must be a JSON object")
        size = len(json.dumps(event, ensure_ascii=False).encode("utf-8", errors="surrogatepass"))
        if size > MAX_EVENT_BYTES:
            raise serializers.ValidationError(
                f"event is {size} bytes encoded; the limit is {MAX_EVENT_BYTES}"
            )
        return event


class ExecutionAcceptedSerializer(serializers.Serializer):
    execution_id = serializers.CharField()
    session_id = serializers.CharField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()


class MetricsSerializer(serializers.Serializer):
    duration_ms = serializers.FloatField(allow_null=True, required=False)
    cpu_time_ms = serializers.FloatField(allow_null=True, required=False)
    peak_memory_mb = serializers.FloatField(allow_null=True, required=False)


class ArtifactSerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    change = serializers.ChoiceField(choices=["created", "modified", "deleted"])


class ExecutionSerializer(BuiltOnceModelSerializer):
    # The id its owner knows the session by (ids are per owner), not the internal key.
    session_id = serializers.CharField(source="session.client_id")
    event = serializers.JSONField()
    return_value = serializers.JSONField(allow_null=True)
    metrics = MetricsSerializer()
    artifacts = ArtifactSerializer(many=True)

    class Meta:
        model = Execution
        fields = [
            "id",
            "session_id",
            "status",
            "code",
            "language",
            "event",
            "timeout",
            "stdout",
            "stderr",
            "stdout_truncated",
            "stderr_truncated",
            "exit_code",
            "return_value",
            "error_message",
            "metrics",
            "artifacts",
            "created_at",
            "started_at",
            "completed_at",
        ]
        read_only_fields = fields


class OutputChunkSerializer(BuiltOnceModelSerializer):
    class Meta:
        model = ExecutionOutputChunk
        fields = ["seq", "stream", "data", "created_at"]


class OutputPageSerializer(serializers.Serializer):
    execution_id = serializers.CharField()
    status = serializers.CharField()
    finished = serializers.BooleanField()
    chunks = OutputChunkSerializer(many=True)
    next_after = serializers.IntegerField()
    has_more = serializers.BooleanField()
