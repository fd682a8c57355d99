"""Installed package trees: content-addressed, written once, read-only, shared by hard links.

An install's outcome is decided by the exact wheels it installed and the interpreter and platform it was
installed for, so a finished tree is kept under `trees/<id>`, where id hashes (backend, interpreter
identity, platform tags, sorted wheel sha256s). It is made once by the control plane from an installer's
staging dir, sealed (owned by the control plane, no write bits anywhere: files 0444 or 0555, directories
0555) and never changed after; a session gets its files as hard links (copies across file systems) in
directories of its own, which its sandbox mounts read-only. Because the inodes belong to the control plane
and carry no write bits, no sandbox uid can alter a file another session also uses.

A second index, `requests/<key>.json`, maps a request (backend, interpreter, tags, index URL, extra CA,
exact requirement strings) to the tree it produced, for `ttl` seconds: an identical request within that
time runs neither the download nor pip. Unpinned requirements therefore resolve to what they resolved to
when the tree was made, for at most `ttl` seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Sequence

from runtime.base import InstalledPackages, PackageInstall

TREES = "trees"
REQUESTS = "requests"
MANIFEST = "packages.json"


def tree_key(request: PackageInstall, backend: str, interpreter: str, tags: str = "") -> str:
    """The request's key: everything that decides which wheels it resolves to."""
    identity = {
        "backend": backend,
        "interpreter": interpreter,
        "tags": tags,
        "index_url": request.index_url,
        "extra_ca": hashlib.sha256(request.extra_ca_pem.encode()).hexdigest(),
        "requirements": list(request.requirements),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:40]


def tree_id(backend: str, interpreter: str, tags: str, wheel_hashes: Sequence[str]) -> str:
    """The content address of an installed tree: the same wheels on the same interpreter give the same id."""
    identity = [backend, interpreter, tags, sorted(wheel_hashes)]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:40]


