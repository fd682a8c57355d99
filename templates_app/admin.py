"""Operator views of templates."""

from __future__ import annotations

from django.contrib import admin

from templates_app.models import SandboxTemplate


@admin.register(SandboxTemplate)
class SandboxTemplateAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "runtime_type",
        "sandbox_backend",
        "image_url",
        "default_cpu_cores",
        "default_memory_mb",
        "warm_pool_size",
        "is_active",
    )
    list_filter = ("is_active", "runtime_type", "sandbox_backend")
    search_fields = ("id", "name", "description", "image_url")
    readonly_fields = ("created_at", "updated_at")
    actions = ("deactivate",)

    def get_readonly_fields(self, request, obj=None):
        # The id is the public key agents use; renaming it would orphan their references.
        return (*self.readonly_fields, "id") if obj else self.readonly_fields

    @admin.action(description="Deactivate selected templates (no new sessions)")
    def deactivate(self, request, queryset):
        count = queryset.update(is_active=False)
        self.message_user(request, f"Deactivated {count} template(s).")
