"""Errors a user can fix, and how a run reports them: one short paragraph, never a wall of traceback.

Every mistake in a setting, a file or a folder ends in one of the classes here (or a ``ValueError`` /
``TypeError`` / ``FileNotFoundError`` naming the file and the problem). :func:`user_message` finds that error in
the chain MONAI and ignite wrap around it ("Failed to evaluate ConfigExpression", "applying transform ...") and
turns it into the paragraph ``medclass run`` prints; :func:`install_excepthook` appends the same paragraph to the
traceback of ``python -m monai.bundle run``.
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType

logger = logging.getLogger(__name__)

__all__ = [
    "MedclassError", "SettingError", "RunMismatchError", "FolderInUseError", "DiskFullError",
    "UnreadableImageError", "user_error", "user_message", "install_excepthook", "console_without_tracebacks",
    "ACTIVE_RUNS", "interrupt_message",
]

#: The runs in progress in this process (:class:`medclass.runs.RunGuard` adds and removes itself): Ctrl-C's line
#: names what the latest one saved.
ACTIVE_RUNS: list = []


def interrupt_message() -> str:
    """The one line printed when Ctrl-C stops a run: what was saved and how to continue."""
    if ACTIVE_RUNS:
        return ACTIVE_RUNS[-1].interrupt_message()
    return "medclass: stopped by Ctrl-C before the run started; nothing was written."


class MedclassError(Exception):
    """A problem the user can fix; the message says what, which file or setting, and how to fix it."""


class SettingError(MedclassError, ValueError):
    """A setting (a config key or ``--key value``) has a wrong type, an unknown value or names a missing file."""


class RunMismatchError(MedclassError, ValueError):
    """The checkpoint folder holds another run (or a finished one) that ``resume: auto`` must not continue."""


class FolderInUseError(MedclassError, RuntimeError):
    """Another process is writing into the same output folder."""


class DiskFullError(MedclassError, OSError):
    """A file could not be written for lack of space; the previous file is kept and no temporary file is left."""


class UnreadableImageError(MedclassError, ValueError):
    """An image cannot be read, or is empty, constant (blank) or holds NaN/Inf values."""


# errors whose message is written for the user (medclass raises these naming the file or setting and the problem)
_USER_TYPES = (MedclassError, ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and all(exc is not e for e in out):
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def user_error(exc: BaseException) -> BaseException | None:
    """The error a user should read in an exception chain, or ``None`` when there is none (a bug).

    A :class:`MedclassError` anywhere in the chain wins; else the outermost ``ValueError`` / ``TypeError`` /
    ``FileNotFoundError`` (MONAI wraps them in ``RuntimeError``\\ s that name a transform or a config expression).
    """
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, MedclassError):
            return e
    yaml = sys.modules.get("yaml")  # a config file's syntax error (its message names the file and line)
    for e in chain:
        if isinstance(e, _USER_TYPES):
            return e
        if yaml is not None and isinstance(e, yaml.YAMLError):
            return ValueError(f"a config file is not valid YAML: {e}")
    return None


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def user_message(exc: BaseException, log_file: str | None = None, debug_hint: bool = True) -> str:
    """The short paragraph that ends a failed run's output.

    Args:
        exc: the exception that ended the run.
        log_file: where the full traceback was written, named in the paragraph.
        debug_hint: mention ``--debug`` (``medclass run`` prints the traceback with it).

    Returns:
        ``medclass: error: <what went wrong, which file or setting, how to fix it>`` and, on a second line, where
        the full traceback is.
    """
    err = user_error(exc)
    if err is not None:
        text = str(err) if not isinstance(err, KeyError) else str(err.args[0] if err.args else err)
        if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in text:
            text = f"{err.filename}: {err.strerror or text}"
        lines = [f"medclass: error: {_one_line(text)}"]
    else:
        last = _chain(exc)[-1]
        lines = [f"medclass: error: unexpected {type(last).__name__}: {_one_line(last) or '(no message)'} "
                 "(not a known input mistake; this may be a bug in medclass: please report it with the traceback)"]
    where = []
    if log_file:
        where.append(f"full traceback in {log_file}")
    if debug_hint:
        where.append("add --debug to print it")
    if where:
        lines.append(f"({'; '.join(where)})")
    return "\n".join(lines)


def console_without_tracebacks(interrupts_only: bool = False) -> None:
    """In this process, console log handlers print a logged exception's message without its traceback (ignite
    and MONAI log the traceback of the error that ends a run; ``medclass run`` writes it to its error log
    instead). Log files keep tracebacks.

    Args:
        interrupts_only: only for ``KeyboardInterrupt`` (Ctrl-C), whose traceback is never useful.
    """
    original = logging.StreamHandler.format
    if getattr(original, "_medclass_quiet", None) == ("all" if not interrupts_only else "interrupts"):
        return
    original = getattr(original, "_medclass_original", original)

    def format(self: logging.StreamHandler, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        strip = not isinstance(self, logging.FileHandler) and (
            isinstance(exc, KeyboardInterrupt) or (not interrupts_only and (record.exc_info or record.stack_info)))
        if not strip:
            return original(self, record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return original(self, record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved

    format._medclass_quiet = "interrupts" if interrupts_only else "all"  # type: ignore[attr-defined]
    format._medclass_original = original  # type: ignore[attr-defined]
    logging.StreamHandler.format = format  # type: ignore[method-assign]


def _running_monai_bundle() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return bool(spec is not None and str(getattr(spec, "name", "")).startswith("monai.bundle"))


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print(interrupt_message(), file=sys.stderr, flush=True)
        return
    traceback.print_exception(kind, value, tb)
    print("\n" + user_message(value, debug_hint=False), file=sys.stderr, flush=True)


def install_excepthook(force: bool = False) -> bool:
    """Under ``python -m monai.bundle run``, end a failed run's output with the short medclass paragraph (after
    the usual traceback) and turn Ctrl-C into one line saying what was saved and how to resume.

    Bundle workflows call it first in ``initialize``; anywhere else (tests, ``medclass run``, MONAI Label, a
    notebook) it changes nothing unless ``force``.

    Returns:
        Whether the hook is installed.
    """
    if not (force or _running_monai_bundle()):
        return False
    sys.excepthook = _hook
    console_without_tracebacks(interrupts_only=True)
    return True