def interpreter_identity(path: str) -> str:
    """The host interpreter as it is now: an upgrade (new size or mtime) makes earlier trees unusable."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}"


def _root(request: PackageInstall, kind: str) -> str:
    return os.path.join(request.cache_dir, kind)


def reuse(request: PackageInstall, key: str, staging: str, ttl: float) -> InstalledPackages | None:
    """Fill `staging` from the tree an identical request made less than `ttl` seconds ago; None if none."""
    if ttl <= 0 or not request.cache_dir:
        return None
    pointer = os.path.join(_root(request, REQUESTS), key + ".json")
    try:
        if time.time() - os.stat(pointer).st_mtime > ttl:
            return None
        with open(pointer, encoding="utf-8") as fh:
            found = str(json.load(fh)["tree"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return reuse_tree(request, found, staging)


def reuse_tree(request: PackageInstall, tree: str, staging: str) -> InstalledPackages | None:
    """Link the sealed tree `tree` into `staging`; None when it is not there (pruned, never made)."""
    if not request.cache_dir:
        return None
    entry = os.path.join(_root(request, TREES), tree)
    started = time.monotonic()
    try:
        with open(os.path.join(entry, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
        packages = tuple((str(n), str(v)) for n, v in manifest["packages"])
        wheels = tuple((str(f), str(h)) for f, h in manifest["wheels"])
        link_tree(os.path.join(entry, "tree"), staging)
    except (OSError, ValueError, TypeError, KeyError):
        # Gone meanwhile (pruned), or unreadable: install afresh, from an empty staging dir.
        clear(staging)
        return None
    return InstalledPackages(
        packages=packages,
        log=f"reused installed tree {tree} (same wheels, same interpreter)",
        duration_ms=(time.monotonic() - started) * 1000,
        wheels=wheels,
    )


def keep(
    request: PackageInstall,
    key: str,
    tree: str,
    staging: str,
    result: InstalledPackages,
    ttl: float,
) -> None:
    """Publish a sealed staging tree as `trees/<tree>` (once: an existing tree is never replaced) and point
    the request `key` at it."""
    if ttl <= 0 or not request.cache_dir:
        return
    trees, requests = _root(request, TREES), _root(request, REQUESTS)
    for directory in (trees, requests):
        os.makedirs(directory, mode=0o755, exist_ok=True)
    _prune(trees, requests, ttl)
    final = os.path.join(trees, tree)
    building = f"{final}.{secrets.token_hex(4)}.tmp"
    try:
        if not os.path.isdir(final):
            os.mkdir(building, 0o755)
            link_tree(staging, os.path.join(building, "tree"), mode=0o555)
            manifest = {
                "packages": [list(p) for p in result.packages],
                "wheels": [list(w) for w in result.wheels],
            }
            with open(os.path.join(building, MANIFEST), "w", encoding="utf-8") as fh:
                json.dump(manifest, fh)
            os.chmod(os.path.join(building, MANIFEST), 0o444)
            os.chmod(building, 0o555)
            try:
                os.rename(building, final)  # atomic: a reader sees the whole tree or none
            except OSError:
                pass  # another install published the same tree first: identical content by construction
        pointer = os.path.join(requests, key + ".json")
        temp = f"{pointer}.{secrets.token_hex(4)}.tmp"
        with open(temp, "w", encoding="utf-8") as fh:
            json.dump({"tree": tree}, fh)
        os.rename(temp, pointer)
    except OSError:
        pass  # keeping is an optimisation: the install itself succeeded
    finally:
        if os.path.lexists(building):
            remove_tree(building)


def seal(tree: str, *, uid: int | None = None, dir_mode: int = 0o755) -> None:
    """Make an installer's finished staging tree the control plane's and unwritable by anyone else.

    Owner: the control plane (`uid`, when it may chown). Files: 0444, or 0555 when any execute bit was set;
    directories `dir_mode`. Symlinks are left as they are and never followed (lchown only).
    """
    for current, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = os.path.join(current, name)
            st = os.lstat(path)
            if uid is not None and st.st_uid != uid:
                os.lchown(path, uid, os.getgid())
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode):
                os.chmod(path, dir_mode)
            elif stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o555 if st.st_mode & 0o111 else 0o444)
            else:
                os.unlink(path)  # no FIFOs, sockets or devices in a package tree
    if uid is not None and os.lstat(tree).st_uid != uid:
        os.lchown(tree, uid, os.getgid())
    os.chmod(tree, dir_mode)


def _prune(trees: str, requests: str, ttl: float) -> None:
    """Drop request pointers older than `ttl` and trees older than an hour past it (sessions using a pruned
    tree keep their hard links; only the shared name goes)."""
    now = time.time()
    for root, age_limit in ((requests, ttl), (trees, max(ttl, 3600) + 3600)):
        for name in os.listdir(root):
            path = os.path.join(root, name)
            try:
                age = now - os.lstat(path).st_mtime
            except OSError:
                continue
            if age > age_limit:
                if os.path.isdir(path) and not os.path.islink(path):
                    remove_tree(path)
                else:
                    os.unlink(path)


def remove_tree(path: str) -> None:
    """rmtree that also works on sealed (0555) directories when the control plane is not root."""

    def unlock(func: object, target: str, _exc: object) -> None:
        parent = os.path.dirname(target)
        try:
            os.chmod(parent, 0o755)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o755)
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.unlink(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=unlock)


def clear(directory: str) -> None:
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path)
        else:
            os.unlink(path)


def link_tree(source: str, target: str, *, mode: int = 0o755) -> None:
    """Hard-link (or copy) a tree's files into new directories (`mode`, made by the control plane);
    symlinks stay symlinks, nothing is followed. `target` may exist empty."""
    os.makedirs(target, mode=0o755, exist_ok=True)
    made: list[str] = []
    for current, dirs, files in os.walk(source):
        here = os.path.join(target, os.path.relpath(current, source))
        for name in dirs:
            src, dst = os.path.join(current, name), os.path.join(here, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            else:
                os.mkdir(dst, 0o755)
                made.append(dst)
        for name in files:
            src, dst = os.path.join(current, name), os.path.join(here, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
                continue
            try:
                os.link(src, dst, follow_symlinks=False)
            except OSError:
                shutil.copy2(src, dst, follow_symlinks=False)
    # Directories are closed last (deepest first), once everything inside them is linked.
    for directory in reversed(made):
        os.chmod(directory, mode)
    if mode != 0o755:
        os.chmod(target, mode)
