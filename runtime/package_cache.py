"""Installed package trees, kept for reuse: a second session asking for the same set gets it without pip.

pip's own cache (shared by all installers) saves downloads, but only of responses that carry HTTP caching
headers; behind some mirrors and proxies it stays empty, and even when it works, pip's start-up, resolution,
unpacking and byte-compiling remain. So after a successful install the control plane also keeps the staging
tree under a key of everything that decides its contents: the backend, the interpreter (the docker image id,
or the host interpreter's path, size and mtime), the index URL, the extra CA certificates and the exact
requirement strings. A later install with the same key within `ttl` seconds hard-links that tree into its
staging dir (copies it across file systems) instead of running pip. Unpinned requirements therefore resolve
to what they resolved to when the tree was made, for at most `ttl` seconds.

Only the control plane writes here, from staging trees the installer has already finished with; the trees
live beside the per-backend pip caches, in a directory no installer mounts. A tree holds what one request
produced, so it is only ever served to the identical request.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence

from runtime.base import InstalledPackages, PackageInstall

TREES = "trees"
MANIFEST = "packages.json"


def tree_key(request: PackageInstall, backend: str, interpreter: str) -> str:
    identity = {
        "backend": backend,
        "interpreter": interpreter,
        "index_url": request.index_url,
        "extra_ca": hashlib.sha256(request.extra_ca_pem.encode()).hexdigest(),
        "requirements": list(request.requirements),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:40]


def interpreter_identity(path: str) -> str:
    """The host interpreter as it is now: an upgrade (new size or mtime) makes earlier trees unusable."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def _root(request: PackageInstall) -> str:
    return os.path.join(request.cache_dir, TREES)


def reuse(request: PackageInstall, key: str, staging: str, ttl: float) -> InstalledPackages | None:
    """Fill `staging` from a kept tree for `key` that is younger than `ttl`; None when there is none."""
    if ttl <= 0 or not request.cache_dir:
        return None
    entry = os.path.join(_root(request), key)
    manifest = os.path.join(entry, MANIFEST)
    started = time.monotonic()
    try:
        if time.time() - os.stat(manifest).st_mtime > ttl:
            return None
        with open(manifest, encoding="utf-8") as fh:
            packages = tuple((str(n), str(v)) for n, v in json.load(fh))
        _link_tree(os.path.join(entry, "tree"), staging)
    except (OSError, ValueError, TypeError):
        # Gone meanwhile (pruned), or unreadable: install with pip instead, from an empty staging dir.
        for name in os.listdir(staging):
            path = os.path.join(staging, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        return None
    return InstalledPackages(
        packages=packages,
        log="reused the packages installed earlier for the same request",
        duration_ms=(time.monotonic() - started) * 1000,
    )


def keep(
    request: PackageInstall, key: str, staging: str, packages: Sequence[tuple[str, str]], ttl: float
) -> None:
    """Keep a copy of a successful install's tree (before it is moved into the package dir)."""
    if ttl <= 0 or not request.cache_dir:
        return
    root = _root(request)
    os.makedirs(root, mode=0o700, exist_ok=True)
    _prune(root, ttl)
    final = os.path.join(root, key)
    building = f"{final}.{secrets.token_hex(4)}.tmp"
    try:
        os.mkdir(building, 0o700)
        _link_tree(staging, os.path.join(building, "tree"))
        with open(os.path.join(building, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump([list(p) for p in packages], fh)
        if os.path.lexists(final):
            shutil.rmtree(final, ignore_errors=True)  # an expired tree for the same request
        os.rename(building, final)  # atomic: a reader sees the whole tree or none
    except OSError:
        pass  # keeping is an optimisation: the install itself succeeded
    finally:
        if os.path.lexists(building):
            shutil.rmtree(building, ignore_errors=True)


def _prune(root: str, ttl: float) -> None:
    now = time.time()
    for name in os.listdir(root):
        path = os.path.join(root, name)
        try:
            age = now - os.lstat(path).st_mtime
        except OSError:
            continue
        if age > max(ttl, 3600):
            shutil.rmtree(path, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _link_tree(source: str, target: str) -> None:
    """Hard-link (or copy) a tree; symlinks stay symlinks, nothing is followed. `target` may exist empty."""
    shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True)
