from __future__ import annotations

from django.apps import AppConfig


class SandboxSiteConfig(AppConfig):
    name = "sandbox_site"
    verbose_name = "Sandbox Control Plane"

    def ready(self) -> None:
        from sandbox_site.data_dir import secure_at_start

        # Before anything opens the database: a new SQLite file is then created 0600, an old one fixed.
        secure_at_start()
        from sandbox_site.metrics.database import instrument_database

        instrument_database()  # django-prometheus's query metrics on every connection, engines unchanged
