"""File-system faults as one-line messages, and atomic writes of small text files.

Every command turns an OS fault (full disk, permission, read-only file system, a path through
a file) into ``error: <message>`` naming the path and the fix (see :mod:`clipcore.clitools`);
HDF5 reports the same faults as ``OSError`` or ``RuntimeError`` with ``errno = N`` in the text.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

_ERRNO_RE = re.compile(r"errno = (\d+)")
_NAME_RE = re.compile(r"name = '([^']+)'")

_FIXES = {
    errno.ENOSPC: "no space left on the device: free some space (finished work is kept) and run "
    "the same "
    "command again",
    errno.EDQUOT: "disk quota exceeded: free some space and run the same command again",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write to, or fix its "
    "permissions",
    errno.EROFS: "read-only file system: choose a writable folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder: pass a folder path",
    errno.EISDIR: "this is a folder: pass a file path",
    errno.EEXIST: "a file is in the way of a folder: pass a folder path, or move the file away",
    errno.ENOENT: "no such file or folder: check the path",
    errno.EFBIG: "file too large for this file system (or a file size limit): use another folder",
}


def fault_errno(exc: BaseException) -> int | None:
    """The errno of an ``OSError``, or the ``errno = N`` that HDF5 writes into its messages."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    found = _ERRNO_RE.search(str(exc))
    return int(found.group(1)) if found else None


def os_error_message(exc: BaseException, path: Path | str | None = None) -> str | None:
    """``<path>: <what happened and the fix>`` for an OS fault, or None if ``exc`` is not one."""
    code = fault_errno(exc)
    if code is None and not isinstance(exc, OSError):
        return None
    name = getattr(exc, "filename", None) or path
    if name is None and (found := _NAME_RE.search(str(exc))):
        name = found.group(1)
    what = _FIXES.get(code) if code else None
    if what is None:
        text = getattr(exc, "strerror", None) or str(exc).split(" (")[0]
        what = f"{text}: check the path and the device"
    return f"{name}: {what}" if name else what


def as_os_error(exc: BaseException, path: Path | str) -> OSError:
    """An HDF5 ``RuntimeError``/``OSError`` as an ``OSError`` with its errno and ``path``."""
    code = fault_errno(exc)
    return OSError(code or errno.EIO, os.strerror(code or errno.EIO), str(path))


#: Free bytes under which a failed write is taken for a full disk (libraries such as torch
#: report it without an errno).
NEARLY_FULL_BYTES = 1 << 20


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``.

    On any failure the old file (if any) is left as it was and no temporary file remains; a failure
    on a (nearly) full disk is raised as ``OSError(ENOSPC)`` naming ``path``, whatever the library
    raised.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        if fault_errno(exc) is None and shutil.disk_usage(path.parent).free < NEARLY_FULL_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` durably through :func:`atomic_write`."""

    def write(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through :func:`atomic_write`.

    A failed copy (a full disk) leaves ``dst`` as it was, never truncated.
    """
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _unique_tmp(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process (on any host) uses."""
    token = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.name}.{token}.tmp")


def _write_tmp(tmp: Path, text: str) -> None:
    with open(tmp, "x") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def create_text(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; False when it does.

    Safe for many processes on a shared file system without ``flock``: the text goes to a
    temporary file of this process, which is hard-linked to ``path`` (an atomic create that fails
    when the name is taken, also on NFS), so a reader never sees a half-written file.
    """
    path = Path(path)
    tmp = _unique_tmp(path)
    try:
        _write_tmp(tmp, text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def replace_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically through a temporary file of this process.

    Two processes replacing the same file never share a temporary file.
    """
    path = Path(path)
    tmp = _unique_tmp(path)
    try:
        _write_tmp(tmp, text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
