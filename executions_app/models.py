"""Execution (one run of code in a session's sandbox) and its stored output chunks."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from sandbox_site.host_paths import public_text
from sandbox_site.ids import new_execution_id
from sessions_app.models import InvalidTransition, NotVisible, SandboxSession, visible_to_filter


class ExecutionStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    CANCELLED = "cancelled"


FINISHED_EXECUTION_STATUSES = (
    ExecutionStatus.COMPLETED,
    ExecutionStatus.FAILED,
    ExecutionStatus.TIMEOUT,
    ExecutionStatus.CRASHED,
    ExecutionStatus.CANCELLED,
)

EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    ExecutionStatus.PENDING: frozenset(
        {ExecutionStatus.RUNNING, ExecutionStatus.CANCELLED, ExecutionStatus.CRASHED}
    ),
    ExecutionStatus.RUNNING: frozenset(FINISHED_EXECUTION_STATUSES),
    **{status: frozenset() for status in FINISHED_EXECUTION_STATUSES},
}


class Language(models.TextChoices):
    PYTHON = "python"
    JAVASCRIPT = "javascript"
    SHELL = "shell"


class ExecutionQuerySet(models.QuerySet["Execution"]):
    def visible_to(self, user: Any) -> ExecutionQuerySet:
        """The executions of the sessions `user` may see: the rule of `SandboxSession.objects.visible_to`."""
        return self.filter(visible_to_filter(user, through="session__"))

    def get_visible(self, user: Any, execution_id: str) -> Execution:
        """The execution if `user` may see it, else NotVisible (a 404 in the API and the console alike)."""
        execution = self.visible_to(user).select_related("session").filter(pk=execution_id).first()
        if execution is None:
            raise NotVisible("execution_not_found", f"no execution {execution_id!r}")
        return execution

    def unfinished(self) -> ExecutionQuerySet:
        return self.filter(status__in=(ExecutionStatus.PENDING, ExecutionStatus.RUNNING))

    def lease_lapsed(self, now: Any) -> ExecutionQuerySet:
        return self.filter(status=ExecutionStatus.RUNNING, lease_expires_at__lt=now)


class Execution(models.Model):
    """One run of code. `exit_code` stays null until it finishes; `return_value` keeps falsy values.

    stdout/stderr hold the kept output (capped per stream by the executor); the live, seq-numbered stream is
    in ExecutionOutputChunk. On MariaDB Django maps TextField to LONGTEXT and JSONField to LONGTEXT, so
    output columns hold up to 4 GiB rather than TEXT's 64 KiB.
    """

    id = models.CharField(primary_key=True, max_length=64, default=new_execution_id)
    session = models.ForeignKey(SandboxSession, on_delete=models.CASCADE, related_name="executions")
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING)
    language = models.CharField(max_length=16, choices=Language.choices)
    code = models.TextField()
    entrypoint = models.CharField(max_length=128, blank=True)
    event = models.JSONField(default=dict, blank=True)
    timeout = models.PositiveIntegerField(default=30)
    stdout = models.TextField(blank=True)
    stderr = models.TextField(blank=True)
    stdout_truncated = models.BooleanField(default=False)
    stderr_truncated = models.BooleanField(default=False)
    exit_code = models.IntegerField(null=True, blank=True)
    return_value = models.JSONField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    artifacts = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="host:pid of the process running it.")
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["session", "created_at"], name="execution_session_created_idx"),
            models.Index(fields=["status", "lease_expires_at"], name="execution_status_lease_idx"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_EXECUTION_STATUSES

    def can_transition(self, target: str) -> bool:
        return target in EXECUTION_TRANSITIONS[self.status]

    def transition(self, target: str, **fields: Any) -> None:
        """Move to `target` by a conditional UPDATE on the current status (see SandboxSession.transition)."""
        if not self.can_transition(target):
            raise InvalidTransition("execution", self.status, target)
        now = timezone.now()
        changes: dict[str, Any] = dict(fields)
        changes["status"] = target
        if changes.get("error_message"):
            # Stored as the tenant will read it: runtime errors name host paths (see host_paths.py).
            changes["error_message"] = public_text(changes["error_message"])
        if target == ExecutionStatus.RUNNING:
            changes.setdefault("started_at", now)
        if target in FINISHED_EXECUTION_STATUSES:
            changes.setdefault("completed_at", now)
        updated = Execution.objects.filter(pk=self.pk, status=self.status).update(**changes)
        if updated != 1:
            current = Execution.objects.filter(pk=self.pk).values_list("status", flat=True).first()
            raise InvalidTransition("execution", str(current), target)
        for name, value in changes.items():
            setattr(self, name, value)


class OutputStream(models.TextChoices):
    STDOUT = "stdout"
    STDERR = "stderr"


class ExecutionOutputChunk(models.Model):
    """A batch of output from one stream, numbered so a reconnecting client asks for `after=<seq>`."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    stream = models.CharField(max_length=8, choices=OutputStream.choices)
    data = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [models.UniqueConstraint(fields=["execution", "seq"], name="unique_chunk_seq")]

    def __str__(self) -> str:
        return f"{self.execution_id}#{self.seq}"
