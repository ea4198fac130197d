"""A bundle's ``logging.conf`` may only print to the console or write log files, never into ``models/``.

MONAI 1.6.1 already refuses a ``logging.conf`` that would run code (classes outside ``logging`` /
``logging.handlers``, non-literal arguments). A file handler can still name any file: pointed at
``models/model.pt`` it truncates (``mode='w'``) or appends text to the model when logging starts.
:func:`check_logging_file` refuses such a file before it is applied (``medclass run``, ``medclass
verify-bundle``); :func:`check_log_handlers`, called when a workflow starts, stops a run whose active logging
writes into the checkpoint folder (under ``python -m monai.bundle run`` MONAI has applied the file before
medclass code runs, so that can only stop the run and name the file, not undo the damage).
"""

from __future__ import annotations

import ast
import configparser
import logging
import logging.handlers
import os
from collections.abc import Iterable
from pathlib import Path

from medclass.errors import SettingError

__all__ = ["check_logging_file", "check_log_handlers", "ALLOWED_HANDLERS", "LOG_SUFFIXES"]

ALLOWED_HANDLERS = ("StreamHandler", "NullHandler", "FileHandler", "RotatingFileHandler",
                    "TimedRotatingFileHandler", "WatchedFileHandler")
FILE_HANDLERS = ("FileHandler", "RotatingFileHandler", "TimedRotatingFileHandler", "WatchedFileHandler")
LOG_SUFFIXES = (".log", ".txt")


def _inside(path: Path, folders: Iterable[str | os.PathLike]) -> Path | None:
    p = Path(os.path.realpath(path))
    for folder in folders:
        f = Path(os.path.realpath(folder))
        if p == f or f in p.parents:
            return f
    return None


def _check_target(filename: str, where: str, forbidden: Iterable[str | os.PathLike]) -> None:
    path = Path(filename)
    if path.suffix.lower() not in LOG_SUFFIXES:
        raise SettingError(
            f"{where} writes to {filename}, which is not a log file; logging may only write files ending in "
            f"{' or '.join(LOG_SUFFIXES)} (e.g. logs/run.log)")
    folder = _inside(path, forbidden)
    if folder is not None:
        raise SettingError(
            f"{where} writes to {filename}, inside the model folder {folder}; write log files elsewhere "
            "(e.g. logs/run.log)")


def _handler_class(value: str) -> str:
    return value.strip().rsplit(".", 1)[-1]


def check_logging_file(path: str | os.PathLike, forbidden: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse a ``logging.conf`` whose handlers do anything but print or write ``.log`` files outside the
    ``forbidden`` folders (the checkpoint folder), before it is applied.

    Relative file names are taken from the working directory, as :func:`logging.config.fileConfig` does.

    Raises:
        SettingError: naming the file, the handler section and the problem.
    """
    path = Path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise SettingError(f"{path}: not a readable logging configuration ({exc})") from None
    forbidden = list(forbidden)
    for section in parser.sections():
        if not section.startswith("handler_"):
            continue
        where = f"{path} [{section}]"
        cls = _handler_class(parser.get(section, "class", fallback=""))
        if cls not in ALLOWED_HANDLERS:
            raise SettingError(f"{where}: handler class {cls!r} is not allowed; a bundle's logging may only use "
                               f"{', '.join(ALLOWED_HANDLERS)}")
        if cls not in FILE_HANDLERS:
            continue
        filename = None
        try:
            args = ast.literal_eval(parser.get(section, "args", fallback="()") or "()")
            kwargs = ast.literal_eval(parser.get(section, "kwargs", fallback="{}") or "{}")
        except (ValueError, SyntaxError):
            raise SettingError(f"{where}: the file name must be a plain string (args=('logs/run.log',))") from None
        if isinstance(args, tuple) and args:
            filename = args[0]
        elif isinstance(args, str):
            filename = args
        if isinstance(kwargs, dict) and "filename" in kwargs:
            filename = kwargs["filename"]
        if not isinstance(filename, str):
            raise SettingError(f"{where}: a file handler needs a file name (args=('logs/run.log',))")
        _check_target(filename, where, forbidden)


def _all_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    seen, out = set(), []
    for lg in loggers:
        for h in lg.handlers:
            if id(h) not in seen:
                seen.add(id(h))
                out.append(h)
    return out


def check_log_handlers(*forbidden: str | os.PathLike) -> None:
    """Stop a run whose active logging writes into the ``forbidden`` folders (the checkpoint folder).

    Only file handlers of the ``logging`` package are looked at (what a ``logging.conf`` can create); the
    offending handler is closed and removed first, so it writes nothing more.

    Raises:
        SettingError: naming the file the logging writes to.
    """
    folders = [f for f in forbidden if f]
    stdlib = (logging.FileHandler, logging.handlers.RotatingFileHandler, logging.handlers.TimedRotatingFileHandler,
              logging.handlers.WatchedFileHandler)
    for h in _all_handlers():
        filename = getattr(h, "baseFilename", None)
        if type(h) not in stdlib or not filename:
            continue
        folder = _inside(Path(filename), folders)
        if folder is None:
            continue
        for lg in [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                           if isinstance(v, logging.Logger)]:
            if h in lg.handlers:
                lg.removeHandler(h)
        h.close()
        raise SettingError(
            f"the logging configuration (logging.conf, handler {type(h).__name__}) writes to {filename}, inside the "
            f"model folder {folder}; check that file, and write log files elsewhere (e.g. logs/run.log)")
