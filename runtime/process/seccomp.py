"""The seccomp filter every process-backend sandbox runs under, compiled once per process with libseccomp.

Default ALLOW with a deny-list, not an allow-list: an allow-list has to track every syscall that glibc, Node,
CPython and whatever a tenant installs might make, and breaks them in ways that are hard to see (a missing
`rseq` or `statx` shows up as a slow fallback, not as an error). The deny-list holds at least what Docker's
default profile refuses to a container without extra capabilities: kernel attack surface that sandboxed code
has no use for (io_uring, bpf, perf_event_open, userfaultfd, keyrings), anything that changes the host
(mounts, modules, kexec, reboot, swap, clocks, accounting, quotas, hostname) and new namespaces (the usual
first step of a kernel exploit from an unprivileged process). Refused calls fail with EPERM rather than
killing the caller, so programs that probe (libuv tries io_uring, glibc tries clone3) fall back gracefully.
`clone3` gets ENOSYS instead: its flags live in memory a filter cannot read, and ENOSYS is what makes glibc
fall back to `clone`, whose flags the filter does check.

Allowed on purpose, as Docker allows them: `ptrace`, `process_vm_readv`/`writev` and `pidfd_getfd`. Inside
the sandbox's pid namespace they reach only the session's own processes, and the executor and its zygote
are non-dumpable, so the kernel refuses them there (ptrace access mode checks); gdb and strace keep working
on a session's own programs.

Only the native ABI may enter: any other architecture (i386 via `int 0x80`) and x86-64's x32 ABI kill the
process (libseccomp's bad-arch action; a filter cannot answer EPERM to a syscall table it does not model).

The filter is handed to bubblewrap as BPF in a memfd (`bwrap --seccomp FD`), which loads it after setting up
the sandbox and before it runs the executor; the install-time sandboxes use the same `filter_fd()`.
"""

from __future__ import annotations

import errno
import os
import threading

from runtime.base import RuntimeFailure

# Flags of clone/unshare that make a new namespace.
NAMESPACE_FLAGS = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
# personality(2) flags that weaken the process's own defences (ASLR off, executable data, page zero mapped,
# the old mmap layout, 32-bit address limits); the query value 0xffffffff and plain PER_LINUX(32) stay allowed.
HIGH_BIT = 0x80000000
UNSAFE_PERSONALITY = (
    0x0040000,  # ADDR_NO_RANDOMIZE
    0x0100000,  # MMAP_PAGE_ZERO
    0x0200000,  # ADDR_COMPAT_LAYOUT
    0x0400000,  # READ_IMPLIES_EXEC
    0x0800000,  # ADDR_LIMIT_32BIT
    0x8000000,  # ADDR_LIMIT_3GB
)

# Refused outright (EPERM), whatever the arguments. Names libseccomp does not know for this architecture
# (ustat, _sysctl and friends on newer libseccomp builds) are skipped: the kernel has no such call either.
REFUSED = (
    # kernel attack surface
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "fanotify_init",
    "lookup_dcookie",
    "kcmp",
    # mounts and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsmount",
    "fsconfig",
    "move_mount",
    "open_tree",
    "fspick",
    "mount_setattr",
    "setns",
    # the host itself
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "reboot",
    "swapon",
    "swapoff",
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "adjtimex",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "vhangup",
    "nfsservctl",
    "iopl",
    "ioperm",
    "sethostname",
    "setdomainname",
    # file handles bypass path permission checks; obsolete calls nobody needs
    "open_by_handle_at",
    "name_to_handle_at",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
)
# Refused when a flag in the mask is set (argument 0 is the flags word of both).
REFUSED_WITH_NAMESPACE_FLAGS = ("clone", "unshare")

_lock = threading.Lock()
_compiled: bytes | None = None
_error: str | None = None


class SeccompUnavailable(RuntimeFailure):
    """libseccomp (or its Python binding) is missing, so no filter can be built."""


def _build() -> bytes:
    import tempfile

    import pyseccomp as sc  # raises RuntimeError when libseccomp.so.2 cannot be found

    refuse = sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    for name in REFUSED:
        try:
            number = sc.resolve_syscall(sc.Arch.NATIVE, name)
        except Exception:  # not a syscall on this architecture
            continue
        if number < 0:
            continue
        flt.add_rule(refuse, number)
    for name in REFUSED_WITH_NAMESPACE_FLAGS:
        for flag in NAMESPACE_FLAGS:  # rules of one syscall are ORed: any namespace flag refuses
            flt.add_rule(refuse, name, sc.Arg(0, sc.MASKED_EQ, flag, flag))
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # libseccomp cannot AND two tests of one argument, so "an unsafe flag and not the query value" is
    # spelled with bit 31 (set only in the query value, among meaningful ones): refuse an unsafe flag with
    # bit 31 clear, and refuse any value with bit 31 set that is not all ones.
    for flag in UNSAFE_PERSONALITY:
        flt.add_rule(refuse, "personality", sc.Arg(0, sc.MASKED_EQ, flag | HIGH_BIT, flag))
    for bit in range(31):
        flt.add_rule(refuse, "personality", sc.Arg(0, sc.MASKED_EQ, HIGH_BIT | 1 << bit, HIGH_BIT))
    with tempfile.TemporaryFile() as fh:
        flt.export_bpf(fh)
        fh.seek(0)
        return fh.read()


def compiled() -> bytes:
    """The filter as BPF bytes, built on first use and cached for the life of the process."""
    global _compiled, _error
    with _lock:
        if _compiled is None and _error is None:
            try:
                _compiled = _build()
            except Exception as exc:  # libseccomp missing, or too old for a rule
                _error = f"{type(exc).__name__}: {exc}"
        if _compiled is None:
            raise SeccompUnavailable(
                f"cannot build the sandbox seccomp filter with libseccomp ({_error}); install libseccomp2 "
                "and the pyseccomp package, or set SANDBOX_ALLOW_NO_SECCOMP=true to run sandboxes without "
                "a seccomp filter",
                permanent=True,
            )
        return _compiled


def unavailable_reason() -> str | None:
    """Why no filter can be built here, or None when it can."""
    try:
        compiled()
    except SeccompUnavailable as exc:
        return exc.message
    return None


def filter_fd() -> int:
    """A fresh memfd holding the compiled filter, positioned at its start, for `bwrap --seccomp FD`.

    Close-on-exec like every fd Python makes; pass it with Popen(pass_fds=...). The caller closes it.
    Raises SeccompUnavailable when libseccomp is missing.
    """
    data = compiled()
    fd = os.memfd_create("sandbox-seccomp", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
