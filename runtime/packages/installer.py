"""Installing a session's Python packages: wheels downloaded by the control plane, installed offline.

Two steps, so that no code a tenant chose ever runs outside a sandbox and nothing an install does can reach
another tenant:

1. Download (wheels.py): the control plane's own pip fetches wheels only (`--only-binary=:all:`, for the
   target interpreter's tags) through the egress proxy that applies the index policy, into the
   content-addressed wheel store only the control plane writes. Hashes are recorded.
2. Install: `pip install --no-index --no-deps --require-hashes` of exactly those wheel files, inside a
   sandbox with no network - bubblewrap with every namespace unshared (process backend) run as an
   unprivileged host uid, or a one-shot container with network_mode none (docker backend) - that sees the
   wheels read-only and can write only a staging dir and its own /tmp. pip itself is the control plane's,
   bound read-only at /opt/pip; the interpreter is the sandbox's own, so bytecode matches.

The finished staging tree is sealed (control plane's, no write bits) and kept as a content-addressed,
write-once tree (packages/cache.py); its files are hard-linked into the session's package dir, which the
sandbox sees read-only at /opt/packages. When anything fails the package dir is untouched, so what was
installed before keeps working.

Inside the installer a small script runs pip, then lists the distributions now in the target (name and
version, read with importlib.metadata in the confined process) on one marked line of stdout.

This module holds what every backend shares: the mount points and script, fresh dirs, the per-sandbox lock,
reading pip's outcome, and the orchestration (`install_offline`). The confinement is the backend's own:
runtime/process/installer.py (bubblewrap) and runtime/docker/installer.py (a one-shot container).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
from collections.abc import Callable, Iterator

from runtime import environment
from runtime.base import InstalledPackages, PackageInstall, RuntimeFailure
from runtime.packages import cache as package_cache
from runtime.packages import wheels

TARGET = "/target"
WHEELS = "/wheels"
PIP_ROOT = "/opt/pip"
MARKER = "@@sandbox-installed@@"
ERROR_TAIL_LINES = 30
ERROR_MAX_CHARS = 4000
LOG_MAX_BYTES = 64 * 1024
# The unprivileged uid installers run as (and the downloads when the control plane is root): never uid 0,
# never a session's uid. Files it writes are re-owned by the control plane before any session sees them.
INSTALLER_UID = 65534

SCRIPT = f"""
import importlib.metadata, json, subprocess, sys
target = sys.argv[1]
code = subprocess.call([sys.executable, "-s", "-m", "pip", *sys.argv[2:]])
if code == 0:
    found = sorted({{(d.metadata["Name"] or "", d.version) for d in importlib.metadata.distributions(path=[target])}})
    print("{MARKER}" + json.dumps(found), flush=True)
sys.exit(code)
"""


def pip_source_dir() -> str:
    """The control plane's own pip package directory, bound read-only into every installer."""
    spec = importlib.util.find_spec("pip")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations or not os.path.isfile(os.path.join(locations[0], "__main__.py")):
        raise RuntimeFailure("pip is not installed in the control plane's environment", permanent=True)
    return os.path.realpath(locations[0])


def installer_env(*, home: str, pip_root: str) -> dict[str, str]:
    return {
        "PATH": environment.PATH,
        "LANG": environment.LANG,
        "HOME": home,
        "PYTHONPATH": pip_root,
        "PYTHONDONTWRITEBYTECODE": "1",
        # No pip.conf, pip.ini or PIP_* from anywhere: what pip does is decided here alone.
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_ROOT_USER_ACTION": "ignore",
    }


def fresh_dir(path: str, *, uid: int | None = None) -> str:
    if os.path.lexists(path):
        package_cache.remove_tree(path)
    os.mkdir(path, 0o755)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


