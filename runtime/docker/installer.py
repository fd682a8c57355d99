"""The docker backend's package install: wheels downloaded by the control plane, installed by a one-shot
container from the sandbox's own image with no network at all (network_mode none).

The container mounts the wheels to install (read-only, a directory of hard links to the control plane's
wheel store: only these wheels, never the store), the staging package dir (writable) and the control
plane's pip (read-only), and nothing else: not the workspace, not the run dir with the executor's socket,
no cache. It runs as an unprivileged uid of its own with every capability dropped, no-new-privileges, a
read-only root and memory, process and time limits. It is labelled as an installer, not as a sandbox, so
state sync never mistakes it for an orphaned session. The image's wheel tags are probed once per image id
by a container with no network either (wheels.probe). When pip succeeds the sealed staging tree replaces
the package dir's contents (installer.install_offline); the sandbox, which has the package dir mounted
read-only, sees them on its next execution.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import docker.errors

from runtime.base import InstalledPackages, PackageInstall, RuntimeFailure
from runtime.docker import spec as ds
from runtime.docker.engine import engine_failure
from runtime.packages import cache as package_cache
from runtime.packages import installer, wheels

LABEL_INSTALLER = "sandbox.installer"
NAME_PREFIX = "sandbox-install-"
MEMORY_MB = 1536
TMP_MB = 1024
MAX_PROCESSES = 256
LOG_BYTES = "4m"


NETWORK_MODE = "none"


def container_options(
    *,
    name: str,
    session_id: str,
    data_dir: str,
    staging: str,
    wheel_dir: str,
    pip_dir: str,
    uid: int,
) -> dict[str, Any]:
    """Keyword arguments for `containers.create(image, ...)`: no network, only these mounts."""
    volumes = {
        staging: {"bind": installer.TARGET, "mode": "rw"},
        wheel_dir: {"bind": installer.WHEELS, "mode": "ro"},
        pip_dir: {"bind": f"{installer.PIP_ROOT}/pip", "mode": "ro"},
    }
    memory = MEMORY_MB * 1024 * 1024
    return {
        "command": [
            "python3",
            "-s",
            "-c",
            installer.SCRIPT,
            installer.TARGET,
            *wheels.install_arguments(installer.TARGET),
        ],
        "name": name,
        "hostname": "installer",
        "user": f"{uid}:{uid}",
        "working_dir": "/tmp",
        "environment": installer.installer_env(home="/tmp", pip_root=installer.PIP_ROOT),
        "labels": {LABEL_INSTALLER: "true", ds.LABEL_SESSION: session_id, ds.LABEL_DATA_DIR: data_dir},
        "network_mode": NETWORK_MODE,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={TMP_MB}m,mode=1777"},
        "volumes": volumes,
        "pids_limit": MAX_PROCESSES,
        "nano_cpus": int(1e9),
        "mem_limit": memory,
        "memswap_limit": memory,
        "log_config": {"type": "json-file", "config": {"max-size": LOG_BYTES, "max-file": "1"}},
        "stdin_open": False,
        "tty": False,
    }


def probe_image(client: Any, image: str, pip_dir: str) -> str:
    """The image's python3 wheel tags, read by a throwaway container with no network."""
    try:
        output = client.containers.run(
            image,
            ["python3", "-I", "-c", wheels.PROBE_SCRIPT, installer.PIP_ROOT],
            user=f"{installer.INSTALLER_UID}:{installer.INSTALLER_UID}",
            network_mode=NETWORK_MODE,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            volumes={pip_dir: {"bind": f"{installer.PIP_ROOT}/pip", "mode": "ro"}},
            labels={LABEL_INSTALLER: "true"},
            remove=True,
            stdout=True,
            stderr=False,
        )
    except docker.errors.DockerException as exc:
        raise engine_failure(exc, f"cannot probe the wheel tags of image {image}") from exc
    return bytes(output).decode("utf-8", "replace")


def install(
    client: Any,
    request: PackageInstall,
    *,
    image: str,
    dirs: ds.HostDirs,
    session_id: str,
    data_dir: str,
    uid: int = installer.INSTALLER_UID,
) -> InstalledPackages:
    """Download wheels, run pip offline in a one-shot container into the staging dir, swap it in."""
    staging = installer.fresh_dir(dirs.packages + ".staging", uid=uid)
    work = installer.fresh_dir(os.path.join(dirs.root, "install"))
    name = NAME_PREFIX + os.path.basename(dirs.root)
    try:
        if not request.cache_dir:
            raise RuntimeFailure("no package cache directory is configured", permanent=True)
        pip_dir = installer.pip_source_dir()
        tags = wheels.probe(f"docker:{image}", request.cache_dir, lambda: probe_image(client, image, pip_dir))

        def run_installer(wheel_dir: str) -> InstalledPackages:
            options = container_options(
                name=name,
                session_id=session_id,
                data_dir=data_dir,
                staging=staging,
                wheel_dir=wheel_dir,
                pip_dir=pip_dir,
                uid=uid,
            )
            return _run(client, image, options, name, session_id, request.timeout)

        return installer.install_offline(
            request,
            backend="docker",
            interpreter_identity=image,
            tags=tags,
            staging=staging,
            work=work,
            packages=dirs.packages,
            run_installer=run_installer,
        )
    finally:
        for leftover in (staging, work):
            if os.path.lexists(leftover):
                package_cache.remove_tree(leftover)


def _run(
    client: Any, image: str, options: dict[str, Any], name: str, session_id: str, timeout: float
) -> InstalledPackages:
    container: Any = None
    _remove(client, name)  # a leftover of an install whose worker died
    started = time.monotonic()
    try:
        try:
            container = client.containers.create(image, **options)
            container.start()
        except docker.errors.DockerException as exc:
            raise engine_failure(exc, f"cannot start the package installer of sandbox {session_id}") from exc
        code = _wait(container, timeout)
        duration_ms = (time.monotonic() - started) * 1000
        stdout = _logs(container, stdout=True)
        stderr = _logs(container, stdout=False)
        return installer.outcome(code, stdout, stderr, duration_ms)
    finally:
        if container is not None:
            _remove(client, container.id)


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
