"""Installing a session's Python packages from outside its sandbox: the parts both local backends share.

The sandbox never gets network access. Instead pip runs in a separate confined process with network - a
bubblewrap sandbox (process backend) or a one-shot container (docker backend) - that can write only to a
staging directory and the shared pip cache. The interpreter is the sandbox's own (the same Python the
executions use, so wheels and bytecode match), and pip itself is the control plane's, bound read-only at
/opt/pip: template images need not ship pip. When pip succeeds, the staging directory's contents replace the
package dir's; when it fails, the package dir is untouched, so what was installed before keeps working.

Inside the installer a small script runs pip, then lists the distributions now in the target (name and
version, read with importlib.metadata in the confined process, never by the control plane from files the
installer could have made into symlinks) on one marked line of stdout.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

from runtime import bwrap as bw
from runtime import package_cache
from runtime.base import InstalledPackages, PackageInstall, RuntimeFailure

TARGET = "/target"
CACHE = "/cache"
PIP_ROOT = "/opt/pip"
CA_FILE = "/etc/sandbox-installer/ca.pem"
MARKER = "@@sandbox-installed@@"
ERROR_TAIL_LINES = 30
ERROR_MAX_CHARS = 4000
LOG_MAX_BYTES = 64 * 1024
TMP_BYTES = 1024 * 1024 * 1024
# What DNS and TLS need, on top of what a sandbox gets (bw.ETC_PATHS): the installer has the host's network.
NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf", "/etc/nsswitch.conf")

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


def pip_arguments(request: PackageInstall, *, target: str, cache: str, ca_file: str) -> list[str]:
    """pip's command line after `-m pip`. Requirements come after `--`, so none can be read as an option."""
    args = ["install", "--target", target, "--no-input", "--disable-pip-version-check"]
    args += ["--progress-bar", "off", "--no-warn-script-location", "--cache-dir", cache]
    if ca_file:
        args += ["--cert", ca_file]
    if request.index_url:
        args += ["--index-url", request.index_url]
    return [*args, "--", *request.requirements]


def installer_env(*, home: str, pip_root: str) -> dict[str, str]:
    return {
        "PATH": bw.PATH,
        "LANG": bw.LANG,
        "HOME": home,
        "PYTHONPATH": pip_root,
        "PYTHONDONTWRITEBYTECODE": "1",
        # No pip.conf, pip.ini or PIP_* from anywhere: what pip does is decided here alone.
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_ROOT_USER_ACTION": "ignore",
    }


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


def fresh_dir(path: str, *, uid: int | None = None) -> str:
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.mkdir(path, 0o755)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def cache_dir(request: PackageInstall, backend: str, *, uid: int | None = None) -> str:
    """This backend's part of the shared pip cache, made on first use and owned by the installer's user."""
    if not request.cache_dir:
        raise RuntimeFailure("no pip cache directory is configured", permanent=True)
    path = os.path.join(request.cache_dir, backend)
    os.makedirs(path, mode=0o755, exist_ok=True)
    if uid is not None and os.stat(path).st_uid != uid:
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
        shutil.rmtree(old)
    os.mkdir(old, 0o700)
    for name in os.listdir(target):
        os.rename(os.path.join(target, name), os.path.join(old, name))
    for name in os.listdir(staging):
        os.rename(os.path.join(staging, name), os.path.join(target, name))
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


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


