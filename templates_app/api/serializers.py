"""Template parsing and rendering; model validators carry the bounds."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from templates_app.models import SandboxTemplate, validate_env_vars


class SandboxTemplateSerializer(serializers.ModelSerializer):
    id = serializers.RegexField(r"^[a-z0-9][a-z0-9._-]{0,63}$", max_length=64)
    default_env_vars = serializers.DictField(
        child=serializers.CharField(max_length=32768, allow_blank=True),
        required=False,
        validators=[validate_env_vars],  # the model field's rule; a declared field does not inherit it
    )
    pre_installed_packages = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=200
    )

    class Meta:
        model = SandboxTemplate
        fields = [
            "id",
            "name",
            "description",
            "image_url",
            "runtime_type",
            "sandbox_backend",
            "default_cpu_cores",
            "default_memory_mb",
            "default_disk_mb",
            "default_timeout_sec",
            "default_env_vars",
            "pre_installed_packages",
            "warm_pool_size",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"default_cpu_cores": {"coerce_to_string": False}}

    def validate_id(self, value: str) -> str:
        if self.instance is not None and value != self.instance.id:
            raise serializers.ValidationError("a template's id cannot change")
        return value

    def to_representation(self, instance: SandboxTemplate) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["default_cpu_cores"] = float(instance.default_cpu_cores)
        return data
