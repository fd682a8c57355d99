"""Operator views of executions; output is read-only."""

from __future__ import annotations

from django.contrib import admin

from executions_app.models import Execution, ExecutionOutputChunk
from sandbox_site.badges import status_badge


class OutputChunkInline(admin.TabularInline):
    model = ExecutionOutputChunk
    fields = ("seq", "stream", "data", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    ordering = ("seq",)


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("id", "session", "language", "status_badge", "exit_code", "created_at", "completed_at")
    list_filter = ("status", "language")
    search_fields = ("id", "session__id", "session__owner__username", "error_message")
    date_hierarchy = "created_at"
    list_select_related = ("session",)
    inlines = (OutputChunkInline,)
    readonly_fields = tuple(
        field.name for field in Execution._meta.get_fields() if getattr(field, "concrete", False)
    )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Execution):
        return status_badge(obj.status)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Viewing is allowed through the read-only form; saving would rewrite recorded results.
        return request.method in ("GET", "HEAD")
