"""Wheels only, downloaded by the control plane into a content-addressed store only it writes.

A package's build step (an sdist's setup.py or build backend) is code the tenant chose. The control plane
never runs it: it downloads with `pip download --only-binary=:all:` for the target interpreter's tags (the
Python the sandboxes run: the host interpreter for the process backend, the template image's python3 for
docker), so pip only fetches and reads wheel files. Every download goes through the egress proxy
(egress_proxy.py), which applies the index policy to each host pip contacts.

Downloaded wheels land in `<cache>/wheels/sha256/<hh>/<sha256>/<filename>`: files 0444, directories 0755,
owned by the control plane, written by rename so a reader sees a whole file or none. No sandbox mounts the
store: an installer sees only the few wheels it installs, linked into a directory bound read-only, and pip
checks each against its recorded hash (`--require-hashes`).

A package that exists only as a source distribution is refused, naming the package and the tags looked for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

from runtime import bwrap as bw
from runtime.base import PackageInstall, RuntimeFailure
from runtime.packages import egress_proxy, index_policy

WHEELS = "wheels"
PROBES = "probes"
PROBE_TIMEOUT = 120.0
# What the target interpreter accepts, read with pip's own vendored `packaging` (the probe runs the target
# interpreter with pip's directory on its path as argv[1]; no network, no site-packages).
PROBE_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pip._vendor.packaging import tags
found = list(tags.sys_tags())
def unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "implementation": tags.interpreter_name(),
    "abis": unique([t.abi for t in found]),
    "platforms": unique([t.platform for t in found]),
}))
"""
NO_MATCH = re.compile(r"No matching distribution found for (\S+)")


@dataclass(frozen=True)
class TargetTags:
    """The wheel tags an interpreter accepts, as pip download's --python-version/--implementation/... take."""

    version: str
    implementation: str
    abis: tuple[str, ...]
    platforms: tuple[str, ...]

    def label(self) -> str:
        best = self.platforms[0] if self.platforms else "any"
        abi = self.abis[0] if self.abis else "none"
        return f"{self.implementation}{self.version.replace('.', '')}, {abi}, {best}"

    def key(self) -> str:
        return json.dumps([self.version, self.implementation, self.abis, self.platforms])

    def pip_options(self) -> list[str]:
        args = ["--python-version", self.version, "--implementation", self.implementation]
        for abi in self.abis:
            args += ["--abi", abi]
        for platform in self.platforms:
            args += ["--platform", platform]
        return args


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str
    path: str


_probes: dict[str, TargetTags] = {}
_probe_lock = threading.Lock()


def probe(identity: str, cache_dir: str, run: Callable[[], str]) -> TargetTags:
    """The tags of the interpreter known as `identity`, probed once (`run` returns the probe's stdout) and
    remembered in memory and in `<cache>/probes/` (an upgrade changes the identity, so nothing goes stale)."""
    with _probe_lock:
        if identity in _probes:
            return _probes[identity]
        path = os.path.join(cache_dir, PROBES, hashlib.sha256(identity.encode()).hexdigest()[:32] + ".json")
        try:
            with open(path, encoding="utf-8") as fh:
                tags = _parse_probe(fh.read())
        except (OSError, ValueError, KeyError, TypeError):
            output = run()
            try:
                tags = _parse_probe(output)
            except (ValueError, KeyError, TypeError) as exc:
                raise RuntimeFailure(f"cannot read the interpreter's wheel tags: {output[-500:]!r}") from exc
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            _write_atomic(path, output.encode(), 0o644)
        _probes[identity] = tags
        return tags


def _parse_probe(text: str) -> TargetTags:
    data = json.loads(text.strip().splitlines()[-1])
    tags = TargetTags(
        version=str(data["version"]),
        implementation=str(data["implementation"]),
        abis=tuple(str(a) for a in data["abis"]),
        platforms=tuple(str(p) for p in data["platforms"]),
    )
    if not re.fullmatch(r"\d+\.\d+", tags.version) or not tags.platforms:
        raise ValueError("incomplete probe")
    return tags


