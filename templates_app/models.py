"""SandboxTemplate: what a session is made from (image, language runtime, sandbox backend, default resources,
warm pool size)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from runtime import available_runtimes, environment

TEMPLATE_ID_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9._-]{0,63}$",
    "Template ids are 1-64 characters of lowercase letters, digits, '.', '_' and '-', starting alphanumeric.",
)


def validate_env_vars(value: object) -> None:
    """A sandbox environment every backend accepts (runtime/environment.py): the API, the console and
    the admin refuse the rest here rather than leaving sessions to fail at provisioning."""
    problem = environment.refusal(value)  # type: ignore[arg-type]
    if problem:
        raise ValidationError(problem, code="env_vars")


def validate_runtime_name(value: str) -> None:
    """Blank (SANDBOX_RUNTIME) or a backend the registry has."""
    if value and value not in available_runtimes():
        raise ValidationError(
            f"no {value!r} runtime here; choose one of {', '.join(available_runtimes())} or leave it blank",
            code="runtime",
        )


class SandboxBackend(models.TextChoices):
    DEFAULT = "", "Default (SANDBOX_RUNTIME)"
    PROCESS = "process", "Process (bubblewrap)"
    DOCKER = "docker", "Docker"
    KUBERNETES = "kubernetes", "Kubernetes"


class LanguageRuntime(models.TextChoices):
    """The language runtime a template is for, spelled as the API this product replaces spells it."""

    PYTHON = "python3.11", "Python 3.11"
    NODEJS = "nodejs20", "Node.js (nodejs20)"
    JAVA = "java17", "Java 17 (not available)"
    GO = "go1.21", "Go 1.21 (not available)"


# Executions run Python, JavaScript (Node.js) and shell: the images hold Python 3 and, where the template
# adds it, Node.js; no JDK or Go toolchain. A template may name the others (clients of the original API send
# them), but its sessions are refused rather than started without the runtime they ask for.
AVAILABLE_LANGUAGE_RUNTIMES = frozenset({"python3.11", "nodejs20"})


class SandboxTemplateQuerySet(models.QuerySet["SandboxTemplate"]):
    def active(self) -> SandboxTemplateQuerySet:
        return self.filter(is_active=True)


class SandboxTemplate(models.Model):
    """A recipe for sandboxes.

    Its string id (`python-basic`) is the public key agents pass as `template_id`. Defaults here are copied
    onto each session at creation, so editing a template never changes a session that already exists.
    """

    id = models.CharField(primary_key=True, max_length=64, validators=[TEMPLATE_ID_VALIDATOR])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    image_url = models.CharField(
        max_length=500, help_text="Container image for the docker/kubernetes runtimes."
    )
    runtime_type = models.CharField(
        max_length=20,
        choices=LanguageRuntime.choices,
        default=LanguageRuntime.PYTHON,
        help_text="The language runtime (python3.11, nodejs20; java17 and go1.21 are not available).",
    )
    sandbox_backend = models.CharField(
        max_length=20,
        choices=SandboxBackend.choices,
        blank=True,
        default=SandboxBackend.DEFAULT,
        validators=[validate_runtime_name],
        help_text="Where its sandboxes run: process, docker or kubernetes; blank uses SANDBOX_RUNTIME.",
    )
    default_cpu_cores = models.DecimalField(
        max_digits=4,
        decimal_places=2,
        default=1,
        validators=[MinValueValidator(Decimal("0.1")), MaxValueValidator(Decimal("4"))],
    )
    default_memory_mb = models.PositiveIntegerField(
        default=512, validators=[MinValueValidator(64), MaxValueValidator(8192)]
    )
    default_disk_mb = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(256), MaxValueValidator(51200)]
    )
    default_timeout_sec = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(10), MaxValueValidator(86400)]
    )
    default_env_vars = models.JSONField(default=dict, blank=True, validators=[validate_env_vars])
    pre_installed_packages = models.JSONField(default=list, blank=True)
    warm_pool_size = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(50)])
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SandboxTemplateQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        verbose_name = "sandbox template"

    def __str__(self) -> str:
        return self.id

    def backend(self) -> str:
        """The sandbox backend its sessions and warm sandboxes run on: its own, else SANDBOX_RUNTIME."""
        return self.sandbox_backend or settings.SANDBOX_RUNTIME

    def language_runtime_refusal(self) -> str | None:
        """Why no session can be made from it (a language runtime this installation lacks), or None."""
        if self.runtime_type in AVAILABLE_LANGUAGE_RUNTIMES:
            return None
        available = ", ".join(sorted(AVAILABLE_LANGUAGE_RUNTIMES))
        return (
            f"template {self.id!r} asks for the {self.runtime_type} language runtime, which is not available"
            f" here (available: {available})"
        )
