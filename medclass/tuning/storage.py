"""Where a tuning study lives, so that workers started in several processes or on several machines join one study.

``--storage`` takes

* a database URL, for :class:`optuna.storages.RDBStorage`: ``postgresql://user:password@host/db`` (workers on
  several machines), ``sqlite:///study.db`` (a few workers on one machine: writers wait up to
  :data:`SQLITE_TIMEOUT_S` for SQLite's lock instead of failing with "database is locked"); or
* a journal file, ``journal:PATH`` or a path ending in ``.journal`` or ``.log``, for Optuna's
  :class:`~optuna.storages.JournalStorage` with a :class:`~optuna.storages.journal.JournalFileBackend`: Optuna's
  recommendation for several processes on one machine, and it works on a shared (NFS) folder where SQLite's file
  locking does not.

Optuna hands out trial numbers from the storage, so no two workers run the same trial and every finished trial is
recorded once. A study records its search space and fixed settings (:func:`open_study`): a worker that brings other
ones is refused instead of mixing two searches in one study.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from medclass.errors import SettingError

__all__ = ["open_storage", "open_study", "trials_table", "SQLITE_TIMEOUT_S", "STUDY_ATTR"]

logger = logging.getLogger(__name__)

SQLITE_TIMEOUT_S = 60
JOURNAL_SUFFIXES = (".journal", ".log")
STUDY_ATTR = "medclass"  # the study's user attribute recording its bundle, search space and fixed settings


def open_storage(url: str | Path):
    """An Optuna storage for ``url`` (see the module docstring).

    Raises:
        SettingError: ``url`` is neither a database URL nor a journal file.
    """
    text = str(url).strip()
    if text.startswith("journal:") or (("://" not in text) and text.lower().endswith(JOURNAL_SUFFIXES)):
        path = Path(text[len("journal:"):] if text.startswith("journal:") else text).expanduser()
        if not str(path) or str(path) == ".":
            raise SettingError(f"storage {text!r}: name the journal file, e.g. journal:tune/study.journal")
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in text:
        raise SettingError(f"storage {text!r}: give a database URL (sqlite:///study.db, "
                           "postgresql://user:password@host/db) or a journal file (journal:study.journal)")
    kwargs: dict[str, Any] = {}
    if text.startswith("sqlite:"):
        kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        db = text.split(":///", 1)[1] if ":///" in text else ""
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return _rdb(text, kwargs)


def _rdb(url: str, engine_kwargs: dict, attempts: int = 5):
    """RDBStorage, retried: workers started together may race to create the same tables on a new database."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (OperationalError, IntegrityError):  # "table ... already exists", the version row inserted twice
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(storage, name: str, record: Mapping[str, Any], sampler=None, pruner=None,
               check: bool = True) -> optuna.Study:
    """Create the study ``name`` in ``storage`` (maximising), or join it when it exists.

    Args:
        storage: from :func:`open_storage`.
        name: the study name.
        record: what this worker searches (``space``, ``fixed`` settings, ``bundle``, ``metric``); stored with a new
            study, and compared with a joined study's.
        sampler: Optuna sampler (this worker's; samplers are not stored).
        pruner: Optuna pruner (likewise).
        check: compare ``record`` with a joined study's (off for a worker that only reads the study).

    Raises:
        SettingError: the study exists and minimises, or searches another space or with other fixed settings.
    """
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise SettingError(f"study {name!r} exists and minimises its objective; medclass tune maximises the "
                           "validation AUC: give another --study name")
    saved = study.user_attrs.get(STUDY_ATTR)
    if saved is None:
        if check:
            study.set_user_attr(STUDY_ATTR, dict(record))
        return study
    if not check:
        return study
    for key, what in (("space", "search space"), ("fixed", "fixed settings"), ("metric", "metric")):
        if saved.get(key) != record.get(key):
            raise SettingError(f"study {name!r} was started with another {what} ({saved.get(key)!r}; this worker: "
                               f"{record.get(key)!r}): start every worker with the same search space and settings, "
                               "or give another --study name")
    return study


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def trials_table(trials: Sequence, names: Sequence[str]) -> str:
    """A text table of ``trials`` (``optuna.trial.FrozenTrial``): number, state, value, epochs reported and each
    searched setting in ``names``, with the best complete trial marked ``*``."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: t.value).number if complete else None
    header = ["trial", "state", "value", "epochs", *names]
    rows = [header]
    for t in sorted(trials, key=lambda t: t.number):
        mark = "*" if t.number == best else ""
        rows.append([f"{t.number}{mark}", t.state.name, _value(t.value), str(len(t.intermediate_values)),
                     *[_value(t.params.get(n)) for n in names]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i in (0, 2, 3) else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))).rstrip() for r in rows)
