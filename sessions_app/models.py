"""SandboxSession (one agent's sandbox and its lifecycle) and ApiKey (how agents authenticate)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTransform
from django.http import Http404
from django.utils import timezone

from sandbox_site.host_paths import public_text
from sandbox_site.ids import CLIENT_ID_VALIDATOR, new_session_id, new_warm_id
from templates_app.models import SandboxTemplate


class InvalidTransition(Exception):
    """A status change the state machine does not allow, or one that lost a race to another writer."""

    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot move from {current} to {target}")
        self.current = current
        self.target = target


class SessionStatus(models.TextChoices):
    CREATING = "creating"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    TERMINATED = "terminated"


LIVE_SESSION_STATUSES = (SessionStatus.CREATING, SessionStatus.RUNNING)

SESSION_TRANSITIONS: dict[str, frozenset[str]] = {
    SessionStatus.CREATING: frozenset(
        {SessionStatus.RUNNING, SessionStatus.FAILED, SessionStatus.TIMEOUT, SessionStatus.TERMINATED}
    ),
    SessionStatus.RUNNING: frozenset(
        {SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.TIMEOUT, SessionStatus.TERMINATED}
    ),
    SessionStatus.COMPLETED: frozenset(),
    SessionStatus.FAILED: frozenset(),
    SessionStatus.TIMEOUT: frozenset(),
    SessionStatus.TERMINATED: frozenset(),
}


class DependencyInstallStatus(models.TextChoices):
    PENDING = "pending"
    INSTALLING = "installing"
    COMPLETED = "completed"
    FAILED = "failed"


class NotVisible(Http404):
    """No such object for this user. Another owner's object is answered exactly like a missing one.

    A 404 in the console as any Http404 is; the API answers it in its error shape with `code`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def visible_to_filter(user: Any, *, through: str = "") -> Q:
    """The one visibility rule: staff see every session, everyone else only their own.

    `through` is the path from another model to its session (`"session__"` for executions), so every
    model hanging off a session is visible exactly when its session is.
    """
    if getattr(user, "is_staff", False):
        return Q()
    return Q(**{f"{through}owner_id": user.pk})


class SandboxSessionQuerySet(models.QuerySet["SandboxSession"]):
    def visible_to(self, user: Any) -> SandboxSessionQuerySet:
        """What `user` may see (API, console, websocket): see `visible_to_filter`."""
        return self.filter(visible_to_filter(user))

    def identified(self, user: Any, ident: str) -> SandboxSession | None:
        """The session `user` means by `ident` in a URL or a request body, or None: the one lookup by id.

        Client-chosen ids are unique per owner only (two owners may both have "build-1"), so an id means,
        in this order: the caller's own session with that client id; a session the caller may see with
        that internal id (the primary key, which console links use); for staff, who see everyone's
        sessions, the one session of any owner with that client id when exactly one has it. Another
        owner's session is never found by a non-staff caller, whichever of its ids is given: that is a
        None, exactly like an id nobody has.
        """
        visible = self.visible_to(user)
        # No ORDER BY: at most two rows, told apart below (sorting them cost a fifth of the lookup's CPU).
        candidates = list(visible.filter(Q(owner_id=user.pk, client_id=ident) | Q(pk=ident)).order_by()[:2])
        for session in candidates:
            if session.owner_id == user.pk and session.client_id == ident:
                return session
        if candidates:
            return candidates[0]
        if getattr(user, "is_staff", False):
            # Ambiguous between owners: staff name it by its internal id instead.
            named = list(visible.filter(client_id=ident)[:2])
            if len(named) == 1:
                return named[0]
        return None

    def get_visible(self, user: Any, ident: str) -> SandboxSession:
        """`identified`, with its template, or NotVisible (a 404 in the API and the console alike).

        The one lookup of a session named in a URL: API, console and executions all call it. Its owner is
        not joined in: only staff pages show it, and the owner's columns cost every API request.
        """
        session = self.select_related("template").identified(user, ident)
        if session is None:
            raise NotVisible("session_not_found", f"no session {ident!r}")
        return session

    def matching(
        self,
        *,
        status: str = "",
        template_id: str = "",
        metadata: Iterable[tuple[str, str]] = (),
        search: str = "",
    ) -> SandboxSessionQuerySet:
        """Sessions with that status, of that template, with these metadata values and matching `search`
        (a substring of an id or of the metadata); blank arguments do not filter. The API's and the
        console's session lists both filter here."""
        sessions = self
        if status:
            sessions = sessions.filter(status=status)
        if template_id:
            sessions = sessions.filter(template_id=template_id)
        for index, (key, value) in enumerate(metadata):
            # KeyTransform takes the key literally: a "__" or a lookup name inside it is not parsed.
            alias = f"metadata_filter_{index}"
            sessions = sessions.alias(**{alias: KeyTransform(key, "metadata")}).filter(**{alias: value})
        if search:
            sessions = sessions.filter(
                Q(client_id__icontains=search) | Q(id__icontains=search) | Q(metadata__icontains=search)
            )
        return sessions

    def live(self) -> SandboxSessionQuerySet:
        return self.filter(status__in=LIVE_SESSION_STATUSES)

    def idle_since(self, now: Any) -> SandboxSessionQuerySet:
        return self.filter(status=SessionStatus.RUNNING, idle_deadline_at__lte=now)

    def past_lifetime(self, now: Any) -> SandboxSessionQuerySet:
        return self.filter(status__in=LIVE_SESSION_STATUSES, expires_at__lte=now)

    def stuck_creating(self, before: Any) -> SandboxSessionQuerySet:
        return self.filter(status=SessionStatus.CREATING, created_at__lte=before)


