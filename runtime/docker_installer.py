"""The docker backend's package install: a one-shot container from the sandbox's own image, with network.

It mounts the sandbox's staging package dir (writable), this backend's part of the shared pip cache
(writable), the control plane's pip and the CA bundle (read-only), and nothing else: not the workspace, not
the run dir with the executor's socket. It runs as the sandbox's uid with every capability dropped,
no-new-privileges, a read-only root and memory, process and time limits. It is labelled as an installer,
not as a sandbox, so state sync never mistakes it for an orphaned session. When pip succeeds the staging
dir's contents replace the package dir's (installer.replace_contents); the sandbox, which has the package
dir mounted read-only, sees them on its next execution.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Any

import docker.errors

from runtime import docker_spec as ds
from runtime import installer, package_cache
from runtime.base import InstalledPackages, PackageInstall, RuntimeFailure
from runtime.docker_engine import engine_failure

LABEL_INSTALLER = "sandbox.installer"
NAME_PREFIX = "sandbox-install-"
MEMORY_MB = 1536
TMP_MB = 1024
MAX_PROCESSES = 256
LOG_BYTES = "4m"


def container_options(
    request: PackageInstall,
    *,
    name: str,
    session_id: str,
    data_dir: str,
    staging: str,
    cache: str,
    pip_dir: str,
    ca_file: str,
    uid: int,
) -> dict[str, Any]:
    """Keyword arguments for `containers.create(image, ...)` (the engine's default bridge network)."""
    volumes = {
        staging: {"bind": installer.TARGET, "mode": "rw"},
        cache: {"bind": installer.CACHE, "mode": "rw"},
        pip_dir: {"bind": f"{installer.PIP_ROOT}/pip", "mode": "ro"},
    }
    if ca_file:
        volumes[ca_file] = {"bind": installer.CA_FILE, "mode": "ro"}
    args = installer.pip_arguments(
        request, target=installer.TARGET, cache=installer.CACHE, ca_file=installer.CA_FILE if ca_file else ""
    )
    memory = MEMORY_MB * 1024 * 1024
    return {
        "command": ["python3", "-s", "-c", installer.SCRIPT, installer.TARGET, *args],
        "name": name,
        "hostname": "installer",
        "user": f"{uid}:{uid}",
        "working_dir": "/tmp",
        "environment": installer.installer_env(home="/tmp", pip_root=installer.PIP_ROOT),
        "labels": {LABEL_INSTALLER: "true", ds.LABEL_SESSION: session_id, ds.LABEL_DATA_DIR: data_dir},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        # exec: build backends run helper scripts they unpack under /tmp.
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,exec,size={TMP_MB}m,mode=1777"},
        "volumes": volumes,
        "pids_limit": MAX_PROCESSES,
        "nano_cpus": int(1e9),
        "mem_limit": memory,
        "memswap_limit": memory,
        "log_config": {"type": "json-file", "config": {"max-size": LOG_BYTES, "max-file": "1"}},
        "stdin_open": False,
        "tty": False,
    }


def install(
    client: Any,
    request: PackageInstall,
    *,
    image: str,
    dirs: ds.HostDirs,
    session_id: str,
    data_dir: str,
    uid: int,
) -> InstalledPackages:
    """Run pip in a one-shot container into `dirs.packages`' staging dir; swap it in when pip succeeds."""
    staging = installer.fresh_dir(dirs.packages + ".staging", uid=uid)
    work = installer.fresh_dir(os.path.join(dirs.root, "install"))
    name = NAME_PREFIX + os.path.basename(dirs.root)
    container: Any = None
    try:
        cache = installer.cache_dir(request, "docker", uid=uid)
        ca_file = installer.write_ca_file(request, work)
        options = container_options(
            request,
            name=name,
            session_id=session_id,
            data_dir=data_dir,
            staging=staging,
            cache=cache,
            pip_dir=installer.pip_source_dir(),
            ca_file=ca_file,
            uid=uid,
        )
        key = package_cache.tree_key(request, "docker", image)
        reused = package_cache.reuse(request, key, staging, request.reuse_ttl)
        if reused is not None:
            installer.replace_contents(staging, dirs.packages)
            return reused
        _remove(client, name)  # a leftover of an install whose worker died
        started = time.monotonic()
        try:
            container = client.containers.create(image, **options)
            container.start()
        except docker.errors.DockerException as exc:
            raise engine_failure(exc, f"cannot start the package installer of sandbox {session_id}") from exc
        code = _wait(container, request.timeout)
        duration_ms = (time.monotonic() - started) * 1000
        stdout = _logs(container, stdout=True)
        stderr = _logs(container, stdout=False)
        result = installer.outcome(code, stdout, stderr, duration_ms)
        package_cache.keep(request, key, staging, result.packages, request.reuse_ttl)
        installer.replace_contents(staging, dirs.packages)
        return result
    finally:
        if container is not None:
            _remove(client, container.id)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _wait(container: Any, timeout: float) -> int | None:
    """The exit status, or None after killing a container that ran past `timeout`."""
    try:
        return int(container.wait(timeout=timeout).get("StatusCode", -1))
    except Exception as exc:  # requests' ReadTimeout / ConnectionError: the wait ran out
        if isinstance(exc, docker.errors.NotFound):
            raise RuntimeFailure("the package installer container disappeared") from exc
        with contextlib.suppress(docker.errors.DockerException):
            container.kill()
        return None


def _logs(container: Any, *, stdout: bool) -> str:
    try:
        raw = container.logs(stdout=stdout, stderr=not stdout, tail=2000)
    except docker.errors.DockerException:
        return ""
    return raw.decode("utf-8", "replace")[-installer.LOG_MAX_BYTES :]


def _remove(client: Any, ref: str) -> None:
    try:
        client.api.remove_container(ref, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise engine_failure(exc, f"cannot remove installer container {ref}") from exc