def bwrap_command(
    *,
    bwrap: str,
    interpreter: bw.Interpreter,
    etc_dir: str,
    staging: str,
    cache: str,
    pip_dir: str,
    ca_file: str,
    request: PackageInstall,
) -> list[str]:
    """A bubblewrap sandbox for pip: the host's network, everything else as closed as a session's sandbox.

    Writable: the staging dir, the pip cache and a private /tmp. Readable: /usr, the few /etc files DNS,
    TLS and interpreters need, the interpreter's prefix, pip and the CA bundle. Not visible: the data dir,
    other sessions, the project, the sandbox's workspace and its run dir.
    """
    env = installer_env(home="/tmp", pip_root=PIP_ROOT)
    cmd = [bwrap, "--unshare-all", "--share-net", "--unshare-user", "--disable-userns"]
    cmd += ["--uid", str(bw.SANDBOX_UID), "--gid", str(bw.SANDBOX_GID), "--die-with-parent", "--new-session"]
    cmd += ["--cap-drop", "ALL", "--hostname", "installer", "--clearenv"]
    for name, value in env.items():
        cmd += ["--setenv", name, value]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for entry in bw.ROOT_LINKS:
        if os.path.islink(entry):
            cmd += ["--symlink", os.readlink(entry), entry]
        elif os.path.isdir(entry):
            cmd += ["--ro-bind", entry, entry]
    for path in bw.ETC_PATHS + NETWORK_ETC:
        if os.path.exists(path):
            cmd += ["--ro-bind", path, path]
    for name in ("passwd", "group"):
        cmd += ["--ro-bind", os.path.join(etc_dir, name), f"/etc/{name}"]
    for prefix in interpreter.prefixes:
        cmd += ["--ro-bind", prefix, prefix]
    cmd += ["--ro-bind", pip_dir, f"{PIP_ROOT}/pip"]
    if ca_file:
        cmd += ["--ro-bind", ca_file, CA_FILE]
    cmd += ["--bind", staging, TARGET, "--bind", cache, CACHE]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    cmd += ["--remount-ro", "/", "--chdir", "/tmp"]
    args = pip_arguments(request, target=TARGET, cache=CACHE, ca_file=CA_FILE if ca_file else "")
    return [*cmd, interpreter.executable, "-s", "-c", SCRIPT, TARGET, *args]


def run_logged(
    command: list[str], *, env: dict[str, str], cwd: str, work: str, timeout: float
) -> tuple[int | None, str, str, float]:
    """Run the installer with its output in files (pip can be chatty; a hostile build script can flood),
    kill its whole process group when it runs past `timeout`. Returns (exit code or None, stdout tail,
    stderr tail, milliseconds)."""
    out_path, err_path = os.path.join(work, "stdout"), os.path.join(work, "stderr")
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
        code: int | None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, read_tail(out_path), read_tail(err_path), (time.monotonic() - started) * 1000


def install_local(
    request: PackageInstall,
    *,
    root: str,
    packages: str,
    bwrap: str | None,
    interpreter: bw.Interpreter,
    prefix: list[str],
    prefix_env: dict[str, str],
) -> InstalledPackages:
    """The process backend's install: pip under bubblewrap (or, unisolated, directly) into a staging dir.

    `prefix` wraps the command (the process backend's supervisor shell, which first joins the sandbox's
    cgroups: the install is charged to the session's memory and process limits).
    """
    staging = fresh_dir(packages + ".staging")
    work = fresh_dir(os.path.join(root, "install"))
    try:
        cache = cache_dir(request, "process")
        pip_dir = pip_source_dir()
        ca_file = write_ca_file(request, work)
        if bwrap:
            command = bwrap_command(
                bwrap=bwrap,
                interpreter=interpreter,
                etc_dir=os.path.join(root, "etc"),
                staging=staging,
                cache=cache,
                pip_dir=pip_dir,
                ca_file=ca_file,
                request=request,
            )
            env, cwd = {"PATH": bw.PATH, "LANG": bw.LANG}, "/"
        else:
            args = pip_arguments(request, target=staging, cache=cache, ca_file=ca_file)
            command = [interpreter.executable, "-s", "-c", SCRIPT, staging, *args]
            env, cwd = installer_env(home=work, pip_root=os.path.dirname(pip_dir)), work
        key = package_cache.tree_key(
            request, "process", package_cache.interpreter_identity(interpreter.executable)
        )
        result = package_cache.reuse(request, key, staging, request.reuse_ttl)
        if result is None:
            code, out, err, ms = run_logged(
                [*prefix, *command], env={**env, **prefix_env}, cwd=cwd, work=work, timeout=request.timeout
            )
            result = outcome(code, out, err, ms)
            package_cache.keep(request, key, staging, result.packages, request.reuse_ttl)
        replace_contents(staging, packages)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