@contextlib.contextmanager
def install_lock(directory: str) -> Iterator[None]:
    """One install at a time per sandbox (a retried task must not race the first over the staging dir)."""
    fd = os.open(os.path.join(directory, "install.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def replace_contents(staging: str, target: str) -> None:
    """Move everything in `staging` into `target`, replacing what was there, then drop `staging`.

    `target` itself stays (it is bind-mounted into the running sandbox, so it cannot be swapped for another
    directory); its entries are renamed, which never follows the symlinks an installer may have left. An
    execution that imports during the few renames may see a half-replaced set; the next one sees the new one.
    """
    old = target + ".old"
    if os.path.lexists(old):
        package_cache.remove_tree(old)
    os.mkdir(old, 0o700)
    for name in os.listdir(target):
        os.rename(os.path.join(target, name), os.path.join(old, name))
    for name in os.listdir(staging):
        os.rename(os.path.join(staging, name), os.path.join(target, name))
    package_cache.remove_tree(old)
    package_cache.remove_tree(staging)


def read_tail(path: str, limit: int = LOG_MAX_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def outcome(code: int | None, stdout: str, stderr: str, duration_ms: float) -> InstalledPackages:
    """Turn the installer's exit status and output into the result, or a RuntimeFailure with pip's error."""
    packages = None
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            try:
                packages = tuple((str(n), str(v)) for n, v in json.loads(line[len(MARKER) :]) if n)
            except (ValueError, TypeError):
                packages = None
    log = "\n".join(line for line in stdout.splitlines() if not line.startswith(MARKER))
    if code == 0 and packages is not None:
        return InstalledPackages(packages=packages, log=log, duration_ms=duration_ms)
    raise RuntimeFailure(error_text(code, stderr or stdout), permanent=True)


def error_text(code: int | None, output: str) -> str:
    """pip's own words: the last lines it wrote, where its ERROR lines are."""
    lines = [line for line in output.splitlines() if line.strip() and "Running pip as the 'root'" not in line]
    if code is None:
        lines.append("the install was stopped: it ran past its time limit")
    elif code in (137, -9):
        lines.append("the installer was killed (SIGKILL: out of memory?)")
    text = "\n".join(lines[-ERROR_TAIL_LINES:]) or f"pip exited with status {code}"
    return text[-ERROR_MAX_CHARS:]


def control_plane_uid() -> int | None:
    """The owner sealed trees get: the control plane's uid when it may chown (root), else None (files
    are the control plane's already, since the installer then runs as the control plane's own uid)."""
    return os.getuid() if os.geteuid() == 0 else None


def install_offline(
    request: PackageInstall,
    *,
    backend: str,
    interpreter_identity: str,
    tags: wheels.TargetTags,
    staging: str,
    work: str,
    packages: str,
    run_installer: Callable[[str], InstalledPackages],
    wheel_mount: str | None = WHEELS,
) -> InstalledPackages:
    """Both backends' install: reuse a kept tree, or download wheels and run `run_installer(wheel_dir)`
    (pip in a sandbox with no network, into `staging`, seeing `wheel_dir` at `wheel_mount`, or at its own
    path when None); seal, keep, and swap the result into `packages`."""
    key = package_cache.tree_key(request, backend, interpreter_identity, tags.key())
    result = package_cache.reuse(request, key, staging, request.reuse_ttl)
    if result is None:
        resolved = wheels.download(request, tags, uid=INSTALLER_UID if os.geteuid() == 0 else None)
        tree = package_cache.tree_id(backend, interpreter_identity, tags.key(), [w.sha256 for w in resolved])
        if request.reuse_ttl > 0:
            result = package_cache.reuse_tree(request, tree, staging)
        if result is None:
            wheel_dir = os.path.join(work, "wheels")
            wheels.link_set(resolved, wheel_dir, mount=wheel_mount or wheel_dir)
            installed = run_installer(wheel_dir)
            package_cache.seal(staging, uid=control_plane_uid())
            hashes = tuple((w.filename, w.sha256) for w in resolved)
            result = dataclasses.replace(installed, wheels=hashes)
        package_cache.keep(request, key, tree, staging, result, request.reuse_ttl)
    replace_contents(staging, packages)
    return result
