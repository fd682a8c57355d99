"""Per-session Python dependencies: how requested packages merge, and the install workflow.

Status: `pending` (requested, waiting for a worker) -> `installing` (one worker claimed it) -> `completed`
or `failed` (with pip's error text). The control plane downloads wheels only, through an egress proxy that
applies the index policy (SANDBOX_PACKAGE_INDEX_ALLOW), and the runtime installs them in a sandbox with no
network (`Runtime.install_packages`); the session sees the packages read-only at /opt/packages from its
next execution on, and never has network itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Any

from django.conf import settings
from django.utils import timezone

from runtime import PackageInstall, RuntimeFailure
from runtime.packages import index_policy
from sandbox_site.metrics import record
from sessions_app.models import DependencyInstallStatus, SandboxSession, SessionStatus
from sessions_app.sandboxes import handle_for, runtime_for

logger = logging.getLogger(__name__)


def normalise_package_name(name: str) -> str:
    """PEP 503 normalisation: `Foo_Bar.baz` and `foo-bar-baz` are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def merge_dependencies(current: list[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    """Merge by normalised package name; a later entry replaces an earlier one, order of first mention kept."""
    merged: dict[str, dict[str, str]] = {}
    for dep in [*current, *new]:
        entry = {"name": dep["name"]}
        if dep.get("version"):
            entry["version"] = dep["version"]
        merged[normalise_package_name(dep["name"])] = entry
    return list(merged.values())


def requirement(dep: dict[str, str]) -> str:
    """A pip requirement string from a validated {name, version?}: a bare version means `==version`."""
    version = dep.get("version") or ""
    if version and version[0].isalnum():
        version = "==" + version
    return dep["name"] + version


def index_allow() -> str:
    """The operator's allow list, plus the operator's own default index (its host on its port)."""
    allow = settings.SANDBOX_PACKAGE_INDEX_ALLOW
    if settings.SANDBOX_PACKAGE_INDEX_URL:
        with contextlib.suppress(index_policy.IndexRefused):
            host, port = index_policy.split_url(settings.SANDBOX_PACKAGE_INDEX_URL)
            allow += f",[{host}]:{port}" if ":" in host else f",{host}:{port}"
    return allow


def index_url_refusal(url: str) -> str | None:
    """Why a tenant's index URL is refused (one message, whatever the reason), or None when it may be used.

    The same policy is applied again at download time to every host pip contacts (runtime/packages/egress_proxy.py);
    this check only answers early, with a 400.
    """
    try:
        index_policy.check_url(url, index_policy.policy(index_allow()))
    except index_policy.IndexRefused as exc:
        return str(exc)
    return None


def install_request(session: SandboxSession) -> PackageInstall:
    ca_bundle = settings.SANDBOX_CA_BUNDLE if os.path.isfile(settings.SANDBOX_CA_BUNDLE) else ""
    return PackageInstall(
        requirements=tuple(requirement(dep) for dep in session.requested_dependencies),
        index_url=session.python_package_index_url or settings.SANDBOX_PACKAGE_INDEX_URL,
        ca_bundle=ca_bundle,
        extra_ca_pem=session.python_package_ca_bundle,
        cache_dir=str(settings.SANDBOX_PIP_CACHE_DIR),
        timeout=float(settings.SANDBOX_INSTALL_TIMEOUT),
        reuse_ttl=float(settings.SANDBOX_PACKAGE_CACHE_TTL),
        index_allow=index_allow(),
    )


def session_install_dependencies(*, session_id: str) -> SandboxSession | None:
    """Install a running session's requested dependencies, if they are pending. Idempotent.

    The claim is a conditional update pending -> installing, so a task delivered twice (or two tasks for
    requests that arrived close together) runs one install of the merged set; the loser returns None.
    The outcome is written only over `installing`, never over a newer request's `pending`.
    """
    now = timezone.now()
    claimed = SandboxSession.objects.filter(
        pk=session_id, status=SessionStatus.RUNNING, dependency_install_status=DependencyInstallStatus.PENDING
    ).update(
        dependency_install_status=DependencyInstallStatus.INSTALLING,
        dependency_install_error="",
        dependency_install_started_at=now,
        updated_at=now,
    )
    if claimed != 1:
        return None
    session = SandboxSession.objects.select_related("template").get(pk=session_id)
    handle = handle_for(session)
    outcome: dict[str, Any]
    try:
        if handle is None:
            raise RuntimeFailure(f"session {session.id} has no sandbox")
        result = runtime_for(session).install_packages(handle, install_request(session))
    except Exception as exc:  # every failure ends the install `failed`, never stuck `installing`
        message = exc.message if isinstance(exc, RuntimeFailure) else f"{type(exc).__name__}: {exc}"
        logger.info("dependency install of %s failed: %s", session.id, message.splitlines()[-1:])
        outcome = {
            "dependency_install_status": DependencyInstallStatus.FAILED,
            "dependency_install_error": message,
        }
    else:
        installed = [{"name": name, "version": version} for name, version in result.packages]
        logger.info("installed %d packages for %s in %.0f ms", len(installed), session.id, result.duration_ms)
        outcome = {
            "dependency_install_status": DependencyInstallStatus.COMPLETED,
            "dependency_install_error": "",
            "installed_dependencies": installed,
        }
    finished = timezone.now()
    completed = outcome["dependency_install_status"] == DependencyInstallStatus.COMPLETED
    record.dependency_install(ok=completed, seconds=(finished - now).total_seconds())
    SandboxSession.objects.filter(
        pk=session_id, dependency_install_status=DependencyInstallStatus.INSTALLING
    ).update(updated_at=finished, dependency_install_finished_at=finished, **outcome)
    session.refresh_from_db()
    return session
