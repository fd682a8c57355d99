"""Operator views of executions; output is read-only. Also adds recent executions to the session page."""

from __future__ import annotations

from django.contrib import admin
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils.html import format_html

from executions_app.models import Execution, ExecutionOutputChunk
from sandbox_site.badges import status_badge
from sessions_app.admin import SandboxSessionAdmin

RECENT_EXECUTIONS = 20


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
    search_fields = ("id", "session__id", "session__client_id", "session__owner__username", "error_message")
    date_hierarchy = "created_at"
    list_select_related = ("session",)
    inlines = (OutputChunkInline,)
    readonly_fields = (
        "output",
        *(field.name for field in Execution._meta.get_fields() if getattr(field, "concrete", False)),
    )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Execution):
        return status_badge(obj.status)

    @admin.display(description="output (stdout, then stderr)")
    def output(self, obj: Execution):
        return format_html(
            '<pre style="max-height:24rem;overflow:auto;white-space:pre-wrap;margin:0">{}</pre>'
            '<pre style="max-height:12rem;overflow:auto;white-space:pre-wrap;margin:0;color:#b91c1c">{}</pre>',
            obj.stdout or "(no stdout)",
            obj.stderr,
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Recorded results are never rewritten: staff get Django's view-only page (no Save buttons).
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff


class RecentExecutionFormSet(BaseInlineFormSet):
    def get_queryset(self):
        # Only the newest few: a busy session can have thousands of executions.
        return super().get_queryset().order_by("-created_at", "-id")[:RECENT_EXECUTIONS]


class RecentExecutionInline(admin.TabularInline):
    """The newest executions of a session, read-only, each linking to its own admin page."""

    model = Execution
    formset = RecentExecutionFormSet
    verbose_name_plural = f"recent executions (newest {RECENT_EXECUTIONS})"
    fields = ("execution_link", "language", "status_badge", "exit_code", "duration", "created_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="execution")
    def execution_link(self, obj: Execution):
        url = reverse("admin:executions_app_execution_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.pk)

    @admin.display(description="status")
    def status_badge(self, obj: Execution):
        return status_badge(obj.status)

    @admin.display(description="duration")
    def duration(self, obj: Execution):
        duration = (obj.metrics or {}).get("duration_ms")
        return "–" if duration is None else f"{duration:.0f} ms"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# Registered from here so that sessions_app never imports executions_app (dependency direction, DESIGN §2).
SandboxSessionAdmin.inlines = (*SandboxSessionAdmin.inlines, RecentExecutionInline)
