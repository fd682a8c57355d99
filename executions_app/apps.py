from __future__ import annotations

from django.apps import AppConfig


class ExecutionsAppConfig(AppConfig):
    name = "executions_app"
    verbose_name = "Executions"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from executions_app.tasks import on_worker_spawn

        post_spawn.connect(on_worker_spawn, dispatch_uid="executions_app.on_worker_spawn")
