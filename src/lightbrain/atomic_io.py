"""Atomic file writes: write to a temporary file beside the target, fsync, then rename over it.

A crash, Ctrl-C or full disk midway leaves the previous file (or none) in place, never a
half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

TMP_SUFFIX = ".tmp"


def _write_error(exc: OSError, target: Path) -> OSError:
    """The same kind of OSError (errno kept), saying which file could not be written and that the old one stays.
    A full disk would otherwise surface as a bare "[Errno 28] No space left on device"."""
    reason = exc.strerror or str(exc)
    return OSError(exc.errno, f"{reason} while writing (the previous version, if any, is unchanged)", str(target))


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target`, on any error it is removed."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise _write_error(exc, target) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno is not None:
            raise _write_error(exc, target) from exc
        raise
    # make the rename itself durable
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Delete temporary files that an earlier process killed mid-write (SIGKILL, power loss) left beside
    `target`; atomic_path cleans up after every error it can see, but not after those. Call it only
    where no other process is writing `target` at the same time."""
    target = Path(target)
    removed = []
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


def replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target` (replacing any old one), so a failed write never leaves
    a half-written folder there."""
    # temporary files are private (0600); a finished folder is meant to be shared, so use the usual modes
    umask = os.umask(0)
    os.umask(umask)
    for path in new.iterdir():
        path.chmod(0o666 & ~umask)
    new.chmod(0o777 & ~umask)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{new.name}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
