"""Read a datalist text file in the encoding it was saved in: UTF-8 (with or without a byte-order mark), UTF-16
with a byte-order mark, or Latin-1 / Windows-1252 (what spreadsheets often save); anything else stops with an error
naming the file and the encoding problem."""

from __future__ import annotations

import codecs
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["read_text_file"]


def read_text_file(path: str | os.PathLike, what: str = "CSV file") -> str:
    """The text of ``path``.

    UTF-8 is tried first (a UTF-8 byte-order mark is dropped); a UTF-16 byte-order mark selects UTF-16; otherwise
    the file is read as Windows-1252 (Latin-1 where that fails) and the log says so.

    Raises:
        ValueError: the file looks like UTF-16/32 without a byte-order mark (NUL bytes), naming the file and
            saying to save it as UTF-8.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
        return raw.decode("utf-8") if _utf8(raw) else _legacy(raw, path, what)
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: the {what} starts with a UTF-16 byte-order mark but is not valid UTF-16 "
                             f"({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    if b"\x00" in raw[:4096]:
        raise ValueError(f"{path}: the {what} holds NUL bytes, as UTF-16 or UTF-32 text without a byte-order mark "
                         "does; save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)")
    if _utf8(raw):
        return raw.decode("utf-8")
    return _legacy(raw, path, what)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _legacy(raw: bytes, path: Path, what: str) -> str:
    try:
        text, encoding = raw.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        text, encoding = raw.decode("latin-1"), "Latin-1"
    logger.warning("%s: the %s is not UTF-8; read it as %s (save it as UTF-8 to be sure of accented names)", path,
                   what, encoding)
    return text
