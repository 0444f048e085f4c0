"""Writing files so that a crash, a kill or Ctrl-C never leaves one half-written.

Every writer in the package goes through :func:`atomic_path`: the content goes to a hidden
temporary file beside the target, is flushed to disk, and then replaces the target in one
rename, which is atomic when both lie on one file system (they share a folder).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """A temporary path to write ``target``'s content to; it becomes ``target`` on success.

    The temporary name keeps ``target``'s suffix, since numpy, OpenCV, matplotlib and
    ffmpeg choose the format by it. On any exception (Ctrl-C included) it is removed and
    ``target`` is left as it was.
    """
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix or None)
    os.fchmod(fd, 0o666 & ~_UMASK)  # as an ordinary new file gets, not mkstemp's owner-only 0600
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data) -> None:
    """Write ``data`` to ``path`` atomically as indented JSON, ending in a newline."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def check_writable_file(path: str | Path, what: str = "output") -> Path:
    """``path`` as a file that can be written (its folder created), or a one-line ``ValueError``.

    Meant to run before any work starts, so that a long computation never ends on a path
    that cannot take its result.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"the {what} {path} is an existing directory, not a file")
    check_writable_dir(path.parent, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"cannot write the {what} {path}: permission denied")
    return path


def check_writable_dir(folder: str | Path, what: str = "output") -> Path:
    """``folder`` created if needed and writable, or a one-line ``ValueError`` naming the problem."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write the {what} under {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write the {what} under {folder}: {existing} is not writable")
    return folder
