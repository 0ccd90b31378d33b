"""What the kernel says about files in a watched folder: which file system holds a folder (is it
one whose changes inotify never hears of?) and which files some local process holds open for
writing (/proc/*/fd and fdinfo)."""

from __future__ import annotations

import os
import re

import structlog

log = structlog.get_logger(__name__)

# File systems whose changes made on another machine never reach inotify.
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuse.sshfs",
        "sshfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.rclone",
        "fuse.s3fs",
        "davfs",
        "fuse.davfs2",
        "lustre",
    }
)


def _unescape_mount(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_fstype(path: str | os.PathLike[str], mounts: str = "/proc/mounts") -> str | None:
    """The file system type of the mount holding `path` (the longest matching mount point)."""
    real = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = _unescape_mount(fields[1])
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                # Later lines are mounted over earlier ones, hence >=.
                if inside and len(point) >= len(best):
                    best, fstype = point, fields[2]
    except OSError as exc:
        log.warning("mounts_unreadable", file=mounts, error=str(exc))
    return fstype


def open_for_writing(paths: set[str]) -> tuple[set[str], bool]:
    """Which of `paths` some local process holds open for writing, from /proc/*/fd and fdinfo.

    Returns (paths held open, complete): `complete` is False when some process's descriptors
    could not be read (another user's, without CAP_SYS_PTRACE), so absence proves nothing."""
    wanted = {os.path.realpath(p): p for p in paths}
    held: set[str] = set()
    complete = True
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return held, False
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except FileNotFoundError:
            continue  # exited meanwhile
        except OSError:
            complete = False
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target not in wanted:
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as f:
                    flags = next(
                        (int(line.split()[1], 8) for line in f if line.startswith("flags:")), 0
                    )
            except (OSError, ValueError):
                complete = False
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                held.add(wanted[target])
    return held, complete
