"""Atomic file output: write a temporary file beside the target, fsync, rename (docs/reliability.md#interruption-and-re-runs)."""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yield a file whose content replaces `path` only if the block finishes without error."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except FileExistsError as error:  # a parent path is a file
        blocker = next(parent for parent in reversed(target.parents) if parent.exists() and not parent.is_dir())
        raise OSError(errno.ENOTDIR, f"{blocker} is a file, not a directory", str(target)) from error
    except OSError as error:
        raise _cannot_write(target, error) from error
    try:
        # mkstemp creates 0600 files; outputs get the usual permissions (0666 less the umask).
        os.chmod(temp_name, 0o666 & ~_current_umask())
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(handle, mode, encoding=encoding) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        if isinstance(error, OSError):  # ENOSPC names no file, a failed rename the temp file: name the output
            raise _cannot_write(target, error) from error
        raise


def _cannot_write(target: Path, error: OSError) -> OSError:
    """The error, naming the output it was writing (the command boundary prints `Error: <file>: <problem>`)."""
    return OSError(error.errno, error.strerror or str(error), str(target))


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_writer(path, "wb" if isinstance(data, bytes) else "w") as stream:
        stream.write(data)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
