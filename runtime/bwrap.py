"""The bubblewrap command line that confines one sandbox's executor, built from plain paths.

What the sandbox sees is an allow-list: an empty read-only root with /usr (and the /bin, /lib ... links into
it), the few pieces of /etc that interpreters read, the interpreter's own prefix when it lives outside /usr,
the executor package, and the session's own workspace, run and package directories. Everything else on the
host (the project, the data dir, other sessions, /root, /home, /etc/shadow, /etc/ssl/private) is simply not
mounted. Sandboxed code runs as uid 1000 inside a fresh user namespace, mapped to the session's own
unprivileged host uid (host_uids.py; the control plane's uid when it is not root): bubblewrap itself runs
as that uid, so it cannot map anything else, and ownership checks still see that host uid. Anything
sensitive owned by it must therefore stay unmounted rather than merely read-only, which is why /etc is
never bound whole. /proc/sys is bound read-only over the sandbox's own /proc (bubblewrap covers it only
when the directory itself is writable, which it never is, while the files in it may be), and a seccomp
filter (seccomp.py) refuses the syscalls that reach the kernel's rarely needed corners.
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from runtime.environment import LANG, PATH, check_env

WORKSPACE = "/workspace"
RUN_DIR = "/run/sandbox"
PACKAGES = "/opt/packages"
EXECUTOR_ROOT = "/opt/sandbox"  # the executor package is importable from here as "executor"
SANDBOX_UID = 1000
SANDBOX_GID = 1000
HOSTNAME = "sandbox"

# Pieces of /etc that interpreters and common libraries read; all harmless to expose. Notably absent: the
# whole of /etc/ssl (its private/ holds keys), passwd/group (generated per sandbox instead), shadow, and
# anything naming the host's network (resolv.conf, hosts: generated).
ETC_PATHS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/protocols",
    "/etc/services",
    "/etc/fonts",
    "/etc/matplotlibrc",
)
# Top-level entries that are either symlinks into /usr (merged-/usr systems) or real directories.
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class SandboxPaths:
    """Host paths of one session."""

    workspace: str
    run: str
    packages: str
    etc: str  # generated passwd, group, hosts, hostname, nsswitch.conf


@dataclass(frozen=True)
class Interpreter:
    """The Python that runs the executor: the path to exec inside, and host prefixes to bind for it."""

    executable: str
    prefixes: tuple[str, ...] = field(default_factory=tuple)


def resolve_interpreter(python_path: str) -> Interpreter:
    """Find what must be visible for `python_path` to run inside the sandbox; ValueError if it cannot run.

    A venv's `python` is a symlink into a base installation (pyenv's under /root/.pyenv, say); binding the
    venv would expose the project, so the real binary and its installation prefix (sys.base_prefix) are
    used instead. Interpreters under /usr need nothing extra.
    """
    real = os.path.realpath(python_path)
    if not os.path.isfile(real) or not os.access(real, os.X_OK):
        raise ValueError(f"python interpreter {python_path} does not exist or is not executable")
    if real.startswith("/usr/"):
        return Interpreter(real)
    try:
        out = subprocess.run(
            [real, "-E", "-S", "-c", "import sys; print(sys.base_prefix)"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"python interpreter {python_path} does not run: {exc}") from exc
    prefix = os.path.realpath(out)
    # Binding "/" or a home directory whole would undo the sandbox; a prefix must be a real installation
    # that contains the binary and sits at least two levels down (/opt/python3.11, /root/.pyenv/versions/X).
    if not real.startswith(prefix + os.sep) or prefix.count(os.sep) < 2:
        raise ValueError(f"python interpreter {python_path} has an unusable prefix {prefix!r}")
    return Interpreter(real, (prefix,))


def system_binds(etc_paths: tuple[str, ...] = ETC_PATHS) -> list[str]:
    """bwrap options for the read-only system every confined process gets: /usr, the root links into it
    (or real /bin, /lib ... directories) and those of `etc_paths` that exist."""
    cmd = ["--ro-bind", "/usr", "/usr"]
    for entry in ROOT_LINKS:
        if os.path.islink(entry):
            cmd += ["--symlink", os.readlink(entry), entry]
        elif os.path.isdir(entry):
            cmd += ["--ro-bind", entry, entry]
    for path in etc_paths:
        if os.path.exists(path):
            cmd += ["--ro-bind", path, path]
    return cmd


def write_etc(directory: str, hostname: str = HOSTNAME) -> None:
    """Generate the identity files the sandbox gets instead of the host's."""
    files = {
        "passwd": f"sandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:{WORKSPACE}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": f"sandbox:x:{SANDBOX_GID}:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "hostname": f"{hostname}\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    }
    os.makedirs(directory, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as fh:
            fh.write(text)


def bwrap_command(
    *,
    paths: SandboxPaths,
    interpreter: Interpreter,
    executor_package: str,
    executor_args: list[str],
    env: Mapping[str, str],
    tmp_size_bytes: int | None = None,
    seccomp_fd: int | None = None,
) -> tuple[list[str], list[str]]:
    """bwrap's options and, separately, the command it runs: the executor, from the read-only package root.

    The options go to bwrap through `--args FD` rather than its argv (see `args_fd`): bwrap stays the
    sandbox's pid 1, whose /proc/1/cmdline sandboxed code can read, and the options name host paths and
    carry the session's environment values.

    The executor runs with cwd /opt/sandbox and `-m executor`: Python puts the cwd first on sys.path, so the
    package is found without a PYTHONPATH that every execution would inherit, and the writable workspace is
    never on the daemon's import path (a `json.py` dropped there cannot hijack a later import of the daemon,
    which holds the token). `-E` makes the daemon ignore PYTHON* variables (PYTHONPATH=/workspace would undo
    the above) while leaving them in its environment for executions; `-s` keeps user site-packages out.
    """
    cmd = [
        # Every namespace; --unshare-user explicitly (--unshare-all only *tries*) so --disable-userns holds:
        # no nested user namespaces, the usual first step of a kernel exploit from a sandbox.
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        # Kill the sandbox when bwrap's parent dies. That parent is the session's supervisor shell (see
        # process.py), not the control plane, so a control-plane restart leaves the sandbox running.
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into a terminal the sandbox was never given
        "--cap-drop",
        "ALL",
        "--hostname",
        HOSTNAME,
        "--clearenv",
        "--setenv",
        "PATH",
        PATH,
        "--setenv",
        "HOME",
        WORKSPACE,
        "--setenv",
        "LANG",
        LANG,
        "--setenv",
        "USER",
        "sandbox",
        "--setenv",
        "TMPDIR",
        "/tmp",
    ]
    for name, value in check_env(env).items():
        cmd += ["--setenv", name, value]
    cmd += system_binds(ETC_PATHS + tuple(sorted(glob.glob("/etc/python3*"))))
    for name in ("passwd", "group", "hosts", "hostname", "nsswitch.conf"):
        cmd += ["--ro-bind", os.path.join(paths.etc, name), f"/etc/{name}"]
    for prefix in interpreter.prefixes:
        cmd += ["--ro-bind", prefix, prefix]
    cmd += [
        # Only the package itself: the rest of the project (runtime/, settings, the data dir) stays unseen.
        "--ro-bind",
        executor_package,
        f"{EXECUTOR_ROOT}/executor",
        "--ro-bind",
        paths.packages,
        PACKAGES,
        "--bind",
        paths.workspace,
        WORKSPACE,
        "--bind",
        paths.run,
        RUN_DIR,
        "--proc",
        "/proc",
        # After --proc, so it covers the sandbox's own proc mount: no sysctl is writable, whatever the uid.
        "--ro-bind",
        "/proc/sys",
        "/proc/sys",
        "--dev",
        "/dev",
    ]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    if tmp_size_bytes:
        cmd += ["--size", str(tmp_size_bytes)]
    cmd += [
        "--tmpfs",
        "/tmp",
        # The root is a tmpfs bwrap built; left writable, code could litter / with files. Last, once every
        # mount point exists.
        "--remount-ro",
        "/",
        "--chdir",
        EXECUTOR_ROOT,
    ]
    command = [interpreter.executable, "-E", "-s", "-m", "executor", *executor_args]
    return cmd, command


def args_fd(options: list[str]) -> int:
    """An anonymous file holding `options` NUL-separated, for `bwrap --args FD`; the caller closes it."""
    # Close-on-exec like every fd Python makes: Popen(pass_fds=...) makes it inheritable in bwrap's exec
    # alone, so a process another thread spawns meanwhile never inherits a copy.
    fd = os.memfd_create("bwrap-args", os.MFD_CLOEXEC)
    data = b"".join(option.encode("utf-8") + b"\0" for option in options)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