class SandboxSession(models.Model):
    """One sandbox owned by one user, from one template.

    Resources, env and timeout are copied from the template at creation. Status changes go through
    `transition()`, a conditional UPDATE on the current status: two writers racing (an API terminate and a
    cleanup sweep) can never both win, and a terminal status is never left.

    `id` is internal and server-generated: it names the sandbox, its directories and containers, its stored
    workspace and its executions' references. `client_id` is the id the owner chose at create (or the
    internal id when they chose none), unique per owner: it is what the API and the console show as the
    session's id, so one tenant's choice of id never collides with, or reveals, another tenant's.
    """

    id = models.CharField(
        primary_key=True, max_length=64, default=new_session_id, validators=[CLIENT_ID_VALIDATOR]
    )
    client_id = models.CharField(
        max_length=64,
        blank=True,
        validators=[CLIENT_ID_VALIDATOR],
        help_text="The id its owner knows it by; unique per owner. Blank at create means the internal id.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sandbox_sessions"
    )
    template = models.ForeignKey(SandboxTemplate, on_delete=models.PROTECT, related_name="sessions")
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.CREATING)
    termination_reason = models.CharField(max_length=64, blank=True)
    status_detail = models.TextField(blank=True, help_text="Why the session failed, in words.")

    cpu = models.CharField(max_length=16, default="1", help_text="Cores, e.g. '1' or '0.5'.")
    memory_mb = models.PositiveIntegerField(default=512)
    disk_mb = models.PositiveIntegerField(default=1024)
    max_processes = models.PositiveIntegerField(default=128)
    env_vars = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    timeout = models.PositiveIntegerField(default=300, help_text="Idle timeout in seconds.")
    max_lifetime = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds this session may live; blank uses SANDBOX_MAX_LIFETIME."
    )

    python_package_index_url = models.CharField(max_length=500, blank=True)
    python_package_ca_bundle = models.TextField(
        blank=True, help_text="Extra CA certificates (PEM) pip trusts for this session's package index."
    )
    requested_dependencies = models.JSONField(default=list, blank=True)
    installed_dependencies = models.JSONField(default=list, blank=True)
    dependency_install_status = models.CharField(
        max_length=16, choices=DependencyInstallStatus.choices, default=DependencyInstallStatus.COMPLETED
    )
    dependency_install_error = models.TextField(blank=True)
    dependency_install_started_at = models.DateTimeField(null=True, blank=True)
    dependency_install_finished_at = models.DateTimeField(null=True, blank=True)
    restore_from = models.CharField(
        max_length=64, blank=True, help_text="The ended session whose saved workspace this one started with."
    )

    runtime_type = models.CharField(max_length=20, blank=True)
    runtime_node = models.CharField(max_length=255, blank=True)
    container_id = models.CharField(max_length=255, blank=True)
    workspace_path = models.CharField(max_length=1000, blank=True)
    executor_endpoint = models.CharField(max_length=1000, blank=True)
    executor_token = models.CharField(max_length=128, blank=True)
    probe_failures = models.PositiveSmallIntegerField(default=0)
    cpu_usage_percent = models.FloatField(null=True, blank=True)
    memory_usage_mb = models.FloatField(null=True, blank=True)
    usage_updated_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_activity_at = models.DateTimeField(default=timezone.now)
    idle_deadline_at = models.DateTimeField(null=True, blank=True, db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    running_at = models.DateTimeField(null=True, blank=True, help_text="When its sandbox was ready.")

    objects = SandboxSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "sandbox session"
        indexes = [
            models.Index(fields=["status", "idle_deadline_at"], name="session_status_idle_idx"),
            models.Index(fields=["owner", "status"], name="session_owner_status_idx"),
            models.Index(fields=["status", "expires_at"], name="session_status_expiry_idx"),
            models.Index(fields=["status", "created_at"], name="session_status_created_idx"),
        ]
        constraints = [
            # The database, not a check-then-insert, settles two concurrent creates of the same id.
            models.UniqueConstraint(fields=["owner", "client_id"], name="session_owner_client_id_uniq"),
        ]

    def __str__(self) -> str:
        return self.id

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.client_id:
            self.client_id = self.id
        super().save(*args, **kwargs)

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_SESSION_STATUSES

    def can_transition(self, target: str) -> bool:
        return target in SESSION_TRANSITIONS[self.status]

    def transition(self, target: str, *, reason: str = "", detail: str = "", **fields: Any) -> None:
        """Move to `target` if the state machine allows it and nobody moved the row first.

        Raises InvalidTransition for an illegal move, or when the row's stored status is no longer the one
        this instance saw (another process changed it).
        """
        if not self.can_transition(target):
            raise InvalidTransition("session", self.status, target)
        now = timezone.now()
        changes: dict[str, Any] = {"status": target, "updated_at": now, **fields}
        if reason:
            changes["termination_reason"] = reason
        if detail:
            # Stored as tenants and the console will read it: runtime errors name host paths.
            changes["status_detail"] = public_text(detail)
        if target not in LIVE_SESSION_STATUSES:
            changes["completed_at"] = now
        if target == SessionStatus.RUNNING:
            changes["running_at"] = now
        updated = SandboxSession.objects.filter(pk=self.pk, status=self.status).update(**changes)
        if updated != 1:
            current = SandboxSession.objects.filter(pk=self.pk).values_list("status", flat=True).first()
            raise InvalidTransition("session", str(current), target)
        for name, value in changes.items():
            setattr(self, name, value)

    def mark_running(self, **fields: Any) -> None:
        self.transition(SessionStatus.RUNNING, **fields)

    def mark_failed(self, reason: str, detail: str = "") -> None:
        self.transition(SessionStatus.FAILED, reason=reason, detail=detail)

    def mark_timeout(self, reason: str) -> None:
        self.transition(SessionStatus.TIMEOUT, reason=reason)

    def mark_terminated(self, reason: str) -> None:
        self.transition(SessionStatus.TERMINATED, reason=reason)

    def touch(self) -> None:
        """Record activity now: resets the idle clock (executions, file operations, keepalive)."""
        now = timezone.now()
        deadline = now + timedelta(seconds=self.timeout)
        SandboxSession.objects.filter(pk=self.pk).update(last_activity_at=now, idle_deadline_at=deadline)
        self.last_activity_at = now
        self.idle_deadline_at = deadline


API_KEY_PREFIX = "scp_"


def hash_api_key(raw_key: str) -> str:
    # Keys carry 240 random bits, so a fast hash is enough: nobody can brute-force the input space.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)

    def create_key(self, *, owner: Any, name: str = "") -> tuple[ApiKey, str]:
        """Create a key and return it with the raw secret, which is never stored and shown only this once."""
        raw = API_KEY_PREFIX + secrets.token_urlsafe(30)
        key = self.create(owner=owner, name=name or "default", prefix=raw[:12], hashed_key=hash_api_key(raw))
        return key, raw

    def authenticate(self, raw_key: str) -> ApiKey | None:
        """The active key matching `raw_key`, or None. Updates last_used_at at most once a minute."""
        if not raw_key or not raw_key.startswith(API_KEY_PREFIX) or len(raw_key) > 200:
            return None
        digest = hash_api_key(raw_key)
        key = next(iter(self.active().select_related("owner").filter(hashed_key=digest).order_by()[:1]), None)
        if key is None or not hmac.compare_digest(key.hashed_key, digest) or not key.owner.is_active:
            return None
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
        return key


class ApiKey(models.Model):
    """An agent's credential. Only a SHA-256 of the secret is stored; `prefix` lets operators tell keys apart."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    hashed_key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=self.revoked_at)


class WarmSandboxStatus(models.TextChoices):
    PROVISIONING = "provisioning"
    READY = "ready"


class WarmSandboxQuerySet(models.QuerySet["WarmSandbox"]):
    def ready(self) -> WarmSandboxQuerySet:
        return self.filter(status=WarmSandboxStatus.READY)


class WarmSandbox(models.Model):
    """A sandbox started ahead of demand for one template, waiting to be claimed by a new session.

    It belongs to nobody, so it never appears in a session list. Claiming it is a conditional DELETE of the
    ready row: of two concurrent creates only one deletes it, the other cold-starts. The claimed sandbox's
    handle moves onto the session row, so from then on it is simply that session's sandbox.
    """

    id = models.CharField(primary_key=True, max_length=64, default=new_warm_id)
    template = models.ForeignKey(SandboxTemplate, on_delete=models.CASCADE, related_name="warm_sandboxes")
    status = models.CharField(
        max_length=16, choices=WarmSandboxStatus.choices, default=WarmSandboxStatus.PROVISIONING
    )
    runtime_type = models.CharField(max_length=20)
    runtime_node = models.CharField(max_length=255, blank=True)
    container_id = models.CharField(max_length=255, blank=True)
    workspace_path = models.CharField(max_length=1000, blank=True)
    executor_endpoint = models.CharField(max_length=1000, blank=True)
    executor_token = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)

    objects = WarmSandboxQuerySet.as_manager()

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["template", "status", "created_at"], name="warm_template_status_idx")]

    def __str__(self) -> str:
        return self.id


USAGE_SAMPLES_KEPT = 60


class SessionUsageSampleQuerySet(models.QuerySet["SessionUsageSample"]):
    def record(
        self, *, session_id: str, cpu_percent: float | None, memory_mb: float | None, at: Any = None
    ) -> None:
        """Store one probe's reading and drop the session's readings older than the newest
        USAGE_SAMPLES_KEPT, so the table stays bounded however long a session lives."""
        if cpu_percent is None and memory_mb is None:
            return
        self.create(
            session_id=session_id, cpu_percent=cpu_percent, memory_mb=memory_mb, at=at or timezone.now()
        )
        cutoff = (
            self.filter(session_id=session_id)
            .order_by("-id")
            .values_list("id", flat=True)[USAGE_SAMPLES_KEPT : USAGE_SAMPLES_KEPT + 1]
        )
        oldest_kept = list(cutoff)
        if oldest_kept:
            self.filter(session_id=session_id, id__lte=oldest_kept[0]).delete()


class SessionUsageSample(models.Model):
    """CPU and memory of a running session's sandbox as one health probe read them.

    The console draws them over time; only the newest USAGE_SAMPLES_KEPT per session are kept.
    """

    session = models.ForeignKey(SandboxSession, on_delete=models.CASCADE, related_name="usage_samples")
    at = models.DateTimeField(default=timezone.now)
    cpu_percent = models.FloatField(null=True, blank=True)
    memory_mb = models.FloatField(null=True, blank=True)

    objects = SessionUsageSampleQuerySet.as_manager()

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["session", "at"], name="usage_session_at_idx")]

    def __str__(self) -> str:
        return f"{self.session_id} at {self.at:%H:%M:%S}"
