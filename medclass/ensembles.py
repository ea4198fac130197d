"""Train an ensemble with a bundle's train workflow, one member after the other, and store it as one model file.

``medclass run train --ensemble "{members: 3, by: seed}"`` (or ``by: fold``) runs the train workflow once per member
into ``<ckpt_dir>/members/member_<i>/`` and then combines the members' ``model.pt`` files into ``<ckpt_dir>/model.pt``
(an :class:`medclass.networks.Ensemble`), which evaluate, inference, saliency, export and the MONAI Label app use as
they use a single model.

* ``by: seed``: member ``i`` trains with ``seed + i`` on the bundle's split.
* ``by: fold``: the training and validation splits are pooled and cut into ``members`` patient-disjoint,
  prevalence-stratified folds (:func:`medclass.data.split_patients`); member ``i`` validates (early stopping, best
  checkpoint) on fold ``i`` and trains on the others, with ``seed + i``. The test split is left as it is. Each
  member's split is ``members/member_<i>/fold_split.csv``.

Run safety: a member is finished once its run returned and ``members/member_<i>/member.json`` was written
(atomically). A run that stops (error, Ctrl-C, power cut) keeps the finished members; the same command again skips
them and continues the unfinished member from its ``last.pt`` (the train workflow's ``resume: auto``). A plan that
differs from the finished members' (another ``by``, seed or member count) stops before training, naming the folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medclass.bundle_tools import config_files
from medclass.data import split_patients, write_split_file
from medclass.errors import SettingError
from medclass.exports import model_from_file
from medclass.files import atomic_json, atomic_save, read_json
from medclass.networks import ENSEMBLE_BY, Ensemble
from medclass.settings import check_settings

logger = logging.getLogger(__name__)

__all__ = ["MEMBER_FILE", "combine_members", "ensemble_plan", "parse_ensemble", "train_ensemble"]

#: written in a member's folder once its training finished
MEMBER_FILE = "member.json"


def parse_ensemble(value: Any) -> tuple[int, str]:
    """``(members, by)`` of the ``ensemble`` setting ``{members: k, by: seed | fold}`` (``by`` defaults to seed).

    Raises:
        SettingError: not such a mapping, ``members`` not a whole number >= 2, or an unknown ``by``.
    """
    example = "e.g. --ensemble \"{members: 3, by: seed}\""
    if not isinstance(value, Mapping) or "members" not in value or set(value) - {"members", "by"}:
        raise SettingError(f"setting ensemble: expected {{members: k, by: seed | fold}}, got {value!r}; {example}")
    k, by = value["members"], str(value.get("by", "seed")).lower()
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise SettingError(f"setting ensemble: members must be a whole number >= 2, got {k!r}; {example}")
    if by not in ENSEMBLE_BY:
        raise SettingError(f"setting ensemble: by must be one of {', '.join(ENSEMBLE_BY)}, got {by!r}; {example}")
    return k, by


def ensemble_plan(members: int, by: str, seed: int = 0) -> list[dict[str, Any]]:
    """What each member is: ``[{"member": i, "by": by, "seed": seed + i, "fold": i | None}, ...]``."""
    return [{"member": i, "by": by, "seed": int(seed) + i, "fold": i if by == "fold" else None} for i in range(members)]


def _fold_splits(bundle: Path, overrides: Mapping[str, Any], members: int) -> tuple[dict, list[dict[str, list]]]:
    """The bundle's data splits and, per member, ``{training: other folds, validation: fold i, test: test}``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(bundle, "inference.yaml", "train.yaml")])
    parser.update({k: v for k, v in overrides.items() if k != "ensemble"})
    data = parser.get_parsed_content("data")
    pool = list(data.splits["training"]) + list(data.splits["validation"])
    seed = int(parser.get_parsed_content("split_seed"))
    folds = split_patients(pool, fractions=[1.0 / members] * members, seed=seed,
                           names=[f"fold_{i}" for i in range(members)])
    per_member = []
    for i in range(members):
        train = [it for j in range(members) if j != i for it in folds[f"fold_{j}"]]
        per_member.append({"training": train, "validation": folds[f"fold_{i}"], "test": list(data.splits["test"])})
    return data.splits, per_member


