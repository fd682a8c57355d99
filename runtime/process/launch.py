"""Starting a process sandbox: the session's uid, directories, cgroup and stage (`prepare`), then its
supervisor shell, bubblewrap and the executor (`spawn`). Why the process tree has this shape is in backend.py.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from typing import TYPE_CHECKING, Any

from runtime import bwrap as bw
from runtime.base import RuntimeFailure, SandboxSpec
from runtime.limits import executor_limit_args
from runtime.process import host_uids
from runtime.process import record as pr
from runtime.process import workspace as pw
from runtime.process.cgroups import SandboxCgroup

if TYPE_CHECKING:
    from runtime.process.backend import ProcessRuntime

SOCKET_NAME = "executor.sock"
TOKEN_NAME = "token"
LOG_NAME = "executor.log"
EXECUTOR_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "executor")
MIB = 1024 * 1024
# Joins every cgroup listed in $SANDBOX_CGROUP_PROCS (':'-separated), then runs the sandbox and waits for it.
# `exit $?` after the command keeps the shell from exec-ing it: the shell must stay as bwrap's parent.
SUPERVISOR = (
    'set -f; IFS=:; for f in $SANDBOX_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; '
    'unset IFS SANDBOX_CGROUP_PROCS; set +f; "$@"; exit $?'
)


def prepare(rt: ProcessRuntime, spec: SandboxSpec, root: str) -> tuple[SandboxCgroup | None, dict[str, Any]]:
    """The session's uid, directories, token file, cgroup and stage, recorded as they come into being.

    The record is written right after the uid is claimed and again at the end, so a control plane
    that dies anywhere in between leaves enough behind for destroy to undo it all.
    """
    uid, gid = os.geteuid(), os.getegid()
    if rt.uids is not None and rt.isolated:
        try:
            uid = gid = rt.uids.claim(spec.session_id)
        except OSError as exc:
            raise RuntimeFailure(f"no host uid for sandbox {spec.session_id}: {exc}") from exc
    loop = rt.disk_limit_reason is None
    meta: dict[str, Any] = {
        "session_id": spec.session_id,
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "node": rt.node,
        "isolated": rt.isolated,
        "uid": uid,
        "gid": gid,
        "disk": "loop" if loop else "per-file",
        "stage": "",
        "cgroup": None,
        "resources": {
            "cpu": spec.resources.cpu,
            "memory_mb": spec.resources.memory_mb,
            "disk_mb": spec.resources.disk_mb,
            "max_processes": spec.resources.max_processes,
        },
        "labels": dict(spec.labels),
        "pid": None,
        "pgid": None,
        "start_time": None,
    }
    pr.write_record(root, meta)
    dirs = pw.SessionDirs(root)
    pw.make(
        dirs,
        uid=uid,
        gid=gid,
        disk_mb=int(spec.resources.disk_mb),
        loop=loop,
        template_dir=os.path.join(rt.data_dir, "sandbox-images"),
    )
    bw.write_etc(dirs.etc)
    token = os.path.join(dirs.run, TOKEN_NAME)
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(spec.token)
    pw.give_token(token, uid=uid, gid=gid)
    cgroup = None
    if rt.cgroups is not None and rt.cgroups.available:
        cgroup = rt.cgroups.create(rt.cgroup_name(spec.session_id), spec.resources)
        meta["cgroup"] = cgroup.to_json()
        pr.write_record(root, meta)  # before the stage, so a crash from here on still finds the cgroup
    if uid != os.geteuid():
        meta["stage"] = rt.stage_path(spec.session_id)
        pr.write_record(root, meta)
        pw.mount_stage(pw.SessionDirs(root, meta["stage"]))
    return cgroup, meta


def spawn(
    rt: ProcessRuntime,
    spec: SandboxSpec,
    root: str,
    env: dict[str, str],
    cgroup: SandboxCgroup | None,
    meta: dict[str, Any],
) -> subprocess.Popen:
    resources = spec.resources
    limit_args = executor_limit_args(
        resources, memory_cgroup=cgroup is not None, disk_total=meta.get("disk") == "loop"
    )
    common = ["--session-id", spec.session_id, "--memory-mb", str(int(resources.memory_mb)), *limit_args]
    if rt.max_output is not None:
        common += ["--max-output", str(int(rt.max_output))]
    supervisor_env = {
        "PATH": bw.PATH,
        "LANG": bw.LANG,
        "SANDBOX_CGROUP_PROCS": ":".join(cgroup.procs_files()) if cgroup else "",
    }
    fds: list[int] = []
    cwd = "/"  # the supervisor's PWD is visible in the sandbox (/proc/1/environ); do not name host paths
    if rt.isolated:
        inside = [
            "--socket",
            f"{bw.RUN_DIR}/{SOCKET_NAME}",
            "--workspace",
            bw.WORKSPACE,
            "--token-file",
            f"{bw.RUN_DIR}/{TOKEN_NAME}",
            "--packages",
            bw.PACKAGES,
            *common,
        ]
        dirs = pw.SessionDirs(root, meta.get("stage") or "")
        filter_fd = rt.seccomp_fd()
        if filter_fd is not None:
            fds.append(filter_fd)
        options, inner = bw.bwrap_command(
            paths=bw.SandboxPaths(
                workspace=dirs.reachable("workspace"),
                run=dirs.reachable("run"),
                packages=dirs.reachable("packages"),
                etc=dirs.reachable("etc"),
            ),
            interpreter=rt.resolve_interpreter(),
            executor_package=EXECUTOR_PACKAGE,
            executor_args=inside,
            env=env,
            tmp_size_bytes=rt.tmp_size_mb * MIB,
            seccomp_fd=filter_fd,
        )
        fds.append(bw.args_fd(options))
        command = [str(rt.bwrap_path), "--args", str(fds[-1]), "--", *inner]
        uid, gid = int(meta["uid"]), int(meta["gid"])
        if uid != os.geteuid():
            command = [*host_uids.drop_command(uid, gid), *command]
    else:
        # Unconfined: the daemon's cwd is the package's parent, so `-m executor` imports it without a
        # PYTHONPATH its executions would inherit; executions still run in the workspace (the executor
        # chdirs each child there), and HOME points at it.
        command = [
            rt.python_path,
            "-E",
            "-s",
            "-m",
            "executor",
            "--socket",
            rt.socket_path(spec.session_id),
            "--workspace",
            os.path.join(root, "workspace"),
            "--token-file",
            os.path.join(root, "run", TOKEN_NAME),
            "--packages",
            os.path.join(root, "packages"),
            *common,
        ]
        supervisor_env.update({"HOME": os.path.join(root, "workspace"), **env})
        cwd = os.path.dirname(EXECUTOR_PACKAGE)
    log_fd = os.open(
        os.path.join(root, LOG_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", SUPERVISOR, f"sandbox-{spec.session_id}", *command],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            env=supervisor_env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(fds),
        )
    finally:
        os.close(log_fd)
        for fd in fds:
            os.close(fd)
    meta.update(pid=proc.pid, pgid=proc.pid, start_time=pr.start_time(proc.pid))
    pr.write_record(root, meta)
    return proc
