"""One run per folder, and resume only what is the same run.

:class:`RunGuard` takes a lock on each output folder of a workflow (``filelock``: released by the operating system
when the process ends, even on ``kill -9``), so a second run writing into the same folder stops at once with
"in use by process N since ...". :class:`TrainingRun` adds the resume decision: a run's fingerprint (the datalist
content and split, the labels, every training setting and the seed) is stored in ``last.pt``; ``resume: auto``
continues only an unfinished run with the same fingerprint and otherwise stops before training, listing what
differs and what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medclass.errors import ACTIVE_RUNS, FolderInUseError, RunMismatchError, SettingError
from medclass.errors import interrupt_message  # noqa: F401  (re-exported: medclass.runs.interrupt_message)
from medclass.files import atomic_json, remove_stale_temp_files
from medclass.vocab import VIT_SETTINGS, flag

logger = logging.getLogger(__name__)

__all__ = ["FolderLock", "RunGuard", "TrainingRun", "fingerprint", "data_digest", "fingerprint_diff",
           "interrupt_message", "jsonable", "RESUME_MODES", "NOT_TRAINING_SETTINGS", "ADDED_SETTINGS"]

LOCK_NAME = ".medclass.lock"
LOCK_INFO = ".medclass.lock.json"
RESUME_MODES = ("auto", "false")

# settings that do not change what a training run computes: paths, speed and I/O, evaluation and inference.
# Every other setting (and the data) is part of a run's fingerprint.
NOT_TRAINING_SETTINGS = frozenset({
    "bundle_root", "datalist", "dataset_dir", "ckpt_dir", "output_dir", "log_dir", "eval_dir", "inference_dir",
    "cache", "cache_dir", "cache_rate", "memory_budget", "num_workers", "num_threads", "loader", "progress_bar", "resume",
    "channels_last", "operating_point", "temperature_scaling", "subgroups", "bootstrap_samples", "bootstrap_seed",
    "saliency_method", "backend", "tta", "mc_dropout",
})

# settings added after runs began to record their fingerprint, each with the value that does what medclass did
# before it existed: a last.pt without the key resumes when the setting has that value now
ADDED_SETTINGS: dict[str, Any] = {**VIT_SETTINGS}


class FolderLock:
    """An exclusive lock on an output folder, with who holds it (process, workflow, start time) for the error.

    Args:
        folder: the folder (created).
        workflow: the workflow name shown to a second run (``train``, ``evaluate``, ...).
        setting: the setting that chose the folder, named in the advice (``ckpt_dir``, ``output_dir``).
    """

    def __init__(self, folder: str | os.PathLike, workflow: str, setting: str = "output_dir") -> None:
        self.folder = Path(folder)
        self.workflow = workflow
        self.setting = setting
        self._lock = None

    def acquire(self) -> None:
        """Take the lock now or raise :class:`FolderInUseError` naming the process that holds it."""
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / LOCK_NAME), timeout=0, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = self._holder()
            raise FolderInUseError(
                f"{self.folder} is in use by {holder}; wait for that run to finish, or give this run another "
                f"folder (--{self.setting} ...)") from None
        self._lock = lock
        info = {"pid": os.getpid(), "workflow": self.workflow,
                "since": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)[:500]}
        atomic_json(self.folder / LOCK_INFO, info)

    def _holder(self) -> str:
        try:
            info = json.loads((self.folder / LOCK_INFO).read_text(encoding="utf-8"))
            since = str(info.get("since", "?")).replace("T", " ")
            return f"process {info.get('pid', '?')} ({info.get('workflow', 'a medclass run')}) since {since}"
        except (OSError, ValueError):
            return "another process"

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            (self.folder / LOCK_INFO).unlink()
        self._lock.release()
        self._lock = None


class RunGuard:
    """The output folders of one workflow run: locked while it runs, cleared of stale temporary files.

    The bundle workflows call :meth:`start` first in ``run`` (before any data is loaded for the engines),
    :meth:`execute` to run the engines (the folders are released when they stop, however they stop) and
    :meth:`finish` in ``finalize``.

    Args:
        workflow: its name (``train``, ``evaluate``, ``inference``, ``saliency``).
        folders: ``{setting: folder}`` the run writes into, e.g. ``{"output_dir": "eval", "ckpt_dir": "models"}``.
        enabled: take the locks (``False`` on ranks other than 0).
        lock: lock the folders (``False``: only the other duties, e.g. for a trainer run outside a bundle).
        skipped: the run's :class:`medclass.data.SkipList`; its file is written once the folders are locked.
    """

    def __init__(self, workflow: str, folders: Mapping[str, Any] | None = None, enabled: bool = True,
                 lock: bool = True, skipped: Any = None) -> None:
        self.workflow = str(workflow)
        self.folders = {str(k): Path(v) for k, v in (folders or {}).items() if v is not None and str(v) != ""}
        self.enabled = flag(enabled, "enabled")
        self.lock = flag(lock, "lock")
        self.skipped = skipped
        self.locks: list[FolderLock] = []
        self.started = False
        self.interrupted = False

    def start(self) -> None:
        """Lock every folder (or raise :class:`FolderInUseError` at once) and remove stale temporary files."""
        first = not self.started
        self.started = True
        if self not in ACTIVE_RUNS:
            ACTIVE_RUNS.append(self)
        if self.enabled and self.lock and not self.locks:
            seen = set()
            try:
                for setting, folder in self.folders.items():
                    key = os.path.realpath(folder)
                    if key in seen:
                        continue
                    seen.add(key)
                    lock = FolderLock(folder, self.workflow, setting)
                    lock.acquire()
                    self.locks.append(lock)
                    remove_stale_temp_files(folder)
            except BaseException:
                self.finish()
                raise
        if first and self.skipped is not None and self.enabled:
            self.skipped.activate()

    def execute(self, *engines: Any) -> None:
        """Run the engines (trainer / evaluators) in turn holding the folders; they are released when the engines
        stop, however they stop."""
        self.start()
        try:
            for engine in engines:
                engine.run()
        except BaseException as exc:
            self.interrupted = isinstance(exc, KeyboardInterrupt)
            for folder in self.folders.values():  # this run's unfinished files; the previous outputs stay
                remove_stale_temp_files(folder, own=True)
            raise
        finally:
            self.release()

    def release(self) -> None:
        """Release the folder locks."""
        for lock in reversed(self.locks):
            lock.release()
        self.locks = []

    def finish(self) -> None:
        """Release the folders (the workflow's ``finalize``; safe to call more than once)."""
        self.release()
        if self in ACTIVE_RUNS:
            ACTIVE_RUNS.remove(self)

    def interrupt_message(self) -> str:
        """The Ctrl-C line for this run."""
        where = ", ".join(str(f) for f in self.folders.values()) or "its folders"
        return (f"medclass: stopped by Ctrl-C: the {self.workflow} run left the files in {where} as they were (they "
                "are replaced only when complete); run the same command again to redo it.")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: mappings and sequences recursively, numpy values as Python's, NaN as None,
    paths as strings, anything else as its repr."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def data_digest(data: Any, base: str | os.PathLike | None = None) -> dict:
    """What a training run learns from: the images (paths relative to ``base``, the data folder, or array
    contents), labels, ids and the split of every item, as a SHA-256 digest plus the number of images per split."""
    h = hashlib.sha256()
    names = list(getattr(data, "label_names", []) or [])
    h.update(json.dumps({"labels": names, "task": getattr(data, "task", None)}).encode())
    base = os.path.abspath(base) if base else None
    counts = {}
    for split in sorted(data.splits):
        items = data.splits[split]
        counts[split] = len(items)
        h.update(f"\x00split:{split}:{len(items)}".encode())
        for it in items:
            image = it.get("image")
            if isinstance(image, (str, os.PathLike)):
                p = os.fspath(image)
                if base:
                    with contextlib.suppress(ValueError):
                        p = os.path.relpath(os.path.abspath(p), base)
                h.update(p.encode())
            else:
                arr = np.ascontiguousarray(np.asarray(image))
                h.update(str(arr.shape).encode() + arr.tobytes())
            label = np.asarray(it.get("label", []), dtype=np.float64).reshape(-1)
            h.update(np.nan_to_num(label, nan=-7.0).tobytes())
            h.update(str(it.get("id", "")).encode())
    return {"digest": h.hexdigest()[:16], "images": counts}


def fingerprint(data: Any, settings: Mapping[str, Any]) -> dict:
    """A training run's identity: the data (:func:`data_digest`) and every training setting (all of
    ``settings`` except :data:`NOT_TRAINING_SETTINGS`)."""
    kept = {k: jsonable(v) for k, v in sorted(settings.items()) if k not in NOT_TRAINING_SETTINGS}
    return {"data": data_digest(data, settings.get("dataset_dir")), "settings": kept}


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _data_desc(d: Mapping) -> str:
    n = d.get("images", {})
    counts = "/".join(str(n.get(k, 0)) for k in ("training", "validation", "test"))
    return f"{counts} images (training/validation/test), digest {d.get('digest')}"


def fingerprint_diff(saved: Mapping | None, now: Mapping) -> list[str]:
    """``["learning_rate: 0.001 in the saved run, 0.01 now", ...]``; empty when the runs are the same."""
    saved = dict(saved or {})
    now = dict(now or {})
    if saved == now:
        return []
    if "settings" in now and "settings" not in saved:
        return ["the checkpoint was written by an older medclass that did not record the data and settings"]
    out = []
    if "data" in saved or "data" in now:
        d0, d1 = saved.get("data") or {}, now.get("data") or {}
        if d0 != d1:
            out.append(f"data (datalist content or split): {_data_desc(d0)} in the saved run, {_data_desc(d1)} now")
    flat0 = {**{k: v for k, v in saved.items() if k not in ("data", "settings")}, **(saved.get("settings") or {})}
    flat1 = {**{k: v for k, v in now.items() if k not in ("data", "settings")}, **(now.get("settings") or {})}
    added = False
    for key in sorted(set(flat0) | set(flat1)):
        if key in NOT_TRAINING_SETTINGS:
            continue
        a, b = flat0.get(key, "(not set)"), flat1.get(key, "(not set)")
        if key not in flat0 and key in ADDED_SETTINGS and b == jsonable(ADDED_SETTINGS[key]):
            added = True  # recorded by an older medclass, before this setting existed: the same run
        elif a != b:
            out.append(f"{key}: {_short(a)} in the saved run, {_short(b)} now")
    return out or ([] if added else ["the saved run's fingerprint differs"])


def resume_mode(value: Any) -> str:
    """The ``resume`` setting as ``\"auto\"`` or ``\"false\"``.

    Raises:
        SettingError: any other value.
    """
    if isinstance(value, bool) or value is None:
        return "auto" if value else "false"
    text = str(value).strip().lower()
    if text in ("auto", "true", "yes", "on", "1"):
        return "auto"
    if text in ("false", "no", "off", "0", "none", "null"):
        return "false"
    raise SettingError(f"setting resume: expected auto or false, got {value!r}; e.g. --resume false to start over")


class TrainingRun(RunGuard):
    """A training run's folder lock and resume decision, made before any data is cached or any epoch runs.

    ``resume: auto`` (``true`` means the same): with no ``last.pt`` a new run starts (an existing ``model.pt`` is
    first kept as ``model.previous.pt``); an unfinished ``last.pt`` with the same fingerprint is continued; a
    ``last.pt`` of another run, or of this run when it already finished, stops the run with
    :class:`RunMismatchError` listing what differs and what to do. ``resume: false`` starts over: ``model.pt``
    (and its ``thresholds.json``) are kept as ``model.previous.pt`` (``thresholds.previous.json``) and ``last.pt``
    is removed.

    Args:
        ckpt_dir: the checkpoint folder.
        fingerprint: the run's identity (:func:`fingerprint`).
        resume: ``auto`` / ``true`` or ``false``.
        enabled: rank 0 (locks and moves files); other ranks make the same decision read-only.
        best_filename: the best model's file name.
        last_filename: the last epoch's file name.
        lock: lock ``ckpt_dir`` while the run lasts.
        skipped: the run's :class:`medclass.data.SkipList`.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, fingerprint: Mapping | None = None, resume: Any = "auto",
                 enabled: bool = True, best_filename: str = "model.pt", last_filename: str = "last.pt",
                 lock: bool = True, skipped: Any = None) -> None:
        super().__init__("train", {"ckpt_dir": ckpt_dir}, enabled, lock, skipped)
        self.ckpt_dir = Path(ckpt_dir)
        self.fingerprint = jsonable(dict(fingerprint or {}))
        self.mode = resume_mode(resume)
        self.best_path = self.ckpt_dir / best_filename
        self.last_path = self.ckpt_dir / last_filename
        self.checkpoint: dict | None = None  # the last.pt to continue, handed to the CheckpointManager
        self.resumed: dict | None = None  # {"epoch", "iteration"} of the last.pt continued
        self.saved_epoch: int | None = None  # the epoch last.pt holds now
        self.max_epochs: int | None = None
        self.current_epoch: int | None = None

    def start(self) -> None:
        """Lock ``ckpt_dir`` and decide (once): continue, start new, or stop with the reason (before any training)."""
        first = not self.started
        super().start()
        if first:
            try:
                self._decide()
            except BaseException:
                self.finish()
                raise

    def _move_aside(self, name: str, previous: str) -> None:
        src = self.ckpt_dir / name
        if self.enabled and src.exists():
            os.replace(src, self.ckpt_dir / previous)
            logger.info("kept the earlier %s as %s", src, self.ckpt_dir / previous)

    def _start_new(self) -> None:
        self._move_aside(self.best_path.name, self.best_path.stem + ".previous" + self.best_path.suffix)
        self._move_aside("thresholds.json", "thresholds.previous.json")
        if self.enabled and self.last_path.exists():
            self.last_path.unlink()

    def _decide(self) -> None:
        import torch

        if self.mode == "false" or not self.last_path.exists():
            if self.mode != "false" and self.best_path.exists():
                logger.warning("%s exists without %s (not a resumable run): starting a new run",
                               self.best_path, self.last_path.name)
            self._start_new()
            logger.info("starting a new training run in %s", self.ckpt_dir)
            return
        try:
            ckpt = torch.load(self.last_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file must not be mistaken for a fresh start
            raise RunMismatchError(
                f"{self.last_path}: cannot load the checkpoint to resume from ({type(exc).__name__}: {exc}); remove "
                "it, or set --resume false to start over") from exc
        saved = ckpt.get("fingerprint") if isinstance(ckpt, dict) else None
        diff = fingerprint_diff(saved, self.fingerprint) if self.fingerprint else []
        epoch = int(ckpt.get("trainer", {}).get("epoch", 0)) if isinstance(ckpt, dict) else 0
        advice = (f"To train a new model here: --resume false (the current {self.best_path.name} is kept as "
                  f"{self.best_path.stem}.previous{self.best_path.suffix}); or train into another folder: "
                  "--ckpt_dir NEW_FOLDER")
        state = (f"finished after {epoch} epoch(s)" if ckpt.get("finished")
                 else f"stopped after epoch {epoch}")
        if diff:
            raise RunMismatchError(
                f"{self.last_path} belongs to another training run ({state}), so it is not resumed. "
                f"Differences: {'; '.join(diff)}. {advice}")
        if ckpt.get("finished"):
            raise RunMismatchError(
                f"{self.last_path}: this training run already {state} (best model {self.best_path}); there is "
                f"nothing to resume. {advice}")
        self.checkpoint = ckpt
        self.saved_epoch = epoch
        self.resumed = {"epoch": epoch, "iteration": int(ckpt.get("trainer", {}).get("iteration", 0))}
        logger.info("resuming the unfinished run in %s from epoch %d", self.ckpt_dir, epoch)

    def take_checkpoint(self) -> dict | None:
        """The ``last.pt`` contents to continue from (once), or ``None`` for a new run."""
        self.start()
        ckpt, self.checkpoint = self.checkpoint, None
        return ckpt

    def interrupt_message(self) -> str:
        if self.saved_epoch:
            return (f"medclass: stopped by Ctrl-C during epoch {self.current_epoch or self.saved_epoch + 1}: "
                    f"{self.last_path} holds epoch {self.saved_epoch} (best model {self.best_path}); run the same "
                    "command again to resume from there.")
        return (f"medclass: stopped by Ctrl-C before the first epoch ended: nothing was saved in {self.ckpt_dir}; "
                "run the same command again to start the training.")