def combine_members(paths: list[str | os.PathLike], out: str | os.PathLike, by: str = "seed",
                    details: dict[str, Any] | None = None, task: str | None = None) -> Path:
    """Combine member model files into one ensemble model file, written atomically.

    Args:
        paths: the members' ``model.pt`` files (one architecture, the same labels).
        out: the file to write (e.g. ``models/model.pt``).
        by: ``seed`` or ``fold``.
        details: recorded in the file's ``ensemble`` entry (``seeds``, ``folds``); the members' folder names are
            added as ``sources``.
        task: ``None``: the members' recorded task.

    Raises:
        FileNotFoundError: a member file is missing.
        ValueError: a member file is no medclass model, is itself an ensemble, or the members differ.
    """
    models = []
    for p in paths:
        model, _ = model_from_file(p)
        if isinstance(model, Ensemble):
            raise ValueError(f"{p} is already an ensemble; give the members' model files")
        models.append(model)
    info = {**dict(details or {}), "sources": [Path(p).parent.name for p in paths]}
    ensemble = Ensemble(models, task=task, by=by, details=info)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(ensemble.state_dict(), out)
    logger.info("ensemble of %d members (by %s) written to %s", len(models), by, out)
    return out


def _check_finished(folder: Path, plan: dict[str, Any]) -> bool:
    """Whether the member in ``folder`` finished as ``plan`` says; a finished member of another plan is an error."""
    done = read_json(folder / MEMBER_FILE)
    if done is None:
        return False
    if {k: done.get(k) for k in plan} != plan:
        raise SettingError(f"{folder} holds a finished ensemble member trained as {done}, not {plan}: give another "
                           "--ckpt_dir, or remove that members folder to train the new ensemble")
    return (folder / "model.pt").is_file()


def train_ensemble(bundle: str | os.PathLike, overrides: dict[str, Any], run: Callable[[dict[str, Any]], Any]) -> Path:
    """Train every unfinished member with ``run`` (the train workflow with the given overrides), then combine.

    Args:
        bundle: the bundle folder.
        overrides: the command line's settings, with ``ensemble`` (``{members: k, by: seed | fold}``).
        run: runs the train workflow with a dict of overrides (``ckpt_dir``, ``log_dir``, ``seed`` and, by fold,
            ``split_file`` set per member); raises on failure.

    Returns:
        The ensemble model file (``<ckpt_dir>/model.pt``).
    """
    bundle = Path(bundle)
    overrides = dict(overrides)
    members, by = parse_ensemble(overrides.pop("ensemble"))
    ckpt_dir = Path(str(overrides.get("ckpt_dir") or bundle / "models"))
    log_dir = Path(str(overrides.get("log_dir") or bundle / "runs"))
    seed = overrides.get("seed", 0)
    check_settings({"seed": seed})  # each member's seed is counted from it
    plan = ensemble_plan(members, by, seed)
    folders = [ckpt_dir / "members" / f"member_{p['member']}" for p in plan]
    todo = [i for i, (p, f) in enumerate(zip(plan, folders)) if not _check_finished(f, p)]
    splits = None
    if by == "fold" and todo:
        _, splits = _fold_splits(bundle, overrides, members)
    logger.info("ensemble of %d members by %s: %d finished, training %s", members, by, members - len(todo),
                ", ".join(f"member_{i}" for i in todo) or "none")
    for i in todo:
        member = {**overrides, "ckpt_dir": str(folders[i]), "log_dir": str(log_dir / f"member_{i}"),
                  "seed": plan[i]["seed"]}
        if splits is not None:
            split_file = folders[i] / "fold_split.csv"
            if not split_file.is_file():  # a resumed member keeps the split it started with
                write_split_file(split_file, splits[i])
            member["split_file"] = str(split_file)
        logger.info("ensemble member %d/%d: %s", i + 1, members, json.dumps(plan[i]))
        run(member)
        if not (folders[i] / "model.pt").is_file():
            raise FileNotFoundError(f"{folders[i] / 'model.pt'}: member {i}'s training ended without a model")
        atomic_json(folders[i] / MEMBER_FILE, plan[i])
    details: dict[str, Any] = {"seeds": [p["seed"] for p in plan]}
    if by == "fold":
        details["folds"] = [p["fold"] for p in plan]
        logger.warning("a fold ensemble's members trained on the validation split's cases (each on all folds but "
                       "its own): thresholds chosen there by the evaluate workflow are optimistic")
    return combine_members([f / "model.pt" for f in folders], ckpt_dir / "model.pt", by=by, details=details)
