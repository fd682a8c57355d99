"""The kubernetes backend's package install: made on the control plane's host, streamed into the pod.

The install itself is the process backend's (runtime/process/installer.py over the shared
runtime/packages/installer.py): the control plane downloads wheels through the egress proxy that applies the
index policy, then pip installs exactly those hash-checked wheels offline, under bubblewrap with no network,
as an unprivileged uid, into a staging tree on this host. The host interpreter installs for the pod's, so the
pod's python3 must be the same version and implementation on the same machine type (checked in the pod,
once per image; otherwise the install fails and says so).

The finished tree reaches the pod through the API server only: the pod has a tiny `packages` container
(sidecar_container: the template image, the sandbox's non-root uid and security context, `sleep infinity`
under the image's tini) which alone mounts the packages volume writable. An exec stream into it, with the
tree as a tar on stdin, extracts it beside the current set and then renames the new entries in place of the
old ones (SWAP_SCRIPT); the sandbox container mounts the volume read-only at /opt/packages. As on the other
backends, a failed install leaves the previous set as it was, and an execution that imports during the
few renames may see a half-replaced set; the next one sees the new set.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from typing import Any

from runtime.base import InstalledPackages, PackageInstall, RuntimeFailure, SandboxHandle

SIDECAR = "packages"
VOLUME = "packages"
MOUNT = "/opt/packages"  # the sandbox container's PACKAGES, writable in the sidecar only
# The packages volume's size: what an installed set may take in the pod (an emptyDir on the node's disk).
PACKAGES_MB = 1024
SIDECAR_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "16Mi", "ephemeral-storage": f"{PACKAGES_MB}Mi"},
    "limits": {"cpu": "500m", "memory": "64Mi", "ephemeral-storage": f"{PACKAGES_MB}Mi"},
}
CHUNK = 256 * 1024
STREAM_TIMEOUT = 600.0
CHECK_TIMEOUT = 30.0
SIDECAR_START_TIMEOUT = 30.0
OPEN_ATTEMPTS = 3

# Runs in the sidecar: "$1" bytes of tar on stdin, "$2" a fresh id. The new set is extracted beside the
# current one, then entries are swapped by rename; leftovers of an install that died halfway are removed.
SWAP_SCRIPT = r"""
set -eu
cd "$0"
for d in .new-* .old-*; do
  if [ -e "$d" ]; then chmod -R u+w "$d"; rm -rf "$d"; fi
done
new=".new-$2" old=".old-$2"
mkdir "$new" "$old"
head -c "$1" | tar -x -o -C "$new" -f -
for e in * .[!.]* ..?*; do
  case "$e" in .new-*|.old-*) continue ;; esac
  if [ -e "$e" ] || [ -L "$e" ]; then mv -- "$e" "$old/"; fi
