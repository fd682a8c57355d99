"""Operator views of sessions and API keys; actions go through the same services as the API."""

from __future__ import annotations

from django.contrib import admin, messages

from sandbox_site.badges import status_badge
from sessions_app.models import ApiKey, SandboxSession
from sessions_app.services import session_delete, session_terminate

LIVE_FIXED_FIELDS = ("owner", "template", "cpu", "memory_mb", "disk_mb", "max_processes", "env_vars")


@admin.register(SandboxSession)
class SandboxSessionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "client_id",
        "owner",
        "template",
        "status_badge",
        "runtime_type",
        "created_at",
        "last_activity_at",
    )
    list_filter = ("status", "template", "runtime_type", "dependency_install_status")
    search_fields = ("id", "client_id", "owner__username", "container_id", "termination_reason")
    date_hierarchy = "created_at"
    list_select_related = ("owner", "template")
    exclude = ("executor_token",)
    readonly_fields = (
        "id",
        "client_id",
        "status",
        "termination_reason",
        "status_detail",
        "runtime_type",
        "runtime_node",
        "container_id",
        "workspace_path",
        "executor_endpoint",
        "installed_dependencies",
        "dependency_install_status",
        "dependency_install_error",
        "dependency_install_started_at",
        "dependency_install_finished_at",
        "created_at",
        "running_at",
        "updated_at",
        "last_activity_at",
        "idle_deadline_at",
        "expires_at",
        "completed_at",
    )
    actions = ("terminate_sessions",)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: SandboxSession):
        return status_badge(obj.status)

    def has_add_permission(self, request):
        # Sessions need a sandbox; they are created through the API or the console, never as bare rows.
        return False

    def get_readonly_fields(self, request, obj=None):
        # A live session's sandbox was built with these: editing the row would only make it lie about the
        # sandbox (resources are not resized, the owner and template are fixed by what runs).
        if obj is not None and obj.is_live:
            return (*self.readonly_fields, *LIVE_FIXED_FIELDS)
        return self.readonly_fields

    # Deleting (the change page's button and the bulk action) goes through session_delete, as the API's
    # DELETE does: a live session is ended first (its running executions cancelled, its sandbox destroyed),
    # then its stored workspace and the row go; never the row alone with the sandbox left running.
    def delete_model(self, request, obj: SandboxSession) -> None:
        session_delete(session=obj)

    def delete_queryset(self, request, queryset) -> None:
        for session in queryset.select_related("template"):
            session_delete(session=session)

    @admin.action(description="Terminate selected sessions")
    def terminate_sessions(self, request, queryset):
        ended = 0
        for session in queryset.live():
            session_terminate(session=session, reason="operator_request")
            ended += 1
        self.message_user(request, f"Terminated {ended} session(s).", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "owner__username")
    readonly_fields = ("prefix", "hashed_key", "created_at", "last_used_at", "revoked_at")
    fields = ("owner", "name", "prefix", "hashed_key", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke_keys",)

    def has_add_permission(self, request):
        # A key's secret must be shown once at creation; the console and create_api_key do that.
        return False

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset):
        keys = list(queryset.active())
        for key in keys:
            key.revoke()
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)
