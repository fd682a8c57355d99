"""The process backend's package install: pip offline under bubblewrap, on this host.

The shared steps (wheel download, the sealed tree cache, the swap into the package dir) are in
runtime/packages/installer.py; this module adds the confinement: a bubblewrap sandbox with no network
that sees the wheels, the control plane's pip and the interpreter read-only and can write only the
staging dir and its /tmp, with pip running as an unprivileged host uid when the control plane is root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from runtime import bwrap as bw
from runtime.base import InstalledPackages, PackageInstall, RuntimeFailure
from runtime.packages import cache as package_cache
from runtime.packages import wheels
from runtime.packages.installer import (
    INSTALLER_UID,
    PIP_ROOT,
    SCRIPT,
    TARGET,
    WHEELS,
    fresh_dir,
    install_offline,
    installer_env,
    outcome,
    pip_source_dir,
    read_tail,
)
from runtime.process import seccomp

TMP_BYTES = 1024 * 1024 * 1024
PASSWD = "nobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n"
GROUP = "nogroup:x:65534:\n"


def seccomp_fd() -> int | None:
    """The sandboxes' seccomp filter (seccomp.py) as an fd to pass on, when it can be built."""
    try:
        return int(seccomp.filter_fd())
    except RuntimeFailure:
        # No libseccomp here. The installer runs only pip over hash-checked wheels (no build step, no
        # tenant code), as an unprivileged uid with no network, so it goes on without the filter.
        return None


def bwrap_command(
    *,
    bwrap: str,
    interpreter: bw.Interpreter,
    paths: dict[str, str],
    uid: int | None,
    seccomp: int | None = None,
) -> list[str]:
    """A bubblewrap sandbox for the offline install: no network, nothing of the host's but what pip needs.

    Mount, pid, ipc, uts, cgroup and network namespaces are unshared (no network: the sandbox has only its
    own loopback). When the control plane is root, bubblewrap runs as root without a user namespace (in one,
    the sandbox's uid would map to host uid 0) and pip runs as host uid `uid` with no capabilities: setpriv
    drops the uid, every group, every inheritable capability and sets no_new_privs before pip starts.
    Otherwise the sandbox is the caller's own uid in a user namespace. Writable: the staging dir and a
    private /tmp. Read-only: /usr, the few /etc files interpreters need, the interpreter's prefix, pip and
    the wheels to install (`paths`: staging, wheels, pip, passwd, group).
    """
    env = installer_env(home="/tmp", pip_root=PIP_ROOT)
    # Not --unshare-all: it includes a user namespace, which would map the sandbox's uid to host uid 0.
    cmd = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    cmd += ["--die-with-parent", "--new-session", "--hostname", "installer"]
    if uid is None:
        cmd += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    else:
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    cmd += ["--clearenv"]
    if seccomp is not None:
        cmd += ["--seccomp", str(seccomp)]
    for name, value in env.items():
        cmd += ["--setenv", name, value]
    # Directories bubblewrap makes on the way to a mount are 0700 when it runs as root: make them first.
    for directory in wheels.ancestors(["/etc/passwd", f"{PIP_ROOT}/pip", *interpreter.prefixes]):
        cmd += ["--perms", "0755", "--dir", directory]
    cmd += bw.system_binds()
    cmd += ["--ro-bind", paths["passwd"], "/etc/passwd", "--ro-bind", paths["group"], "/etc/group"]
    for prefix in interpreter.prefixes:
        cmd += ["--ro-bind", prefix, prefix]
    cmd += ["--ro-bind", paths["pip"], f"{PIP_ROOT}/pip"]
    cmd += ["--ro-bind", paths["wheels"], WHEELS]
    cmd += ["--bind", paths["staging"], TARGET]
    cmd += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(TMP_BYTES),
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
    ]
    cmd += ["--remount-ro", "/", "--chdir", "/tmp"]
    if uid is not None:
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]
        cmd += ["--no-new-privs", "--"]
    return [*cmd, interpreter.executable, "-s", "-c", SCRIPT, TARGET, *wheels.install_arguments(TARGET)]


def run_logged(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: str,
    work: str,
    timeout: float,
    pass_fds: tuple[int, ...] = (),
) -> tuple[int | None, str, str, float]:
    """Run the installer with its output in files (pip can be chatty), kill its whole process group when it
    runs past `timeout`. Returns (exit code or None, stdout tail, stderr tail, milliseconds)."""
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
            pass_fds=pass_fds,
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


def install(
    request: PackageInstall,
    *,
    root: str,
    packages: str,
    bwrap: str | None,
    interpreter: bw.Interpreter,
    prefix: list[str],
    prefix_env: dict[str, str],
) -> InstalledPackages:
    """The process backend's install: download wheels, then pip offline under bubblewrap as INSTALLER_UID
    (or, unisolated, directly) into a staging dir.

    `prefix` wraps the command (the process backend's supervisor shell, which first joins the sandbox's
    cgroups: the install is charged to the session's memory and process limits); the drop to the
    installer's uid happens inside bubblewrap (setpriv), right before pip.
    """
    uid = INSTALLER_UID if os.geteuid() == 0 and bwrap else None
    staging = fresh_dir(packages + ".staging", uid=uid)
    work = fresh_dir(os.path.join(root, "install"))
    try:
        pip_dir = pip_source_dir()
        identity = package_cache.interpreter_identity(interpreter.executable)
        if not request.cache_dir:
            raise RuntimeFailure("no package cache directory is configured", permanent=True)
        tags = wheels.probe(
            f"process:{identity}",
            request.cache_dir,
            lambda: wheels.probe_host_interpreter(interpreter.executable, pip_dir),
        )

        def run_installer(wheel_dir: str) -> InstalledPackages:
            if not bwrap:  # SANDBOX_ALLOW_UNISOLATED (development only): pip offline, on the host
                args = wheels.install_arguments(staging, mount=wheel_dir)
                command = [interpreter.executable, "-s", "-c", SCRIPT, staging, *args]
                env = installer_env(home=work, pip_root=os.path.dirname(pip_dir))
                return outcome(*run_logged(command, env=env, cwd=work, work=work, timeout=request.timeout))
            with open(os.path.join(work, "passwd"), "w", encoding="utf-8") as fh:
                fh.write(PASSWD)
            with open(os.path.join(work, "group"), "w", encoding="utf-8") as fh:
                fh.write(GROUP)
            paths = {
                "staging": staging,
                "wheels": wheel_dir,
                "pip": pip_dir,
                "passwd": os.path.join(work, "passwd"),
                "group": os.path.join(work, "group"),
            }
            seccomp = seccomp_fd()
            try:
                command = bwrap_command(
                    bwrap=bwrap, interpreter=interpreter, paths=paths, uid=uid, seccomp=seccomp
                )
                code, out, err, ms = run_logged(
                    [*prefix, *command],
                    env={"PATH": bw.PATH, "LANG": bw.LANG, **prefix_env},
                    cwd="/",
                    work=work,
                    timeout=request.timeout,
                    pass_fds=(seccomp,) if seccomp is not None else (),
                )
            finally:
                if seccomp is not None:
                    os.close(seccomp)
            return outcome(code, out, err, ms)

        return install_offline(
            request,
            backend="process",
            interpreter_identity=identity,
            tags=tags,
            staging=staging,
            work=work,
            packages=packages,
            run_installer=run_installer,
            wheel_mount=WHEELS if bwrap else None,
        )
    finally:
        for leftover in (staging, work):
            if os.path.lexists(leftover):
                package_cache.remove_tree(leftover)
