"""Files written so that a failure never leaves a half-written or empty output.

Every CSV, JSON, HTML and model file medclass writes goes to a hidden temporary file in the same folder, is
flushed to disk and then renamed over the old one (``os.replace`` is atomic on one file system). A run that
fails, is killed or finds the disk full leaves the previous file as it was; a full disk gives a
:class:`medclass.errors.DiskFullError` naming the folder and the free space, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from medclass.errors import DiskFullError

logger = logging.getLogger(__name__)

__all__ = ["read_json", "atomic_write", "atomic_save", "atomic_text", "atomic_json", "AtomicStream", "temp_path",
           "remove_stale_temp_files", "free_space", "human_bytes", "disk_full_error"]

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
TEMP_SUFFIX = ".tmp"


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"``."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def free_space(folder: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``folder`` (its nearest existing parent), or ``None``."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary file for ``path``: hidden, in the same folder, named after this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def disk_full_error(path: Path, exc: OSError) -> DiskFullError:
    """The readable error for a write that failed for lack of space (or a file size limit)."""
    free = free_space(path.parent)
    what = "the file size limit was reached" if exc.errno == errno.EFBIG else "no space left on the disk"
    err = DiskFullError(
        f"{path.parent}: {what} while writing {path.name} ({human_bytes(free) if free is not None else 'unknown'} "
        f"free); {path.name} was not changed and no temporary file was left. Free some space, or write to a "
        "folder on another disk (e.g. --ckpt_dir / --output_dir)")
    err.path = str(path)  # not OSError's errno/filename: those would replace the message in str(err)
    return err


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    Args:
        path: the file to write.
        mode: ``"w"`` (text; UTF-8 unless ``encoding`` is given) or ``"wb"``.
        open_kwargs: passed to :func:`open` (``newline``, ``encoding``).

    Raises:
        DiskFullError: the disk is full (or a file size limit reached); ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        cause = _no_space(exc)
        if cause is not None:
            raise disk_full_error(path, cause) from exc
        raise


class AtomicStream:
    """A file written bit by bit over a run (e.g. one CSV row per batch) that replaces ``path`` only at
    :meth:`commit`: until then the rows go to :func:`temp_path`, so a run that fails leaves the previous file.

    Args:
        path: the file to write.
        what: how to name the file in errors (default: its name).
        open_kwargs: passed to :func:`open` (text mode; ``newline``, ``encoding``; UTF-8 by default).
    """

    def __init__(self, path: str | os.PathLike, what: str | None = None, **open_kwargs: Any) -> None:
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        self.what = what or self.path.name
        self.open_kwargs = {"encoding": "utf-8", **open_kwargs}
        self.file: IO | None = None

    def open(self) -> IO:
        """Start (or restart) the temporary file; returns it."""
        self.discard()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        self.file = open(self.tmp, "w", **self.open_kwargs)  # noqa: SIM115 - closed by commit() / discard()
        return self.file

    def failed(self, exc: OSError) -> None:
        """Give up after a failed write: remove the temporary file and raise (a full disk as
        :class:`~medclass.errors.DiskFullError`)."""
        self.discard()
        if exc.errno in _NO_SPACE:
            raise disk_full_error(self.path, exc) from exc
        raise exc

    def commit(self) -> Path:
        """Flush the temporary file to disk and rename it over ``path``."""
        if self.file is not None:
            try:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
            except OSError as exc:
                self.failed(exc)
            self.file = None
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise OSError(exc.errno, f"{self.path}: cannot write {self.what} ({exc.strerror})") from exc
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file, if any (``path`` is left as it was)."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _no_space(exc: BaseException) -> OSError | None:
    """The out-of-space ``OSError`` in an exception chain (``torch.save`` reports it as a ``RuntimeError`` from
    its zip writer, with the ``OSError`` as context), or ``None``."""
    seen: list[BaseException] = []
    while exc is not None and all(exc is not e for e in seen):
        if isinstance(exc, DiskFullError):
            return None
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return exc
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`: a run killed mid-write or a full disk never leaves a broken
    or truncated checkpoint, only the previous one."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def atomic_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) through :func:`atomic_write`."""
    with atomic_write(path) as f:
        f.write(text)


def atomic_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
    """Write ``obj`` as JSON (``indent=2`` unless given) through :func:`atomic_write`."""
    dump_kwargs.setdefault("indent", 2)
    atomic_text(path, json.dumps(obj, **dump_kwargs))


def remove_stale_temp_files(folder: str | os.PathLike, own: bool = False) -> list[Path]:
    """Remove temporary files left in ``folder`` by runs that were killed (call it holding the folder's lock), or
    with ``own``, this process's unfinished ones (after a failure)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".*{TEMP_SUFFIX}"):
        pid = p.name.rsplit(".", 2)[-2] if p.name.count(".") >= 3 else ""
        if (pid.isdigit() and int(pid) == os.getpid()) != own:
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    if removed and not own:
        logger.info("removed %d temporary file(s) left in %s by an earlier run that stopped", len(removed), folder)
    return removed


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's contents, or ``None`` when there is no such file.

    Raises:
        ValueError: the file is not valid JSON (naming it).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
