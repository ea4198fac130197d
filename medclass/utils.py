"""Small helpers shared across medclass."""

from __future__ import annotations

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "none", "null", "")


def optional(value):
    """``None`` for a config/CLI "nothing" (None, "none", "null", ""), else the value unchanged."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    return value


def flag(value, name: str = "flag") -> bool:
    """A config/CLI boolean: ``--resume false`` reaches the config as the *string* ``"false"`` (truthy).

    Raises:
        ValueError: for anything but a bool, 0/1, None or a true/false-like string.
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")
