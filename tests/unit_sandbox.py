"""Run a command under the restrictions of a systemd unit that can be applied without systemd.

``python unit_sandbox.py SPEC.json`` reads a JSON object and then ``execve``s
``spec["argv"]`` with ``spec["env"]`` in ``spec["cwd"]``, after applying, in this order
(each only when the spec asks for it):

- ``read_only``: a private mount namespace in which ``hide`` (/root, /home) is emptied
  but for the ``expose`` paths (``ProtectHome=yes``), then every mount except /proc,
  /dev and the paths in ``writable`` is re-mounted read-only (``ProtectSystem=strict``
  with ``StateDirectory=``; also what ``ProtectKernelTunables`` does to /sys);
- ``drop_bounding_set``: every capability dropped from the bounding set
  (``CapabilityBoundingSet=`` empty);
- ``uid``/``gid``: supplementary groups cleared, then the ids switched (``User=``,
  ``Group=``);
- ``umask`` (``UMask=``);
- ``no_new_privs``: ``prctl(PR_SET_NO_NEW_PRIVS)`` (``NoNewPrivileges=yes``);
- ``mdwe``: ``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)``, the kernel's own form of
  ``MemoryDenyWriteExecute=yes`` (Linux 6.3+; systemd 257 uses it where it can).

It must start as root for the first three. tests/test_deploy.py drives it.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 24, 38, 65, 1
KEPT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    _check(libc.mount(src, target.encode(), None, flags, None), f"mount {target}")


def mount_points() -> list[tuple[str, int]]:
    """(mount point, flags to keep) of every mount this process sees."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")  # \040 is a space
        kept = sum(KEPT_FLAGS.get(opt, 0) for opt in fields[5].split(","))
        points.append((point, kept))
    return points


def hide(homes: list[str], expose: list[str]) -> None:
    """Empty ``homes`` (``ProtectHome=yes``) but for the ``expose`` paths inside them.

    Where the test's Python lives under /root, it is bound back in: it stands in for
    /opt/smbridge, which the unit's user can read.
    """
    kept = []
    for path in expose:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
        kept.append((path, fd))
    for home in homes:
        if os.path.isdir(home):
            _check(
                libc.mount(b"tmpfs", home.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755"),
                f"mount tmpfs on {home}",
            )
    for path, fd in kept:
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, MS_BIND | MS_REC)
        os.close(fd)


def read_only_except(writable: list[str], homes: list[str], expose: list[str]) -> None:
    """A private mount namespace where only ``writable`` (and /proc, /dev) can be written."""
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", MS_REC | MS_PRIVATE)
    hide(homes, expose)
    for path in writable:
        _mount(path, path, MS_BIND | MS_REC)
    keep = {os.path.realpath(p) for p in writable}
    for point, kept in mount_points():
        if point in keep or point.split("/")[1] in ("proc", "dev"):
            continue
        _mount(None, point, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def drop_bounding_set() -> None:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")


def apply(spec: dict[str, Any]) -> None:
    if spec.get("read_only"):
        read_only_except(spec.get("writable", []), spec.get("hide", []), spec.get("expose", []))
    if spec.get("drop_bounding_set"):
        drop_bounding_set()
    if spec.get("gid") is not None:
        os.setgroups([])
        os.setgid(spec["gid"])
    if spec.get("uid") is not None:
        os.setuid(spec["uid"])
    if spec.get("umask") is not None:
        os.umask(spec["umask"])
    if spec.get("no_new_privs"):
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    if spec.get("mdwe"):
        _check(libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0), "PR_SET_MDWE")


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    apply(spec)
    os.chdir(spec["cwd"])
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


if __name__ == "__main__":
    main()