done
for e in "$new"/* "$new"/.[!.]* "$new"/..?*; do
  if [ -e "$e" ] || [ -L "$e" ]; then mv -- "$e" ./; fi
done
chmod -R u+w "$old" "$new"
rm -rf "$old" "$new"
"""

# The interpreter facts a wheel installed by one interpreter depends on in another.
FACTS_SCRIPT = (
    "import json, platform, sys; print(json.dumps(['%d.%d' % sys.version_info[:2], "
    "sys.implementation.name, platform.machine()]))"
)

_checked: dict[str, list[str]] = {}
_checked_lock = threading.Lock()


def sidecar_container(
    *, image: str, image_pull_policy: str, security_context: dict[str, Any]
) -> dict[str, Any]:
    """The pod's `packages` container: idle until an install execs into it; the only writer of the volume."""
    return {
        "name": SIDECAR,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        # `args` keeps the image's entrypoint (tini), which reaps what an install leaves and stops on SIGTERM.
        "args": ["sleep", "infinity"],
        "securityContext": dict(security_context),
        "resources": SIDECAR_RESOURCES,
        "volumeMounts": [{"name": VOLUME, "mountPath": MOUNT}],
        "stdin": False,
        "tty": False,
    }


def volume() -> dict[str, Any]:
    return {"name": VOLUME, "emptyDir": {"sizeLimit": f"{PACKAGES_MB}Mi"}}


def host_interpreter() -> str:
    """The host interpreter installs run with (as the process backend's default)."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else os.path.realpath(sys.executable)


def install(runtime: Any, handle: SandboxHandle, pod: str, request: PackageInstall) -> InstalledPackages:
    """Install `request` on this host (process backend's confinement), then replace the pod's set with it."""
    # Imported here: spec.py imports this module for the sidecar, and the pod manifest needs none of these.
    from runtime import bwrap as bw
    from runtime.packages import cache as package_cache
    from runtime.packages import installer as shared
    from runtime.process import installer as process_installer

    if not request.cache_dir:
        raise RuntimeFailure("no package cache directory is configured", permanent=True)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeFailure(
            "bubblewrap (bwrap) is needed on the control plane's host to confine the package installer",
            permanent=True,
        )
    try:
        interpreter = bw.resolve_interpreter(host_interpreter())
    except ValueError as exc:
        raise RuntimeFailure(str(exc), permanent=True) from exc
    _check_interpreter(runtime, pod, handle, interpreter.executable)
    # One install at a time per pod; the lock's directory stays (empty but for the lock) after the install.
    base = os.path.join(request.cache_dir, "kubernetes", pod)
    os.makedirs(base, mode=0o700, exist_ok=True)
    with shared.install_lock(base):
        root = shared.fresh_dir(os.path.join(base, "work"))
        try:
            packages = shared.fresh_dir(os.path.join(root, "packages"))
            result = process_installer.install(
                request,
                root=root,
                packages=packages,
                bwrap=bwrap,
                interpreter=interpreter,
                prefix=[],
                prefix_env={},
            )
            archive = os.path.join(root, "packages.tar")
            started = time.monotonic()
            write_tar(packages, archive)
            push(runtime, pod, handle.session_id, archive)
            push_ms = (time.monotonic() - started) * 1000
        finally:
            package_cache.remove_tree(root)
    return InstalledPackages(
        packages=result.packages,
        log=result.log,
        duration_ms=result.duration_ms + push_ms,
        wheels=result.wheels,
    )


def write_tar(tree: str, archive: str) -> None:
    """`tree` as a tar whose members the sidecar's uid can rename and remove (the pod's copy is its own and
    the sandbox mounts it read-only, so the write bits there give it nothing). Symlinks stay symlinks."""

    def writable(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if info.isdir():
            info.mode = 0o755
        elif info.isreg() or info.islnk():
            info.mode = 0o755 if info.mode & 0o111 else 0o644
        return info

    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(tree)):
            tar.add(os.path.join(tree, name), arcname=name, recursive=True, filter=writable)


def push(runtime: Any, pod: str, session_id: str, archive: str) -> None:
    """Stream `archive` into the sidecar, which swaps it in for the current set; RuntimeFailure on failure."""
    size = os.path.getsize(archive)
    command = ["sh", "-c", SWAP_SCRIPT, MOUNT, str(size), secrets.token_hex(6)]
    with open(archive, "rb") as fh:
        code, _, err = exec_in_sidecar(runtime, pod, command, stdin=fh, timeout=STREAM_TIMEOUT)
    if code != 0:
        raise RuntimeFailure(
            f"cannot place the installed packages in sandbox {session_id} (exit status {code}): "
            f"{err.decode('utf-8', 'replace').strip()[-2000:]}"
        )


def exec_in_sidecar(
    runtime: Any, pod: str, command: list[str], *, stdin: Any = None, timeout: float
) -> tuple[int | None, bytes, bytes]:
    """Run `command` in the pod's sidecar through the API server; (exit status or None, stdout, stderr).

    The exec protocol of the clusters supported cannot half-close stdin, so a command reading stdin must
    know where its input ends (SWAP_SCRIPT reads an exact byte count)."""
    from kubernetes.stream import stream

    from runtime.kubernetes import transport
    from runtime.kubernetes.backend import api_failure

    for attempt in range(OPEN_ATTEMPTS):
        try:
            with transport.STREAM_LOCK:
                ws = stream(
                    runtime.stream_core().connect_get_namespaced_pod_exec,
                    pod,
                    runtime.namespace,
                    container=SIDECAR,
                    command=command,
                    stdin=stdin is not None,
                    stdout=True,
                    stderr=True,
                    tty=False,
                    binary=True,
                    _preload_content=False,
                )
            break
        except Exception as exc:  # nothing was sent yet: opening again is safe
            if attempt + 1 == OPEN_ATTEMPTS:
                raise api_failure(exc, f"cannot exec in the packages container of pod {pod}") from exc
            time.sleep(0.5 * (attempt + 1))
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout

    def drain(wait: float) -> None:
        ws.update(timeout=wait)
        if ws.peek_stdout():
            out.extend(ws.read_stdout())
        if ws.peek_stderr():
            err.extend(ws.read_stderr())

    try:
        if stdin is not None:
            while chunk := stdin.read(CHUNK):
                if not ws.is_open():
                    break
                ws.write_stdin(chunk)
                drain(0)
                if time.monotonic() > deadline:
                    return None, bytes(out), bytes(err) + b"\nthe transfer ran past its time limit"
        while ws.is_open():
            if time.monotonic() > deadline:
                return None, bytes(out), bytes(err) + b"\nthe command ran past its time limit"
            drain(1)
        drain(0)
        try:
            code = ws.returncode
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            code = None
        return code, bytes(out), bytes(err)
    except Exception as exc:
        raise api_failure(exc, f"the exec stream into pod {pod} broke") from exc
    finally:
        ws.close()


def _check_interpreter(runtime: Any, pod: str, handle: SandboxHandle, host_python: str) -> None:
    """Refuse when the pod's python3 differs from the host's in what installed wheels depend on."""
    try:
        host = json.loads(
            subprocess.run(
                [host_python, "-I", "-c", FACTS_SCRIPT],
                capture_output=True,
                text=True,
                timeout=CHECK_TIMEOUT,
                check=True,
            ).stdout
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise RuntimeFailure(f"cannot run the host interpreter {host_python}: {exc}", permanent=True) from exc
    image = _pod_image(runtime, pod)
    with _checked_lock:
        found = _checked.get(image)
    if found is None:
        code, out, err = exec_in_sidecar(
            runtime, pod, ["python3", "-I", "-c", FACTS_SCRIPT], timeout=CHECK_TIMEOUT
        )
        if code != 0:
            raise RuntimeFailure(
                f"cannot read the python3 of sandbox {handle.session_id}: "
                f"{err.decode('utf-8', 'replace').strip()[-500:]}"
            )
        try:
            found = [str(item) for item in json.loads(out.decode())]
        except ValueError as exc:
            raise RuntimeFailure(f"cannot read the python3 of sandbox {handle.session_id}") from exc
        with _checked_lock:
            _checked[image] = found
    if found != host:
        raise RuntimeFailure(
            f"packages are installed by the control plane's {host_python} (Python {host[0]}, {host[1]}, "
            f"{host[2]}) for sandboxes with the same; image {image} has Python {found[0]}, {found[1]}, "
            f"{found[2]}",
            permanent=True,
        )


def _pod_image(runtime: Any, pod: str) -> str:
    """The image id the pod's sidecar runs, once it runs: the API server may report a new pod's containers
    waiting for a moment after its executor answers, and an exec into a container not yet running fails."""
    from runtime.kubernetes.backend import api_failure

    deadline = time.monotonic() + SIDECAR_START_TIMEOUT
    while True:
        try:
            status = runtime.core().read_namespaced_pod(pod, runtime.namespace).status
        except Exception as exc:
            raise api_failure(exc, f"cannot read pod {pod}") from exc
        sidecar = next((c for c in status.container_statuses or [] if c.name == SIDECAR), None)
        if sidecar is None and status.phase == "Running":
            raise RuntimeFailure(
                f"pod {pod} has no {SIDECAR} container (made before packages could be installed)",
                permanent=True,
            )
        state = sidecar.state if sidecar is not None else None
        if sidecar is not None and state is not None and state.running is not None:
            return str(sidecar.image_id or sidecar.image)
        if state is not None and state.terminated is not None:
            raise RuntimeFailure(
                f"the {SIDECAR} container of pod {pod} ended ({state.terminated.reason or 'no reason given'})"
            )
        if status.phase in ("Failed", "Succeeded") or time.monotonic() > deadline:
            raise RuntimeFailure(f"the {SIDECAR} container of pod {pod} is not running (pod {status.phase})")
        time.sleep(0.2)
