"""Session request parsing and response rendering (DESIGN.md §6). No workflow logic lives here."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from runtime import environment
from sandbox_site.api.fields import BuiltOnceModelSerializer, StrictCharField
from sandbox_site.host_paths import public_text
from sandbox_site.ids import CLIENT_ID_VALIDATOR
from sessions_app.api.fields import CpuField, SizeField, format_mib
from sessions_app.dependencies import index_url_refusal, merge_dependencies
from sessions_app.models import SandboxSession

METADATA_KEY = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
# PEP 508 names, and version specifiers without spaces, options, URLs or paths.
PACKAGE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
VERSION_SPEC = re.compile(
    r"^(?:(?:==|>=|<=|~=|!=|<|>|===)?[A-Za-z0-9.*+!]{1,64})(?:,(?:==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!]{1,64}){0,4}$"
)
MAX_DEPENDENCIES = 50
# A requirement that looks like an archive file name is read by pip as a path: not a package name.
ARCHIVE_SUFFIXES = (
    ".whl",
    ".zip",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tar.lz",
)
WORKSPACE_ROOT = "/workspace"
MAX_CA_BUNDLE = 256 * 1024
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def validate_package_name(value: str) -> str:
    if value.lower().endswith(ARCHIVE_SUFFIXES):
        raise serializers.ValidationError("not a package name (it looks like an archive file)")
    return value


def validate_index_url(value: str) -> str:
    if value and not value.lower().startswith(("http://", "https://")):
        raise serializers.ValidationError("a package index is an http:// or https:// URL")
    problem = index_url_refusal(value) if value else None
    if problem:
        raise serializers.ValidationError(problem)
    return value


def validate_ca_bundle(value: str) -> str:
    if value and (PEM_CERTIFICATE not in value or "\x00" in value):
        raise serializers.ValidationError("PEM-encoded certificates ('-----BEGIN CERTIFICATE-----' ...)")
    return value


def package_index_field() -> serializers.URLField:
    return serializers.URLField(
        required=False, allow_blank=True, max_length=500, validators=[validate_index_url]
    )


def ca_bundle_field() -> StrictCharField:
    return StrictCharField(
        required=False,
        allow_blank=True,
        max_length=MAX_CA_BUNDLE,
        trim_whitespace=False,
        validators=[validate_ca_bundle],
        help_text="Extra CA certificates (PEM) that pip trusts for this session's package index.",
    )


class DependencySerializer(serializers.Serializer):
    name = serializers.RegexField(
        PACKAGE_NAME,
        max_length=100,
        validators=[validate_package_name],
        error_messages={"invalid": "not a package name"},
    )
    version = serializers.RegexField(
        VERSION_SPEC,
        max_length=200,
        required=False,
        allow_blank=True,
        error_messages={"invalid": "not a version or version specifier (e.g. '1.2.3' or '>=1.2,<2')"},
    )


class ResourcesSerializer(serializers.Serializer):
    cpu = CpuField(required=False)
    memory = SizeField(min_mib=64, max_mib=8192, required=False)
    disk = SizeField(min_mib=256, max_mib=51200, required=False)


def validate_env_vars(value: dict[str, str]) -> dict[str, str]:
    problem = environment.refusal(value)
    if problem:
        raise serializers.ValidationError(problem)
    return value


def validate_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 50:
        raise serializers.ValidationError("at most 50 keys")
    bad = [key for key in value if not METADATA_KEY.match(key)]
    if bad:
        raise serializers.ValidationError("keys are 1-64 characters of letters, digits and . _ : / -")
    return value


class SessionCreateSerializer(serializers.Serializer):
    template_id = serializers.CharField(max_length=64)
    id = serializers.CharField(
        required=False,
        max_length=64,
        validators=[CLIENT_ID_VALIDATOR],
        help_text="Your id for it, unique among your own sessions (other owners may use the same).",
    )
    timeout = serializers.IntegerField(required=False, min_value=10, max_value=86400)
    cpu = CpuField(required=False)
    memory = SizeField(min_mib=64, max_mib=8192, required=False)
    disk = SizeField(min_mib=256, max_mib=51200, required=False)
    resources = ResourcesSerializer(required=False)
    env_vars = serializers.DictField(
        child=StrictCharField(max_length=32768, allow_blank=True),
        required=False,
        validators=[validate_env_vars],
    )
    dependencies = serializers.ListField(
        child=DependencySerializer(), required=False, max_length=MAX_DEPENDENCIES
    )
    python_package_index_url = package_index_field()
    python_package_ca_bundle = ca_bundle_field()
    restore_from = serializers.CharField(
        required=False,
        max_length=64,
        validators=[CLIENT_ID_VALIDATOR],
        help_text="Start with the saved workspace of this ended session of yours.",
    )
    metadata = serializers.DictField(
        child=StrictCharField(max_length=512, allow_blank=True),
        required=False,
        validators=[validate_metadata],
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        nested = attrs.pop("resources", {}) or {}
        for name in ("cpu", "memory", "disk"):
            if name in nested and name in attrs and nested[name] != attrs[name]:
                raise serializers.ValidationError(
                    {name: [f"given twice with different values ({name} and resources.{name})"]}
                )
            if name in nested:
                attrs[name] = nested[name]
        if attrs.get("dependencies"):
            attrs["dependencies"] = merge_dependencies([], attrs["dependencies"])
        return attrs

    @staticmethod
    def service_arguments(data: dict[str, Any]) -> dict[str, Any]:
        """`session_create` keyword arguments from validated data (everything but owner and template)."""
        return {
            "session_id": data.get("id"),
            "cpu": data.get("cpu"),
            "memory_mb": data.get("memory"),
            "disk_mb": data.get("disk"),
            "timeout": data.get("timeout"),
            "env_vars": data.get("env_vars"),
            "metadata": data.get("metadata"),
            "dependencies": data.get("dependencies"),
            "python_package_index_url": data.get("python_package_index_url", ""),
            "python_package_ca_bundle": data.get("python_package_ca_bundle", ""),
            "restore_from": data.get("restore_from"),
        }


class DependencyInstallSerializer(serializers.Serializer):
    dependencies = serializers.ListField(
        child=DependencySerializer(), min_length=1, max_length=MAX_DEPENDENCIES
    )
    python_package_index_url = package_index_field()
    python_package_ca_bundle = ca_bundle_field()


class ResourceLimitSerializer(serializers.Serializer):
    cpu = serializers.CharField()
    memory = serializers.CharField()
    disk = serializers.CharField()
    max_processes = serializers.IntegerField()


class SessionSerializer(BuiltOnceModelSerializer):
    # Ids are per owner: the id its owner chose (or was given), never the internal key.
    id = serializers.CharField(source="client_id", help_text="Its owner's id for it; unique per owner.")
    template_id = serializers.CharField()
    resource_limit = serializers.SerializerMethodField()
    requested_dependencies = serializers.ListField(child=DependencySerializer())
    installed_dependencies = serializers.ListField(child=DependencySerializer())
    env_vars = serializers.DictField(child=serializers.CharField(allow_blank=True))
    metadata = serializers.DictField(child=serializers.CharField(allow_blank=True))
    # As in the API this product replaces: the language runtime (its template's); where the sandbox runs is
    # `sandbox_backend` (the session's own record, fixed at create).
    runtime_type = serializers.CharField(
        source="template.runtime_type", help_text="Language runtime of its template, e.g. python3.11."
    )
    sandbox_backend = serializers.CharField(
        source="runtime_type", help_text="Where its sandbox runs: process, docker or kubernetes."
    )
    termination_reason = serializers.CharField(allow_null=True)
    restore_from = serializers.CharField(
        allow_null=True, help_text="The ended session whose saved workspace this one started with."
    )

    class Meta:
        model = SandboxSession
        fields = [
            "id",
            "template_id",
            "status",
            "termination_reason",
            "resource_limit",
            "env_vars",
            "timeout",
            "metadata",
            "runtime_type",
            "sandbox_backend",
            "runtime_node",
            "container_id",
            "workspace_path",
            "python_package_index_url",
            "requested_dependencies",
            "installed_dependencies",
            "dependency_install_status",
            "dependency_install_error",
            "restore_from",
            "created_at",
            "updated_at",
            "last_activity_at",
            "expires_at",
            "completed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ResourceLimitSerializer)
    def get_resource_limit(self, session: SandboxSession) -> dict[str, Any]:
        return ResourceLimitSerializer(
            {
                "cpu": session.cpu,
                "memory": format_mib(session.memory_mb),
                "disk": format_mib(session.disk_mb),
                "max_processes": session.max_processes,
            }
        ).data

    def to_representation(self, instance: SandboxSession) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["termination_reason"] = instance.termination_reason or None
        data["restore_from"] = restore_source_id(instance)
        # Clients see the sandbox's own view: the workspace is /workspace whatever host dir backs it, and
        # install errors lose the host's paths (the full text is in the server log).
        data["workspace_path"] = WORKSPACE_ROOT if instance.workspace_path else ""
        data["dependency_install_error"] = public_text(instance.dependency_install_error)
        return data


def restore_source_id(session: SandboxSession) -> str | None:
    """The id its owner knows the restore source by: it is stored by internal id, which keys its workspace."""
    if not session.restore_from:
        return None
    sources = SandboxSession.objects.filter(pk=session.restore_from, owner_id=session.owner_id)
    return sources.values_list("client_id", flat=True).first() or session.restore_from
