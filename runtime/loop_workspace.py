"""Size-limited workspaces: an ext4 file system in a loop-mounted, sparse image file (Docker and process).

A session's disk limit is a total only if something counts every file together; RLIMIT_FSIZE caps one file
at a time (800 MiB landed in a `disk=256Mi` session as four files). For Docker, why a loop file and not
what Docker offers: `--storage-opt size=` works only for overlay2 on XFS with project
quotas (or devicemapper, btrfs, zfs), not on the ext4 these hosts run; a tmpfs is charged to the container's
memory cgroup, so a workspace bigger than the memory limit ends in the OOM killer rather than in ENOSPC, and
its files die with the container and cannot be seen from the host. An ext4 image of `disk_mb` MiB, created
sparse (it costs only what is written), formatted without a journal in ~20 ms and mounted through a loop
device in ~30 ms, fails writes past the limit with ENOSPC, is visible on the host (the handle's
workspace_path) and outlives a control-plane restart. It needs root on the host and loop devices; where
those are missing the Docker runtime falls back to a tmpfs (runtime/docker/workspace.py), the process
runtime to the per-file limit. The small mount helpers at the end (bind, detach, mounted) are plain mount(2)
calls through libc, for the process runtime's per-session mounts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import subprocess
import threading

MIB = 1024 * 1024
COMMAND_TIMEOUT = 60.0
# mkfs options: no reserved blocks (the sandbox is the only user), no journal (the workspace dies with the
# session; a journal would cost 4-32 MiB of the allowance), the root directory owned by the sandbox user.
MKFS_FEATURES = "^has_journal"


class WorkspaceError(Exception):
    """A workspace could not be made, grown or removed (the message says which command failed and why)."""


def loop_unsupported_reason() -> str | None:
    """Why this host cannot make loop-mounted workspaces, or None when it can."""
    if os.geteuid() != 0:
        return "mounting a loop device needs root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (the loop module is not loaded, or /dev is not the host's)"
    for tool in ("mkfs.ext4", "mount", "umount", "losetup", "resize2fs"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed (e2fsprogs / util-linux)"
    return None


def create_loop(
    image: str, mountpoint: str, size_mb: int, uid: int, gid: int, *, template_dir: str | None = None
) -> None:
    """Create `image` (sparse, `size_mb` MiB), format it ext4 and mount it on `mountpoint` (nosuid, nodev).

    With `template_dir`, the file system is not made per session: a blank image of this size is formatted
    once into `template_dir` and copied (only its few hundred KiB of metadata; the rest stays a hole), and
    the loop device is attached with ioctls instead of mount(8). That takes a sandbox start from ~30 ms of
    mkfs and mount processes to a few ms; any failure on the fast path falls back to the plain one.
    """
    os.makedirs(mountpoint, mode=0o755, exist_ok=True)
    if template_dir is not None:
        try:
            _copy_sparse(_template(template_dir, size_mb), image)
            _attach_and_mount(image, mountpoint)
        except (OSError, WorkspaceError):
            if os.path.ismount(mountpoint):
                raise
            try:
                os.unlink(image)
            except FileNotFoundError:
                pass
        else:
            os.chown(mountpoint, uid, gid)
            _drop_lost_found(mountpoint)
            return
    _format(image, size_mb, uid, gid)
    # `-o loop` attaches a free loop device with autoclear: it detaches itself once the last mount is gone.
    # noinit_itable: the sparse file already reads as zeros, so the kernel need not zero the inode tables in
    # the background (which would write megabytes per session and un-sparse the file).
    _run(["mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime,noinit_itable", image, mountpoint])
    _drop_lost_found(mountpoint)


def _format(image: str, size_mb: int, uid: int, gid: int) -> None:
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, int(size_mb) * MIB)
    finally:
        os.close(fd)
    # `-T default`: 4 KiB blocks even for small images (mke2fs would pick 1 KiB "small"/"floppy" layouts).
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-T",
            "default",
            "-m",
            "0",
            "-O",
            MKFS_FEATURES,
            "-E",
            f"root_owner={uid}:{gid},nodiscard,lazy_itable_init=1",
            image,
        ]
    )


def _drop_lost_found(mountpoint: str) -> None:
    try:
        os.rmdir(os.path.join(mountpoint, "lost+found"))  # it would show up in every file listing
    except OSError:
        pass


def _template(directory: str, size_mb: int) -> str:
    """The blank image of `size_mb` MiB in `directory`, formatted on first use (races make it twice, once
    renamed into place: both are equal)."""
    path = os.path.join(directory, f"ext4-{int(size_mb)}m-{MKFS_FEATURES.strip('^')}.img")
    if os.path.exists(path):
        return path
    os.makedirs(directory, mode=0o700, exist_ok=True)
    scratch = f"{path}.{os.getpid()}.{threading.get_ident()}"
    try:
        _format(scratch, size_mb, 0, 0)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return path


def _copy_sparse(source: str, target: str) -> None:
    """Copy `source` to a new `target` (0600), writing only its data extents: holes stay holes."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(dst, size)
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(src, start, os.SEEK_HOLE)
                while start < end:
                    copied = os.copy_file_range(src, dst, end - start, start, start)
                    if copied <= 0:
                        raise OSError(errno.EIO, f"short copy of {source}")
                    start += copied
                offset = end
        finally:
            os.close(dst)
    finally:
        os.close(src)