def probe_host_interpreter(executable: str, pip_dir: str) -> str:
    """Run the host interpreter (the one process sandboxes use; no tenant code) for its tags."""
    result = subprocess.run(
        [executable, "-I", "-c", PROBE_SCRIPT, os.path.dirname(pip_dir)],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        env={"PATH": bw.PATH, "LANG": bw.LANG},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeFailure(f"cannot probe {executable}: {result.stderr[-500:]}")
    return result.stdout


def write_ca_file(request: PackageInstall, directory: str) -> str:
    """The CA bundle pip trusts: the configured bundle plus the session's own certificates, or '' for none."""
    parts = []
    if request.ca_bundle:
        try:
            with open(request.ca_bundle, encoding="utf-8", errors="replace") as fh:
                parts.append(fh.read())
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot read the CA bundle {request.ca_bundle}: {exc}", permanent=True
            ) from exc
    if request.extra_ca_pem:
        parts.append(request.extra_ca_pem)
    if not parts:
        return ""
    path = os.path.join(directory, "ca.pem")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(part.strip() for part in parts) + "\n")
    os.chmod(path, 0o644)
    return path


def store_root(cache_dir: str) -> str:
    return os.path.join(cache_dir, WHEELS, "sha256")


def download(request: PackageInstall, tags: TargetTags, *, uid: int | None) -> list[Wheel]:
    """Resolve and download `request` as wheels for `tags` into the store; the wheels, hashes recorded.

    pip is the control plane's own, trusted code: with --only-binary it reads wheel metadata and never
    builds. It runs with no configuration but ours, through a fresh egress proxy, and - when the control
    plane is root - as host uid `uid` in a scratch dir of its own: an index page can link to `file:` URLs,
    which pip would copy, so pip must not be able to read the data dir or the store. The control plane then
    moves each wheel into the store.
    """
    if not request.cache_dir:
        raise RuntimeFailure("no package cache directory is configured", permanent=True)
    rules = index_policy.IndexPolicy(
        allow=index_policy.parse_allow(request.index_allow), own_addresses=index_policy.own_addresses()
    )
    if request.index_url:
        try:
            index_policy.split_url(request.index_url)
        except index_policy.IndexRefused as exc:
            raise RuntimeFailure(str(exc), permanent=True) from None
    scratch = tempfile.mkdtemp(prefix="sandbox-download-")
    try:
        ca_file = write_ca_file(request, scratch)
        dest = os.path.join(scratch, "dest")
        os.mkdir(dest, 0o700)
        if uid is not None:
            for path in (scratch, dest):
                os.chown(path, uid, uid)
        python = download_python(scratch, uid)
        with egress_proxy.running(rules) as proxy:
            args = [*python, "download", "--dest", dest, "--only-binary=:all:"]
            args += tags.pip_options()
            args += ["--no-input", "--disable-pip-version-check", "--progress-bar", "off", "--no-cache-dir"]
            args += ["--proxy", proxy.url, "--retries", "1", "--timeout", "30"]
            if ca_file:
                args += ["--cert", ca_file]
            if request.index_url:
                args += ["--index-url", request.index_url]
            args += ["--", *request.requirements]
            env = {
                "PATH": bw.PATH,
                "LANG": bw.LANG,
                "HOME": scratch,
                "PIP_CONFIG_FILE": os.devnull,  # no pip.conf, no PIP_* and no *_PROXY from anywhere
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            try:
                result = subprocess.run(
                    args,
                    capture_output=True,
                    text=True,
                    timeout=request.timeout,
                    env=env,
                    cwd=scratch,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise RuntimeFailure(
                    "the download was stopped: it ran past its time limit", permanent=True
                ) from None
            refused = list(proxy.refused)
        if result.returncode != 0:
            raise RuntimeFailure(
                download_error(result.stderr or result.stdout, tags, refused), permanent=True
            )
        return [_store(os.path.join(dest, name), request.cache_dir) for name in sorted(os.listdir(dest))]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def download_python(scratch: str, uid: int | None) -> list[str]:
    """`python -m pip` for the download, confined: under bubblewrap, seeing /usr, the control plane's
    interpreter, pip and the scratch dir only (not the data dir or the store), with the host's network so
    that it reaches the egress proxy on loopback. When the control plane is root, bubblewrap runs without a
    user namespace and pip as host uid `uid` (setpriv); otherwise in the caller's own user namespace.
    Without bubblewrap (development), pip runs unconfined, as `uid` when given."""
    bwrap = shutil.which("bwrap")
    setpriv = []
    if uid is not None:
        setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
        setpriv += ["--no-new-privs", "--"]
    if not bwrap:
        return [*setpriv, sys.executable, "-s", "-m", "pip"]
    interpreter = bw.resolve_interpreter(sys.executable)
    spec = importlib.util.find_spec("pip")
    pip_dir = os.path.realpath(list(spec.submodule_search_locations or [])[0]) if spec else ""
    cmd = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    cmd += ["--die-with-parent", "--new-session"]
    if uid is None:
        cmd += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    else:
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    for directory in ancestors(["/etc/x", "/opt/pip/pip", *interpreter.prefixes, scratch]):
        cmd += ["--perms", "0755", "--dir", directory]
    cmd += ["--setenv", "PYTHONPATH", "/opt/pip", *bw.system_binds()]
    for prefix in interpreter.prefixes:
        cmd += ["--ro-bind", prefix, prefix]
    cmd += ["--ro-bind", pip_dir, "/opt/pip/pip", "--proc", "/proc", "--dev", "/dev"]
    cmd += ["--perms", "1777", "--tmpfs", "/tmp", "--bind", scratch, scratch, "--chdir", "/tmp"]
    return [*cmd, *setpriv, interpreter.executable, "-s", "-m", "pip"]


def ancestors(paths: list[str]) -> list[str]:
    """Every directory above `paths` (not "/" or /usr's), parents first, each once: bubblewrap makes the
    directories on the way to a mount 0700 when it runs as root, so the sandbox makes them 0755 first."""
    found: list[str] = []
    for path in paths:
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/" + "/".join(parts[:depth])
            if directory not in found and directory != "/usr" and not directory.startswith("/usr/"):
                found.append(directory)
    return found


def download_error(output: str, tags: TargetTags, refused: list[tuple[str, int]]) -> str:
    """pip's failure in the tenant's terms: a refused host, a package with no wheel, or pip's last lines."""
    lines = [line for line in output.splitlines() if line.strip()]
    tail = "\n".join(lines[-12:])[-3000:]
    if refused:
        hosts = ", ".join(sorted({host for host, _ in refused}))
        return f"download refused: {hosts} is not an allowed destination ({index_policy.REFUSED_MESSAGE})"
    match = NO_MATCH.search(output)
    if match:
        return (
            f"package {match.group(1)} has no wheel for this interpreter ({tags.label()}); only wheels are "
            f"installed, source distributions are never built\n{tail}"
        )
    return tail or "the download failed"


def _store(path: str, cache_dir: str) -> Wheel:
    """Move one downloaded file into the store under its sha256; refuse anything but a wheel."""
    filename = os.path.basename(path)
    if not filename.endswith(".whl") or os.path.islink(path) or not os.path.isfile(path):
        raise RuntimeFailure(f"{filename} is not a wheel; only wheels are installed", permanent=True)
    name, version = parse_wheel_filename(filename)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    directory = os.path.join(store_root(cache_dir), sha[:2], sha)
    final = os.path.join(directory, filename)
    if not os.path.isfile(final):
        os.makedirs(directory, mode=0o755, exist_ok=True)
        building = f"{final}.{secrets.token_hex(4)}.tmp"
        shutil.copyfile(path, building)
        os.chmod(building, 0o444)
        os.rename(building, final)  # atomic; a concurrent writer of the same content is harmless
    return Wheel(name=name, version=version, filename=filename, sha256=sha, path=final)


def parse_wheel_filename(filename: str) -> tuple[str, str]:
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6) or not parts[0] or not parts[1]:
        raise RuntimeFailure(f"{filename} is not a valid wheel file name", permanent=True)
    return parts[0].replace("_", "-"), parts[1]


def link_set(wheels: list[Wheel], directory: str, *, mount: str = "/wheels") -> str:
    """Hard-link (or copy) exactly these wheels into `directory` with a hash-pinned requirements file for
    pip naming them under `mount` (where the installer sees `directory`, read-only); returns `directory`."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    lines = []
    for wheel in wheels:
        target = os.path.join(directory, wheel.filename)
        try:
            os.link(wheel.path, target)
        except OSError:
            shutil.copyfile(wheel.path, target)
            os.chmod(target, 0o444)
        lines.append(f"{mount}/{wheel.filename} --hash=sha256:{wheel.sha256}")
    _write_atomic(os.path.join(directory, "requirements.txt"), ("\n".join(lines) + "\n").encode(), 0o444)
    return directory


def install_arguments(target: str, *, mount: str = "/wheels") -> list[str]:
    """pip's command line (after `-m pip`) inside the installer: these wheels, nothing from anywhere else."""
    return [
        "install",
        "--no-index",
        "--no-deps",
        "--require-hashes",
        "--target",
        target,
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--no-warn-script-location",
        "--no-cache-dir",
        "-r",
        f"{mount}/requirements.txt",
    ]


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    building = f"{path}.{secrets.token_hex(4)}.tmp"
    with open(building, "wb") as fh:
        fh.write(data)
    os.chmod(building, mode)
    os.rename(building, path)
