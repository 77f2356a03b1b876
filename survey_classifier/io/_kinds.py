"""What a path that is not a regular file is: a symbolic link loop, a dangling link, a FIFO, a device."""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["not_a_file"]

#: File types other than regular files and folders, as an astronomer is told about them.
_KINDS = (
    (stat.S_ISFIFO, "named pipe (FIFO), not a file"),
    (stat.S_ISCHR, "character device, not a file"),
    (stat.S_ISBLK, "block device, not a file"),
    (stat.S_ISSOCK, "socket, not a file"),
    (stat.S_ISDIR, "is a directory, not a FITS file"),
)


def not_a_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file, or None when it is a regular file (or a link to one).

    Looks without opening (a FIFO would block a reader forever): a
    symbolic link loop, a dangling symbolic link (naming its target), a
    named pipe, a device, a socket, a folder; ``"file not found"`` when
    nothing is there.
    """
    try:
        own = os.lstat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot stat the file ({exc.strerror or exc})"
    status = own
    if stat.S_ISLNK(own.st_mode):
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return f"dangling symbolic link to {os.readlink(path)}"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symbolic link loop (the link leads back to itself)"
            return f"cannot follow the symbolic link ({exc.strerror or exc})"
    for test, reason in _KINDS:
        if test(status.st_mode):
            return reason
    return None