# <linux/loop.h>
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_CLR_FD = 0x4C01
LO_FLAGS_AUTOCLEAR = 4
MS_NOATIME = 0x400


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * 64),
        ("lo_crypt_name", ctypes.c_char * 64),
        ("lo_encrypt_key", ctypes.c_char * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class _LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", _LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


def _attach_and_mount(image: str, mountpoint: str) -> None:
    """What `mount -o loop` does, in-process: a free loop device with autoclear, then mount(2).

    Autoclear detaches the device when its last user lets go, so the device fd is held until the mount
    holds it too; a device another process configured between GET_FREE and CONFIGURE answers EBUSY, and
    the next free one is tried.
    """
    import fcntl

    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(16):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                config = _LoopConfig(fd=backing)
                config.info.lo_flags = LO_FLAGS_AUTOCLEAR
                config.info.lo_file_name = os.fsencode(image)[-63:]
                try:
                    fcntl.ioctl(loop, LOOP_CONFIGURE, config)
                except OSError as exc:
                    os.close(loop)
                    if exc.errno == errno.EBUSY:
                        continue
                    raise
                try:
                    flags = MS_NOSUID | MS_NODEV | MS_NOATIME
                    _mount_call(
                        "mount", device.encode(), mountpoint.encode(), b"ext4", flags, b"noinit_itable"
                    )
                finally:
                    os.close(loop)  # the mount holds the device now; on failure autoclear frees it
                return
            raise OSError(errno.EBUSY, "no free loop device after 16 tries")
        finally:
            os.close(control)
    finally:
        os.close(backing)


def grow_loop(image: str, mountpoint: str, size_mb: int) -> None:
    """Grow a mounted workspace to `size_mb` MiB in place (ext4 grows online; it cannot shrink).

    Online resizing needs CAP_SYS_RESOURCE; where the host's root lacks it, resize2fs fails and the image
    file is cut back, so the workspace stays exactly as it was.
    """
    current = os.stat(image).st_size
    wanted = int(size_mb) * MIB
    if wanted < current:
        raise WorkspaceError(f"the workspace is {current // MIB} MiB and cannot shrink to {size_mb} MiB")
    if wanted == current:
        return
    device = loop_device(image)
    if not device or not os.path.ismount(mountpoint):
        raise WorkspaceError(f"the workspace image {image} is not mounted")
    os.truncate(image, wanted)
    try:
        _run(["losetup", "--set-capacity", device])
        _run(["resize2fs", device])
    except WorkspaceError:
        os.truncate(image, current)
        try:
            _run(["losetup", "--set-capacity", device])
        except WorkspaceError:
            pass  # the device may keep the larger size; the file system inside did not grow
        raise


def loop_device(image: str) -> str | None:
    """The loop device backing `image`, if any (read from sysfs: no losetup process per teardown)."""
    try:
        names = os.listdir("/sys/block")
    except OSError:
        names = None
    if names is None:
        try:
            out = _run(["losetup", "--noheadings", "--output", "NAME", "--associated", image])
        except WorkspaceError:
            return None
        found = out.split()
        return found[0] if found else None
    target = os.path.realpath(image)
    for name in names:
        if not name.startswith("loop"):
            continue
        try:
            with open(f"/sys/block/{name}/loop/backing_file", encoding="utf-8") as fh:
                backing = fh.read().rstrip("\n")
        except OSError:
            continue
        if backing == target:
            return f"/dev/{name}"
    return None


def unmount(image: str, mountpoint: str) -> None:
    """Unmount the workspace and make sure its loop device is released; a no-op when neither is there."""
    if os.path.ismount(mountpoint):
        try:
            _mount_call("umount2", mountpoint.encode(), 0)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise WorkspaceError(f"umount {mountpoint} failed: {exc}") from exc
            # Busy: something still holds it (a shell of an operator, say). Detach it from the tree now; the
            # kernel finishes the unmount, and autoclear frees the loop device, when the last user lets go.
            try:
                _mount_call("umount2", mountpoint.encode(), MNT_DETACH)
            except OSError as lazy:
                raise WorkspaceError(f"umount --lazy {mountpoint} failed: {lazy}") from lazy
    if os.path.exists(image):
        device = loop_device(image)
        if device:  # mounted without autoclear, or by hand
            import fcntl

            try:
                fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(fd, LOOP_CLR_FD)
                finally:
                    os.close(fd)
            except OSError:
                pass  # autoclear got there first, or it is still busy and will clear itself


def _run(command: list[str]) -> str:
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorkspaceError(f"{command[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise WorkspaceError(f"{' '.join(command)} exited with {proc.returncode}: {detail}")
    return proc.stdout


# mount(2) flags
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
_libc = None


def _mount_call(name: str, *args: object) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


def bind(source: str, target: str) -> None:
    """Bind `source` (with the mounts below it) on `target`, private, nosuid and nodev."""
    _mount_call("mount", source.encode(), target.encode(), None, MS_BIND | MS_REC, None)
    try:
        _mount_call("mount", None, target.encode(), None, MS_PRIVATE | MS_REC, None)
        flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
        _mount_call("mount", None, target.encode(), None, flags, None)
    except OSError:
        detach(target)
        raise


def detach(target: str) -> None:
    """Lazily unmount `target` and everything below it; a no-op when nothing is mounted there."""
    try:
        _mount_call("umount2", target.encode(), MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise


def mounted(path: str) -> bool:
    """True if something is mounted on `path` (per /proc/self/mountinfo; ismount misses same-device binds)."""
    wanted = os.path.realpath(path) if os.path.lexists(path) else path
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                point = line.split(" ", 5)[4]
                if _unescape(point) == wanted:
                    return True
    except OSError:
        return False
    return False


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
