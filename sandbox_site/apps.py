from __future__ import annotations

from django.apps import AppConfig


class SandboxSiteConfig(AppConfig):
    name = "sandbox_site"
    verbose_name = "Sandbox Control Plane"
